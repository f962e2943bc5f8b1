"""What every benchmark section shares: interleaved timing, Redis server counters,
worker processes, order and window statistics, targets, the section registry and
Markdown tables.

Adding a measurement is one function, in ``benchmarks/sections.py`` (or a module
named in ``suite.SECTION_MODULES``), with its tasks in ``benchmarks/tasks.py``::

    @section("name", "What it measures", full={"n": 1000}, quick={"n": 100})
    def name(ctx: Context, p: Params) -> Result:
        ...
        return Result(data, lines, targets)

``p`` holds the section's parameters (``full`` or ``quick``, overridden by
``--set name.n=...``); ``data`` goes to the JSON, ``lines`` (Markdown) to the
terminal and ``docs/benchmarks.md``, ``targets`` to the PASS/MISS table. It runs
with ``python -m benchmarks --only name``.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import math
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

clock = time.perf_counter_ns
Params = SimpleNamespace


# -- timing -------------------------------------------------------------------------------


@dataclass
class Summary:
    """Timed samples, in the unit chosen by ``of`` (µs by default)."""

    n: int
    median: float
    p90: float
    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, samples_ns: list[int], unit_ns: int = 1_000) -> Summary:
        data = sorted(samples_ns)
        p90 = data[max(0, math.ceil(0.90 * len(data)) - 1)]  # nearest rank
        found = (statistics.median(data), p90, statistics.fmean(data), data[0], data[-1])
        return cls(len(data), *(value / unit_ns for value in found))


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


def asdicts(found: Mapping[str, Any]) -> dict[str, Any]:
    """Dataclass values as dicts, for the JSON."""
    return {name: asdict(value) for name, value in found.items()}


def timed(
    calls: Mapping[str, Callable[[], Any]],
    n: int,
    warmup: int,
    block: int,
    rng: random.Random,
    unit_ns: int = 1_000,
) -> dict[str, Summary]:
    """``warmup`` calls of each entry, then ``n`` interleaved timed ones, summarised."""
    interleaved(calls, warmup, block, rng)
    gc.collect()
    samples = interleaved(calls, n, block, rng)
    return {name: Summary.of(found, unit_ns) for name, found in samples.items()}


# -- Redis ---------------------------------------------------------------------------------


def redis_now_us(client: Any) -> int:
    sec, usec = client.time()
    return int(sec) * 1_000_000 + int(usec)


def script_commands() -> frozenset[str]:
    """The commands django-heimdall's Lua scripts call (their time is in their EVALSHA)."""
    import django_heimdall

    found: set[str] = set()
    for script in Path(django_heimdall.__file__).parent.rglob("*.lua"):
        text = script.read_text()
        found.update(c.lower() for c in re.findall(r"redis\.call\(\s*['\"](\w+)['\"]", text))
    return frozenset(found)


@dataclass
class RedisCost:
    """What some work cost the Redis server, from ``INFO`` deltas (less INFO's own)."""

    round_trips: float  # requests read from client sockets (total_reads_processed)
    commands: float  # commandstats calls, those run inside Lua scripts included
    scripts: float  # EVALSHA + EVAL
    server_us: float  # commandstats usec, a script's own commands counted once (in it)
    per_command: dict[str, float] = field(default_factory=dict)

    def per(self, n: int) -> RedisCost:
        totals = (self.round_trips, self.commands, self.scripts, self.server_us)
        return RedisCost(*(v / n for v in totals), {k: c / n for k, c in self.per_command.items()})


class ServerCounter:
    """Redis server counters around a piece of work. Exact on a server that has no
    other clients meanwhile (the suite's private one); worker traffic is included."""

    def __init__(self, client: Any):
        self.client = client
        self.inner = script_commands()
        self.info_reads = 0
        self.info_reads = round(self.delta(lambda: None).round_trips)

    def _snapshot(self) -> tuple[int, dict[str, tuple[int, int]]]:
        info = self.client.info("all")  # one call: stats and commandstats
        calls = {
            key.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
            for key, value in info.items()
            if key.startswith("cmdstat_") and key != "cmdstat_info"
        }
        return int(info["total_reads_processed"]), calls

    def delta(self, work: Callable[[], Any]) -> RedisCost:
        reads, before = self._snapshot()
        work()
        reads_after, after = self._snapshot()
        diff = {
            name: (calls - before.get(name, (0, 0))[0], usec - before.get(name, (0, 0))[1])
            for name, (calls, usec) in after.items()
        }
        diff = {name: value for name, value in diff.items() if value[0]}
        scripts = sum(diff.get(name, (0, 0))[0] for name in ("evalsha", "eval", "eval_ro"))
        inner = self.inner if scripts else frozenset()
        return RedisCost(
            round_trips=reads_after - reads - self.info_reads,
            commands=sum(calls for calls, _ in diff.values()),
            scripts=scripts,
            server_us=sum(usec for name, (_, usec) in diff.items() if name not in inner),
            per_command={name: calls for name, (calls, _) in sorted(diff.items())},
        )

    def cost(self, call: Callable[[], Any], k: int) -> RedisCost:
        """Per call, over ``k`` calls."""
        return self.delta(lambda: [call() for _ in range(k)]).per(k)


def glob(text: str) -> str:
    """``text`` with the glob characters of SCAN MATCH escaped."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def delete_matching(client: Any, *patterns: str) -> int:
    """Delete the keys matching ``patterns`` (SCAN, never KEYS or FLUSHDB)."""
    found = [key for pattern in patterns for key in client.scan_iter(match=pattern, count=1000)]
    return sum(client.delete(*found[i : i + 500]) for i in range(0, len(found), 500))


def queue_patterns(queue: str) -> list[str]:
    """A kombu queue, its priority sub-queues and its exchange binding tables."""
    return [glob(queue), f"{glob(queue)}\x06\x16*", f"_kombu.binding*.{glob(queue)}"]


# -- statistics of starts -------------------------------------------------------------------


def max_in_window(stamps_us: Iterable[int], window_us: int) -> int:
    """The most starts in any half-open window ``[t, t + window)``."""
    return max(window_counts(stamps_us, window_us), default=0)


def over_limit(stamps_us: Iterable[int], window_us: int, times: int) -> int:
    """Starts admitted although ``times`` others had started in the window before them."""
    return sum(count > times for count in window_counts(stamps_us, window_us))


def window_counts(stamps_us: Iterable[int], window_us: int) -> list[int]:
    """For each start (in time order): the starts in the window that ends with it."""
    stamps = sorted(stamps_us)
    counts, lo = [], 0
    for hi, t in enumerate(stamps):
        while t - stamps[lo] >= window_us:
            lo += 1
        counts.append(hi - lo + 1)
    return counts


def kendall_tau(order: list[int]) -> float:
    """Kendall's tau between ``order`` (distinct values, e.g. enqueue numbers in start
    order) and its sorted self: 1.0 = started in enqueue order, -1.0 = reversed."""
    pairs = len(order) * (len(order) - 1) / 2
    seen: list[int] = []
    inversions = 0
    for value in order:
        at = bisect.bisect(seen, value)
        inversions += len(seen) - at  # earlier starts enqueued after this one
        seen.insert(at, value)
    return 1 - 2 * inversions / pairs if pairs else 1.0


# -- worker processes ------------------------------------------------------------------------


class Worker:
    """``celery worker`` (prefork) in a session of its own, logging to a file."""

    def __init__(self, app_module: str, label: str, queues: list[str], concurrency: int, log: Path):
        self.label, self.log_path = label, log
        self.node = f"{label}@{socket.gethostname()}"
        self._log = log.open("w")
        command = [sys.executable, "-m", "celery", "-A", app_module, "worker", "-P", "prefork"]
        command += ["-c", str(concurrency), "-Q", ",".join(queues), "-l", "WARNING"]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.process = subprocess.Popen(
            [*command, "-n", f"{label}@%h"],
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

    def cpu_seconds(self) -> float:
        """CPU time so far of the worker's main process and pool (needs psutil)."""
        import psutil

        main = psutil.Process(self.process.pid)
        return sum(sum(p.cpu_times()[:2]) for p in (main, *main.children(recursive=True)))

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL for whatever of its group is left."""
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(10)
        self._log.close()


# -- targets, sections, tables ---------------------------------------------------------------


@dataclass
class Target:
    name: str
    goal: str
    value: str
    passed: bool


@dataclass
class Result:
    data: dict[str, Any]
    lines: list[str]  # Markdown
    targets: list[Target] = field(default_factory=list)


@dataclass
class Context:
    """What a section gets: the Celery app and tasks module, a Redis client of its
    own with a counter on it, the started workers (stopped by the suite), a seeded
    random generator and the contenders that could be installed."""

    app: Any
    t: Any  # benchmarks.tasks
    redis: Any
    counter: ServerCounter
    rng: random.Random
    contenders: dict[str, dict[str, Any]]
    logs: Path
    workers: list[Worker] = field(default_factory=list)

    def worker(self, label: str, queues: list[str], concurrency: int) -> Worker:
        worker = Worker(self.t.__name__, label, queues, concurrency, self.logs / f"{label}.log")
        self.workers.append(worker)
        worker.wait_ready(self.app)
        return worker

    def available(self, name: str) -> bool:
        return self.contenders.get(name, {}).get("available", False)


@dataclass
class Section:
    name: str
    title: str
    run: Callable[[Context, Params], Result]
    full: dict[str, Any]
    quick: dict[str, Any]


SECTIONS: dict[str, Section] = {}


def section(
    name: str, title: str, full: dict[str, Any], quick: dict[str, Any] | None = None
) -> Callable[[Callable[[Context, Params], Result]], Callable[[Context, Params], Result]]:
    """Register a measurement; sections run in the order they are registered."""

    def register(run: Callable[[Context, Params], Result]) -> Callable[[Context, Params], Result]:
        SECTIONS[name] = Section(name, title, run, full, {**full, **(quick or {})})
        return run

    return register


def bound(
    name: str, value: float, op: str, limit: float, unit: str = " x", shown: str = ""
) -> Target:
    """The target ``value <= limit`` or ``value >= limit`` (``op``)."""
    passed = value <= limit if op == "<=" else value >= limit
    return Target(name, f"{op} {limit:g}{unit}", shown or f"{value:.3f}{unit}", passed)


def row(*cells: Any) -> str:
    return " | ".join(map(str, cells))


def table(header: str, rows: Iterable[str], left: int = 1) -> list[str]:
    """A Markdown table: the header and each row are cells joined by " | " (``row``);
    the first ``left`` columns align left, the others right."""
    count = header.count(" | ") + 1
    rule = "|".join(["---"] * left + ["--:"] * (count - left))
    return [f"| {header} |", f"|{rule}|", *(f"| {line} |" for line in rows)]


def target_table(found: Iterable[Target]) -> list[str]:
    rows = (row(t.name, t.goal, t.value, "PASS" if t.passed else "**MISS**") for t in found)
    return table("target | goal | measured | result", rows, left=4)
