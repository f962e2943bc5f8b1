"""The one place that talks to Redis.

Every decision is one atomic Lua script (one round trip) that reads the Redis
clock, decides and writes. The task class, the admin and the management command
all go through :func:`get_store`.
"""

from __future__ import annotations

import hashlib
import os
import threading
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
    redis_errors.ReadOnlyError,
)

_SCRIPTS = {
    name: resources.files(__package__).joinpath(f"lua/{name}.lua").read_text()
    for name in ("acquire", "release", "renew", "start")
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


class Store:
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
        status, holder, wait, now = self._call("start", keys, args)
        if status == DUPLICATE:
            wait = max(0, wait) * 1000  # PTTL in ms -> µs
        return Start(status, _text(holder), wait / 1_000_000, now)

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
