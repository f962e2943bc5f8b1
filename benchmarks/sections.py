"""The suite's measurements against plain Celery and the peers, one section each
(see ``benchmarks.measure``): enqueue, eager mode, worker throughput, rate-limit
accuracy, backlogs through a rate limit, and concurrency limits. All through the public API:
``HeimdallTask``, ``apply_async``/``delay``, ``request.heimdall_started_at``."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from celery.result import EagerResult

from benchmarks import measure as m
from benchmarks.measure import Context, Params, Result, Target, bound, row, table
from django_heimdall import services
from django_heimdall.testing import max_concurrent

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
    warm: bool = False,
) -> m.RedisCost:
    """Start a worker on the queue of task ``name`` (``warm``: one warm-up task per pool
    process first), ``enqueue``, wait for ``done``: the Redis cost of those two; then
    stop the worker and delete the queue (tasks still waiting are discarded)."""
    queue = ctx.t.queue_of(name)
    worker = ctx.worker(queue.rsplit("-q-", 1)[1], [queue], concurrency)
    try:
        if warm:
            run, warm_task = queue, ctx.app.tasks[ctx.t.WARM]
            for _ in range(2 * concurrency):
                warm_task.apply_async((run,), queue=queue)
            warmed = ctx.t.key("warm", run)
            wait_for(lambda: ctx.redis.llen(warmed) >= 2 * concurrency, 60, run)
            ctx.redis.delete(warmed)
        return ctx.counter.delta(lambda: (enqueue(), wait_for(done, timeout, name, poll=0.1)))
    finally:
        worker.stop()
        m.delete_matching(ctx.redis, *m.queue_patterns(queue))


def starts(ctx: Context, name: str) -> list[tuple[int, int, str, str]]:
    """What ``tasks.stamp_start`` recorded, in admission order: (admitted µs or 0,
    body start µs, label, task id); the record is deleted (a task runs again)."""
    return sorted(
        (int(a.strip("-") or 0), int(b), label, i)
        for a, b, label, i in _take(ctx, ctx.t.key("starts", name))
    )


def _take(ctx: Context, key: str) -> list[list[str]]:
    """The lines of a list the tasks recorded, split; the list is deleted."""
    found = ctx.redis.lrange(key, 0, -1)
    ctx.redis.delete(key)
    return [line.decode().split() for line in found]


def publishes(ctx: Context, name: str) -> dict[str, int]:
    """Publishes of each task id of task ``name`` (``tasks.PUBLISH_COUNTED``); deleted."""
    found = ctx.redis.hgetall(ctx.t.key("publishes", name))
    ctx.redis.delete(ctx.t.key("publishes", name))
    return {task_id.decode(): int(count) for task_id, count in found.items()}


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
    rounds = _alternate(ctx, p, kinds, "tp")

    def median(kind: str, key: str, part: str = "") -> float:
        return _median(rounds, kind, key, part)

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


def _alternate(ctx: Context, p: Params, kinds: dict[str, str], label: str) -> list[dict]:
    """``p.rounds`` rounds of ``p.n`` tasks for each kind (its task name), alternately,
    each kind on a prefork worker ``-c p.concurrency`` of its own, after a warm round."""
    t, rounds = ctx.t, []
    workers = {
        k: ctx.worker(f"{label}-{k}", [t.queue_of(n)], p.concurrency) for k, n in kinds.items()
    }
    try:
        for kind, name in kinds.items():  # forks warm, connections made, scripts loaded
            _round(ctx, workers[kind], name, min(200, p.n), f"{label}-warm-{kind}")
        for r in range(p.rounds):
            for kind in list(kinds)[:: 1 if r % 2 == 0 else -1]:
                found = _round(ctx, workers[kind], kinds[kind], p.n, f"{label}-{kind}-{r}")
                rounds.append({"kind": kind, **found})
    finally:
        for worker in workers.values():
            worker.stop()
        queues = [t.queue_of(name) for name in kinds.values()]
        m.delete_matching(ctx.redis, *(key for q in queues for key in m.queue_patterns(q)))
    return rounds


def _median(rounds: list[dict], kind: str, key: str, part: str = "") -> float:
    return statistics.median(r[key][part] if part else r[key] for r in rounds if r["kind"] == kind)


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


# -- backlogs through a rate limit --------------------------------------------------------------

BACKLOG_HEADER = "contender | backlog | limit | executed | publishes / task | Kendall tau"
BACKLOG_HEADER += " | most in a window | utilisation | script calls / task | run s"
BACKLOG_ROW = (
    "{contender} | {backlog} | {limit} | {executed} | {publishes_per_task:.2f} | {tau:.3f}"
)
BACKLOG_ROW += " | {max_in_window} | {util} | {script_calls_per_task:.2f} | {seconds:.1f}"


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Environment variables for the workers started meanwhile."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            os.environ.pop(name) if value is None else os.environ.update({name: value})


@m.section(
    "backlog",
    "Backlogs through a rate limit (FIFO)",
    {"scenarios": [(100, 10, 1), (200, 10, 1), (400, 10, 1), (200, 2, 1)], "cap": 300},
    {"scenarios": [(60, 10, 1), (30, 2, 1)]},
)
def backlog(ctx: Context, p: Params) -> Result:
    """Each scenario ``(n, times, per)``: ``n`` tasks enqueued at once, in order, to a
    task limited to ``times/per``, on a warmed prefork worker ``-c 4``, for
    django-heimdall and celery-heimdall: publishes and script calls per task, start
    order against enqueue order (Kendall's tau), most starts in any window,
    utilisation of the limit. ``cap``: the workers' ``DEFER_MAX_COUNTDOWN``."""
    runs = []
    with _environ(HEIMDALL_BENCH_DEFER_MAX_COUNTDOWN=str(p.cap)):
        for name in (c for c in (DH, CH) if ctx.available(c)):
            for n, times, per in p.scenarios:
                print(f"  {name} {n} at {times}/{per}s ...", flush=True)
                runs.append({"contender": name, **_backlog_run(ctx, name, n, times, per)})
    rows = [BACKLOG_ROW.format(**r, util=_utilisation(r)) for r in runs]
    lines = [
        "Tasks enqueued at once, in order, to a prefork worker `-c 4` (warmed up first) "
        f"with `DEFER_MAX_COUNTDOWN={p.cap:g}`; starts on the Redis clock (django-heimdall: "
        "admission; celery-heimdall: body start). Publishes: the enqueue and every re-send, "
        "per task executed; Kendall tau of start order against enqueue order (1 = FIFO); "
        "utilisation: (N - times) ÷ (rate x (last - first start)); script calls: "
        "`EVALSHA`/`EVAL` per task executed.",
        "",
        *table(BACKLOG_HEADER, rows, left=3),
    ]
    if any(r["over_limit"] for r in runs):
        lines += ["", "-: the limit did not hold (starts over the limit), so no utilisation."]
    mine = [r for r in runs if r["contender"] == DH]
    return Result({"params": vars(p), "runs": runs}, lines, _backlog_targets(mine))


def _utilisation(run: dict[str, Any]) -> str:
    """Utilisation, where the limit held (otherwise "-" and a note: it means nothing)."""
    return "-" if run["over_limit"] else f"{run['utilisation']:.3f}"


def _backlog_targets(runs: list[dict[str, Any]]) -> list[Target]:
    """The worst scenario of each measure against its target."""
    if not runs:
        return []

    def worst(key: str, op: str, limit: float, name: str) -> Target:
        pick = max if op == "<=" else min
        r = pick(runs, key=lambda r: r[key])
        where = f"{r['backlog']} at {r['limit']}"
        return bound(f"backlog: {name} (worst)", r[key], op, limit, "", f"{r[key]:.3f} ({where})")

    found = [
        worst("publishes_per_task", "<=", 2.1, "publishes / task"),
        worst("tau", ">=", 0.95, "Kendall tau"),
        worst("utilisation", ">=", 0.95, "utilisation"),
        worst("script_calls_per_task", "<=", 2.2, "script calls / task"),
    ]
    over = [r for r in runs if r["max_in_window"] > r["times"]]
    shown = ", ".join(f"{r['max_in_window']} at {r['limit']}" for r in over) or "none"
    found.append(Target("backlog: most in any window", "<= times", f"over: {shown}", not over))
    once = all(r["once"] for r in runs)
    found.append(Target("backlog: each task once", "ok", str(once), once))
    by_limit: dict[str, list[float]] = {}
    for r in runs:
        by_limit.setdefault(r["limit"], []).append(r["publishes_per_task"])
    spreads = {limit: max(v) - min(v) for limit, v in by_limit.items() if len(v) > 1}
    if spreads:
        limit = max(spreads, key=spreads.__getitem__)
        shown = f"{spreads[limit]:.3f} (at {limit})"
        found.append(
            bound("backlog: publishes / task, spread in N", spreads[limit], "<=", 0.15, "", shown)
        )
    return found


def _backlog_run(ctx: Context, contender: str, n: int, times: int, per: int) -> dict[str, Any]:
    name = ctx.t.rate_task_name(contender, times, per, "backlog")
    if name not in ctx.app.tasks:
        raise ValueError(f"no backlog task limited to {times}/{per}s: see tasks.BACKLOG_RATES")
    task = ctx.app.tasks[name]
    enqueue = lambda: [task.apply_async((i,)) for i in range(n)]  # noqa: E731
    done = lambda: ctx.redis.llen(ctx.t.key("starts", name)) >= n  # noqa: E731
    cost = batch(ctx, name, 4, enqueue, done, 60 + 3 * n * per / times, warm=True)
    recorded = sorted(
        (a if contender == DH else b, int(label), i) for a, b, label, i in starts(ctx, name)
    )
    sent, executed = publishes(ctx, name), len(recorded)
    stamps = [r[0] for r in recorded]
    span = (stamps[-1] - stamps[0]) / 1e6
    return {
        "backlog": n,
        "limit": f"{times}/{per}s",
        "times": times,
        "per": per,
        "executed": executed,
        "once": executed == len({r[2] for r in recorded}) == n,
        "publishes_per_task": sum(sent.values()) / executed,
        "tau": m.kendall_tau([r[1] for r in recorded]),
        "max_in_window": m.max_in_window(stamps, per * 1_000_000),
        "over_limit": m.over_limit(stamps, per * 1_000_000, times),
        "utilisation": (executed - times) / (times / per * span) if span else 0.0,
        "script_calls_per_task": cost.scripts / executed,
        "seconds": span,
    }


# -- concurrency limits ----------------------------------------------------------------------------

CONCURRENCY_HEADER = "hold s | tasks | re-sends / task: mean | p95 | max | most running at once"
CONCURRENCY_HEADER += " | makespan s | ideal s"
CONCURRENCY_ROW = "~{hold:g} | {executed} | {resends_mean:.2f} | {resends_p95} | {resends_max}"
CONCURRENCY_ROW += " | {max_running} / {capacity} | {makespan_s:.1f} | {ideal_s:.1f}"


@m.section(
    "concurrency",
    "Concurrency limits",
    {"n": 1000, "rounds": 3, "concurrency": 2, "backlog": 200, "holds": [0.1, 0.5], "pool": 8},
    {"n": 300, "rounds": 1, "backlog": 40, "holds": [0.5]},
)
def concurrency(ctx: Context, p: Params) -> Result:
    """Throughput of a task whose ``concurrency_limit`` never binds against plain, as in
    ``throughput``; then, per hold, a backlog behind ``concurrency_limit=4`` on a
    prefork worker ``-c pool``, each task holding its slot 0.5-1.5 x hold: re-sends per
    task, the most bodies running at once, makespan against the ideal."""
    t = ctx.t
    kinds = {PLAIN: t.TP_PLAIN, DH: t.TP_CONCURRENCY}
    rounds = _alternate(ctx, p, kinds, "conc")
    tps = {kind: _median(rounds, kind, "tasks_per_s") for kind in kinds}
    scripts = {kind: _median(rounds, kind, "scripts_per_task") for kind in kinds}
    backlogs = [_concurrency_backlog(ctx, p, hold) for hold in p.holds]
    cap = t.CONCURRENCY_CAPACITY
    rows = [CONCURRENCY_ROW.format(**b, capacity=cap) for b in backlogs]
    ratio = tps[DH] / tps[PLAIN]
    lines = [
        f"Prefork `-c {p.concurrency}`, {p.n} trivial tasks a round, median of {p.rounds} "
        f"rounds a kind: plain {tps[PLAIN]:.0f} tasks/s, `concurrency_limit="
        f"{t.CONCURRENCY_NON_BINDING}` (never binds) {tps[DH]:.0f} tasks/s, ratio "
        f"**{ratio:.3f}**; scripts per task {scripts[DH]:.2f}.",
        "",
        f"Backlogs of {p.backlog} tasks behind `concurrency_limit={cap}` on a prefork worker "
        f"`-c {p.pool}`, each holding its slot 0.5-1.5 x hold; re-sends = publishes - 1 per "
        "task; bodies running at once on the Redis clock; ideal makespan = sum of holds ÷ "
        f"{cap}.",
        "",
        *table(CONCURRENCY_HEADER, rows),
    ]
    found = []
    for b in backlogs:
        found.append(
            bound(
                f"concurrency, hold ~{b['hold']:g} s: re-sends / task (mean)",
                b["resends_mean"],
                "<=",
                3,
                "",
            )
        )
        ok = b["max_running"] <= cap and b["once"]
        shown = f"{b['max_running']} at once, once: {b['once']}"
        found.append(
            Target(
                f"concurrency, hold ~{b['hold']:g} s: limit kept, each once", f"<= {cap}", shown, ok
            )
        )
    data = {"params": vars(p), "rounds": rounds, "tasks_per_s": tps, "ratio": ratio}
    return Result({**data, "scripts_per_task": scripts, "backlogs": backlogs}, lines, found)


def _concurrency_backlog(ctx: Context, p: Params, hold: float) -> dict[str, Any]:
    name = ctx.t.CONCURRENCY_BACKLOG
    task, holds = ctx.app.tasks[name], [hold * ctx.rng.uniform(0.5, 1.5) for _ in range(p.backlog)]
    enqueue = lambda: [task.apply_async((i, s)) for i, s in enumerate(holds)]  # noqa: E731
    done = lambda: ctx.redis.llen(ctx.t.key("holds", name)) >= p.backlog  # noqa: E731
    print(f"  backlog of {p.backlog}, hold ~{hold:g} s ...", flush=True)
    batch(ctx, name, p.pool, enqueue, done, 120 + 3 * sum(holds) / 4, warm=True)
    runs = [(int(a), int(b), i) for a, b, i in _take(ctx, ctx.t.key("holds", name))]
    resends = sorted(count - 1 for count in publishes(ctx, name).values())
    return {
        "hold": hold,
        "executed": len(runs),
        "once": len({r[2] for r in runs}) == len(runs) == p.backlog,
        "resends_mean": statistics.fmean(resends),
        "resends_p95": resends[int(0.95 * (len(resends) - 1))],
        "resends_max": resends[-1],
        "max_running": max_concurrent(r[:2] for r in runs),
        "makespan_s": (max(r[1] for r in runs) - min(r[0] for r in runs)) / 1e6,
        "ideal_s": sum(holds) / ctx.t.CONCURRENCY_CAPACITY,
    }
