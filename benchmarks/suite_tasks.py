"""The Celery app and tasks of the side-by-side suite, for the suite's own process
and for the ``celery worker`` subprocesses it starts (``-A benchmarks.suite_tasks``).

Every contender's tasks live on one app, configured for every peer at once: the
same broker, the same private Redis, one key prefix per contender. A peer that
cannot be imported is left out; ``PEER_ERRORS`` says why.
"""

from __future__ import annotations

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.suite_settings")
django.setup()

import redis  # noqa: E402
from celery import Celery  # noqa: E402
from django.conf import settings  # noqa: E402

from django_heimdall import HeimdallTask, RateLimit  # noqa: E402

PREFIX: str = settings.KEY_PREFIX
REDIS_URL: str = settings.REDIS_URL
#: Lock lifetime of every enqueue lock: they vanish by themselves if a run is killed.
LOCK_TIMEOUT_S = 900
#: The rate limits measured: (times, per seconds).
RATE_CONFIGS: tuple[tuple[int, int], ...] = ((10, 1), (10, 5), (2, 10), (100, 1))
#: A limit no run of the throughput measurement comes near.
NEVER_BINDING = (1_000_000, 1)

DJANGO_HEIMDALL = "django-heimdall"
CELERY_HEIMDALL = "celery-heimdall"
CELERY_ONCE = "celery-once"
CELERY_SINGLETON = "celery-singleton"
PEERS = (CELERY_HEIMDALL, CELERY_ONCE, CELERY_SINGLETON)
#: Peers that could not be imported, with the reason.
PEER_ERRORS: dict[str, str] = {}

app = Celery("heimdall-suite", set_as_current=True)
app.config_from_object("django.conf:settings", namespace="CELERY")

# -- names, queues and keys --------------------------------------------------------------

PLAIN = "suite.plain"
DH_UNIQUE = "suite.dh_unique"
CH_UNIQUE = "suite.ch_unique"
CH_UNIQUE_DEFAULT = "suite.ch_unique_default"
ONCE_UNIQUE = "suite.once_unique"
SINGLETON_UNIQUE = "suite.singleton_unique"
TP_PLAIN = "suite.tp_plain"
TP_HEIMDALL = "suite.tp_heimdall"


def rate_task_name(contender: str, times: int, per: int) -> str:
    short = "dh" if contender == DJANGO_HEIMDALL else "ch"
    return f"suite.rate_{short}_{times}_per_{per}"


def queue_of(name: str) -> str:
    """The queue a worker task is routed to (the enqueue tasks use the default one)."""
    return f"{PREFIX}-q-{name.removeprefix('suite.')}"


def count_key(run: str) -> str:
    return f"{PREFIX}:tp:{run}:count"


def done_key(run: str) -> str:
    return f"{PREFIX}:tp:{run}:done_us"


def starts_key(name: str) -> str:
    return f"{PREFIX}:starts:{name}"


WORKER_TASKS = [
    TP_PLAIN,
    TP_HEIMDALL,
    *(rate_task_name(DJANGO_HEIMDALL, t, p) for t, p in RATE_CONFIGS),
    *(rate_task_name(CELERY_HEIMDALL, t, p) for t, p in RATE_CONFIGS),
]
app.conf.task_routes = {name: {"queue": queue_of(name)} for name in WORKER_TASKS}

# -- what the tasks record, one round trip each -------------------------------------------

_redis = redis.Redis.from_url(REDIS_URL)
# INCR the round's counter; the task that completes the round stamps the Redis clock.
_count = _redis.register_script(
    """
local n = redis.call('INCR', KEYS[1])
if n == tonumber(ARGV[1]) then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])))
end
return n
"""
)
# Append "<admitted µs or -> <body start µs> <task id>" (Redis clock, as text: Lua
# numbers would lose digits).
_stamp = _redis.register_script(
    """
local t = redis.call('TIME')
local now = t[1] .. string.format('%06d', tonumber(t[2]))
redis.call('RPUSH', KEYS[1], ARGV[1] .. ' ' .. now .. ' ' .. ARGV[2])
return now
"""
)


def count_done(run: str, total: int) -> int:
    return int(_count(keys=[count_key(run), done_key(run)], args=[total]))


def stamp_start(task: Any) -> None:
    admitted = getattr(task.request, "heimdall_started_at", None)
    _stamp(
        keys=[starts_key(task.name)],
        args=["-" if admitted is None else admitted, task.request.id],
    )


# -- plain Celery and django-heimdall -----------------------------------------------------


@app.task(name=PLAIN)
def plain(x: int) -> int:
    return x


@app.task(
    name=DH_UNIQUE,
    base=HeimdallTask,
    heimdall={"unique": True, "unique_timeout": LOCK_TIMEOUT_S},
)
def dh_unique(x: int) -> int:
    return x


@app.task(name=TP_PLAIN)
def tp_plain(i: int, total: int, run: str) -> int:
    return count_done(run, total)


@app.task(
    name=TP_HEIMDALL,
    base=HeimdallTask,
    heimdall={"unique": True, "rate_limit": RateLimit(NEVER_BINDING)},
)
def tp_heimdall(i: int, total: int, run: str) -> int:
    return count_done(run, total)


def _register_rate_tasks() -> None:
    for times, per in RATE_CONFIGS:
        name = rate_task_name(DJANGO_HEIMDALL, times, per)

        def limited(self: Any) -> None:
            stamp_start(self)

        app.task(
            name=name,
            bind=True,
            base=HeimdallTask,
            heimdall={"rate_limit": RateLimit((times, per))},
        )(limited)


_register_rate_tasks()

# -- the peers ----------------------------------------------------------------------------

#: How celery-heimdall takes a rate limit in the installed version.
CELERY_HEIMDALL_RATE_API = ""

try:
    import celery_heimdall
    from celery_heimdall import HeimdallTask as CeleryHeimdallTask
except Exception as exc:  # ImportError, or an error at import with this Celery
    PEER_ERRORS[CELERY_HEIMDALL] = f"import failed: {type(exc).__name__}: {exc}"
else:
    app.conf.heimdall_lock_prefix = f"{PREFIX}-ch-lock:"
    app.conf.heimdall_rate_limit_prefix = f"{PREFIX}-ch-rate:"

    # The fair configuration: a held lock is reported at once. (Its default,
    # unique_lock_blocking=True, waits unique_lock_timeout = 1 s for the lock first:
    # see CH_UNIQUE_DEFAULT.)
    @app.task(
        name=CH_UNIQUE,
        base=CeleryHeimdallTask,
        heimdall={
            "unique": True,
            "unique_timeout": LOCK_TIMEOUT_S,
            "unique_lock_blocking": False,
        },
    )
    def ch_unique(x: int) -> int:
        return x

    @app.task(
        name=CH_UNIQUE_DEFAULT,
        base=CeleryHeimdallTask,
        heimdall={"unique": True, "unique_timeout": LOCK_TIMEOUT_S},
    )
    def ch_unique_default(x: int) -> int:
        return x

    def _ch_rate_options(times: int, per: int) -> dict[str, Any]:
        rate_limit = getattr(celery_heimdall, "RateLimit", None)
        if rate_limit is not None:  # 1.0: heimdall={"rate_limit": RateLimit((N, S))}
            return {"rate_limit": rate_limit((times, per))}
        return {"times": times, "per": per}  # older: heimdall={"times": N, "per": S}

    CELERY_HEIMDALL_RATE_API = (
        "rate_limit=RateLimit((N, S))"
        if hasattr(celery_heimdall, "RateLimit")
        else "times=N, per=S"
    )
    for _times, _per in RATE_CONFIGS:

        def _limited(self: Any) -> None:
            stamp_start(self)

        app.task(
            name=rate_task_name(CELERY_HEIMDALL, _times, _per),
            bind=True,
            base=CeleryHeimdallTask,
            heimdall=_ch_rate_options(_times, _per),
        )(_limited)

try:
    from celery_once import AlreadyQueued, QueueOnce
except Exception as exc:
    PEER_ERRORS[CELERY_ONCE] = f"import failed: {type(exc).__name__}: {exc}"
    AlreadyQueued = None  # type: ignore[assignment,misc]
else:
    app.conf.ONCE = {
        "backend": "celery_once.backends.Redis",
        "settings": {"url": REDIS_URL, "default_timeout": LOCK_TIMEOUT_S},
    }

    @app.task(name=ONCE_UNIQUE, base=QueueOnce)
    def once_unique(x: int) -> int:
        return x


try:
    from celery_singleton import Singleton
except Exception as exc:
    PEER_ERRORS[CELERY_SINGLETON] = f"import failed: {type(exc).__name__}: {exc}"
else:
    app.conf.singleton_backend_url = REDIS_URL
    app.conf.singleton_key_prefix = f"{PREFIX}-singleton:"
    app.conf.singleton_lock_expiry = LOCK_TIMEOUT_S

    @app.task(name=SINGLETON_UNIQUE, base=Singleton)
    def singleton_unique(x: int) -> int:
        return x
