"""Backlogs under a global rate limit: ``python -m benchmarks.backlog``.

A backlog of N tasks is published at once to a prefork worker (``-c 4``) whose
task is limited to ``times/per``; the run measures, from what the tasks record
(their admission time on the Redis clock) and from Redis itself:

- publishes per task executed: the original publish plus every deferral re-send;
- Kendall tau between the enqueue order and the admission order (1 = FIFO);
- the most admissions found in any window of ``per`` seconds (must be ≤ times);
- utilisation: admissions after the first window's burst, per second of the run,
  over the rate (``(N - times) / (rate * (last - first admission))``; 1 = every
  slot used);
- Redis script calls per task (``INFO commandstats``: ``evalsha`` + ``eval``).

Everything runs on a private ``redis-server`` (``django_heimdall.testing``), so
the command statistics count this run only. ``--contender celery-heimdall`` runs
the same backlog with celery-heimdall 1.0.1 (when it is installed) for comparison.
Self-contained: the worker is ``celery -A benchmarks.backlog``, configured by this
module from the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

#: The worker's configuration, set by the driver in the worker's environment.
ENV = "HEIMDALL_BACKLOG"
TASK = "benchmarks.backlog.limited"
WARM = "benchmarks.backlog.warm"
SCENARIOS = ((100, 10, 1.0), (200, 10, 1.0), (400, 10, 1.0), (200, 2, 1.0))
QUICK = ((60, 10, 1.0), (30, 2, 1.0))
#: The hop cap of the runs: the longest wait (200 tasks at 2/s) fits in one hop,
#: well below the Redis broker's default visibility timeout (one hour).
DEFER_MAX_COUNTDOWN = 300.0


def _make_app(cfg: dict[str, Any]) -> Any:
    from celery import Celery

    app = Celery("backlog", broker=cfg["redis"])
    app.conf.update(
        task_default_queue=cfg["queue"],
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


def _redis(cfg: dict[str, Any]) -> Any:
    import redis

    return redis.Redis.from_url(cfg["redis"])


def _keys(cfg: dict[str, Any]) -> tuple[str, str]:
    return f"{cfg['prefix']}:admitted", f"{cfg['prefix']}:resends"


def _configure_django(cfg: dict[str, Any]) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="backlog",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_heimdall"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        CACHES={
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": cfg["redis"],
                "KEY_PREFIX": f"{cfg['prefix']}-cache",
            }
        },
        HEIMDALL={
            "KEY_PREFIX": cfg["prefix"],
            "DEFER_MAX_COUNTDOWN": cfg["cap"],
            "TASKS": {TASK: {"rate_limit": (cfg["times"], cfg["per"])}},
        },
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            "loggers": {"django_heimdall": {"level": "ERROR"}},
        },
    )
    django.setup()


def _one_bucket(args: Any, kwargs: Any) -> str:
    return "backlog"


def _worker_app(cfg: dict[str, Any]) -> Any:
    """The app the worker runs: one rate-limited task that records its admission."""
    from celery.signals import before_task_publish

    admitted, resends = _keys(cfg)
    client = _redis(cfg)

    @before_task_publish.connect(weak=False)
    def _count(sender: Any = None, **kwargs: Any) -> None:
        if sender == TASK:  # in the worker, every publish of the task is a re-send
            client.incr(resends)

    if cfg["contender"] == "celery-heimdall":
        from celery_heimdall import HeimdallTask as Base

        # Its counter key expires after `per` whole seconds; without a `key` every
        # argument set would have a limit of its own.
        options = {"times": cfg["times"], "per": int(cfg["per"]), "key": _one_bucket}
        app = _make_app(cfg)
    else:
        _configure_django(cfg)
        from django_heimdall import HeimdallTask as Base

        options = {}
        app = _make_app(cfg)

    @app.task(name=WARM)
    def warm() -> None:
        # Each pool process connects (and resolves the policy) before the backlog.
        client.ping()
        if cfg["contender"] != "celery-heimdall":
            from django_heimdall.store import get_store

            app.tasks[TASK].heimdall_policy  # noqa: B018
            get_store().client.ping()
        time.sleep(0.3)
        client.rpush(f"{cfg['prefix']}:warm", 1)

    @app.task(name=TASK, base=Base, bind=True, heimdall=options)
    def limited(self: Any, n: int) -> None:
        stamp = getattr(self.request, "heimdall_started_at", None)
        if stamp is None:  # celery-heimdall: the body's first moment, Redis clock
            sec, usec = client.time()
            stamp = sec * 1_000_000 + usec
        client.rpush(admitted, json.dumps([n, stamp, getattr(self.request, "heimdall_slot", None)]))

    return app


if os.environ.get(ENV):
    app = _worker_app(json.loads(os.environ[ENV]))


# -- the driver -------------------------------------------------------------------------


def kendall_tau(order: list[int]) -> float:
    """Tau between positions and ``order`` (enqueue indexes in admission order)."""
    n = len(order)
    if n < 2:
        return 1.0
    concordant = discordant = 0
    for i in range(n):
        for j in range(i + 1, n):
            if order[i] < order[j]:
                concordant += 1
            else:
                discordant += 1
    return (concordant - discordant) / (n * (n - 1) / 2)


def _script_calls(client: Any) -> int:
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))


def run_backlog(
    redis_url: str, contender: str, n: int, times: int, per: float, cap: float
) -> dict[str, Any]:
    """Publish ``n`` tasks at once to a fresh worker and measure their admissions."""
    from django_heimdall.testing import max_in_window

    run = uuid.uuid4().hex[:10]
    cfg = {
        "redis": redis_url,
        "prefix": f"backlog-{run}",
        "queue": f"backlog-{run}-q",
        "contender": contender,
        "times": times,
        "per": per,
        "cap": cap,
    }
    python = sys.executable
    worker = subprocess.Popen(
        [
            python,
            "-m",
            "celery",
            "-A",
            "benchmarks.backlog",
            "worker",
            "-P",
            "prefork",
            "-c",
            "4",
            "-Q",
            cfg["queue"],
            "-n",
            f"{cfg['queue']}@%h",
            "-l",
            "ERROR",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        env={**os.environ, ENV: json.dumps(cfg)},
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    client = _redis(cfg)
    admitted, resends = _keys(cfg)
    sender = _make_app(cfg)
    try:
        deadline = time.monotonic() + 60
        while not sender.control.ping(destination=[f"{cfg['queue']}@{os.uname().nodename}"]):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("the worker did not start")
        for _ in range(8):
            sender.send_task(WARM, queue=cfg["queue"])
        while client.llen(f"{cfg['prefix']}:warm") < 8:
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not warm up")
            time.sleep(0.05)
        client.config_resetstat()
        for i in range(n):
            sender.send_task(TASK, args=(i,), queue=cfg["queue"])
        ideal = (n / times) * per
        deadline = time.monotonic() + 3 * ideal + 60
        while client.llen(admitted) < n:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        calls = _script_calls(client)
    finally:
        worker.terminate()
        worker.wait(30)
    rows = sorted(json.loads(item)[:2] for item in client.lrange(admitted, 0, -1))
    if os.environ.get("BACKLOG_DEBUG"):
        late = sorted(
            (t - s) / 1000 for _n, t, s in map(json.loads, client.lrange(admitted, 0, -1)) if s
        )
        print("lateness ms: ", [round(x, 1) for x in late[:: max(1, len(late) // 30)]])
        print("order:", [i for i, _t in sorted(rows, key=lambda row: row[1])])
    executed = len(rows)
    stamps = [t for _n, t in rows]
    order = [i for i, _t in sorted(rows, key=lambda row: row[1])]
    span = (max(stamps) - min(stamps)) / 1e6 if stamps else 0.0
    result = {
        "contender": contender,
        "backlog": n,
        "limit": f"{times}/{per:g} s",
        "cap": cap,
        "executed": executed,
        "once": len({i for i, _t in rows}) == executed,
        "publishes_per_task": (n + int(client.get(resends) or 0)) / max(1, executed),
        "tau": kendall_tau(order),
        "max_in_window": max_in_window(stamps, int(per * 1e6)),
        "utilisation": (executed - times) / (times / per * span) if span else 0.0,
        "script_calls_per_task": calls / max(1, executed),
        "duration": span,
    }
    client.delete(admitted, resends)
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    rows = [
        "| contender | backlog | limit | executed | publishes / task | Kendall tau "
        "| max in a window | utilisation | script calls / task | run (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['contender']} | {r['backlog']} | {r['limit']} | {r['executed']} "
            f"| {r['publishes_per_task']:.2f} | {r['tau']:.3f} | {r['max_in_window']} "
            f"| {r['utilisation']:.3f} | {r['script_calls_per_task']:.2f} "
            f"| {r['duration']:.1f} |"
        )
    return "\n".join(rows)


def _scenarios(options: Any) -> tuple[tuple[int, int, float], ...]:
    if not options.scenarios:
        return QUICK if options.quick else SCENARIOS
    parsed = []
    for spec in options.scenarios.split(","):
        n, rate = spec.split("@")
        times, per = rate.split("/")
        parsed.append((int(n), int(times), float(per)))
    return tuple(parsed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small backlogs, for development")
    parser.add_argument(
        "--contender",
        action="append",
        choices=["django-heimdall", "celery-heimdall"],
        help="what to measure (repeatable; default: django-heimdall)",
    )
    parser.add_argument("--cap", type=float, default=DEFER_MAX_COUNTDOWN, help="hop cap, s")
    parser.add_argument(
        "--scenarios", help="comma-separated N@times/per, e.g. 200@2/1 (default: the four)"
    )
    parser.add_argument("--redis-url", help="a Redis of its own (default: an embedded one)")
    parser.add_argument("--json", help="also write the results to this file")
    options = parser.parse_args(argv)

    from django_heimdall.testing import EmbeddedRedis

    server = None
    url = options.redis_url
    if url is None:
        server = EmbeddedRedis().start()
        url = server.url
    results = []
    try:
        for contender in options.contender or ["django-heimdall"]:
            for n, times, per in _scenarios(options):
                result = run_backlog(url, contender, n, times, per, options.cap)
                print(json.dumps(result), flush=True)
                results.append(result)
    finally:
        if server is not None:
            server.stop()
    print(markdown(results))
    if options.json:
        with open(options.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
