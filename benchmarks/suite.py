"""django-heimdall side by side with plain Celery and the peers, in one run.

    python -m benchmarks.suite [--quick] [--admin {auto,run,reuse,skip}] [--json PATH]

Started from the project's environment, it makes or reuses a virtualenv of its own
(``benchmarks/results/venv-peers``: this repository, celery-heimdall, celery-once,
celery-singleton, matplotlib; see ``benchmarks.peers_env``) and re-executes itself
there, so that every contender is measured by the same Python against the same
private embedded Redis (never the shared one). Each result is a ratio against plain
Celery measured in the same run:

1. enqueue with no worker consuming: plain ``apply_async``, the first enqueue of a
   unique task and a duplicate enqueue, for django-heimdall and each peer,
   interleaved in blocks in a shuffled order; medians in µs, and the Redis round
   trips of each kind of call (``INFO`` ``total_reads_processed``);
2. worker throughput: a prefork ``celery worker`` subprocess runs N trivial tasks,
   plain vs a django-heimdall task that is unique and rate-limited with a limit that
   never binds; from the first enqueue to the last completion (Redis clock);
3. rate-limit accuracy: 10/1 s, 10/5 s, 2/10 s and 100/1 s, saturated for several
   windows on a prefork worker of concurrency 4, for django-heimdall and
   celery-heimdall; every start is stamped on the Redis clock; the most starts in
   any window of the limit's length, the starts over the limit and achieved ÷
   allowed starts;
4. eager mode (``task_always_eager``): plain ``.delay()`` vs a unique django-heimdall
   task's ``.delay()``;
5. the admin listing benchmark (``benchmarks.admin_listing``), run or read back.

It prints the tables and the targets (PASS/MISS) and writes JSON to
``benchmarks/results/suite.json``, with the tables (``.md``) and the chart (``.png``)
next to it (``suite-quick.*`` and ``suite-partial.*`` for ``--quick`` and ``--only``
runs). A full run of every phase also writes the chart to ``docs/benchmarks.png`` and
the tables into ``docs/benchmarks.md``, between its ``suite:results`` markers.
Every worker it starts is stopped, its queues deleted and the private Redis stopped,
whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import json
import math
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import peers_env
from benchmarks.common import Summary as Latency
from django_heimdall.testing import max_in_window

ROOT = peers_env.ROOT
RESULTS = peers_env.RESULTS
LOGS = peers_env.LOGS
DEFAULT_JSON = RESULTS / "suite.json"
PHASES = ("enqueue", "throughput", "rate", "eager", "admin")
ADMIN_JSON = RESULTS / "admin_listing.json"
DOCS_MD = ROOT / "docs" / "benchmarks.md"
DOCS_PNG = ROOT / "docs" / "benchmarks.png"
MD_START = "<!-- suite:results:start -->"
MD_END = "<!-- suite:results:end -->"
TASKS_MODULE = "benchmarks.suite_tasks"

DJANGO_HEIMDALL = "django-heimdall"
CELERY_HEIMDALL = "celery-heimdall"
CELERY_ONCE = "celery-once"
CELERY_SINGLETON = "celery-singleton"
UNIQUE_CONTENDERS = (DJANGO_HEIMDALL, CELERY_HEIMDALL, CELERY_ONCE, CELERY_SINGLETON)
RATE_CONTENDERS = (DJANGO_HEIMDALL, CELERY_HEIMDALL)
PLAIN = "plain"
FIRST = "first"
DUPLICATE = "duplicate"
#: The arguments every duplicate enqueue repeats.
DUPLICATE_ARGS = (-1,)

# Targets.
FIRST_MAX_RATIO = 1.05
DUPLICATE_MAX_RATIO = 0.30
THROUGHPUT_MIN_RATIO = 0.90
UTILISATION_MIN = 0.90
#: Below this 1-minute load average the machine counts as quiet (--wait-quiet).
QUIET_LOAD = 0.5

#: Where the CPU time of a throughput round goes.
CPU_PARTS = ("enqueuing process", "worker", "redis-server")

clock = time.perf_counter_ns


# -- statistics ------------------------------------------------------------------------


def interleaved(
    calls: Mapping[str, Callable[[], Any]], n: int, block: int, rng: random.Random
) -> dict[str, list[int]]:
    """Time ``n`` calls of each entry, ``block`` at a time per entry, the entries in a
    new random order every round, so that machine noise hits every kind alike."""
    samples: dict[str, list[int]] = {name: [] for name in calls}
    names = list(calls)
    done = 0
    while done < n:
        size = min(block, n - done)
        rng.shuffle(names)
        for name in names:
            call, out = calls[name], samples[name]
            for _ in range(size):
                start = clock()
                call()
                out.append(clock() - start)
        done += size
    return samples


def over_limit(stamps_us: Iterable[int], window_us: int, times: int) -> int:
    """Starts admitted although ``times`` others had started in the window before them."""
    stamps = sorted(stamps_us)
    found, lo = 0, 0
    for hi, t in enumerate(stamps):
        while t - stamps[lo] >= window_us:
            lo += 1
        found += hi - lo + 1 > times
    return found


# -- Redis -------------------------------------------------------------------------------


def redis_now_us(client: Any) -> int:
    sec, usec = client.time()
    return int(sec) * 1_000_000 + int(usec)


@dataclass
class RedisCost:
    """What one call costs the Redis server, from ``INFO`` deltas over ``k`` calls."""

    round_trips: float  # socket reads (total_reads_processed)
    commands: float  # commands run, those of Lua scripts included (commandstats)
    server_us: float  # server time of those commands (commandstats usec)


def redis_cost(client: Any, call: Callable[[], Any], k: int) -> RedisCost:
    """Per ``call``, less the INFO calls themselves; the private server has no other
    client meanwhile. A script's own time is in its EVALSHA; the commands it runs
    are counted but their time is not added again."""

    def snapshot() -> tuple[int, dict[str, tuple[int, int]]]:
        info = client.info("all")
        stats = {
            key.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
            for key, value in info.items()
            if key.startswith("cmdstat_") and key != "cmdstat_info"
        }
        return int(info["total_reads_processed"]), stats

    first = snapshot()
    baseline = snapshot()[0] - first[0]  # what one INFO adds to the reads
    before = snapshot()
    for _ in range(k):
        call()
    after = snapshot()
    delta = {
        name: (calls - before[1].get(name, (0, 0))[0], usec - before[1].get(name, (0, 0))[1])
        for name, (calls, usec) in after[1].items()
    }
    scripts = delta.get("evalsha", (0, 0))[0] + delta.get("eval", (0, 0))[0]
    inner = _script_commands() if scripts else frozenset()
    return RedisCost(
        round_trips=(after[0] - before[0] - baseline) / k,
        commands=sum(calls for calls, _ in delta.values()) / k,
        server_us=sum(usec for name, (_, usec) in delta.items() if name not in inner) / k,
    )


def _script_commands() -> frozenset[str]:
    """The commands django-heimdall's Lua scripts call (their time is their EVALSHA's)."""
    from importlib import resources

    found: set[str] = set()
    for script in resources.files("django_heimdall").joinpath("lua").iterdir():
        if script.name.endswith(".lua"):
            text = script.read_text()
            found.update(c.lower() for c in re.findall(r"redis\.call\(\s*['\"](\w+)['\"]", text))
    return frozenset(found)


def delete_matching(client: Any, *patterns: str) -> int:
    """Delete the keys matching ``patterns`` (SCAN, never KEYS or FLUSHALL)."""
    deleted = 0
    for pattern in patterns:
        batch = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(batch), 500):
            deleted += client.delete(*batch[i : i + 500])
    return deleted


def queue_patterns(queue: str) -> list[str]:
    # The queue (and its priority sub-queues) and kombu's binding tables of it.
    return [queue, f"{queue}\x06\x16*", f"_kombu.binding*.{queue}"]


# -- worker subprocesses -----------------------------------------------------------------


class Worker:
    """``celery worker`` (prefork) in a session of its own, logging to a file."""

    def __init__(self, label: str, queues: list[str], concurrency: int, log: Path):
        self.label = label
        self.queues = queues
        self.node = f"{label}@{socket.gethostname()}"
        self.log_path = log
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                TASKS_MODULE,
                "worker",
                "-P",
                "prefork",
                "-c",
                str(concurrency),
                "-Q",
                ",".join(queues),
                "-l",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"{label}@%h",
            ],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the pool goes with it
        )

    def wait_ready(self, app: Any, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.label} exited; see {self.log_path}")
            if app.control.ping(destination=[self.node], timeout=0.5):
                return
        raise RuntimeError(f"worker {self.label} did not answer a ping; see {self.log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM; reserved messages go back to the queue), then
        SIGKILL for whatever of its process group is left."""
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(10)
        self._log.close()


class Workers:
    """Every worker the run starts; ``stop_all`` in a ``finally``."""

    def __init__(self) -> None:
        self.started: list[Worker] = []

    def start(self, app: Any, label: str, queues: list[str], concurrency: int) -> Worker:
        worker = Worker(label, queues, concurrency, LOGS / f"worker-{label}.log")
        self.started.append(worker)
        worker.wait_ready(app)
        return worker

    def stop(self, worker: Worker) -> None:
        worker.stop()

    def stop_all(self) -> None:
        for worker in self.started:
            try:
                worker.stop(timeout=10)
            except Exception as exc:  # keep stopping the others
                print(f"warning: worker {worker.label} not stopped cleanly: {exc}")


# -- the measurements ----------------------------------------------------------------------


@dataclass
class Mode:
    enqueue_n: int
    enqueue_warmup: int
    block: int
    trips_k: int
    blocking_duplicates: int
    eager_n: int
    tp_n: int
    tp_rounds: int
    tp_concurrency: int
    rate_concurrency: int
    rate_seconds: float  # at least this long per limit ...
    rate_windows: int  # ... and at least this many windows


FULL = Mode(3000, 200, 100, 200, 3, 3000, 2000, 5, 2, 4, 10.0, 3)
QUICK = Mode(500, 50, 50, 100, 1, 500, 500, 1, 2, 4, 3.0, 1)


class Suite:
    def __init__(self, t: Any, mode: Mode, workers: Workers, seed: int):
        import redis

        self.t = t
        self.app = t.app
        self.mode = mode
        self.workers = workers
        self.rng = random.Random(seed)
        self.admin = redis.Redis.from_url(t.REDIS_URL)
        self._args = itertools.count()

    def next_args(self) -> tuple[int]:
        return (next(self._args),)

    # 1. Enqueue.
    def enqueue(self) -> dict[str, Any]:
        t, m, next_args = self.t, self.mode, self.next_args
        tasks = self.app.tasks
        plain = tasks[t.PLAIN]
        names = {
            DJANGO_HEIMDALL: t.DH_UNIQUE,
            CELERY_HEIMDALL: t.CH_UNIQUE,
            CELERY_ONCE: t.ONCE_UNIQUE,
            CELERY_SINGLETON: t.SINGLETON_UNIQUE,
        }
        calls: dict[str, Callable[[], Any]] = {PLAIN: lambda: plain.apply_async(next_args())}
        publishes = {PLAIN}
        holders: dict[str, str] = {}
        for contender, name in names.items():
            if name not in tasks:
                continue
            task = tasks[name]
            holders[contender] = task.apply_async(DUPLICATE_ARGS).id  # the held lock
            calls[f"{contender}:{FIRST}"] = lambda task=task: task.apply_async(next_args())
            publishes.add(f"{contender}:{FIRST}")
            if contender == CELERY_ONCE:
                calls[f"{contender}:{DUPLICATE}"] = lambda task=task: _once_duplicate(
                    task, t.AlreadyQueued
                )
            else:
                calls[f"{contender}:{DUPLICATE}"] = lambda task=task: task.apply_async(
                    DUPLICATE_ARGS
                )
        # Every duplicate must come back without publishing: the holder's result
        # (django-heimdall, celery-heimdall, celery-singleton) or AlreadyQueued.
        answers = {}
        for contender, holder in holders.items():
            got = calls[f"{contender}:{DUPLICATE}"]()
            answers[contender] = (
                got == "AlreadyQueued" if contender == CELERY_ONCE else got.id == holder
            )
        made = dict.fromkeys(calls, 0)  # calls per kind (only plain and first publish)

        interleaved(calls, m.enqueue_warmup, m.block, self.rng)
        gc.collect()
        samples = interleaved(calls, m.enqueue_n, m.block, self.rng)
        for kind in calls:
            made[kind] += m.enqueue_warmup + m.enqueue_n
        trips = {}
        for kind, call in calls.items():
            trips[kind] = redis_cost(self.admin, call, m.trips_k)
            made[kind] += m.trips_k

        # celery-heimdall with its defaults (unique_lock_blocking=True): a duplicate
        # waits unique_lock_timeout (1 s) for the lock before it reports the holder.
        blocking: dict[str, Any] | None = None
        if t.CH_UNIQUE_DEFAULT in tasks and m.blocking_duplicates:
            task = tasks[t.CH_UNIQUE_DEFAULT]
            holder = task.apply_async(DUPLICATE_ARGS).id
            times_ns = []
            for _ in range(m.blocking_duplicates):
                start = clock()
                got = task.apply_async(DUPLICATE_ARGS)
                times_ns.append(clock() - start)
            blocking = {**asdict(Latency.of(times_ns)), "holder_returned": got.id == holder}

        expected = len(holders) + sum(made[kind] for kind in publishes)
        expected += 1 if blocking is not None else 0
        queued = int(self.admin.llen(self.app.conf.task_default_queue))
        latency = {kind: Latency.of(samples[kind]) for kind in calls}
        plain_median = latency[PLAIN].median
        contenders = {}
        for contender in holders:
            first = latency[f"{contender}:{FIRST}"]
            dup = latency[f"{contender}:{DUPLICATE}"]
            contenders[contender] = {
                "first_us": asdict(first),
                "duplicate_us": asdict(dup),
                "first_ratio": first.median / plain_median,
                "duplicate_ratio": dup.median / plain_median,
                "first_redis": asdict(trips[f"{contender}:{FIRST}"]),
                "duplicate_redis": asdict(trips[f"{contender}:{DUPLICATE}"]),
            }
        return {
            "n": m.enqueue_n,
            "warmup": m.enqueue_warmup,
            "block": m.block,
            "trips_k": m.trips_k,
            "plain_us": asdict(latency[PLAIN]),
            "plain_redis": asdict(trips[PLAIN]),
            "contenders": contenders,
            "celery_heimdall_default_duplicate_us": blocking,
            "check": {
                "duplicates_answered_correctly": answers,
                "messages_expected": expected,
                "messages_queued": queued,
                "ok": queued == expected and all(answers.values()),
            },
        }

    # 4. Eager.
    def eager(self) -> dict[str, Any]:
        from django_heimdall.keys import identity
        from django_heimdall.store import get_store

        t, m = self.t, self.mode
        plain, unique = self.app.tasks[t.PLAIN], self.app.tasks[t.DH_UNIQUE]
        next_args = self.next_args
        calls = {
            PLAIN: lambda: plain.delay(*next_args()),
            DJANGO_HEIMDALL: lambda: unique.delay(*next_args()),
        }
        self.app.conf.task_always_eager = True
        try:
            interleaved(calls, m.enqueue_warmup, m.block, self.rng)
            gc.collect()
            samples = interleaved(calls, m.eager_n, m.block, self.rng)
            trips = {
                kind: asdict(redis_cost(self.admin, call, m.trips_k))
                for kind, call in calls.items()
            }
            result = unique.delay(-2)
        finally:
            self.app.conf.task_always_eager = False
        lock = identity(unique, unique.heimdall_policy, (-2,), None).lock
        latency = {kind: Latency.of(samples[kind]) for kind in calls}
        return {
            "n": m.eager_n,
            "latency_us": {kind: asdict(lat) for kind, lat in latency.items()},
            "ratio": latency[DJANGO_HEIMDALL].median / latency[PLAIN].median,
            "redis": trips,
            "check": {
                "ran": result.get() == -2,
                "lock_released": get_store().holder(lock) is None,
            },
        }

    # 2. Worker throughput.
    def throughput(self) -> dict[str, Any]:
        t, m = self.t, self.mode
        kinds = {PLAIN: t.TP_PLAIN, DJANGO_HEIMDALL: t.TP_HEIMDALL}
        workers = {
            kind: self.workers.start(self.app, f"tp-{kind}", [t.queue_of(name)], m.tp_concurrency)
            for kind, name in kinds.items()
        }
        rounds: list[dict[str, Any]] = []
        try:
            warm = min(200, m.tp_n)
            for kind, name in kinds.items():  # forks warm, connections made, scripts loaded
                self._tp_round(kind, name, warm, f"warmup-{kind}", workers[kind])
            for r in range(m.tp_rounds):
                order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
                for kind in order:
                    rounds.append(
                        self._tp_round(kind, kinds[kind], m.tp_n, f"{kind}-{r}", workers[kind])
                    )
        finally:
            for worker in workers.values():
                self.workers.stop(worker)
            for name in kinds.values():
                delete_matching(self.admin, *queue_patterns(t.queue_of(name)))
        tps = {
            kind: statistics.median(r["tasks_per_s"] for r in rounds if r["kind"] == kind)
            for kind in kinds
        }
        left = sum(1 for _ in self.admin.scan_iter(match=f"{t.PREFIX}:lock:{t.TP_HEIMDALL}:*"))
        cpu = {
            kind: {
                part: statistics.median(
                    r["cpu_us_per_task"][part] for r in rounds if r["kind"] == kind
                )
                for part in CPU_PARTS
            }
            for kind in kinds
            if all(r["cpu_us_per_task"] for r in rounds)
        }
        return {
            "n": m.tp_n,
            "rounds": rounds,
            "concurrency": m.tp_concurrency,
            "tasks_per_s": tps,
            "cpu_us_per_task": cpu,
            "ratio": tps[DJANGO_HEIMDALL] / tps[PLAIN],
            # Each round against the plain round next to it: less sensitive to drift
            # in what else the machine does.
            "paired_ratio": statistics.median(
                rounds[i + 1]["tasks_per_s"] / rounds[i]["tasks_per_s"]
                if rounds[i]["kind"] == PLAIN
                else rounds[i]["tasks_per_s"] / rounds[i + 1]["tasks_per_s"]
                for i in range(0, len(rounds), 2)
            ),
            # What the CPU time per task implies when everything shares the CPUs.
            "cpu_ratio": sum(cpu[PLAIN].values()) / sum(cpu[DJANGO_HEIMDALL].values())
            if cpu
            else None,
            "check": {
                "every_task_ran_once": all(r["completed"] == r["n"] for r in rounds),
                "heimdall_locks_left": left,
                "ok": left == 0 and all(r["completed"] == r["n"] for r in rounds),
            },
        }

    def _tp_round(self, kind: str, name: str, n: int, run: str, worker: Worker) -> dict[str, Any]:
        t = self.t
        task = self.app.tasks[name]
        gc.collect()
        cpu_before = self._cpu(worker)
        begin = redis_now_us(self.admin)
        for i in range(n):
            task.apply_async((i, n, run))
        enqueued = redis_now_us(self.admin)
        deadline = time.monotonic() + max(60.0, n / 20)
        done = None
        while done is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"throughput round {run} did not finish")
            time.sleep(0.02)
            done = self.admin.get(t.done_key(run))
        cpu_after = self._cpu(worker)
        time.sleep(0.2)  # a task run twice would count past n
        completed = int(self.admin.get(t.count_key(run)) or 0)
        seconds = (int(done) - begin) / 1e6
        cpu = {}
        if cpu_before and cpu_after:
            cpu = {p: (cpu_after[p] - cpu_before[p]) * 1e6 / n for p in CPU_PARTS}
        return {
            "cpu_us_per_task": cpu,
            "kind": kind,
            "run": run,
            "n": n,
            "seconds": seconds,
            "enqueue_seconds": (enqueued - begin) / 1e6,
            "tasks_per_s": n / seconds,
            "completed": completed,
        }

    def _cpu(self, worker: Worker) -> dict[str, float] | None:
        """CPU seconds so far of this process (enqueue), of the worker (its main
        process and pool) and of the Redis server; None without psutil."""
        try:
            import psutil
        except ImportError:
            return None
        main = psutil.Process(worker.process.pid)
        used = 0.0
        for proc in (main, *main.children(recursive=True)):
            times = proc.cpu_times()
            used += times.user + times.system
        info = self.admin.info("cpu")
        return {
            "enqueuing process": time.process_time(),
            "worker": used,
            "redis-server": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        }

    # 3. Rate limits.
    def rate_limits(self, contenders: Iterable[str]) -> list[dict[str, Any]]:
        found = []
        for times, per in self.t.RATE_CONFIGS:
            windows = max(self.mode.rate_windows, math.ceil(self.mode.rate_seconds / per))
            duration = windows * per
            allowed = times * windows
            enqueued = allowed + 2 * times  # a backlog all along the run
            row: dict[str, Any] = {
                "times": times,
                "per": per,
                "limit": f"{times}/{per}s",
                "duration_s": duration,
                "allowed": allowed,
                "enqueued": enqueued,
                "contenders": {},
            }
            for contender in contenders:
                label = f"{contender} {times}/{per}s"
                print(f"  {label}: {duration} s ...", flush=True)
                try:
                    row["contenders"][contender] = self._rate_run(
                        contender, times, per, duration, enqueued
                    )
                except Exception as exc:
                    _log_error(f"rate {label}", exc)
                    row["contenders"][contender] = {"error": f"{type(exc).__name__}: {exc}"}
            found.append(row)
        return found

    def _rate_run(
        self, contender: str, times: int, per: int, duration: int, enqueued: int
    ) -> dict[str, Any]:
        t = self.t
        name = t.rate_task_name(contender, times, per)
        queue = t.queue_of(name)
        key = t.starts_key(name)
        task = self.app.tasks[name]
        window = per * 1_000_000
        worker = self.workers.start(
            self.app, f"rate-{name.removeprefix('suite.')}", [queue], self.mode.rate_concurrency
        )
        try:
            for _ in range(enqueued):
                task.apply_async()
            deadline = time.monotonic() + 60
            while not self.admin.llen(key):
                if time.monotonic() > deadline:
                    raise RuntimeError("no task started within 60 s")
                time.sleep(0.01)
            t0 = _start_stamp(self.admin.lindex(key, 0), contender)
            end = t0 + duration * 1_000_000
            tail = 500_000  # the run's end is known at the end; starts after it count too
            while (now := redis_now_us(self.admin)) < end + tail:
                time.sleep(min(0.25, (end + tail - now) / 1e6))
        finally:
            self.workers.stop(worker)
            delete_matching(self.admin, *queue_patterns(queue))
        rows = [line.decode().split() for line in self.admin.lrange(key, 0, -1)]
        admitted = [int(a) for a, _, _ in rows if a != "-"]
        body = [int(b) for _, b, _ in rows]
        stamps = admitted if contender == DJANGO_HEIMDALL else body
        ids = [task_id for _, _, task_id in rows]
        # The list is in the order the bodies ran; the run starts with the first start.
        t0 = min(stamps)
        end = t0 + duration * 1_000_000
        in_run = sum(t0 <= s < end for s in stamps)
        allowed = times * duration // per
        most = max_in_window(stamps, window)
        return {
            "clock": "admission (heimdall_started_at)"
            if contender == DJANGO_HEIMDALL
            else "task body start (Redis TIME)",
            "starts_recorded": len(stamps),
            "starts_in_run": in_run,
            "allowed": allowed,
            "utilisation": in_run / allowed,
            "max_in_window": most,
            "over_limit": over_limit(stamps, window, times),
            "violation": most > times,
            "body_max_in_window": max_in_window(body, window),
            "ran_twice": len(ids) - len(set(ids)),
            # Every queued task ran before the run ended: the backlog, not the limiter,
            # capped the starts (a limiter that lets everything through ends here).
            "backlog_ran_out": len(ids) >= enqueued and max(stamps) < end,
        }

    def cleanup(self) -> dict[str, Any]:
        t = self.t
        queues = [self.app.conf.task_default_queue, *(t.queue_of(n) for n in t.WORKER_TASKS)]
        deleted = delete_matching(
            self.admin, *(p for q in queues for p in queue_patterns(q)), "unacked*"
        )
        left = sorted(
            k.decode()
            for q in queues
            for p in queue_patterns(q)
            for k in self.admin.scan_iter(match=p, count=1000)
        )
        return {"queue_keys_deleted": deleted, "queue_keys_left": left}


def _once_duplicate(task: Any, already: type[BaseException]) -> Any:
    """celery-once reports a duplicate by raising AlreadyQueued: count it as one."""
    try:
        task.apply_async(DUPLICATE_ARGS)
    except already:
        return "AlreadyQueued"
    raise RuntimeError("celery-once published a duplicate")


def _start_stamp(line: bytes, contender: str) -> int:
    admitted, body, _ = line.decode().split()
    return int(admitted if contender == DJANGO_HEIMDALL else body)


def _log_error(phase: str, exc: BaseException) -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    with (LOGS / "errors.log").open("a") as out:
        out.write(f"--- {phase}\n{''.join(traceback.format_exception(exc))}\n")
    print(f"  {phase} FAILED: {type(exc).__name__}: {exc} (see {LOGS / 'errors.log'})")


# -- 5. the admin listing -------------------------------------------------------------------


def admin_listing(how: str, quick: bool) -> dict[str, Any]:
    """Run ``benchmarks.admin_listing`` with the project's interpreter, or read its JSON."""
    if how == "skip":
        return {"source": "skipped"}
    if how == "reuse" or (how == "auto" and quick and ADMIN_JSON.exists()):
        if not ADMIN_JSON.exists():
            return {"source": "missing", "error": f"{ADMIN_JSON} not found"}
        return _admin_summary(json.loads(ADMIN_JSON.read_text()), "read back (not rerun)")
    python = os.environ.get(peers_env.HOST_PYTHON_ENV) or sys.executable
    log = LOGS / "admin_listing.log"
    print(f"  python -m benchmarks.admin_listing (~1 min; output in {log}) ...", flush=True)
    with log.open("w") as out:
        done = subprocess.run(
            [python, "-m", "benchmarks.admin_listing", "--json", str(ADMIN_JSON)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        error = f"benchmarks.admin_listing exited with {done.returncode}; see {log}"
        if ADMIN_JSON.exists():
            return {**_admin_summary(json.loads(ADMIN_JSON.read_text()), "stale"), "error": error}
        return {"source": "failed", "error": error}
    return _admin_summary(json.loads(ADMIN_JSON.read_text()), "run now")


def _admin_summary(data: dict[str, Any], source: str) -> dict[str, Any]:
    pages = {}
    for name, page in data["pages"].items():
        if name.startswith(("(a)", "(b)")):
            pages[name] = {
                "median_ms": page["timing_ms"]["median"],
                "p90_ms": page["timing_ms"]["p90"],
                "ok": page["check"]["ok"],
            }
    fill = data["fill"]
    return {
        "source": source,
        "started": data["run"]["started"],
        "locks": fill["locks"]["count"],
        "dbsize": fill["dbsize"],
        "pages": pages,
        "targets": [t for t in data["targets"] if t["name"].startswith(("(a)", "(b)"))],
    }


# -- targets --------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    goal: str
    value: str
    passed: bool


def targets(results: dict[str, Any]) -> list[Target]:
    found: list[Target] = []
    enq = results.get("enqueue") or {}
    dh = enq.get("contenders", {}).get(DJANGO_HEIMDALL)
    if dh:
        found.append(
            Target(
                "enqueue: first vs plain (median)",
                f"<= {FIRST_MAX_RATIO:.2f} x",
                f"{dh['first_ratio']:.3f} x",
                dh["first_ratio"] <= FIRST_MAX_RATIO,
            )
        )
        peers = {
            c: v["first_us"]["median"] for c, v in enq["contenders"].items() if c != DJANGO_HEIMDALL
        }
        if peers:
            fastest = min(peers, key=peers.__getitem__)
            ours = dh["first_us"]["median"]
            found.append(
                Target(
                    "enqueue: first vs fastest peer (median)",
                    "<= 1.00 x",
                    f"{ours / peers[fastest]:.3f} x {fastest} ({ours - peers[fastest]:+.1f} µs)",
                    ours <= peers[fastest],
                )
            )
        found.append(
            Target(
                "enqueue: duplicate vs plain (median)",
                f"<= {DUPLICATE_MAX_RATIO:.2f} x",
                f"{dh['duplicate_ratio']:.3f} x",
                dh["duplicate_ratio"] <= DUPLICATE_MAX_RATIO,
            )
        )
    if enq.get("check"):
        found.append(
            Target(
                "enqueue: messages and duplicate answers",
                "as expected",
                f"{enq['check']['messages_queued']}/{enq['check']['messages_expected']} messages",
                enq["check"]["ok"],
            )
        )
    tp = results.get("throughput") or {}
    if tp.get("ratio") is not None:
        found.append(
            Target(
                "worker throughput vs plain (median)",
                f">= {THROUGHPUT_MIN_RATIO:.2f} x",
                f"{tp['ratio']:.3f} x",
                tp["ratio"] >= THROUGHPUT_MIN_RATIO,
            )
        )
        found.append(
            Target(
                "throughput: each task once, no lock left",
                "ok",
                f"{tp['check']['heimdall_locks_left']} locks left",
                tp["check"]["ok"],
            )
        )
    for row in results.get("rate") or []:
        dh = row["contenders"].get(DJANGO_HEIMDALL)
        if not dh:
            continue
        if "error" in dh:
            found.append(Target(f"rate {row['limit']}", "measured", dh["error"], False))
            continue
        found.append(
            Target(
                f"rate {row['limit']}: most in any {row['per']} s window",
                f"<= {row['times']} (0 over)",
                f"{dh['max_in_window']} ({dh['over_limit']} over)",
                not dh["violation"],
            )
        )
        found.append(
            Target(
                f"rate {row['limit']}: achieved / allowed",
                f">= {UTILISATION_MIN:.2f}",
                f"{dh['utilisation']:.3f} ({dh['starts_in_run']}/{dh['allowed']})",
                dh["utilisation"] >= UTILISATION_MIN,
            )
        )
    eager = results.get("eager") or {}
    if eager.get("check"):
        found.append(
            Target(
                "eager: ran, lock released",
                "ok",
                json.dumps(eager["check"]),
                all(eager["check"].values()),
            )
        )
    for t in (results.get("admin") or {}).get("targets", []):
        found.append(Target(f"admin: {t['name']}", t["goal"], t["value"], t["passed"]))
    return found


# -- report -----------------------------------------------------------------------------------


def _rule(width: int) -> str:
    return "-" * width


def _na(contenders: Mapping[str, Any], name: str) -> str:
    return f"n/a ({contenders[name]['reason']})"


def report(results: dict[str, Any], found: list[Target]) -> None:
    run, contenders = results["run"], results["contenders"]
    print()
    print(
        f"django-heimdall side-by-side suite ({run['mode']}): private Redis "
        f"{run['redis_version']}, Python {run['python']}, Celery {run['celery']}, "
        f"kombu {run['kombu']}, redis-py {run['redis_py']}, {run['cpus']} CPUs ({run['cpu']})"
    )
    print(
        "contenders: "
        + ", ".join(
            f"{name} {info['version'] or '-'}"
            + ("" if info["available"] else f" [n/a: {info['reason']}]")
            for name, info in contenders.items()
        )
    )
    print(
        f"load average (1, 5, 15 min) at start {run.get('loadavg_at_start')}, at end "
        f"{run.get('loadavg_at_end')}: other work on the machine shares its CPUs"
    )
    for phase, error in results["errors"].items():
        print(f"PHASE FAILED: {phase}: {error}")

    enq = results.get("enqueue")
    if enq:
        print()
        print(
            f"1. enqueue, no worker (µs; N={enq['n']} per kind after {enq['warmup']} warm-up, "
            f"blocks of {enq['block']} in shuffled order; trips = Redis socket reads and srv µs ="
            " Redis server time, per call)"
        )
        print(
            f"{'contender':<18}{'first med':>10}{'p90':>8}{'÷ plain':>9}{'trips':>6}{'srv µs':>7}"
            f"{'dup med':>10}{'p90':>8}{'÷ plain':>9}{'trips':>6}{'srv µs':>7}"
        )
        print(_rule(98))
        p, r = enq["plain_us"], enq["plain_redis"]
        print(
            f"{'plain Celery':<18}{p['median']:>10.1f}{p['p90']:>8.1f}{1:>8.3f}x"
            f"{r['round_trips']:>6.2f}{r['server_us']:>7.1f}{'-':>10}"
        )
        for name in UNIQUE_CONTENDERS:
            c = enq["contenders"].get(name)
            if c is None:
                print(f"{name:<18}{_na(contenders, name)}")
                continue
            f, d = c["first_us"], c["duplicate_us"]
            fr, dr = c["first_redis"], c["duplicate_redis"]
            print(
                f"{name:<18}{f['median']:>10.1f}{f['p90']:>8.1f}{c['first_ratio']:>8.3f}x"
                f"{fr['round_trips']:>6.2f}{fr['server_us']:>7.1f}{d['median']:>10.1f}"
                f"{d['p90']:>8.1f}{c['duplicate_ratio']:>8.3f}x{dr['round_trips']:>6.2f}"
                f"{dr['server_us']:>7.1f}"
            )
        blocking = enq.get("celery_heimdall_default_duplicate_us")
        if blocking:
            print(
                f"  celery-heimdall above is configured unique_lock_blocking=False; with its "
                f"defaults a duplicate enqueue takes {blocking['median'] / 1000:.0f} ms "
                f"(median of {blocking['n']}: it waits unique_lock_timeout=1 s for the lock)"
            )
        check = enq["check"]
        print(
            f"  check: {check['messages_queued']} messages queued, {check['messages_expected']}"
            f" expected; duplicates answered: {check['duplicates_answered_correctly']}"
        )

    tp = results.get("throughput")
    if tp:
        print()
        print(
            f"2. worker throughput (prefork -c {tp['concurrency']}, {tp['n']} tasks per round, "
            f"first enqueue to last completion on the Redis clock; median of rounds)"
        )
        print(f"{'worker':<44}{'tasks/s':>10}{'÷ plain':>10}  rounds (tasks/s)")
        print(_rule(90))
        for kind, label in (
            (PLAIN, "plain task"),
            (DJANGO_HEIMDALL, "django-heimdall unique + RateLimit(1e6/1s)"),
        ):
            each = " ".join(f"{r['tasks_per_s']:.0f}" for r in tp["rounds"] if r["kind"] == kind)
            ratio = tp["tasks_per_s"][kind] / tp["tasks_per_s"][PLAIN]
            print(f"{label:<44}{tp['tasks_per_s'][kind]:>10.0f}{ratio:>9.3f}x  {each}")
        print(
            f"  ratio of the medians {tp['ratio']:.3f}; median of the ratios of adjacent rounds "
            f"{tp['paired_ratio']:.3f}"
            + (
                f"; implied by the CPU time per task {tp['cpu_ratio']:.3f}"
                if tp.get("cpu_ratio")
                else ""
            )
        )
        cpu = tp.get("cpu_us_per_task")
        if cpu:
            print(
                "  CPU µs per task (median of rounds): "
                + "; ".join(
                    f"{kind}: " + ", ".join(f"{part} {cpu[kind][part]:.0f}" for part in CPU_PARTS)
                    for kind in cpu
                )
            )

    rate = results.get("rate")
    if rate:
        print()
        print(
            "3. rate limits, saturated (prefork -c 4; starts on the Redis clock: django-heimdall "
            "at admission, celery-heimdall at body start)"
        )
        print(
            f"{'limit':<10}{'contender':<18}{'run s':>6}{'queued':>7}{'starts':>7}"
            f"{'allowed':>8}{'achieved÷allowed':>17}{'max/window':>11}{'over':>6}{'twice':>6}"
        )
        print(_rule(96))
        for row in rate:
            for name in RATE_CONTENDERS:
                c = row["contenders"].get(name)
                if c is None:
                    print(f"{row['limit']:<10}{name:<18}{_na(contenders, name)}")
                    continue
                if "error" in c:
                    print(f"{row['limit']:<10}{name:<18}error: {c['error']}")
                    continue
                print(
                    f"{row['limit']:<10}{name:<18}{row['duration_s']:>6}{row['enqueued']:>7}"
                    f"{c['starts_in_run']:>7}{c['allowed']:>8}{c['utilisation']:>17.3f}"
                    f"{c['max_in_window']:>7}/{row['times']:<3}{c['over_limit']:>6}"
                    f"{c['ran_twice']:>6}{'  all queued ran' if c['backlog_ran_out'] else ''}"
                )
        print(
            "  max/window: most starts in any window of the limit's length (over the limit: a "
            "violation); over: starts that had `times` others in the window before them;"
        )
        print(
            "  twice: task ids that started twice; all queued ran: the backlog, not the "
            "limiter, capped the starts"
        )

    eager = results.get("eager")
    if eager:
        print()
        print(f"4. eager mode (task_always_eager=True), .delay() per call, N={eager['n']}")
        print(f"{'call':<36}{'median µs':>10}{'p90':>9}{'÷ plain':>9}{'trips':>7}")
        print(_rule(71))
        plain = eager["latency_us"][PLAIN]["median"]
        for kind, label in ((PLAIN, "plain .delay()"), (DJANGO_HEIMDALL, "django-heimdall unique")):
            lat = eager["latency_us"][kind]
            print(
                f"{label:<36}{lat['median']:>10.1f}{lat['p90']:>9.1f}"
                f"{lat['median'] / plain:>8.3f}x{eager['redis'][kind]['round_trips']:>7.2f}"
            )

    admin = results.get("admin") or {}
    print()
    print(f"5. admin listing (benchmarks.admin_listing, {admin.get('source', 'n/a')})")
    if admin.get("pages"):
        print(
            f"   {admin['locks']:,} held locks, DBSIZE {admin['dbsize']:,}; "
            f"from the run of {admin['started']}"
        )
        print(f"{'page':<44}{'median ms':>10}{'p90 ms':>10}")
        print(_rule(64))
        for name, page in admin["pages"].items():
            print(f"{name:<44}{page['median_ms']:>10.2f}{page['p90_ms']:>10.2f}")
    if admin.get("error"):
        print(f"   error: {admin['error']}")

    print()
    print(f"{'target':<56}{'goal':<20}{'measured':<40}result")
    print(_rule(122))
    for t in found:
        print(f"{t.name:<56}{t.goal:<20}{t.value:<40}{'PASS' if t.passed else 'MISS'}")


def markdown(results: dict[str, Any], found: list[Target]) -> str:
    """The results tables, for docs/benchmarks.md."""
    run, contenders = results["run"], results["contenders"]
    out = [
        f"Run of {run['started']} ({run['mode']}, {run['seconds']:.0f} s): {run['cpus']} CPUs "
        f"({run['cpu']}), {run['platform']}; Python {run['python']}, Celery {run['celery']}, "
        f"kombu {run['kombu']}, redis-py {run['redis_py']}, Django {run['django']}, "
        f"private Redis {run['redis_version']}. Load average (1, 5, 15 min) at start "
        f"{run.get('loadavg_at_start')}, at end {run.get('loadavg_at_end')}.",
        "",
        "Contenders: "
        + ", ".join(
            f"{name} {info['version'] or '-'}"
            + ("" if info["available"] else f" (n/a: {info['reason']})")
            for name, info in contenders.items()
        )
        + ".",
        "",
    ]
    for phase, error in results["errors"].items():
        out += [f"**Phase failed: {phase}**: `{error}`", ""]
    enq = results.get("enqueue")
    if enq:
        p = enq["plain_us"]
        out += [
            f"**1. Enqueue, no worker** (median µs of {enq['n']} calls per kind; ratio to plain "
            "`apply_async` in the same rounds; Redis round trips and Redis server µs per call)",
            "",
            "| contender | first enqueue µs | ÷ plain | trips | server µs "
            "| duplicate µs | ÷ plain | trips | server µs |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
            f"| plain Celery `apply_async` | {p['median']:.1f} | 1.000 | "
            f"{enq['plain_redis']['round_trips']:.2f} | {enq['plain_redis']['server_us']:.1f} "
            "| - | - | - | - |",
        ]
        for name in UNIQUE_CONTENDERS:
            c = enq["contenders"].get(name)
            if c is None:
                out.append(f"| {name} | {_na(contenders, name)} | | | | | | | |")
                continue
            label = name + (" ¹" if name == CELERY_HEIMDALL else "")
            fr, dr = c["first_redis"], c["duplicate_redis"]
            out.append(
                f"| {label} | {c['first_us']['median']:.1f} | {c['first_ratio']:.3f} | "
                f"{fr['round_trips']:.2f} | {fr['server_us']:.1f} | "
                f"{c['duplicate_us']['median']:.1f} | {c['duplicate_ratio']:.3f} | "
                f"{dr['round_trips']:.2f} | {dr['server_us']:.1f} |"
            )
        blocking = enq.get("celery_heimdall_default_duplicate_us")
        if blocking:
            out += [
                "",
                "¹ configured `unique_lock_blocking=False`; with its defaults a duplicate "
                f"enqueue takes {blocking['median'] / 1000:.0f} ms (median of {blocking['n']}): "
                "it waits `unique_lock_timeout` (1 s) for the lock.",
            ]
        out.append("")
    tp = results.get("throughput")
    if tp:
        out += [
            f"**2. Worker throughput** (prefork `-c {tp['concurrency']}`, {tp['n']} tasks per "
            "round, median of rounds)",
            "",
            "| worker | tasks/s | ÷ plain | rounds |",
            "|---|--:|--:|---|",
        ]
        for kind, label in (
            (PLAIN, "plain task"),
            (DJANGO_HEIMDALL, "django-heimdall, unique + `RateLimit((1_000_000, 1))`"),
        ):
            each = ", ".join(f"{r['tasks_per_s']:.0f}" for r in tp["rounds"] if r["kind"] == kind)
            out.append(
                f"| {label} | {tp['tasks_per_s'][kind]:.0f} | "
                f"{tp['tasks_per_s'][kind] / tp['tasks_per_s'][PLAIN]:.3f} | {each} |"
            )
        out += [
            "",
            f"Ratio of the medians {tp['ratio']:.3f} (the target's measure); median of the "
            f"ratios of adjacent rounds {tp['paired_ratio']:.3f}"
            + (
                f"; implied by the CPU time per task below {tp['cpu_ratio']:.3f}."
                if tp.get("cpu_ratio")
                else "."
            ),
        ]
        cpu = tp.get("cpu_us_per_task")
        if cpu:
            out += [
                "",
                "CPU time per task (µs, median of rounds; "
                f"the machine has {run['cpus']} CPUs for all of them):",
                "",
                "| worker | " + " | ".join(CPU_PARTS) + " | total |",
                "|---|" + "--:|" * (len(CPU_PARTS) + 1),
            ]
            for kind in cpu:
                parts = [cpu[kind][part] for part in CPU_PARTS]
                out.append(
                    f"| {kind} | "
                    + " | ".join(f"{v:.0f}" for v in parts)
                    + f" | {sum(parts):.0f} |"
                )
        out.append("")
    rate = results.get("rate")
    if rate:
        out += [
            "**3. Rate limits, saturated** (prefork `-c 4`; most starts in any window of the "
            "limit's length, starts over the limit, achieved ÷ allowed starts over the run)",
            "",
            "| limit | contender | run s | queued | starts | allowed | achieved ÷ allowed "
            "| most in a window | over the limit |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for row in rate:
            for name in RATE_CONTENDERS:
                c = row["contenders"].get(name)
                if c is None:
                    out.append(f"| {row['limit']} | {name} | {_na(contenders, name)} |||||||")
                elif "error" in c:
                    out.append(f"| {row['limit']} | {name} | error: {c['error']} |||||||")
                else:
                    most = f"{c['max_in_window']} / {row['times']}"
                    if c["violation"]:
                        most = f"**{most}**"
                    ran_out = " ²" if c["backlog_ran_out"] else ""
                    out.append(
                        f"| {row['limit']} | {name} | {row['duration_s']} | {row['enqueued']} | "
                        f"{c['starts_in_run']}{ran_out} | {c['allowed']} | "
                        f"{c['utilisation']:.3f} | {most} | {c['over_limit']} |"
                    )
        if any(c.get("backlog_ran_out") for row in rate for c in row["contenders"].values() if c):
            out += [
                "",
                "² every queued task had started before the run ended: the backlog, not the "
                "limiter, capped the starts.",
            ]
        out.append("")
    eager = results.get("eager")
    if eager:
        plain = eager["latency_us"][PLAIN]["median"]
        out += [
            f"**4. Eager mode** (`task_always_eager=True`, `.delay()`, median of {eager['n']})",
            "",
            "| call | median µs | ÷ plain | Redis round trips |",
            "|---|--:|--:|--:|",
        ]
        for kind, label in ((PLAIN, "plain task"), (DJANGO_HEIMDALL, "django-heimdall unique")):
            lat = eager["latency_us"][kind]
            out.append(
                f"| {label} | {lat['median']:.1f} | {lat['median'] / plain:.3f} | "
                f"{eager['redis'][kind]['round_trips']:.2f} |"
            )
        out.append("")
    admin = results.get("admin") or {}
    if admin.get("pages"):
        out += [
            f"**5. Admin listing** (`benchmarks.admin_listing`, {admin['source']}, run of "
            f"{admin['started']}: {admin['locks']:,} held locks, DBSIZE {admin['dbsize']:,})",
            "",
            "| page | median ms | p90 ms |",
            "|---|--:|--:|",
        ]
        out += [
            f"| {name} | {p['median_ms']:.2f} | {p['p90_ms']:.2f} |"
            for name, p in admin["pages"].items()
        ]
        out.append("")
    out += ["**Targets**", "", "| target | goal | measured | result |", "|---|---|---|---|"]
    out += [
        f"| {t.name} | {t.goal} | {t.value} | {'PASS' if t.passed else '**MISS**'} |" for t in found
    ]
    return "\n".join(out) + "\n"


def update_docs(text: str, path: Path) -> bool:
    """Put ``text`` between the results markers of ``path``; False if it has none."""
    if not path.exists():
        return False
    doc = path.read_text()
    pattern = re.compile(re.escape(MD_START) + r".*?" + re.escape(MD_END), re.DOTALL)
    if not pattern.search(doc):
        return False
    path.write_text(pattern.sub(lambda _: f"{MD_START}\n{text}{MD_END}", doc, count=1))
    return True


# -- entry point ------------------------------------------------------------------------------


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.suite",
        description="django-heimdall vs plain Celery and its peers: enqueue, worker "
        "throughput, rate-limit accuracy, eager mode and the admin listing.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer calls, shorter rate-limit runs (~1.5 min)"
    )
    parser.add_argument(
        "--admin",
        choices=("auto", "run", "reuse", "skip"),
        default="auto",
        help="run benchmarks.admin_listing (~1 min), read its JSON back, or skip it; "
        "auto: run, but read back with --quick when its JSON exists",
    )
    parser.add_argument(
        "--only",
        default=",".join(PHASES),
        help="comma-separated phases to run (default: all)",
    )
    parser.add_argument("--n", type=int, help="timed enqueue and eager calls per kind")
    parser.add_argument("--tp-n", type=int, help="tasks per throughput round")
    parser.add_argument("--tp-rounds", type=int, help="throughput rounds per worker")
    parser.add_argument("--seed", type=int, default=1, help="seed of the call order (1)")
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help=f"where to write the results (default {DEFAULT_JSON.relative_to(ROOT)}; "
        "suite-quick.json or suite-partial.json for --quick or --only runs); the tables "
        "and the chart go next to it (.md, .png)",
    )
    parser.add_argument(
        "--no-docs",
        action="store_true",
        help=f"do not write {DOCS_PNG.relative_to(ROOT)} and the tables of "
        f"{DOCS_MD.relative_to(ROOT)} (only full runs of every phase write them)",
    )
    parser.add_argument(
        "--reinstall", action="store_true", help="rebuild the peer virtualenv from scratch"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the 1-minute load average to fall below "
        f"{QUIET_LOAD} (other work on the machine skews every ratio); default 0",
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 1 on a MISS")
    args = parser.parse_args(argv)
    args.phases = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = args.phases - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    for name in ("n", "tp_n", "tp_rounds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} is too small")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not peers_env.inside():
        python = peers_env.ensure(reinstall=args.reinstall)
        peers_env.reexec(python, [a for a in argv if a != "--reinstall"])
    return measure(args)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: workers, queues, Redis


def measure(args: argparse.Namespace) -> int:
    from django_heimdall.testing import EmbeddedRedis

    signal.signal(signal.SIGTERM, _terminate)
    mode = dataclasses.replace(QUICK if args.quick else FULL)
    if args.n:
        mode.enqueue_n = mode.eager_n = args.n
    if args.tp_n:
        mode.tp_n = args.tp_n
    if args.tp_rounds:
        mode.tp_rounds = args.tp_rounds
    _wait_quiet(args.wait_quiet)
    started, began = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.monotonic()
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / "errors.log").write_text("")
    run_id = uuid.uuid4().hex[:10]
    db = RESULTS / f"suite-{run_id}.sqlite3"
    results: dict[str, Any] = {"errors": {}}
    server = EmbeddedRedis()
    workers = Workers()
    try:
        server.start()
        print(f"private Redis at {server.url}; run {run_id}; logs in {LOGS}", flush=True)
        os.environ.update(
            {
                "HEIMDALL_SUITE_REDIS_URL": server.url,
                "HEIMDALL_SUITE_RUN_ID": run_id,
                "HEIMDALL_SUITE_DB": str(db),
                "DJANGO_SETTINGS_MODULE": "benchmarks.suite_settings",
            }
        )
        from django.core.management import call_command

        from benchmarks import suite_tasks as t  # django.setup() with the settings above

        call_command("migrate", verbosity=0)
        suite = Suite(t, mode, workers, args.seed)
        results["contenders"] = _contenders(t)
        results["run"] = _run_info(suite, args, started)
        available = {n for n, c in results["contenders"].items() if c["available"]}

        phases: list[tuple[str, Callable[[], Any]]] = [
            ("enqueue", suite.enqueue),
            ("eager", suite.eager),
            ("throughput", suite.throughput),
            ("rate", lambda: suite.rate_limits([c for c in RATE_CONTENDERS if c in available])),
        ]
        for phase, run in phases:
            if phase not in args.phases:
                continue
            print(f"{phase} ...", flush=True)
            try:
                results[phase] = run()
            except Exception as exc:
                _log_error(phase, exc)
                results["errors"][phase] = f"{type(exc).__name__}: {exc}"
        results["cleanup"] = suite.cleanup()
    except BaseException as exc:
        if not isinstance(exc, Exception):  # Ctrl-C, SIGTERM
            print(f"interrupted ({type(exc).__name__}): stopping the workers and the Redis")
        raise
    finally:
        workers.stop_all()
        server.stop()
        db.unlink(missing_ok=True)
    if "admin" in args.phases:
        print("admin ...", flush=True)
        results["admin"] = admin_listing(args.admin, args.quick)
    results["run"]["seconds"] = time.monotonic() - began
    results["run"]["loadavg_at_end"] = _loadavg()
    found = targets(results)
    results["targets"] = [asdict(t) for t in found]

    report(results, found)
    cleanup = results["cleanup"]
    print()
    print(
        f"clean-up: {len(workers.started)} workers stopped, {cleanup['queue_keys_deleted']} "
        f"queue keys deleted ({len(cleanup['queue_keys_left'])} left), private Redis stopped"
    )
    from benchmarks.suite_chart import chart

    complete = not args.quick and args.phases == set(PHASES)
    path = args.json or RESULTS / (
        "suite.json" if complete else f"suite-{'quick' if args.quick else 'partial'}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results, found)
    path.with_suffix(".md").write_text(text)
    chart(results, path.with_suffix(".png"))
    print(f"results written to {path} (tables: .md, chart: .png next to it)")
    if not complete or args.no_docs:
        print(f"{DOCS_MD.relative_to(ROOT)} and {DOCS_PNG.relative_to(ROOT)} left alone", end="")
        print(" (--no-docs)" if args.no_docs else " (written by full runs of every phase only)")
    else:
        chart(results, DOCS_PNG)
        print(f"chart written to {DOCS_PNG}")
        if update_docs(text, DOCS_MD):
            print(f"tables written into {DOCS_MD}")
        else:
            print(f"{DOCS_MD} has no {MD_START} marker: tables only in {path.with_suffix('.md')}")
    failed = results["errors"] or not all(t.passed for t in found)
    return 1 if args.strict and failed else 0


def _contenders(t: Any) -> dict[str, dict[str, Any]]:
    failed = peers_env.install_failures()
    found = {DJANGO_HEIMDALL: {"version": _version("django-heimdall"), "available": True}}
    for peer in t.PEERS:
        reason = failed.get(peer) or t.PEER_ERRORS.get(peer)
        found[peer] = {"version": _version(peer), "available": reason is None}
        if reason:
            found[peer]["reason"] = reason
    if found[CELERY_HEIMDALL]["available"]:
        found[CELERY_HEIMDALL]["rate_limit_api"] = t.CELERY_HEIMDALL_RATE_API
    return found


def _run_info(suite: Suite, args: argparse.Namespace, started: str) -> dict[str, Any]:
    import django

    return {
        "mode": "quick" if args.quick else "full",
        "mode_settings": asdict(suite.mode),
        "started": started,
        "seed": args.seed,
        "redis": "private embedded",
        "redis_version": suite.admin.info("server")["redis_version"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu(),
        "cpus": os.cpu_count(),
        "django": django.get_version(),
        "celery": _version("celery"),
        "kombu": _version("kombu"),
        "redis_py": _version("redis"),
        "django_redis": _version("django-redis"),
        "loadavg_at_start": _loadavg(),
    }


def _wait_quiet(seconds: float) -> None:
    load = _loadavg()
    if load is None:
        return
    deadline = time.monotonic() + seconds
    if load[0] >= QUIET_LOAD and seconds > 0:
        print(f"load average {load[0]}: waiting up to {seconds:.0f} s for < {QUIET_LOAD} ...")
        while (load := _loadavg() or [0.0])[0] >= QUIET_LOAD and time.monotonic() < deadline:
            time.sleep(5)
    if load[0] >= QUIET_LOAD:
        print(f"warning: load average {load[0]}: other work shares the CPUs, ratios will be noisy")


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
