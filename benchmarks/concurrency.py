"""What a concurrency limit costs, and how often a backlog waiting for slots is re-sent.

    python -m benchmarks.concurrency [--tasks 400] [--rounds 3] [--backlog 200]
                                     [--capacity 4] [--hold 0.1] [--workers 8]

Self-contained: Django and a Celery app are configured here, against one Redis
(``REDIS_URL``, or an embedded ``redis-server`` when it is unset), with a key prefix
and a queue of this run's own and an in-thread worker. It measures

1. throughput (tasks/s, from the first publish to the last result) of a task with a
   ``concurrency_limit`` that never binds, next to the same task as a plain Celery
   task, in alternating rounds; the figure is the ratio of the medians;
2. a backlog of ``--backlog`` tasks published before the worker starts, behind
   ``concurrency_limit = --capacity``, each holding its slot for a random 0.5x-1.5x
   ``--hold`` seconds (once per value given):
   the re-sends per task (one per ``busy`` signal with action "defer"), the most
   bodies that ever overlapped (on the Redis clock), and the makespan next to the
   ideal ``backlog * hold / capacity``.

Everything the run wrote is deleted at the end (SCAN MATCH, never FLUSHDB).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from typing import Any

import django
from django.conf import settings
from kombu.utils.uuid import uuid

RUN = uuid()[:8]
PREFIX = f"bench-conc-{RUN}"
QUEUE = f"bench-conc-{RUN}"
NON_BINDING = 10_000


def configure() -> str:
    from django_heimdall.testing import redis_url

    url = redis_url()
    database = os.path.join(tempfile.mkdtemp(prefix="heimdall-bench-"), "db.sqlite3")
    cache = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url}
    settings.configure(
        SECRET_KEY="benchmark",
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.admin",
            "django_heimdall",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database}},
        CACHES={"default": cache, "heimdall": {**cache, "KEY_PREFIX": ""}},
        HEIMDALL={"CACHE": "heimdall", "KEY_PREFIX": PREFIX},
        LOGGING={"version": 1, "disable_existing_loggers": False},
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return url


URL = configure()

from celery import Celery  # noqa: E402
from celery.contrib.testing.worker import start_worker  # noqa: E402
from django_redis import get_redis_connection  # noqa: E402

from django_heimdall import HeimdallTask, signals  # noqa: E402
from django_heimdall.testing import max_concurrent  # noqa: E402

app = Celery("bench_concurrency", broker=URL, backend=URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    result_expires=600,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


def redis():
    return get_redis_connection("default")


def redis_us() -> int:
    sec, usec = redis().time()
    return sec * 1_000_000 + usec


@app.task(name="bench.plain")
def plain(n: int) -> int:
    return n


@app.task(base=HeimdallTask, name="bench.limited", heimdall={"concurrency_limit": NON_BINDING})
def limited(n: int) -> int:
    return n


@app.task(base=HeimdallTask, bind=True, name="bench.backlog", max_retries=0)
def backlog(self: Any, n: int, hold: float) -> int:
    start = redis_us()
    time.sleep(hold)
    redis().rpush(f"{PREFIX}:runs", f"{start} {redis_us()} {self.request.retries}")
    return n


def worker(threads: int) -> Any:
    return start_worker(
        app,
        pool="threads",
        concurrency=threads,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    )


def throughput(task: Any, count: int) -> float:
    began = time.perf_counter()
    results = [task.delay(n) for n in range(count)]
    for result in results:
        result.get(timeout=300)
    return count / (time.perf_counter() - began)


def run_backlog(count: int, capacity: int, hold: float, workers: int) -> dict[str, Any]:
    """Publish the whole backlog, then let a worker at it."""
    backlog.heimdall = {"concurrency_limit": capacity}
    resends: Counter[str] = Counter()
    lock = threading.Lock()

    def count_resend(sender: Any = None, task_id: str = "", action: str = "", **kw: Any) -> None:
        if getattr(sender, "name", "") == "bench.backlog" and action == "defer":
            with lock:
                resends[task_id] += 1

    signals.busy.connect(count_resend, weak=False)
    rng = random.Random(11)
    results = [backlog.delay(n, hold * rng.uniform(0.5, 1.5)) for n in range(count)]
    with worker(workers):
        began = time.perf_counter()
        for result in results:
            result.get(timeout=600)
        makespan = time.perf_counter() - began
    signals.busy.disconnect(count_resend)
    runs = [tuple(map(int, r.split())) for r in redis().lrange(f"{PREFIX}:runs", 0, -1)]
    per_task = [resends.get(r.id, 0) for r in results]
    return {
        "tasks": count,
        "ran": len(runs),
        "retries used": sum(r[2] for r in runs),
        "max overlapping": max_concurrent((r[0], r[1]) for r in runs),
        "re-sends per task (mean)": statistics.mean(per_task),
        "re-sends per task (p95)": sorted(per_task)[int(0.95 * (len(per_task) - 1))],
        "re-sends per task (max)": max(per_task),
        "makespan s": makespan,
        "ideal makespan s": count * hold / capacity,
    }


def cleanup() -> None:
    client = redis()
    for pattern in (f"{{{PREFIX}}}*", f"{PREFIX}*", QUEUE, f"_kombu.binding*.{QUEUE}"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=400, help="tasks per throughput round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=200)
    parser.add_argument("--capacity", type=int, default=4)
    parser.add_argument(
        "--hold",
        default="0.1,0.5",
        help="mean seconds a slot is held, one backlog run each (comma-separated)",
    )
    parser.add_argument("--workers", type=int, default=8, help="worker threads")
    options = parser.parse_args()
    try:
        with worker(options.workers):
            throughput(plain, 50)  # warm up connections and scripts
            throughput(limited, 50)
            rates: dict[str, list[float]] = {"plain": [], "limited": []}
            for _ in range(options.rounds):
                rates["plain"].append(throughput(plain, options.tasks))
                rates["limited"].append(throughput(limited, options.tasks))
        holds = [float(hold) for hold in options.hold.split(",")]
        queues = {}
        for hold in holds:
            queues[hold] = run_backlog(options.backlog, options.capacity, hold, options.workers)
            redis().delete(f"{PREFIX}:runs")
    finally:
        cleanup()
    plain_rate, limited_rate = (statistics.median(rates[k]) for k in ("plain", "limited"))
    print(f"Throughput, {options.tasks} tasks x {options.rounds} rounds, median tasks/s:")
    print(f"  plain Celery task                       {plain_rate:8.1f}")
    print(f"  concurrency_limit={NON_BINDING} (not binding)  {limited_rate:8.1f}")
    print(f"  ratio                                   {limited_rate / plain_rate:8.2f}")
    for hold, queue in queues.items():
        print(
            f"Backlog of {options.backlog} behind concurrency_limit={options.capacity}, "
            f"hold ~{hold}s, {options.workers} worker threads:"
        )
        for name, value in queue.items():
            shown = f"{value:.2f}" if isinstance(value, float) else str(value)
            print(f"  {name:<28} {shown}")


if __name__ == "__main__":
    main()
