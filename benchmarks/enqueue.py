"""What a HeimdallTask costs at enqueue, next to a plain Celery task.

    python -m benchmarks.enqueue [--n 3000] [--k 1000] [--json PATH]

Against one Redis (``REDIS_URL``, or an embedded ``redis-server`` when it is unset),
with Django configured from ``benchmarks.settings`` (a key prefix and a queue of
its own for this run; no worker consumes the queue), it measures:

1. ``apply_async`` of a plain ``@app.task``;
2. the first enqueue of a unique HeimdallTask (distinct arguments: a new lock each);
3. a duplicate enqueue (the lock is held: the holder's result, nothing published);

interleaved in blocks, so that machine noise hits the three kinds alike; then the
components of a first enqueue; then, from the server's ``INFO`` counters, the Redis
commands and round trips of each store decision and of each kind of enqueue.
Everything the run wrote is deleted at the end (SCAN MATCH, never FLUSHDB).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import django
import redis
from celery import Celery, Task
from kombu.utils.uuid import uuid

from benchmarks.common import Summary as Latency
from django_heimdall import HeimdallTask, Rate, keys, signals
from django_heimdall.store import ACQUIRED, DUPLICATE, OWNED, STARTED, Store, get_store

SETTINGS_MODULE = "benchmarks.settings"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "enqueue.json"

PLAIN_NAME = "benchmarks.plain"
UNIQUE_NAME = "benchmarks.unique"
TIMED_NAME = "benchmarks.unique_timed"
#: Lock lifetime of the benchmark's locks: they vanish by themselves if a run is killed.
LOCK_TIMEOUT_S = 900
#: The arguments every duplicate enqueue repeats.
DUPLICATE_ARGS = (-1,)
#: A rate no start ever exceeds: the start decision always counts and starts.
HIGH_RATE = Rate(10**9, 3600.0)

# Targets: median first enqueue and median duplicate, relative to a plain apply_async.
UNIQUE_MAX_RATIO = 1.05
DUPLICATE_MAX_RATIO = 0.30
#: Operations per INFO snapshot pair when counting Redis commands.
COUNT_CHUNK = 100

KINDS = ("plain", "unique_first", "duplicate")
# The steps a first enqueue adds to a plain apply_async, in the order it takes them.
POLICY_STEP = "policy lookup (heimdall_policy)"
IDENTITY_STEP = "identity (bind, JSON, SHA-1)"
STORE_STEP = "get_store()"
ACQUIRE_STEP = "store.acquire (EVALSHA round trip)"
SIGNAL_STEP = "lock_acquired.send (no receiver)"
HEIMDALL_STEPS = (POLICY_STEP, IDENTITY_STEP, STORE_STEP, ACQUIRE_STEP, SIGNAL_STEP)
IN_SITU_PLAIN = "plain apply_async"
IN_SITU_FIRST = "unique, first enqueue"
IN_SITU_ACQUIRE = "  of which store.acquire"
IN_SITU_PUBLISH = "  of which Celery publish (super)"
IN_SITU_REST = "  of which the rest (policy, key...)"
LABELS = {
    "plain": "plain apply_async",
    "unique_first": "unique, first enqueue",
    "duplicate": "unique, duplicate",
}

Clock = Callable[[], int]
clock: Clock = time.perf_counter_ns


# -- statistics ------------------------------------------------------------------------


def interleaved(calls: Mapping[str, Callable[[], Any]], n: int, block: int) -> dict[str, list[int]]:
    """Time ``n`` calls of each entry, in blocks of ``block`` per entry, cycling
    through every order of the entries so each sees the same machine conditions."""
    samples: dict[str, list[int]] = {name: [] for name in calls}
    orders = list(itertools.permutations(calls))
    done = 0
    for round_no in itertools.count():
        size = min(block, n - done)
        if size <= 0:
            break
        for name in orders[round_no % len(orders)]:
            call, out = calls[name], samples[name]
            for _ in range(size):
                start = clock()
                call()
                out.append(clock() - start)
        done += size
    return samples


# -- Redis server counters ---------------------------------------------------------------


def _script_commands() -> dict[str, frozenset[str]]:
    """The Redis commands each heimdall Lua script may call (lower case, as in INFO)."""
    found = {}
    for name in ("acquire", "release", "start"):
        text = resources.files("django_heimdall").joinpath(f"lua/{name}.lua").read_text()
        found[name] = frozenset(
            cmd.lower() for cmd in re.findall(r"redis\.call\(\s*['\"](\w+)['\"]", text)
        )
    return found


SCRIPT_COMMANDS = _script_commands()


@dataclass
class Snapshot:
    calls: dict[str, int]
    reads: int | None  # total_reads_processed: requests read from client sockets


@dataclass
class Counted:
    """Server-side counts per operation.

    ``commands`` is every command INFO commandstats counted, including those a
    Lua script ran with redis.call(); ``top_level`` leaves those out (the commands
    clients sent); ``round_trips`` is the server's count of socket reads. The work
    is counted in chunks; a chunk where some count is not a whole multiple of its
    operations had commands of other clients in it and is left out (``raw_commands``
    keeps them all).
    """

    ops: int  # operations in the clean chunks
    chunks: int
    clean_chunks: int
    evalsha: float
    eval: float
    script_admin: float
    commands: float
    in_scripts: float
    top_level: float
    round_trips: float | None
    raw_commands: float
    per_command: dict[str, float] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.clean_chunks > 0


class ServerCounter:
    """Deltas of ``INFO`` counters around a piece of work, less the INFO calls."""

    def __init__(self, admin: Any, chunk: int = 100):
        self.admin = admin
        self.chunk = chunk
        self.baseline: dict[str, int] = {}
        self.baseline_reads = 0

    def snapshot(self) -> Snapshot:
        info = self.admin.info("all")  # one call: commandstats and stats
        calls = {
            key.removeprefix("cmdstat_"): int(value["calls"])
            for key, value in info.items()
            if key.startswith("cmdstat_")
        }
        reads = info.get("total_reads_processed")
        return Snapshot(calls, None if reads is None else int(reads))

    def delta(self, work: Callable[[], Any]) -> tuple[dict[str, int], int | None]:
        before = self.snapshot()
        work()
        after = self.snapshot()
        calls = {
            name: count - before.calls.get(name, 0) - self.baseline.get(name, 0)
            for name, count in after.calls.items()
        }
        reads = None
        if after.reads is not None and before.reads is not None:
            reads = after.reads - before.reads - self.baseline_reads
        return {name: count for name, count in calls.items() if count}, reads

    def calibrate(self, times: int = 10) -> None:
        """Learn what the two INFO calls themselves add (one ``info`` call, one read)."""
        self.baseline, self.baseline_reads = {}, 0
        seen = [self.delta(lambda: None) for _ in range(times)]
        self.baseline = min((calls for calls, _ in seen), key=lambda c: sum(c.values()))
        self.baseline_reads = min(reads or 0 for _, reads in seen)

    def count(self, ops: int, op: Callable[[], Any], scripts: Iterable[str] = ()) -> Counted:
        """Count ``ops`` calls of ``op``; ``scripts`` are the heimdall scripts it may run."""
        sizes = [self.chunk] * (ops // self.chunk) + [ops % self.chunk] * bool(ops % self.chunk)
        clean: Counter[str] = Counter()
        everything: Counter[str] = Counter()
        clean_ops = clean_chunks = 0
        clean_reads: int | None = 0
        all_reads: int | None = 0
        for size in sizes:
            calls, reads = self.delta(lambda size=size: _repeat(op, size))
            everything.update(calls)
            all_reads = None if reads is None or all_reads is None else all_reads + reads
            values = [*calls.values(), *([reads] if reads is not None else [])]
            if all(value % size == 0 for value in values):
                clean.update(calls)
                clean_reads = None if reads is None or clean_reads is None else clean_reads + reads
                clean_ops += size
                clean_chunks += 1
        if not clean_ops:  # every chunk had foreign commands: report them all, flagged
            clean, clean_reads, clean_ops = everything, all_reads, ops
        inner = frozenset().union(*(SCRIPT_COMMANDS[name] for name in scripts))
        total = sum(clean.values())
        in_scripts = sum(count for name, count in clean.items() if name in inner)
        return Counted(
            ops=clean_ops,
            chunks=len(sizes),
            clean_chunks=clean_chunks,
            evalsha=clean["evalsha"] / clean_ops,
            eval=(clean["eval"] + clean["eval_ro"]) / clean_ops,
            script_admin=sum(c for n, c in clean.items() if n.startswith("script")) / clean_ops,
            commands=total / clean_ops,
            in_scripts=in_scripts / clean_ops,
            top_level=(total - in_scripts) / clean_ops,
            round_trips=None if clean_reads is None else clean_reads / clean_ops,
            raw_commands=sum(everything.values()) / ops,
            per_command={name: clean[name] / clean_ops for name in sorted(clean) if clean[name]},
        )


# -- the benchmark ----------------------------------------------------------------------


class _PublishTimer(Task):
    """Times Celery's ``apply_async`` when HeimdallTask calls it through ``super()``."""

    publish_ns: list[int]

    def apply_async(self, *args: Any, **kwargs: Any) -> Any:
        start = clock()
        try:
            return super().apply_async(*args, **kwargs)
        finally:
            self.publish_ns.append(clock() - start)


class TimedHeimdallTask(HeimdallTask, _PublishTimer):
    """MRO: HeimdallTask -> _PublishTimer -> Task, so only the publish is timed."""


class Bench:
    def __init__(self, n: int, k: int, warmup: int, block: int):
        from django.conf import settings

        self.n, self.k, self.warmup, self.block = n, k, warmup, block
        self.settings = settings
        self.app = Celery("heimdall-bench", set_as_current=True)
        self.app.config_from_object("django.conf:settings", namespace="CELERY")

        @self.app.task(name=PLAIN_NAME, shared=False)
        def plain(x: int) -> int:
            return x

        @self.app.task(
            name=UNIQUE_NAME,
            base=HeimdallTask,
            shared=False,
            heimdall={"unique": True, "unique_timeout": LOCK_TIMEOUT_S},
        )
        def unique(x: int) -> int:
            return x

        @self.app.task(
            name=TIMED_NAME,
            base=TimedHeimdallTask,
            shared=False,
            heimdall={"unique": True, "unique_timeout": LOCK_TIMEOUT_S},
        )
        def unique_timed(x: int) -> int:
            return x

        self.plain: Task = self.app.tasks[PLAIN_NAME]
        self.unique = cast(HeimdallTask, self.app.tasks[UNIQUE_NAME])
        self.timed = cast(TimedHeimdallTask, self.app.tasks[TIMED_NAME])
        self.timed.publish_ns = []
        self.store: Store = get_store()
        # A connection of our own for INFO, LLEN and the clean-up.
        self.admin = redis.Redis.from_url(settings.REDIS_URL)
        self.counter = ServerCounter(self.admin, COUNT_CHUNK)
        self._args = itertools.count()
        self.published = 0  # messages this run put on its queue
        self.holder = ""

    # Each call gets arguments no other call of the run had.
    def next_args(self) -> tuple[int]:
        return (next(self._args),)

    def calls(self) -> dict[str, Callable[[], Any]]:
        plain, unique, next_args = self.plain, self.unique, self.next_args
        return {
            "plain": lambda: plain.apply_async(next_args()),
            "unique_first": lambda: unique.apply_async(next_args()),
            "duplicate": lambda: unique.apply_async(DUPLICATE_ARGS),
        }

    def setup(self) -> None:
        self.holder = self.unique.apply_async(DUPLICATE_ARGS).id
        again = self.unique.apply_async(DUPLICATE_ARGS)
        if again.id != self.holder:
            raise RuntimeError("a duplicate enqueue did not return the holder's result")
        self.published += 1

    # 1-3: latency, interleaved.
    def latency(self) -> dict[str, Latency]:
        calls = self.calls()
        interleaved(calls, self.warmup, self.block)
        gc.collect()
        samples = interleaved(calls, self.n, self.block)
        self.published += 2 * (self.warmup + self.n)
        return {kind: Latency.of(samples[kind]) for kind in KINDS}

    # Where the extra time of a first enqueue goes, measured inside real enqueues.
    def in_situ(self) -> dict[str, Latency]:
        plain, task, store, next_args = self.plain, self.timed, self.store, self.next_args
        acquire_ns: list[int] = []
        publish_ns: list[int] = task.publish_ns
        real_acquire = store.acquire

        def timed_acquire(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return real_acquire(*args, **kwargs)
            finally:
                acquire_ns.append(clock() - start)

        calls: dict[str, Callable[[], Any]] = {
            "plain": lambda: plain.apply_async(next_args()),
            "first": lambda: task.apply_async(next_args()),
        }
        n = max(self.n // 3, self.block)
        store.acquire = timed_acquire  # type: ignore[method-assign]  # this object only
        try:
            interleaved(calls, self.warmup, self.block)
            acquire_ns.clear()
            publish_ns.clear()
            gc.collect()
            samples = interleaved(calls, n, self.block)
        finally:
            delattr(store, "acquire")
        self.published += 2 * (self.warmup + n)
        first = samples["first"]
        # One acquire and one publish per first enqueue, in order (strict: else ValueError).
        rest = [t - a - p for t, a, p in zip(first, acquire_ns, publish_ns, strict=True)]
        return {
            IN_SITU_PLAIN: Latency.of(samples["plain"]),
            IN_SITU_FIRST: Latency.of(first),
            IN_SITU_ACQUIRE: Latency.of(acquire_ns),
            IN_SITU_PUBLISH: Latency.of(publish_ns),
            IN_SITU_REST: Latency.of(rest),
        }

    # The steps of a first enqueue, each timed alone (warm caches).
    def breakdown(self) -> dict[str, Latency]:
        task, store, next_args = self.unique, self.store, self.next_args
        policy = task.heimdall_policy
        lease, renew = policy.unique_timeout_ms, not policy.unique_wait_for_expiry
        publish = Task.apply_async  # Celery's own, as HeimdallTask calls it via super()
        idents = (f"{UNIQUE_NAME}:breakdown-{i}" for i in itertools.count())
        ping = store.client.ping

        def acquire() -> None:
            taken = store.acquire(next(idents), uuid(), lease, UNIQUE_NAME, "", renew=renew)
            if taken.status != ACQUIRED:
                raise RuntimeError(f"a new lock was not acquired: {taken}")

        def send_publish() -> None:
            publish(task, next_args(), task_id=uuid())

        parts: dict[str, Callable[[], Any]] = {
            POLICY_STEP: lambda: task.heimdall_policy,
            IDENTITY_STEP: lambda: keys.identity(task, policy, next_args(), None),
            STORE_STEP: get_store,
            ACQUIRE_STEP: acquire,
            SIGNAL_STEP: lambda: signals.lock_acquired.send(sender=task, task_id="x", key="y"),
            # For reference: also in a plain apply_async.
            "task id (uuid), also in plain": uuid,
            "Celery publish (Task.apply_async)": send_publish,
            "redis-py PING round trip": ping,
        }
        n = max(self.n // 3, self.block)
        interleaved(parts, self.warmup, self.block)
        gc.collect()
        samples = interleaved(parts, n, self.block)
        self.published += self.warmup + n
        return {name: Latency.of(samples[name]) for name in parts}

    # 4: Redis commands and round trips.
    def round_trips(self) -> dict[str, dict[str, Counted]]:
        store, k, task = self.store, self.k, self.unique
        lease = task.heimdall_policy.unique_timeout_ms
        rates = (("benchmarks-rate", HIGH_RATE),)
        Item = tuple[str, str]  # (identity, owner)

        def each(items: list[Item], decide: Callable[[str, str], None]) -> Callable[[], None]:
            """One call: one decision on the next item."""
            pending = iter(items)
            return lambda: decide(*next(pending))

        def acquire(expect: int) -> Callable[[str, str], None]:
            def decide(ident: str, owner: str) -> None:
                if store.acquire(ident, owner, lease, UNIQUE_NAME).status != expect:
                    raise RuntimeError(f"acquire of {ident} did not give status {expect}")

            return decide

        def start(ident: str, owner: str) -> None:
            decision = store.start(
                owner, task_name=UNIQUE_NAME, lock=ident, lease_ms=lease, rates=rates
            )
            if decision.status != STARTED:
                raise RuntimeError(f"start of {ident} was not allowed: {decision}")

        def release(ident: str, owner: str) -> None:
            if not store.release(ident, owner, UNIQUE_NAME):
                raise RuntimeError(f"release of {ident} did not release")

        # One decision of each kind first: scripts loaded, connections open.
        warm = (f"{UNIQUE_NAME}:rt-warm", uuid())
        for decide in (acquire(ACQUIRED), acquire(OWNED), start, release):
            decide(*warm)
        for call in self.calls().values():
            call()
        self.published += 2
        self.counter.calibrate()

        items = [(f"{UNIQUE_NAME}:rt-{i}", uuid()) for i in range(k)]
        others = [(ident, uuid()) for ident, _ in items]
        count = self.counter.count
        store_counts = {
            "acquire (new lock)": count(k, each(items, acquire(ACQUIRED)), ["acquire"]),
            "acquire (held by another)": count(k, each(others, acquire(DUPLICATE)), ["acquire"]),
            "start (lock + rate limit)": count(k, each(items, start), ["start"]),
            "release": count(k, each(items, release), ["release"]),
        }
        enqueue_counts = {
            kind: count(k, call, [] if kind == "plain" else ["acquire"])
            for kind, call in self.calls().items()
        }
        self.published += 2 * k
        return {"store": store_counts, "apply_async": enqueue_counts}

    def idle_noise(self, seconds: float = 0.25) -> int:
        """Commands other clients sent while this process did nothing."""
        calls, _ = self.counter.delta(lambda: time.sleep(seconds))
        return sum(calls.values())

    def check(self) -> dict[str, Any]:
        """What the queue and the lock index hold must match what was enqueued."""
        queued = int(self.admin.llen(self.settings.QUEUE))
        holder = self.store.holder(self.unique_identity(DUPLICATE_ARGS))
        return {
            "messages_expected": self.published,
            "messages_queued": queued,
            "duplicate_lock_holder_kept": holder == self.holder,
            "ok": queued == self.published and holder == self.holder,
        }

    def unique_identity(self, args: tuple[Any, ...]) -> str:
        return keys.identity(self.unique, self.unique.heimdall_policy, args, None).lock

    def cleanup(self) -> dict[str, int]:
        """Delete the queue and every key of this run; count what is left."""
        s = self.settings
        patterns = [
            f"{_glob(s.KEY_PREFIX)}:*",
            f"{_glob(s.KEY_PREFIX)}-cache:*",
            f"{_glob(s.QUEUE)}*",
            # kombu's binding tables of the queue's exchange (named after the queue)
            f"_kombu.binding*.{_glob(s.QUEUE)}",
        ]
        deleted = 0
        for pattern in patterns:
            batch: list[bytes] = []
            for key in self.admin.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += self.admin.delete(*batch)
                    batch = []
            if batch:
                deleted += self.admin.delete(*batch)
        left = sum(1 for _ in self.admin.scan_iter(match=f"*{_glob(s.RUN_ID)}*", count=1000))
        return {"deleted_keys": deleted, "keys_left": left}


def _repeat(call: Callable[[], Any], times: int) -> None:
    for _ in range(times):
        call()


def _glob(text: str) -> str:
    """``text`` with the glob characters of SCAN MATCH escaped."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


# -- targets and report -----------------------------------------------------------------


@dataclass
class Target:
    name: str
    goal: str
    value: str
    passed: bool


def targets(
    latency: Mapping[str, Latency], counts: Mapping[str, Mapping[str, Counted]]
) -> list[Target]:
    plain = latency["plain"].median
    unique = latency["unique_first"].median / plain
    duplicate = latency["duplicate"].median / plain
    found = [
        Target(
            "first enqueue vs plain (median)",
            f"<= {UNIQUE_MAX_RATIO:.2f} x",
            f"{unique:.3f} x",
            unique <= UNIQUE_MAX_RATIO,
        ),
        Target(
            "duplicate vs plain (median)",
            f"<= {DUPLICATE_MAX_RATIO:.2f} x",
            f"{duplicate:.3f} x",
            duplicate <= DUPLICATE_MAX_RATIO,
        ),
    ]

    def one_trip(c: Counted) -> bool:
        trips = c.round_trips if c.round_trips is not None else c.top_level
        return c.exact and c.evalsha == 1 and c.eval == 0 and c.top_level == 1 and trips == 1

    for op, c in counts["store"].items():
        found.append(
            Target(
                f"store.{op}",
                "1 round trip (1 EVALSHA)",
                _trips(c.round_trips, c.top_level, c.evalsha),
                one_trip(c),
            )
        )
    enq = counts["apply_async"]
    plain_c, first_c, dup_c = enq["plain"], enq["unique_first"], enq["duplicate"]
    extra_cmds = first_c.top_level - plain_c.top_level
    extra_trips = _minus(first_c.round_trips, plain_c.round_trips)
    found.append(
        Target(
            "first enqueue: extra vs plain",
            "+1 round trip (1 EVALSHA)",
            _trips(extra_trips, extra_cmds, first_c.evalsha - plain_c.evalsha),
            first_c.exact
            and plain_c.exact
            and first_c.evalsha == 1
            and extra_cmds == 1
            and extra_trips in (None, 1),
        )
    )
    found.append(
        Target(
            "duplicate enqueue",
            "1 round trip (1 EVALSHA)",
            _trips(dup_c.round_trips, dup_c.top_level, dup_c.evalsha),
            one_trip(dup_c),
        )
    )
    return found


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _trips(trips: float | None, top_level: float, evalsha: float) -> str:
    shown = "n/a" if trips is None else f"{trips:g}"
    return f"{shown} trips, {top_level:g} cmds, {evalsha:g} EVALSHA"


def _rule(width: int = 92) -> str:
    return "-" * width


def report(
    results: dict[str, Any],
    latency: Mapping[str, Latency],
    situ: Mapping[str, Latency],
    parts: Mapping[str, Latency],
    counts: Mapping[str, Mapping[str, Counted]],
    found: list[Target],
) -> None:
    run = results["run"]
    print(
        f"django-heimdall enqueue benchmark: Redis {run['redis_version']} at "
        f"{run['redis_url']} ({run['redis']}), Python {run['python']}, "
        f"Celery {run['celery']}, redis-py {run['redis_py']}"
    )
    print(
        f"N={run['n']} per kind after {run['warmup']} warm-up, interleaved in blocks of "
        f"{run['block']}; K={run['k']} for the counts; prefix {run['prefix']}"
    )
    print()
    print(
        f"{'enqueue latency (µs)':<28}{'median':>10}{'p90':>10}{'mean':>10}{'min':>10}"
        f"{'vs plain':>12}"
    )
    print(_rule(80))
    plain = latency["plain"].median
    for kind in KINDS:
        lat = latency[kind]
        print(
            f"{LABELS[kind]:<28}{lat.median:>10.1f}{lat.p90:>10.1f}{lat.mean:>10.1f}"
            f"{lat.min:>10.1f}{lat.median / plain:>11.3f}x"
        )
    print()
    print(f"{'first enqueue, timed inside (µs)':<40}{'median':>10}{'p90':>10}{'vs plain':>12}")
    print(_rule(72))
    situ_plain = situ[IN_SITU_PLAIN].median
    for name, lat in situ.items():
        print(f"{name:<40}{lat.median:>10.2f}{lat.p90:>10.2f}{lat.median / situ_plain:>11.3f}x")
    print()
    print(f"{'first-enqueue steps, each alone (µs)':<40}{'median':>10}{'p90':>10}")
    print(_rule(60))
    for name, lat in parts.items():
        print(f"{name:<40}{lat.median:>10.2f}{lat.p90:>10.2f}")
    print(f"{'heimdall steps above, summed':<40}{results['heimdall_steps_us']:>10.2f}")
    print(f"{'first enqueue - plain (medians)':<40}{results['first_minus_plain_us']:>10.2f}")
    print()
    print(
        f"{'Redis per operation (INFO deltas)':<34}{'EVALSHA':>8}{'EVAL':>6}{'SCRIPT':>7}"
        f"{'all cmds':>9}{'in Lua':>8}{'client':>8}{'trips':>7}{'clean':>7}  commands"
    )
    print(_rule(120))
    for group, rows in counts.items():
        for op, c in rows.items():
            trips = "n/a" if c.round_trips is None else f"{c.round_trips:g}"
            detail = " ".join(f"{name}={value:g}" for name, value in c.per_command.items())
            clean = f"{c.clean_chunks}/{c.chunks}"
            print(
                f"{group + ': ' + op:<34}{c.evalsha:>8g}{c.eval:>6g}{c.script_admin:>7g}"
                f"{c.commands:>9g}{c.in_scripts:>8g}{c.top_level:>8g}{trips:>7}{clean:>7}"
                f"  {detail}"
            )
    print("  all cmds = INFO commandstats, which also counts the commands a Lua script runs;")
    print(
        "  client = all cmds - those inside scripts; trips = server socket reads "
        "(total_reads_processed);"
    )
    print(
        f"  clean = chunks of {COUNT_CHUNK} operations without commands of other clients "
        "(only those are counted; 0 clean: all are, and the target is a MISS)"
    )
    if results["idle_noise_commands"]:
        print(
            f"  WARNING: other clients sent {results['idle_noise_commands']} commands during "
            "a 0.25 s idle check; chunks with theirs were left out (see clean)"
        )
    print()
    print(f"{'target':<40}{'goal':<28}{'measured':<40}result")
    print(_rule(112))
    for t in found:
        print(f"{t.name:<40}{t.goal:<28}{t.value:<40}{'PASS' if t.passed else 'MISS'}")
    check = results["check"]
    print()
    print(
        f"queue check: {check['messages_queued']} messages queued, "
        f"{check['messages_expected']} expected, duplicate holder kept: "
        f"{check['duplicate_lock_holder_kept']} -> {'ok' if check['ok'] else 'WRONG'}"
    )


# -- entry point ------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "django": django.get_version(),
        "celery": metadata.version("celery"),
        "kombu": metadata.version("kombu"),
        "redis_py": metadata.version("redis"),
        "django_redis": metadata.version("django-redis"),
    }


def _masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.enqueue",
        description="Enqueue overhead of HeimdallTask vs plain Celery, and Redis round trips.",
    )
    parser.add_argument("--n", type=int, default=3000, help="timed calls per kind (3000)")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up calls per kind (200)")
    parser.add_argument("--block", type=int, default=100, help="calls per interleaved block (100)")
    parser.add_argument(
        "--k", type=int, default=1000, help="operations per kind for the Redis counts (1000)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help=f"where to write the results (default {DEFAULT_JSON})",
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 1 on a MISS")
    args = parser.parse_args(argv)
    for name in ("n", "warmup", "block", "k"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            parser.error(f"--{name} is too small")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    embedded = not os.environ.get("REDIS_URL")
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    bench = Bench(args.n, args.k, args.warmup, args.block)
    try:
        bench.setup()
        latency = bench.latency()
        situ = bench.in_situ()
        parts = bench.breakdown()
        counts = bench.round_trips()
        noise = bench.idle_noise()
        check = bench.check()
    finally:
        cleaned = bench.cleanup()

    s = bench.settings
    found = targets(latency, counts)
    plain = latency["plain"].median
    results: dict[str, Any] = {
        "run": {
            "redis": "embedded" if embedded else "REDIS_URL",
            "redis_url": _masked(s.REDIS_URL),
            "redis_version": bench.admin.info("server")["redis_version"],
            "prefix": s.KEY_PREFIX,
            "queue": s.QUEUE,
            "n": args.n,
            "warmup": args.warmup,
            "block": args.block,
            "k": args.k,
            "started": started,
            **_versions(),
        },
        "latency_us": {kind: asdict(latency[kind]) for kind in KINDS},
        "ratios": {
            "unique_first_over_plain": latency["unique_first"].median / plain,
            "duplicate_over_plain": latency["duplicate"].median / plain,
        },
        "first_enqueue_in_situ_us": {name.strip(): asdict(lat) for name, lat in situ.items()},
        "first_enqueue_components_us": {name: asdict(lat) for name, lat in parts.items()},
        "heimdall_steps_us": sum(parts[name].median for name in HEIMDALL_STEPS),
        "first_minus_plain_us": latency["unique_first"].median - plain,
        "redis_per_operation": {
            group: {op: {**asdict(c), "exact": c.exact} for op, c in rows.items()}
            for group, rows in counts.items()
        },
        "idle_noise_commands": noise,
        "targets": [asdict(t) for t in found],
        "check": check,
        "cleanup": cleaned,
    }
    report(results, latency, situ, parts, counts, found)
    print(f"clean-up: {cleaned['deleted_keys']} keys deleted, {cleaned['keys_left']} left")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.json}")
    failed = not check["ok"] or cleaned["keys_left"] or not all(t.passed for t in found)
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
