"""The one place that talks to Redis.

Every decision is one atomic Lua script (one round trip) that reads the Redis
clock, decides and writes. The task class, the admin and the management command
all go through :func:`get_store`.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from importlib import resources
from typing import Any, NamedTuple

from redis import exceptions as redis_errors

from .conf import heimdall_settings, on_reload
from .exceptions import HeimdallUnavailable
from .ratelimits import Rate

ACQUIRED = 1
OWNED = 2
DUPLICATE = 0
STARTED = 1
THROTTLED = 2

# Errors that mean "Redis is not usable right now", as opposed to a bug.
UNAVAILABLE_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a failover left us talking to a replica
    redis_errors.OutOfMemoryError,  # maxmemory reached under noeviction
)

_SCRIPTS = {
    name: resources.files(__package__).joinpath(f"lua/{name}.lua").read_text()
    for name in (
        "acquire",
        "locks_page",
        "rate_windows",
        "release",
        "release_task",
        "renew",
        "start",
    )
}
_SHAS = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in _SCRIPTS.items()}


class Acquire(NamedTuple):
    """Outcome of taking a lock at enqueue."""

    status: int  # ACQUIRED, OWNED or DUPLICATE
    holder: str
    expires_in: float  # seconds


class Start(NamedTuple):
    """Outcome of the start check."""

    status: int  # STARTED, DUPLICATE or THROTTLED
    holder: str | None
    wait: float  # seconds: until the holder's lease ends (DUPLICATE) or a slot frees
    now_us: int  # the Redis clock when the decision was taken
    taken: bool = False  # the lock was free and this start took it


class LockInfo(NamedTuple):
    """A held lock, as the admin and the command show it."""

    identity: str
    owner: str
    task: str
    phase: str  # "queued" or "running"
    since: datetime.datetime
    args: str
    expires_in: float  # seconds


class LockPage(NamedTuple):
    total: int
    locks: list[LockInfo]


class RateWindow(NamedTuple):
    """The state of one rate-limit key on the Redis clock."""

    identity: str
    task: str
    times: int
    per: float  # seconds
    starts: int  # starts counted in the window that ends now
    next_slot_in: float  # seconds until another start is allowed (0: now)


def _ms_to_datetime(ms: Any) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(ms) / 1000, tz=datetime.timezone.utc)


class _Admin:
    """Reads and bulk operations for the admin and the management command (not
    on any task's hot path; several round trips are fine here)."""

    @contextlib.contextmanager
    def _unavailable(self: Any) -> Iterator[None]:
        try:
            yield
        except UNAVAILABLE_ERRORS as exc:
            raise HeimdallUnavailable(
                f"Redis of cache alias {self.alias!r} is unreachable: {exc}"
            ) from exc

    def now_ms(self: Any) -> int:
        """The Redis clock, in ms."""
        with self._unavailable():
            sec, usec = self.client.time()
        return sec * 1000 + usec // 1000

    def task_names(self: Any) -> list[str]:
        """Every task that has taken a lock under this prefix."""
        with self._unavailable():
            return sorted(_text(name) for name in self.client.smembers(self.tasks_key))

    def lock_counts(self: Any, tasks: list[str]) -> dict[str, int]:
        """Live locks per task."""
        now = self.now_ms()
        with self._unavailable():
            pipe = self.client.pipeline(transaction=False)
            for task in tasks:
                pipe.zcount(self.index_key(task), f"({now}", "+inf")
            return dict(zip(tasks, pipe.execute(), strict=True))

    def locks_page(self: Any, tasks: list[str], offset: int, limit: int) -> LockPage:
        """Live locks of ``tasks`` (in that order, then by lease end), one page."""
        if not tasks:
            return LockPage(0, [])
        keys = [self.index_key(task) for task in tasks]
        _now, total, rows = self._call("locks_page", keys, [offset, limit])
        return LockPage(total, [self._lock_info(row[0], *row[1:]) for row in rows])

    def _lock_info(
        self: Any, key: Any, owner: Any, task: Any, phase: Any, since: Any, args: Any, pttl: Any
    ) -> LockInfo:
        lock_prefix = f"{self.prefix}:lock:"
        return LockInfo(
            identity=_text(key)[len(lock_prefix) :],
            owner=_text(owner),
            task=_text(task),
            phase=_text(phase),
            since=_ms_to_datetime(_text(since) or 0),
            args=_text(args) or "",
            expires_in=max(0, int(pttl)) / 1000,
        )

    def lock_info(self: Any, identity: str) -> LockInfo | None:
        """The lock of ``identity``, if it is held."""
        key = self.lock_key(identity)
        with self._unavailable():
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(key, "owner", "task", "phase", "since", "args")
            pipe.pttl(key)
            fields, pttl = pipe.execute()
        if fields[0] is None:
            return None
        return self._lock_info(key, *fields, pttl)

    def lock_by_owner(self: Any, task_id: str) -> LockInfo | None:
        """The lock held by task ``task_id``, if any."""
        with self._unavailable():
            key = self.client.get(self.owner_key(task_id))
        if key is None:
            return None
        info = self.lock_info(_text(key)[len(f"{self.prefix}:lock:") :])
        return info if info is not None and info.owner == task_id else None

    def release_task(self: Any, task_name: str, cutoff_ms: int, batch: int = 1000) -> int:
        """Release every lock of ``task_name`` taken at or before ``cutoff_ms``
        (Redis clock), in batches so that Redis is never blocked for long."""
        released, rank = 0, 0
        args_tail = [batch, f"{self.prefix}:owner:"]
        while True:
            done, kept, seen = self._call(
                "release_task", [self.index_key(task_name)], [cutoff_ms, rank, *args_tail]
            )
            released += done
            rank += kept
            if seen < batch:
                return released

    def rate_windows(self: Any) -> list[RateWindow]:
        """Every rate-limit key that counted a start in its current window."""
        with self._unavailable():
            registry = {_text(k): _text(v) for k, v in self.client.hgetall(self.rates_key).items()}
        limits = []
        for identity in sorted(registry):
            task, times, window = registry[identity].split("\t")
            limits.append((identity, task, int(times), int(window)))
        if not limits:
            return []
        now, rows = self._call(
            "rate_windows",
            [self.rates_key, *(self.rate_key(identity) for identity, *_ in limits)],
            [v for identity, _, times, window in limits for v in (identity, times, window)],
        )
        now = int(now)
        windows = []
        for (identity, task, times, window), (starts, oldest) in zip(limits, rows, strict=True):
            oldest = int(oldest)
            if not starts and oldest < 0:
                continue  # nothing counted any more: the window is empty
            wait = max(0, oldest + window - now) if oldest >= 0 else 0
            windows.append(RateWindow(identity, task, times, window / 1e6, starts, wait / 1e6))
        return windows

    def reset_rate(self: Any, identity: str) -> bool:
        """Forget the starts counted for ``identity``: its window is empty again."""
        with self._unavailable():
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.rate_key(identity))
            pipe.hdel(self.rates_key, identity)
            return bool(pipe.execute()[0])

    # The admin's policy overrides, published for every process to read.
    @property
    def overrides_key(self: Any) -> str:
        return f"{self.prefix}:overrides"

    def publish_overrides(self: Any, overrides: dict[str, dict[str, Any]]) -> str:
        """Replace the published overrides (task -> raw options) under a new version."""
        version = uuid.uuid4().hex  # never repeats, even after Redis lost the old one
        with self._unavailable():
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.overrides_key)
            if overrides:
                pipe.hset(
                    self.overrides_key,
                    mapping={task: json.dumps(opts) for task, opts in overrides.items()},
                )
            pipe.set(f"{self.overrides_key}:version", version)
            pipe.execute()
        return version

    def overrides_version(self: Any) -> str | None:
        with self._unavailable():
            return _text(self.client.get(f"{self.overrides_key}:version"))

    def read_overrides(self: Any) -> tuple[str | None, dict[str, dict[str, Any]]]:
        with self._unavailable():
            pipe = self.client.pipeline(transaction=True)
            pipe.get(f"{self.overrides_key}:version")
            pipe.hgetall(self.overrides_key)
            version, raw = pipe.execute()
        return _text(version), {_text(task): json.loads(opts) for task, opts in raw.items()}


class Store(_Admin):
    """Locks and rate-limit windows of one cache alias under one key prefix."""

    def __init__(self, alias: str, prefix: str):
        self.alias = alias
        self.prefix = prefix
        self._client: Any = None
        self._local = threading.local()

    # Key layout. Django cache keys look like "<prefix>:<version>:<key>", with an
    # integer version; ours never have an integer in the second place.
    def lock_key(self, identity: str) -> str:
        return f"{self.prefix}:lock:{identity}"

    def index_key(self, task_name: str) -> str:
        return f"{self.prefix}:locks:{task_name}"

    @property
    def tasks_key(self) -> str:
        return f"{self.prefix}:tasks"

    def owner_key(self, task_id: str) -> str:
        return f"{self.prefix}:owner:{task_id}"

    def rate_key(self, identity: str) -> str:
        return f"{self.prefix}:rate:{identity}"

    @property
    def rates_key(self) -> str:
        return f"{self.prefix}:rates"

    def _lock_keys(self, identity: str, task_name: str, owner: str) -> list[str]:
        return [
            self.lock_key(identity),
            self.index_key(task_name),
            self.tasks_key,
            self.owner_key(owner),
        ]

    @property
    def client(self) -> Any:
        """The writable redis-py client of the cache alias."""
        if self._client is None:
            from django_redis import get_redis_connection

            self._client = get_redis_connection(self.alias, write=True)
        return self._client

    def _connection(self) -> Any:
        # Decisions sit on the enqueue and start hot paths: each thread keeps one
        # connection of the client's pool instead of checking one out per call.
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            pool = self.client.connection_pool
            try:
                local.conn = pool.get_connection()
            except TypeError:  # redis-py < 5.3 wants a command name
                local.conn = pool.get_connection("EVALSHA")
            local.pid = os.getpid()
        return local.conn

    def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run script ``name``: one EVALSHA, or EVAL after a Redis restart or
        SCRIPT FLUSH (which also reloads it). A connection found broken (e.g. the
        server restarted since its last use) is replaced once."""
        for attempt in (1, 2):
            try:
                conn = self._connection()
                try:
                    conn.send_command("EVALSHA", _SHAS[name], len(keys), *keys, *args)
                    return conn.read_response()
                except redis_errors.NoScriptError:
                    conn.send_command("EVAL", _SCRIPTS[name], len(keys), *keys, *args)
                    return conn.read_response()
            except UNAVAILABLE_ERRORS as exc:
                conn = getattr(self._local, "conn", None)
                if conn is not None:
                    conn.disconnect()  # reconnects on next use
                if attempt == 2:
                    raise HeimdallUnavailable(
                        f"Redis of cache alias {self.alias!r} is unreachable: {exc}"
                    ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def acquire(
        self,
        identity: str,
        owner: str,
        lease_ms: int,
        task_name: str,
        preview: str = "",
        renew: bool = True,
    ) -> Acquire:
        """Take the lock of ``identity`` for ``owner``, or report its holder."""
        status, holder, pttl = self._call(
            "acquire",
            self._lock_keys(identity, task_name, owner),
            [owner, lease_ms, "1" if renew else "0", task_name, preview],
        )
        return Acquire(status, _text(holder), max(0, pttl) / 1000)

    def start(
        self,
        owner: str,
        *,
        task_name: str,
        lock: str | None = None,
        lease_ms: int = 0,
        renew: bool = True,
        preview: str = "",
        rates: tuple[tuple[str, Rate], ...] = (),
    ) -> Start:
        """Decide whether ``owner`` may start: lock ``lock`` (an identity, if unique)
        and count one start against every ``(identity, rate)`` in ``rates``."""
        keys: list[str] = []
        if lock is not None:
            keys += self._lock_keys(lock, task_name, owner)
        if rates:
            keys.append(self.rates_key)
        args: list[Any] = [
            "1" if lock is not None else "0",
            owner,
            lease_ms,
            "1" if renew else "0",
            task_name,
            preview,
        ]
        for identity, rate in rates:
            keys.append(self.rate_key(identity))
            args += [rate.times, int(rate.per * 1_000_000), identity]
        status, holder, wait, now, taken = self._call("start", keys, args)
        if status == DUPLICATE:
            wait = max(0, wait) * 1000  # PTTL in ms -> µs
        return Start(status, _text(holder), wait / 1_000_000, now, bool(taken))

    def release(self, identity: str, owner: str, task_name: str) -> bool:
        """Delete the lock of ``identity`` if ``owner`` still holds it."""
        return bool(
            self._call(
                "release",
                [self.lock_key(identity), self.index_key(task_name), self.owner_key(owner)],
                [owner],
            )
        )

    def renew(self, identity: str, owner: str, lease_ms: int, task_name: str) -> bool:
        """Extend the lease of ``identity`` if ``owner`` still holds it."""
        return bool(
            self._call(
                "renew",
                [self.lock_key(identity), self.index_key(task_name), self.owner_key(owner)],
                [owner, lease_ms],
            )
        )

    def holder(self, identity: str) -> str | None:
        """Task id holding the lock of ``identity``, if any."""
        try:
            return _text(self.client.hget(self.lock_key(identity), "owner"))
        except UNAVAILABLE_ERRORS as exc:
            raise HeimdallUnavailable(str(exc)) from exc


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


_store: Store | None = None
_store_lock = threading.Lock()


def get_store() -> Store:
    """The store of the configured cache alias and key prefix."""
    store = _store
    if store is None:
        with _store_lock:
            store = _store
            if store is None:
                store = _set(Store(heimdall_settings.CACHE, heimdall_settings.KEY_PREFIX))
    return store


def _set(store: Store | None) -> Store | None:
    global _store
    _store = store
    return store


@on_reload
def _forget_store() -> None:
    _set(None)
