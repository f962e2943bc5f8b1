"""The suite's measurements against plain Celery and the peers, one section each
(see ``benchmarks.measure``): enqueue, eager mode, worker throughput, rate-limit
accuracy, and a backlog through a rate limit. All through the public API:
``HeimdallTask``, ``apply_async``/``delay``, ``request.heimdall_started_at``."""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from celery.result import EagerResult

from benchmarks import measure as m
from benchmarks.measure import Context, Params, Result, Target, bound, row, table
from django_heimdall import services

DH, CH, PLAIN = "django-heimdall", "celery-heimdall", "plain"
DUPLICATE_ARGS = (-1,)  # the arguments every duplicate enqueue repeats


def _trips(name: str, trips: float, scripts: float, expected: int) -> Target:
    """The target: exactly ``expected`` round trips and as many script calls per call."""
    ok = math.isclose(trips, expected) and math.isclose(scripts, expected)
    return Target(
        name, f"trips {expected}, scripts {expected}", f"trips {trips:g}, scripts {scripts:g}", ok
    )


# -- enqueue and eager mode ---------------------------------------------------------------------


def _timed_calls(ctx: Context, p: Params, calls: dict[str, Callable[[], Any]]) -> tuple:
    """Time ``calls`` interleaved, then count the Redis cost of ``p.k`` more of each:
    the section's data, the costs, and the table cells of a kind (median µs, ratio to
    plain, round trips, server µs)."""
    latency = m.timed(calls, p.n, p.warmup, p.block, ctx.rng)
    cost = {kind: ctx.counter.cost(call, p.k) for kind, call in calls.items()}
    ratio = {kind: latency[kind].median / latency[PLAIN].median for kind in calls}

    def cells(k: str) -> str:
        return CELLS.format(latency[k].median, ratio[k], cost[k].round_trips, cost[k].server_us)

    data = {"params": vars(p), "ratio": ratio, "latency_us": m.asdicts(latency)}
    return {**data, "redis": m.asdicts(cost)}, cost, cells


CELLS = "{:.1f} | {:.3f} | {:.2f} | {:.1f}"  # median µs, ratio to plain, trips, server µs
CALLS_FULL = {"n": 3000, "warmup": 200, "block": 100, "k": 200}  # timed calls, Redis counts
CALLS_QUICK = {"n": 500, "warmup": 50, "block": 50, "k": 100}


@m.section(
    "enqueue", "Enqueue, no worker", {**CALLS_FULL, "blocking": 3}, {**CALLS_QUICK, "blocking": 1}
)
def enqueue(ctx: Context, p: Params) -> Result:
    """Plain ``apply_async``; the first enqueue of a unique task (new arguments, a new
    lock) and a duplicate enqueue (a held lock) of every contender, interleaved; then
    the Redis cost of each kind of call."""
    t, app, numbers = ctx.t, ctx.app, itertools.count()
    plain = app.tasks[t.PLAIN]
    calls: dict[str, Callable[[], Any]] = {PLAIN: lambda: plain.apply_async((next(numbers),))}
    holders = {}
    for name, task_name in t.UNIQUE.items():
        task = app.tasks[task_name]
        holders[name] = task.apply_async(DUPLICATE_ARGS).id
        calls[f"{name}:first"] = lambda task=task: task.apply_async((next(numbers),))
        calls[f"{name}:duplicate"] = lambda task=task: _duplicate(task, t.AlreadyQueued)
    # A duplicate comes back without publishing: the holder's result, or AlreadyQueued.
    answers = {n: calls[f"{n}:duplicate"]() in (h, "AlreadyQueued") for n, h in holders.items()}
    data, cost, cells = _timed_calls(ctx, p, calls)
    published = len(holders) + (p.warmup + p.n + p.k) * (1 + len(holders))
    blocking = None  # celery-heimdall's default waits unique_lock_timeout for a held lock
    if t.CH_UNIQUE_DEFAULT in app.tasks and p.blocking:
        task, published = app.tasks[t.CH_UNIQUE_DEFAULT], published + 1
        task.apply_async(DUPLICATE_ARGS)
        dup = {"d": lambda: task.apply_async(DUPLICATE_ARGS)}
        blocking = m.timed(dup, p.blocking, 0, 1, ctx.rng, unit_ns=10**6)["d"]
    queued = int(ctx.redis.llen(app.conf.task_default_queue))
    m.delete_matching(ctx.redis, *m.queue_patterns(app.conf.task_default_queue))

    ratio = data["ratio"]
    lines = [
        f"Median µs of {p.n} calls per kind after {p.warmup} warm-up, interleaved in blocks of "
        f"{p.block} in a new random order each round; ratio to plain `apply_async` in the same "
        f"rounds; Redis round trips and server µs per call, over {p.k} more calls.",
        "",
    ]

    rows = [row("plain Celery `apply_async`", cells(PLAIN), "- | - | - | -")]
    for name in (DH, *t.PEERS):
        label = name + (" ¹" if name == CH and blocking else "")
        if name in holders:
            rows.append(row(label, cells(f"{name}:first"), cells(f"{name}:duplicate")))
        else:
            rows.append(row(name, f"n/a ({ctx.contenders[name]['reason']})", *[""] * 7))
    header = "contender | first enqueue µs | ÷ plain | trips | server µs"
    lines += table(f"{header} | duplicate µs | ÷ plain | trips | server µs", rows)
    if blocking:
        lines += [
            "",
            "¹ configured `unique_lock_blocking=False`; with its defaults a duplicate enqueue "
            f"takes {blocking.median:.0f} ms (median of {blocking.n}): it waits "
            "`unique_lock_timeout` (1 s) for the lock.",
        ]
    ok = queued == published and all(answers.values())
    found = [
        Target("enqueue: messages, duplicate answers", "as expected", f"{queued}/{published}", ok)
    ]
    if DH in holders:
        first, dup = ratio[f"{DH}:first"], ratio[f"{DH}:duplicate"]
        found += [
            bound("enqueue: first vs plain (median)", first, "<=", 1.05),
            bound("enqueue: duplicate vs plain (median)", dup, "<=", 0.30),
        ]
        peers = {name: ratio[f"{name}:first"] for name in holders if name != DH}
        if peers:
            fastest = min(peers, key=peers.__getitem__)
            shown = f"{first - peers[fastest]:+.3f} ({fastest} {peers[fastest]:.3f} x)"
            name = "enqueue: first vs fastest peer (ratio to plain)"
            found.append(bound(name, first - peers[fastest], "<=", 0.05, "", shown))
        first_c, dup_c = cost[f"{DH}:first"], cost[f"{DH}:duplicate"]
        extra = first_c.round_trips - cost[PLAIN].round_trips
        found += [
            _trips("enqueue: first, more than plain", extra, first_c.scripts, 1),
            _trips("enqueue: duplicate", dup_c.round_trips, dup_c.scripts, 1),
        ]
    data["celery_heimdall_default_duplicate_ms"] = blocking and asdict(blocking)
    data["check"] = {"answers": answers, "messages_expected": published, "messages_queued": queued}
    return Result(data, lines, found)


def _duplicate(task: Any, already: type[Exception] | None) -> str:
    """The id a duplicate enqueue returns, or "AlreadyQueued" (celery-once raises)."""
    try:
        return task.apply_async(DUPLICATE_ARGS).id
    except Exception as exc:
        if already is None or not isinstance(exc, already):
            raise
        return "AlreadyQueued"


@m.section("eager", "Eager mode", CALLS_FULL, CALLS_QUICK)
def eager(ctx: Context, p: Params) -> Result:
    """``task_always_eager=True``: ``.delay()`` of a plain task and of a unique one."""
    plain, unique = ctx.app.tasks[ctx.t.PLAIN], ctx.app.tasks[ctx.t.UNIQUE[DH]]
    numbers = itertools.count()
    calls = {PLAIN: lambda: plain.delay(next(numbers)), DH: lambda: unique.delay(next(numbers))}
    ctx.app.conf.task_always_eager = True
    try:
        data, cost, cells = _timed_calls(ctx, p, calls)
        # The lock is given back: the same call runs again instead of being a duplicate.
        again = [unique.delay(-2) for _ in range(2)]
    finally:
        ctx.app.conf.task_always_eager = False
    ran, dh = all(isinstance(r, EagerResult) and r.result == -2 for r in again), cost[DH]
    rows = [row("plain task", cells(PLAIN)), row("django-heimdall unique", cells(DH))]
    lines = [
        f"`.delay()` with `task_always_eager=True`, median of {p.n} interleaved calls; Redis "
        f"round trips and server µs per call over {p.k} more.",
        "",
        *table("call | median µs | ÷ plain | trips | server µs", rows),
    ]
    found = [
        Target("eager: runs twice in a row (lock given back)", "ok", str(ran), ran),
        _trips("eager: .delay() = acquire, start, release", dh.round_trips, dh.scripts, 3),
    ]
    return Result(data, lines, found)


# -- worker runs ----------------------------------------------------------------------------------


def wait_for(done: Callable[[], Any], timeout: float, what: str, poll: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := done()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done within {timeout:.0f} s")
        time.sleep(poll)
    return found


def batch(
    ctx: Context,
    name: str,
    concurrency: int,
    enqueue: Callable[[], Any],
    done: Callable[[], Any],
    timeout: float,
) -> None:
    """Start a worker on the queue of task ``name``, ``enqueue``, wait for ``done``;
    then stop the worker and delete the queue (tasks still waiting are discarded)."""
    queue = ctx.t.queue_of(name)
    worker = ctx.worker(queue.rsplit("-q-", 1)[1], [queue], concurrency)
    try:
        enqueue()
        wait_for(done, timeout, name, poll=0.1)
    finally:
        worker.stop()
        m.delete_matching(ctx.redis, *m.queue_patterns(queue))


def starts(ctx: Context, name: str) -> list[tuple[int, int, str, str]]:
    """What ``tasks.stamp_start`` recorded, in admission order: (admitted µs or 0,
    body start µs, label, task id)."""
    found = [line.decode().split() for line in ctx.redis.lrange(ctx.t.key("starts", name), 0, -1)]
    return sorted((int(a.strip("-") or 0), int(b), label, i) for a, b, label, i in found)


# -- worker throughput -------------------------------------------------------------------------

CPU_PARTS = ("enqueuing process", "worker", "redis-server")
TP_HEADER = f"worker | tasks/s | ÷ plain | rounds | {' | '.join(CPU_PARTS)} | total | scripts"
TP_ROW = "{} | {:.0f} | {:.3f} | {} | {:.0f} | {:.0f} | {:.0f} | {:.0f} | {:.2f}"


@m.section(
    "throughput",
    "Worker throughput",
    {"n": 2000, "rounds": 5, "concurrency": 2},
    {"n": 500, "rounds": 1},
)
def throughput(ctx: Context, p: Params) -> Result:
    """Rounds of ``n`` trivial tasks through a prefork worker, alternately plain and
    django-heimdall (unique, and a rate limit that never binds): first enqueue to last
    completion on the Redis clock; CPU time and Redis scripts per task."""
    t = ctx.t
    kinds = {PLAIN: t.TP_PLAIN, DH: t.TP_HEIMDALL}
    workers = {k: ctx.worker(f"tp-{k}", [t.queue_of(n)], p.concurrency) for k, n in kinds.items()}
    rounds: list[dict[str, Any]] = []
    try:
        for kind, name in kinds.items():  # forks warm, connections made, scripts loaded
            _round(ctx, workers[kind], name, min(200, p.n), f"warm-{kind}")
        for r in range(p.rounds):
            for kind in list(kinds)[:: 1 if r % 2 == 0 else -1]:
                found = _round(ctx, workers[kind], kinds[kind], p.n, f"{kind}-{r}")
                rounds.append({"kind": kind, **found})
    finally:
        for worker in workers.values():
            worker.stop()
        queues = [t.queue_of(name) for name in kinds.values()]
        m.delete_matching(ctx.redis, *(key for q in queues for key in m.queue_patterns(q)))

    def median(kind: str, key: str, part: str = "") -> float:
        return statistics.median(
            r[key][part] if part else r[key] for r in rounds if r["kind"] == kind
        )

    tps = {kind: median(kind, "tasks_per_s") for kind in kinds}
    cpu = {kind: {part: median(kind, "cpu_us", part) for part in CPU_PARTS} for kind in kinds}
    scripts = {kind: median(kind, "scripts_per_task") for kind in kinds}
    ratio = tps[DH] / tps[PLAIN]
    pairs = [rounds[i : i + 2] for i in range(0, len(rounds), 2)]
    paired = statistics.median(
        next(r for r in pair if r["kind"] == DH)["tasks_per_s"]
        / next(r for r in pair if r["kind"] == PLAIN)["tasks_per_s"]
        for pair in pairs
    )
    cpu_ratio = sum(cpu[PLAIN].values()) / sum(cpu[DH].values())
    left = services.live().lock_counts([t.TP_HEIMDALL])[t.TP_HEIMDALL]
    once = all(r["completed"] == r["n"] for r in rounds)
    rows = []
    for kind, label in ((PLAIN, "plain"), (DH, "django-heimdall, unique + `RateLimit((1e6, 1))`")):
        each = ", ".join(f"{r['tasks_per_s']:.0f}" for r in rounds if r["kind"] == kind)
        parts = [*cpu[kind].values(), sum(cpu[kind].values())]
        rows.append(
            TP_ROW.format(label, tps[kind], tps[kind] / tps[PLAIN], each, *parts, scripts[kind])
        )
    lines = [
        f"Prefork `-c {p.concurrency}`, {p.n} tasks a round, median of {p.rounds} rounds a kind; "
        "CPU µs per task (the machine's CPUs are shared by all three parts); Redis scripts per "
        "task.",
        "",
        *table(TP_HEADER, rows),
        "",
        f"Ratio of the medians {ratio:.3f} (the target's measure); median of the ratios of "
        f"adjacent rounds {paired:.3f}; implied by the CPU time per task {cpu_ratio:.3f}.",
    ]
    found = [
        bound("worker throughput vs plain (median)", ratio, ">=", 0.90),
        Target("throughput: each task once, no lock left", "ok", f"{left} left", once and not left),
    ]
    data = {"params": vars(p), "rounds": rounds, "tasks_per_s": tps, "ratio": ratio}
    data.update(cpu_us_per_task=cpu, cpu_ratio=cpu_ratio, paired_ratio=paired, locks_left=left)
    return Result({**data, "scripts_per_task": scripts}, lines, found)


def _round(ctx: Context, worker: m.Worker, name: str, n: int, run: str) -> dict[str, Any]:
    task, t, marks = ctx.app.tasks[name], ctx.t, {}

    def cpu() -> dict[str, float]:
        info = ctx.redis.info("cpu")
        server = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return dict(
            zip(CPU_PARTS, (time.process_time(), worker.cpu_seconds(), server), strict=True)
        )

    def work() -> None:
        marks["cpu"], marks["begin"] = cpu(), m.redis_now_us(ctx.redis)
        for i in range(n):
            task.apply_async((i, n, run))
        done = wait_for(lambda: ctx.redis.get(t.key("tp", run, "done_us")), 60 + n / 20, run)
        marks["done"], marks["cpu_after"] = int(done), cpu()

    cost = ctx.counter.delta(work)
    time.sleep(0.2)  # a task run twice would count past n
    seconds = (marks["done"] - marks["begin"]) / 1e6
    return {
        "n": n,
        "seconds": seconds,
        "tasks_per_s": n / seconds,
        "completed": int(ctx.redis.get(t.key("tp", run, "count")) or 0),
        "cpu_us": {k: (marks["cpu_after"][k] - marks["cpu"][k]) * 1e6 / n for k in CPU_PARTS},
        "scripts_per_task": cost.scripts / n,
    }


# -- rate limits ----------------------------------------------------------------------------------

RATE_HEADER = "limit | contender | run s | queued | starts | allowed | achieved ÷ allowed"
RATE_HEADER += " | most in a window | over the limit"
RATE_ROW = "{} | {} | {} | {} | {} | {} | {:.3f} | {} | {}"


@m.section(
    "rate", "Rate limits, saturated", {"seconds": 10, "windows": 3}, {"seconds": 3, "windows": 1}
)
def rate(ctx: Context, p: Params) -> Result:
    """Each limit saturated for several windows on a prefork worker, for django-heimdall
    and celery-heimdall; every start stamped on the Redis clock."""
    rows, found, runs = [], [], []
    for times, per in ctx.t.RATE_CONFIGS:
        windows = max(p.windows, math.ceil(p.seconds / per))
        duration, allowed, limit = windows * per, times * windows, f"{times}/{per}s"
        queued = allowed + 2 * times  # a backlog all along the run
        for name in (c for c in (DH, CH) if ctx.available(c)):
            print(f"  {name} {limit}: {duration} s ...", flush=True)
            c = _rate_run(ctx, name, times, per, duration, queued)
            runs.append({"limit": limit, "times": times, "per": per, "contender": name, **c})
            most = f"{c['max_in_window']} / {times}"
            most, in_run = (f"**{most}**" if c["max_in_window"] > times else most), c["in_run"]
            in_run = f"{in_run} ²" if c["ran_out"] else in_run
            cells = (limit, name, duration, queued, in_run, allowed, c["utilisation"], most)
            rows.append(RATE_ROW.format(*cells, c["over_limit"]))
            if name == DH:
                shown = f"{c['max_in_window']} ({c['over_limit']} over)"
                most = f"rate {limit}: most in any {per} s window"
                found.append(bound(most, c["max_in_window"], "<=", times, "", shown))
                found.append(
                    bound(f"rate {limit}: achieved / allowed", c["utilisation"], ">=", 0.9, "")
                )
    lines = [
        "Prefork `-c 4`, `allowed + 2 times` tasks queued at once; starts on the "
        "Redis clock (django-heimdall: admission, `request.heimdall_started_at`; celery-heimdall: "
        "body start): the most in any window of the limit's length, those that had `times` "
        "others in the window before them, and achieved ÷ allowed starts.",
        "",
        *table(RATE_HEADER, rows, left=2),
    ]
    if any(run["ran_out"] for run in runs):
        lines += [
            "",
            "² every queued task had started before the run ended: the backlog, not "
            "the limiter, capped the starts.",
        ]
    return Result({"params": vars(p), "runs": runs}, lines, found)


def _rate_run(
    ctx: Context, contender: str, times: int, per: int, duration: int, queued: int
) -> dict[str, Any]:
    name = ctx.t.rate_task_name(contender, times, per)
    task, key, end = ctx.app.tasks[name], ctx.t.key("starts", name), []

    def over() -> bool:  # the run starts with the first start, and has a tail
        if not end and ctx.redis.llen(key):
            end.append(m.redis_now_us(ctx.redis) + duration * 1_000_000 + 500_000)
        return bool(end) and m.redis_now_us(ctx.redis) >= end[0]

    batch(ctx, name, 4, lambda: [task.apply_async() for _ in range(queued)], over, duration + 90)
    recorded = starts(ctx, name)
    stamps = sorted(a if contender == DH else b for a, b, _, _ in recorded)
    window, t0 = per * 1_000_000, stamps[0]
    in_run = sum(s < t0 + duration * 1_000_000 for s in stamps)
    return {
        "recorded": len(stamps),
        "in_run": in_run,
        "utilisation": in_run / (times * duration // per),
        "max_in_window": m.max_in_window(stamps, window),
        "over_limit": m.over_limit(stamps, window, times),
        "ran_twice": len(recorded) - len({r[3] for r in recorded}),
        # Every queued task ran before the run ended: the backlog capped the starts.
        "ran_out": len(recorded) >= queued and stamps[-1] < t0 + duration * 1_000_000,
    }


# -- a backlog through a rate limit ------------------------------------------------------------


@m.section(
    "backlog", "Backlog through a rate limit", full={"n": 200, "concurrency": 4}, quick={"n": 60}
)
def backlog(ctx: Context, p: Params) -> Result:
    """``n`` tasks enqueued at once, in order, to a rate-limited django-heimdall task on a
    prefork worker: publishes and script calls per task executed, start order against
    enqueue order (Kendall's tau), most admissions in any window, utilisation."""
    t = ctx.t
    (times, per), name = t.BACKLOG_RATE, t.BACKLOG
    task, key = ctx.app.tasks[name], t.key("starts", name)
    began: list[int] = []

    def enqueue() -> None:
        began.append(m.redis_now_us(ctx.redis))
        for i in range(p.n):
            task.apply_async((i,))

    def run() -> None:
        done = lambda: ctx.redis.llen(key) >= p.n  # noqa: E731
        batch(ctx, name, p.concurrency, enqueue, done, 60 + 3 * p.n * per / times)

    cost = ctx.counter.delta(run)
    recorded = starts(ctx, name)
    stamps, executed, window = [r[0] for r in recorded], len(recorded), per * 1_000_000
    publishes = int(ctx.redis.get(t.key("publishes", name)) or 0)
    measured = {
        "executed": executed,
        "task ids": len({r[3] for r in recorded}),
        "publishes per task": publishes / executed,
        "script calls per task": cost.scripts / executed,
        "Kendall tau (start vs enqueue order)": m.kendall_tau([int(r[2]) for r in recorded]),
        "most admissions in a window": m.max_in_window(stamps, window),
        "admissions over the limit": m.over_limit(stamps, window, times),
        # tasks / (duration x rate), the duration being the windows the starts occupy
        "utilisation": executed / (((stamps[-1] - stamps[0]) / window + 1) * times),
        "seconds from first enqueue to last start": (max(r[1] for r in recorded) - began[0]) / 1e6,
    }
    lines = [
        f"{p.n} tasks enqueued at once to a task limited to {times}/{per}s, on a prefork worker "
        f"`-c {p.concurrency}`; admissions on the Redis clock.",
        "",
        *table(
            "measure | value",
            (row(k, f"{v:.3f}" if isinstance(v, float) else v) for k, v in measured.items()),
        ),
    ]
    most, ids = measured["most admissions in a window"], measured["task ids"]
    found = [
        bound(f"backlog {times}/{per}s: most in any window", most, "<=", times, "", f"{most}"),
        Target(
            "backlog: each task once",
            f"{p.n}",
            f"{executed} starts, {ids} ids",
            executed == ids == p.n,
        ),
    ]
    return Result({"params": vars(p), "rate": f"{times}/{per}s", **measured}, lines, found)
