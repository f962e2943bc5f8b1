"""The Celery app and tasks of the benchmarks, for the suite's own process and for
the ``celery worker`` subprocesses it starts (``-A benchmarks.tasks``).

Every contender's tasks live on one app, configured for every peer at once: the
same broker, the same private Redis, one key prefix per contender. A peer that
cannot be imported is left out; ``PEER_ERRORS`` says why. What the tasks record
(counters, start stamps, publishes) is plain Redis commands, no Lua, so that the
scripts the server counts are django-heimdall's alone.
"""

from __future__ import annotations

import os
import time
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
django.setup()

import redis  # noqa: E402
from celery import Celery  # noqa: E402
from celery.signals import before_task_publish  # noqa: E402
from django.conf import settings  # noqa: E402

from django_heimdall import HeimdallTask, services  # noqa: E402

PREFIX: str = settings.KEY_PREFIX
REDIS_URL: str = settings.REDIS_URL
#: Lock lifetime of every enqueue lock: they vanish by themselves if a run is killed.
LEASE_S = 900
#: The rate limits of the rate section and of the backlog one, (times, per seconds).
RATE_CONFIGS: tuple[tuple[int, int], ...] = ((10, 1), (10, 5), (2, 10), (100, 1))
BACKLOG_RATES: tuple[tuple[int, int], ...] = ((10, 1), (2, 1))
#: The concurrency section: a limit that never binds, and the one of its backlog.
CONCURRENCY_NON_BINDING, CONCURRENCY_CAPACITY = 10_000, 4
#: The rate-limit keys shown by the admin section, over this many tasks.
ADMIN_RATE_TASKS = 10

DJANGO_HEIMDALL = "django-heimdall"
CELERY_HEIMDALL = "celery-heimdall"
CELERY_ONCE = "celery-once"
CELERY_SINGLETON = "celery-singleton"
PEERS = (CELERY_HEIMDALL, CELERY_ONCE, CELERY_SINGLETON)
#: Peers that could not be imported, with the reason.
PEER_ERRORS: dict[str, str] = {}
#: The unique task of each contender, for the enqueue section.
UNIQUE: dict[str, str] = {}

app = Celery("heimdall-bench", set_as_current=True)
app.config_from_object("django.conf:settings", namespace="CELERY")

CH_UNIQUE_DEFAULT = ""  # celery-heimdall's unique task with its defaults


def rate_task_name(contender: str, times: int, per: int, kind: str = "rate") -> str:
    return f"bench.{kind}_{'dh' if contender == DJANGO_HEIMDALL else 'ch'}_{times}_per_{per}"


def admin_rate_task_name(i: int) -> str:
    return f"bench.admin_rate_r{i:02d}"


def queue_of(name: str) -> str:
    """The queue of a worker task (the enqueue tasks use the default queue)."""
    return f"{PREFIX}-q-{name.removeprefix('bench.')}"


def _route(name: str, *args: Any, **kwargs: Any) -> dict[str, str] | None:
    return None if name.startswith("bench.enqueue.") else {"queue": queue_of(name)}


app.conf.task_routes = (_route,)


def key(*parts: Any) -> str:
    """A key of the benchmark's own records."""
    return ":".join((PREFIX, "bench", *map(str, parts)))


# -- what the tasks record ---------------------------------------------------------------

_redis = redis.Redis.from_url(REDIS_URL)
#: Tasks whose publishes are counted per task id (before_task_publish, in every
#: process: the enqueue and every re-send of a deferred task).
PUBLISH_COUNTED: set[str] = set()


@before_task_publish.connect
def _count_publish(sender: str | None = None, headers: Any = None, **kwargs: Any) -> None:
    if sender in PUBLISH_COUNTED:
        _redis.hincrby(key("publishes", sender), (headers or {}).get("id", "?"), 1)


def count_done(run: str, total: int) -> int:
    """Count a completed task; the one that completes the round stamps the Redis clock."""
    n = int(_redis.incr(key("tp", run, "count")))
    if n == total:
        sec, usec = _redis.time()
        _redis.set(key("tp", run, "done_us"), int(sec) * 1_000_000 + int(usec))
    return n


def stamp_start(task: Any, label: Any = "-") -> None:
    """Append "<admitted µs or -> <body start µs> <label> <task id>" (Redis clock)."""
    admitted = getattr(task.request, "heimdall_started_at", None)
    sec, usec = _redis.time()
    now = int(sec) * 1_000_000 + int(usec)
    line = f"{admitted or '-'} {now} {label} {task.request.id}"
    _redis.rpush(key("starts", task.name), line)


# -- plain Celery and django-heimdall -----------------------------------------------------


def task(name: str, function: Any, **options: Any) -> str:
    """Register ``function`` as task ``name`` on the app; its name."""
    return app.task(name=name, **options)(function).name


def _identity(x: int) -> int:
    return x


def _count(i: int, total: int, run: str) -> int:
    return count_done(run, total)


def _stamp(self: Any, label: Any = "-") -> None:
    stamp_start(self, label)


def _hold(self: Any, label: Any, seconds: float) -> None:
    """Hold the task's slot ``seconds``; append "<start µs> <end µs> <task id>"."""
    start = _now_us()
    time.sleep(seconds)
    _redis.rpush(key("holds", self.name), f"{start} {_now_us()} {self.request.id}")


def _now_us() -> int:
    sec, usec = _redis.time()
    return int(sec) * 1_000_000 + int(usec)


def _warm(run: str) -> None:
    """Connect a pool process and resolve the policies before a measured backlog."""
    services.effective_policies()
    services.live().lock_counts([TP_HEIMDALL])
    _redis.ping()
    time.sleep(0.3)  # the other warm tasks go to the other pool processes
    _redis.rpush(key("warm", run), 1)


def _one_bucket(args: Any, kwargs: Any) -> str:
    return "backlog"


def dh(
    name: str, function: Any, bind: bool = False, base: Any = HeimdallTask, **heimdall: Any
) -> str:
    """A django-heimdall (or ``base``: celery-heimdall) task with options ``heimdall``."""
    return task(name, function, bind=bind, base=base, heimdall=heimdall)


PLAIN = task("bench.enqueue.plain", _identity)
UNIQUE[DJANGO_HEIMDALL] = dh("bench.enqueue.dh", _identity, unique=True, unique_timeout=LEASE_S)
TP_PLAIN = task("bench.tp_plain", _count)
TP_HEIMDALL = dh("bench.tp_heimdall", _count, unique=True, rate_limit=(1_000_000, 1))  # never binds
WARM = task("bench.warm", _warm)
TP_CONCURRENCY = dh("bench.tp_concurrency", _count, concurrency_limit=CONCURRENCY_NON_BINDING)
CONCURRENCY_BACKLOG = task(
    "bench.concurrency_backlog",
    _hold,
    bind=True,
    base=HeimdallTask,
    heimdall={"concurrency_limit": CONCURRENCY_CAPACITY},
    max_retries=0,
)
PUBLISH_COUNTED.add(CONCURRENCY_BACKLOG)
for _times, _per in BACKLOG_RATES:
    _name = rate_task_name(DJANGO_HEIMDALL, _times, _per, "backlog")
    PUBLISH_COUNTED.add(dh(_name, _stamp, bind=True, rate_limit=(_times, _per)))
for _times, _per in RATE_CONFIGS:
    dh(rate_task_name(DJANGO_HEIMDALL, _times, _per), _stamp, bind=True, rate_limit=(_times, _per))
for _i in range(ADMIN_RATE_TASKS):  # windows per key (the first argument), for the admin
    dh(admin_rate_task_name(_i), _identity, rate_limit=(100, 60), key=lambda args, kw: args[0])

# -- the peers ----------------------------------------------------------------------------

try:
    import celery_heimdall
    from celery_heimdall import HeimdallTask as CeleryHeimdallTask
except Exception as exc:  # ImportError, or an error at import with this Celery
    PEER_ERRORS[CELERY_HEIMDALL] = f"import failed: {type(exc).__name__}: {exc}"
else:
    app.conf.heimdall_lock_prefix = f"{PREFIX}-ch-lock:"
    app.conf.heimdall_rate_limit_prefix = f"{PREFIX}-ch-rate:"
    # The fair configuration: a held lock is reported at once. Its default,
    # unique_lock_blocking=True, waits unique_lock_timeout (1 s) first: CH_UNIQUE_DEFAULT.
    ch = {"base": CeleryHeimdallTask, "unique": True, "unique_timeout": LEASE_S}
    UNIQUE[CELERY_HEIMDALL] = dh("bench.enqueue.ch", _identity, **ch, unique_lock_blocking=False)
    CH_UNIQUE_DEFAULT = dh("bench.enqueue.ch_default", _identity, **ch)
    # 1.0: heimdall={"rate_limit": RateLimit((N, S))}; older: {"times": N, "per": S}.
    _rate = getattr(celery_heimdall, "RateLimit", None)
    for _times, _per in RATE_CONFIGS:
        _limit = {"rate_limit": _rate((_times, _per))} if _rate else {"times": _times, "per": _per}
        _name = rate_task_name(CELERY_HEIMDALL, _times, _per)
        dh(_name, _stamp, True, CeleryHeimdallTask, **_limit)
    # One bucket: without a key every argument set would have a limit of its own.
    for _times, _per in BACKLOG_RATES:
        _limit = {"rate_limit": _rate((_times, _per))} if _rate else {"times": _times, "per": _per}
        _name = rate_task_name(CELERY_HEIMDALL, _times, _per, "backlog")
        PUBLISH_COUNTED.add(dh(_name, _stamp, True, CeleryHeimdallTask, key=_one_bucket, **_limit))

try:
    from celery_once import AlreadyQueued, QueueOnce
except Exception as exc:
    PEER_ERRORS[CELERY_ONCE] = f"import failed: {type(exc).__name__}: {exc}"
    AlreadyQueued = None  # type: ignore[assignment,misc]
else:
    app.conf.ONCE = {
        "backend": "celery_once.backends.Redis",
        "settings": {"url": REDIS_URL, "default_timeout": LEASE_S},
    }
    UNIQUE[CELERY_ONCE] = task("bench.enqueue.once", _identity, base=QueueOnce)

try:
    from celery_singleton import Singleton
except Exception as exc:
    PEER_ERRORS[CELERY_SINGLETON] = f"import failed: {type(exc).__name__}: {exc}"
else:
    app.conf.singleton_backend_url = REDIS_URL
    app.conf.singleton_key_prefix = f"{PREFIX}-singleton:"
    app.conf.singleton_lock_expiry = LEASE_S
    UNIQUE[CELERY_SINGLETON] = task("bench.enqueue.singleton", _identity, base=Singleton)
