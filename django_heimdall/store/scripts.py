"""Lua scripts: loaded once, called through the client's connection pool.

Each script is ``lib.lua`` (shared helpers) followed by its own file. A call is
one ``EVALSHA`` on a connection checked out of the django-redis client's pool and
returned to it — straight on the connection, since these calls sit on the enqueue
and start hot paths; after a Redis restart or ``SCRIPT FLUSH`` the
``NoScriptError`` is answered with one ``EVAL``, which also loads the script again.
"""

from __future__ import annotations

import hashlib
import re
import time
from importlib import resources
from typing import Any

from redis import exceptions as redis_errors

from ..exceptions import HeimdallUnavailable

# Errors that mean "Redis is not usable right now", as opposed to a bug.
UNAVAILABLE_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,  # a failover left us talking to a replica
    redis_errors.OutOfMemoryError,  # maxmemory reached under noeviction: treated as down
)

NAMES = (
    "acquire",
    "beat_claim",
    "beat_lead",
    "beat_resign",
    "locks_page",
    "only_after",
    "publish_overrides",
    "rate_windows",
    "release",
    "release_owned",
    "release_task",
    "renew_execution",
    "sem_acquire",
    "sem_release",
    "sem_renew",
    "slots_page",
    "start",
)


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(f"lua/{name}.lua").read_text()


# Helper libraries joined in front of a script: lib.lua always, the others only when
# the script uses one of their names (every call defines the functions it carries,
# so a script carries no more than it needs).
_LIBS = [_read(name) for name in ("lib", "lib_semaphores", "lib_rates")]
_DEFINED = [set(re.findall(r"^local (?:function )?(\w+)", text, re.MULTILINE)) for text in _LIBS]


def _source(body: str) -> str:
    used = set(re.findall(r"\w+", body))
    parts = [_LIBS[0]]
    for text, defined in zip(_LIBS[1:], _DEFINED[1:], strict=True):
        if used & defined:
            parts.append(text)
    return "\n".join([*parts, body])


SOURCES = {name: _source(_read(name)) for name in NAMES}
SHAS = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in SOURCES.items()}


def unavailable(alias: str, exc: BaseException) -> HeimdallUnavailable:
    return HeimdallUnavailable(f"Redis of cache alias {alias!r} is unreachable: {exc}")


# A full pool (``max_connections``) is waited out for up to this many seconds.
POOL_WAIT = 2.0


def _checkout(pool: Any) -> Any:
    # redis-py < 5.3 wants a command name; newer versions deprecate passing one.
    try:
        return pool.get_connection()
    except TypeError:
        return pool.get_connection("EVALSHA")


def _bulk(part: Any) -> bytes:
    """One argument as a Redis protocol bulk string."""
    data = part if isinstance(part, bytes) else str(part).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


# "EVALSHA <sha>" of each script, already in the protocol.
_EVALSHA = {name: _bulk("EVALSHA") + _bulk(sha) for name, sha in SHAS.items()}


def _pack(head: bytes, heads: int, *parts: Any) -> bytes:
    """A command in the Redis protocol: ``heads`` arguments already packed in
    ``head``, then ``parts`` (what redis-py's packer makes, without its per-argument
    overhead on this hot path)."""
    return b"".join((b"*%d\r\n" % (heads + len(parts)), head, *map(_bulk, parts)))


def _run(pool: Any, name: str, keys: list[str], args: list[Any]) -> Any:
    """One script call on a connection borrowed from ``pool`` and given back."""
    conn = _checkout(pool)
    try:
        conn.send_packed_command([_pack(_EVALSHA[name], 2, len(keys), *keys, *args)])
        try:
            return conn.read_response()
        except redis_errors.NoScriptError:
            command = _pack(b"", 0, "EVAL", SOURCES[name], len(keys), *keys, *args)
            conn.send_packed_command([command])
            return conn.read_response()
    except redis_errors.ResponseError:
        raise  # an error reply: the connection is in a clean state
    except BaseException:
        conn.disconnect()  # cut mid-command: its protocol state is unknown
        raise
    finally:
        pool.release(conn)


def call(client: Any, alias: str, name: str, keys: list[str], args: list[Any]) -> Any:
    """Run script ``name``: one ``EVALSHA`` on a connection of the client's pool.

    A connection the pool handed out broken (the server restarted since it was
    last used) is discarded, and one retry gets a fresh one. A pool at its
    ``max_connections`` is waited out briefly, as a blocking pool would. Other
    errors of an unusable Redis raise ``HeimdallUnavailable``.
    """
    retried, waited, pause = False, 0.0, 0.001
    while True:
        try:
            return _run(client.connection_pool, name, keys, args)
        except redis_errors.ConnectionError as exc:
            if "Too many connections" in str(exc) and waited < POOL_WAIT:
                time.sleep(pause)
                waited, pause = waited + pause, min(pause * 2, 0.05)
                continue
            if retried:
                raise unavailable(alias, exc) from exc
            retried = True
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(alias, exc) from exc


def text(value: Any) -> Any:
    """A reply as ``str`` (the client may not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value
