"""What the live admin pages cost on a large Redis.

    python -m benchmarks.admin_listing [--n 20] [--warmup 3] [--json PATH]

Starts a private embedded ``redis-server`` (never the shared one: it gets well over
a million keys), configures Django from ``benchmarks.admin_settings`` (in-memory
SQLite, a key prefix of its own) and:

1. fills Redis with 100,000 held locks over 50 tasks, each taken by the library's
   own ``acquire.lua`` (pipelined EVALSHA, keys from the real ``Store``), plus
   1,000,000 unrelated keys (strings, hashes, lists), and registers 50 rate-limit
   keys through ``Store.start``;
2. renders the admin pages through Django's test ``Client`` as a superuser: the
   first page of held locks, a page filtered by task, a deep page, a task-id search
   and the rate-limit windows, each ``--n`` times after ``--warmup`` renders, and
   checks what they show; then times the store calls alone, which separates the
   Redis part from Django's;
3. counts, from ``INFO commandstats``, the Redis commands of one render of each
   page, to show that no SCAN or KEYS walks the keyspace;
4. prints a table and the target (first page and filtered page each within 250 ms
   of server time, at p90), and writes JSON. The server is stopped at the end.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import random
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import django
import redis

from benchmarks.common import Summary as Timing
from django_heimdall.keys import canonical
from django_heimdall.ratelimits import Rate
from django_heimdall.store import ACQUIRED, STARTED, Store, get_store
from django_heimdall.testing import EmbeddedRedis

SETTINGS_MODULE = "benchmarks.admin_settings"
URL_ENV = "HEIMDALL_ADMIN_BENCH_REDIS_URL"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "admin_listing.json"

#: Target: the first page and a filtered page, each within this server time (p90).
TARGET_MS = 250.0
PER_PAGE = 100  # django_heimdall.admin.live.PER_PAGE, checked at run time
TASK_NAME = "bench.tasks.t{:02d}"
RATE_TASK_NAME = "bench.ratelimited.r{:02d}"
RATE_TASKS = 10
#: Commands that walk the keyspace (or a whole collection); none may run per page.
KEYSPACE_WALKS = frozenset({"scan", "keys", "sscan", "hscan", "zscan", "randomkey"})
#: Leases of the filled locks: long enough to outlive the run, varied like real ones.
LEASE_MS = (3_600_000, 7_200_000)
FILL_BATCH = 2000

clock = time.perf_counter_ns


# -- statistics ------------------------------------------------------------------------


def timed(call: Callable[[], Any], warmup: int, n: int) -> Timing:
    for _ in range(warmup):
        call()
    gc.collect()
    samples = []
    for _ in range(n):
        start = clock()
        call()
        samples.append(clock() - start)
    return Timing.of(samples, 1_000_000)


# -- Redis server counters ---------------------------------------------------------------


@dataclass
class Commands:
    """What Redis ran for one piece of work, from ``INFO`` deltas (less INFO itself).

    ``per_command`` counts every command, including those a Lua script ran with
    redis.call(); ``round_trips`` is the server's count of socket reads. Times are
    commandstats ``usec``: ``script_us`` is the whole of EVALSHA/EVAL (the commands
    the script ran included, and the longest Redis is blocked at once); ``all_us``
    sums every command, so a script's commands are in it twice: an upper bound.
    """

    total: int
    round_trips: int
    script_us: int
    all_us: int
    per_command: dict[str, int] = field(default_factory=dict)
    per_command_us: dict[str, int] = field(default_factory=dict)
    keyspace_walks: dict[str, int] = field(default_factory=dict)


class ServerCounter:
    def __init__(self, admin: redis.Redis):
        self.admin = admin
        self.baseline: dict[str, tuple[int, int]] = {}
        self.baseline_reads = 0

    def _snapshot(self) -> tuple[dict[str, tuple[int, int]], int]:
        info = self.admin.info("all")  # one call: commandstats and stats
        calls = {
            key.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
            for key, value in info.items()
            if key.startswith("cmdstat_")
        }
        return calls, int(info["total_reads_processed"])

    def _delta(self, work: Callable[[], Any]) -> tuple[dict[str, tuple[int, int]], int]:
        before, reads_before = self._snapshot()
        work()
        after, reads_after = self._snapshot()
        found = {}
        for name, (calls, usec) in after.items():
            calls -= before.get(name, (0, 0))[0] + self.baseline.get(name, (0, 0))[0]
            usec -= before.get(name, (0, 0))[1]
            if calls:
                found[name] = (calls, max(0, usec))
        return found, reads_after - reads_before - self.baseline_reads

    def calibrate(self, times: int = 5) -> None:
        """Learn what the INFO calls themselves add."""
        self.baseline, self.baseline_reads = {}, 0
        seen = [self._delta(lambda: None) for _ in range(times)]
        calls, reads = min(seen, key=lambda s: sum(c for c, _ in s[0].values()))
        self.baseline = {name: (count, 0) for name, (count, _) in calls.items()}
        self.baseline_reads = reads

    def count(self, work: Callable[[], Any]) -> Commands:
        found, reads = self._delta(work)
        per_command = {name: calls for name, (calls, _) in sorted(found.items())}
        usec = {name: us for name, (_, us) in sorted(found.items())}
        return Commands(
            total=sum(per_command.values()),
            round_trips=reads,
            script_us=sum(us for name, us in usec.items() if name in ("evalsha", "eval")),
            all_us=sum(usec.values()),
            per_command=per_command,
            per_command_us=usec,
            keyspace_walks={n: c for n, c in per_command.items() if n in KEYSPACE_WALKS},
        )


# -- filling Redis ----------------------------------------------------------------------


def preview_of(n: int) -> str:
    """A realistic argument preview (~60 chars): the canonical JSON of bound arguments."""
    return canonical(
        {"customer_id": 100_000 + n, "period": f"2025-{n % 12 + 1:02d}", "kind": "usage"}
    )


def fill_locks(
    admin: redis.Redis, store: Store, tasks: list[str], count: int, rng: random.Random
) -> dict[str, Any]:
    """``count`` held locks over ``tasks`` (round robin, as concurrent traffic would
    interleave them), each taken by ``acquire.lua`` with the store's key layout."""
    text = resources.files("django_heimdall").joinpath("lua/acquire.lua").read_text()
    sha = admin.script_load(text)
    if sha != hashlib.sha1(text.encode()).hexdigest():
        raise RuntimeError("SCRIPT LOAD returned an unexpected SHA-1")
    owners: dict[str, list[str]] = {task: [] for task in tasks}
    pipe = admin.pipeline(transaction=False)
    started = clock()
    for n in range(count):
        task = tasks[n % len(tasks)]
        preview = preview_of(n)
        identity = f"{task}:{hashlib.sha1(preview.encode()).hexdigest()}"
        owner = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        owners[task].append(owner)
        keys = [
            store.lock_key(identity),
            store.index_key(task),
            store.tasks_key,
            store.owner_key(owner),
        ]
        pipe.evalsha(sha, len(keys), *keys, owner, rng.randint(*LEASE_MS), "1", task, preview)
        if len(pipe) >= FILL_BATCH or n == count - 1:
            for status, _holder, _pttl in pipe.execute():
                if status != ACQUIRED:
                    raise RuntimeError(f"acquire.lua did not take a new lock: {status}")
    return {"seconds": (clock() - started) / 1e9, "owners": owners}


def fill_others(admin: redis.Redis, count: int) -> dict[str, Any]:
    """``count`` keys that are not heimdall's: 95 % strings (DEBUG POPULATE, or
    pipelined MSET where DEBUG is disabled), 2.5 % hashes, 2.5 % lists."""
    hashes = lists = count // 40
    strings = count - hashes - lists
    started = clock()
    try:
        admin.execute_command("DEBUG", "POPULATE", strings, "other", 64)
        method = "DEBUG POPULATE"
    except redis.ResponseError:
        method = "pipelined MSET"
        for first in range(0, strings, 1000):
            admin.mset(
                {
                    f"other:{i}": f"value:{i}".ljust(64, "x")
                    for i in range(first, min(strings, first + 1000))
                }
            )
    pipe = admin.pipeline(transaction=False)
    for i in range(max(hashes, lists)):
        if i < hashes:
            pipe.hset(
                f"otherh:{i}",
                mapping={"name": f"user-{i}", "email": f"u{i}@example.com", "visits": i % 97},
            )
        if i < lists:
            pipe.rpush(f"otherl:{i}", *(f"event-{i}-{j}" for j in range(5)))
        if len(pipe) >= 2 * FILL_BATCH:
            pipe.execute()
    pipe.execute()
    return {
        "seconds": (clock() - started) / 1e9,
        "strings": strings,
        "hashes": hashes,
        "lists": lists,
        "method": method,
    }


def register_rates(store: Store, keys: int, rate: Rate) -> dict[str, Any]:
    """``keys`` rate-limit keys over ``RATE_TASKS`` tasks, counted by ``Store.start``;
    key i gets a share of its window's starts, from a few up to a full window."""
    started, calls = clock(), 0
    for i in range(keys):
        task = RATE_TASK_NAME.format(i % RATE_TASKS)
        identity = f"{task}:tenant-{i:03d}"
        for _ in range(max(1, rate.times * (i + 1) // keys)):
            decision = store.start(str(uuid.uuid4()), task_name=task, rates=((identity, rate),))
            if decision.status != STARTED:
                raise RuntimeError(f"a start of {identity} was not counted: {decision}")
            calls += 1
    return {"seconds": (clock() - started) / 1e9, "keys": keys, "starts": calls}


# -- the pages --------------------------------------------------------------------------


@dataclass
class Page:
    name: str
    url: str
    expect_rows: int
    expect_total: int | None  # the "N locks" line; None: not a lock page
    expect_text: list[str] = field(default_factory=list)
    targeted: bool = False


def lock_rows(html: str) -> int:
    return html.count('class="action-select"')


def shown_total(html: str) -> int | None:
    found = re.search(r'class="paginator">\s*(\d+) locks?\b', html)
    return int(found.group(1)) if found else None


def check_page(page: Page, status: int, html: str) -> dict[str, Any]:
    if page.expect_total is None:
        rows = html.count('name="selected"')
        total = None
    else:
        rows, total = lock_rows(html), shown_total(html)
    missing = [text for text in page.expect_text if text not in html]
    return {
        "status": status,
        "rows": rows,
        "expected_rows": page.expect_rows,
        "total_shown": total,
        "expected_total": page.expect_total,
        "missing_text": missing,
        "ok": status == 200
        and rows == page.expect_rows
        and total == page.expect_total
        and not missing,
    }


def expected_deep(per_task: dict[str, int], offset: int) -> tuple[int, set[str]]:
    """Rows and tasks of the unfiltered page at ``offset`` (tasks in name order)."""
    rows, tasks, skip = 0, set(), offset
    for task in sorted(per_task):
        take = min(PER_PAGE - rows, max(0, per_task[task] - skip))
        skip = max(0, skip - per_task[task])
        if take:
            rows += take
            tasks.add(task)
    return rows, tasks


# -- report -----------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    goal: str
    value: str
    passed: bool


def _rule(width: int = 100) -> str:
    return "-" * width


def report(results: dict[str, Any]) -> None:
    run, fill = results["run"], results["fill"]
    print(
        f"django-heimdall admin listing benchmark: private Redis {run['redis_version']} "
        f"at {run['redis_url']}, Python {run['python']}, Django {run['django']}, "
        f"redis-py {run['redis_py']}"
    )
    print(
        f"pages: {run['n']} renders after {run['warmup']} warm-up (Django test Client, "
        f"superuser, DEBUG=False); store calls: {run['store_n']} after {run['store_warmup']}; "
        f"prefix {run['prefix']}"
    )
    print()
    locks, others, rates = fill["locks"], fill["others"], fill["rates"]
    print(
        f"fill: {locks['count']:,} locks over {locks['tasks']} tasks via pipelined EVALSHA "
        f"acquire.lua in {locks['seconds']:.2f} s ({locks['count'] / locks['seconds']:,.0f}/s)"
    )
    print(
        f"      {others['strings'] + others['hashes'] + others['lists']:,} unrelated keys "
        f"({others['strings']:,} strings by {others['method']}, {others['hashes']:,} hashes, "
        f"{others['lists']:,} lists) in {others['seconds']:.2f} s"
    )
    print(
        f"      {rates['keys']} rate-limit keys, {rates['starts']:,} starts via Store.start in "
        f"{rates['seconds']:.2f} s; DBSIZE {fill['dbsize']:,} "
        f"(after the locks: {fill['dbsize_after_locks']:,})"
    )
    print()
    print(
        f"{'page render (ms, server time)':<40}{'median':>9}{'p90':>9}{'min':>9}{'max':>9}"
        f"{'rows':>7}{'total':>9}  check"
    )
    print(_rule())
    for name, page in results["pages"].items():
        t, c = page["timing_ms"], page["check"]
        total = "" if c["total_shown"] is None else str(c["total_shown"])
        print(
            f"{name:<40}{t['median']:>9.2f}{t['p90']:>9.2f}{t['min']:>9.2f}{t['max']:>9.2f}"
            f"{c['rows']:>7}{total:>9}  {'ok' if c['ok'] else 'WRONG ' + json.dumps(c)}"
        )
    print()
    print(f"{'store call alone (ms)':<52}{'median':>9}{'p90':>9}{'min':>9}")
    print(_rule(79))
    for name, t in results["store_ms"].items():
        print(f"{name:<52}{t['median']:>9.3f}{t['p90']:>9.3f}{t['min']:>9.3f}")
    print()
    print(f"{'split of the median render (ms)':<40}{'page':>9}{'Redis':>9}{'Django':>9}")
    print(_rule(67))
    for name, split in results["split_ms"].items():
        print(f"{name:<40}{split['page']:>9.2f}{split['redis']:>9.2f}{split['django']:>9.2f}")
    print("  Redis = the medians of the store calls the view makes; Django = page - Redis")
    print()
    print(
        f"{'Redis per render (INFO deltas)':<34}{'cmds':>6}{'trips':>7}{'script µs':>10}"
        f"{'all µs':>8}"
        f"{'walks':>7}  commands"
    )
    print(_rule(120))
    for name, page in results["pages"].items():
        c = page["redis"]
        detail = " ".join(f"{cmd}={count}" for cmd, count in c["per_command"].items())
        walks = sum(c["keyspace_walks"].values())
        print(
            f"{name:<34}{c['total']:>6}{c['round_trips']:>7}{c['script_us']:>10}"
            f"{c['all_us']:>8}{walks:>7}  {detail}"
        )
    print(
        "  cmds = INFO commandstats, which also counts the commands run inside Lua scripts;"
        " trips = server socket reads"
    )
    print(
        "  script µs = EVALSHA's own server time, its commands included; all µs = the sum"
        " over all commands (a script's commands twice: an upper bound)"
    )
    print(f"  walks = {', '.join(sorted(KEYSPACE_WALKS)).upper()}")
    print()
    print(f"{'target':<48}{'goal':<16}{'measured':<28}result")
    print(_rule(100))
    for t in results["targets"]:
        print(f"{t['name']:<48}{t['goal']:<16}{t['value']:<28}{'PASS' if t['passed'] else 'MISS'}")


# -- entry point ------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "django": django.get_version(),
        "redis_py": metadata.version("redis"),
        "django_redis": metadata.version("django-redis"),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.admin_listing",
        description="Render time and Redis commands of the live admin pages on a large Redis.",
    )
    parser.add_argument("--n", type=int, default=20, help="timed renders per page (20)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up renders per page (3)")
    parser.add_argument("--store-n", type=int, default=200, help="timed store calls (200)")
    parser.add_argument("--store-warmup", type=int, default=20, help="store warm-up calls (20)")
    parser.add_argument("--locks", type=int, default=100_000, help="held locks (100000)")
    parser.add_argument("--tasks", type=int, default=50, help="task names (50)")
    parser.add_argument("--others", type=int, default=1_000_000, help="unrelated keys (1000000)")
    parser.add_argument("--deep-page", type=int, default=500, help="the deep page (500)")
    parser.add_argument("--rate-keys", type=int, default=50, help="rate-limit keys (50)")
    parser.add_argument("--rate-times", type=int, default=100, help="rate: starts (100) ...")
    parser.add_argument("--rate-per", type=float, default=60.0, help="... per seconds (60)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help=f"where to write the results (default {DEFAULT_JSON})",
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 1 on a MISS")
    args = parser.parse_args(argv)
    for name in ("n", "store_n", "locks", "tasks", "deep_page", "rate_keys", "rate_times"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} is too small")
    for name in ("warmup", "store_warmup", "others"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} is negative")
    if args.tasks > 100:
        parser.error("--tasks is at most 100 (names t00..t99)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    server = EmbeddedRedis().start()
    try:
        os.environ[URL_ENV] = server.url
        os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
        django.setup()
        results = run(args, server, started)
    finally:
        server.stop()
    report(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(f"private Redis stopped; results written to {args.json}")
    failed = not all(t["passed"] for t in results["targets"])
    return 1 if args.strict and failed else 0


def run(args: argparse.Namespace, server: EmbeddedRedis, started: str) -> dict[str, Any]:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from django_heimdall.admin import live

    if live.PER_PAGE != PER_PAGE:
        raise RuntimeError(f"the admin shows {live.PER_PAGE} locks per page, not {PER_PAGE}")
    rng = random.Random(args.seed)
    admin = redis.Redis.from_url(server.url)
    store = get_store()
    tasks = [TASK_NAME.format(i) for i in range(args.tasks)]

    # 1. Fill.
    filled = fill_locks(admin, store, tasks, args.locks, rng)
    owners: dict[str, list[str]] = filled.pop("owners")
    dbsize_after_locks = admin.dbsize()
    others = fill_others(admin, args.others)
    rate = Rate(args.rate_times, args.rate_per)
    rates = register_rates(store, args.rate_keys, rate)
    fill = {
        "locks": {**filled, "count": args.locks, "tasks": args.tasks},
        "others": others,
        "rates": {**rates, "rate": str(rate)},
        "dbsize_after_locks": dbsize_after_locks,
        "dbsize": admin.dbsize(),
        "used_memory_human": admin.info("memory")["used_memory_human"],
    }

    # Django: tables, a superuser, a logged-in client.
    call_command("migrate", run_syncdb=True, verbosity=0)
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
    client = Client()
    client.force_login(user)

    per_task = {task: len(owners[task]) for task in tasks}
    filtered = tasks[len(tasks) // 2]
    searched_owner = owners[filtered][len(owners[filtered]) // 2]
    deep_offset = (args.deep_page - 1) * PER_PAGE
    deep_rows, deep_tasks = expected_deep(per_task, deep_offset)
    locks_url = reverse("admin:heimdall_lock_changelist")
    pages_total = max(1, -(-args.locks // PER_PAGE))
    pages = [
        Page(
            "(a) first page",
            locks_url,
            min(PER_PAGE, args.locks),
            args.locks,
            [f"page 1 of {pages_total}"] if pages_total > 1 else [],
            targeted=True,
        ),
        Page(
            f"(b) filtered ?task={filtered}",
            f"{locks_url}?{urlencode({'task': filtered})}",
            min(PER_PAGE, per_task[filtered]),
            per_task[filtered],
            [f"{filtered} ({per_task[filtered]})"],
            targeted=True,
        ),
        Page(
            f"(c) deep page ?p={args.deep_page}",
            f"{locks_url}?{urlencode({'p': args.deep_page})}",
            deep_rows,
            args.locks,
            [
                f"page {args.deep_page} of {pages_total}",
                *sorted(f"<td>{t}</td>" for t in deep_tasks),
            ],
        ),
        Page(
            "(d) task-id search ?q=<owner>",
            f"{locks_url}?{urlencode({'q': searched_owner})}",
            1,
            1,
            [searched_owner],
        ),
        Page(
            "(e) rate-limit windows",
            reverse("admin:heimdall_ratelimitwindow_changelist"),
            args.rate_keys,
            None,
            [RATE_TASK_NAME.format(i) for i in range(min(RATE_TASKS, args.rate_keys))],
        ),
        Page("admin index (reference)", reverse("admin:index"), 0, None),
    ]

    # 2. Render times, with a check of what each page shows.
    counter = ServerCounter(admin)
    counter.calibrate()
    page_results: dict[str, Any] = {}
    for page in pages:
        response = client.get(page.url)
        check = check_page(page, response.status_code, response.content.decode())
        timing = timed(lambda url=page.url: client.get(url), args.warmup, args.n)
        # 3. Commands of one render.
        commands = counter.count(lambda url=page.url: client.get(url))
        page_results[page.name] = {
            "url": page.url,
            "timing_ms": asdict(timing),
            "check": check,
            "redis": asdict(commands),
        }
    dbsize_after_pages = admin.dbsize()

    # Store calls alone.
    names = store.task_names()
    ordered = sorted(store.lock_counts(names))
    store_calls: dict[str, Callable[[], Any]] = {
        "task_names()": store.task_names,
        f"lock_counts(all {len(names)} tasks)": lambda: store.lock_counts(names),
        f"locks_page(all {len(ordered)} tasks, offset 0)": lambda: store.locks_page(
            ordered, 0, PER_PAGE
        ),
        "locks_page(1 task, offset 0)": lambda: store.locks_page([filtered], 0, PER_PAGE),
        f"locks_page(all {len(ordered)} tasks, offset {deep_offset})": lambda: store.locks_page(
            ordered, deep_offset, PER_PAGE
        ),
        "lock_by_owner(owner)": lambda: store.lock_by_owner(searched_owner),
        f"rate_windows() ({args.rate_keys} keys)": store.rate_windows,
    }
    store_ms = {
        name: asdict(timed(call, args.store_warmup, args.store_n))
        for name, call in store_calls.items()
    }
    first = store.locks_page(ordered, 0, PER_PAGE)
    store_check = {
        "locks_page_total": first.total,
        "locks_page_rows": len(first.locks),
        "lock_counts_sum": sum(store.lock_counts(names).values()),
        "task_names": len(names),
        "searched_owner_found": getattr(store.lock_by_owner(searched_owner), "owner", None)
        == searched_owner,
        "dbsize_unchanged_by_renders": dbsize_after_pages == fill["dbsize"],
    }
    store_check["ok"] = (
        store_check["locks_page_total"] == args.locks
        and store_check["locks_page_rows"] == min(PER_PAGE, args.locks)
        and store_check["lock_counts_sum"] == args.locks
        and store_check["task_names"] == args.tasks
        and store_check["searched_owner_found"]
        and store_check["dbsize_unchanged_by_renders"]
    )

    # What of each median render is Redis (the view's store calls) and what is Django.
    names_ms = store_ms["task_names()"]["median"]
    counts_ms = store_ms[f"lock_counts(all {len(names)} tasks)"]["median"]
    view_calls = {
        pages[0].name: names_ms
        + counts_ms
        + store_ms[f"locks_page(all {len(ordered)} tasks, offset 0)"]["median"],
        pages[1].name: names_ms + counts_ms + store_ms["locks_page(1 task, offset 0)"]["median"],
        pages[2].name: names_ms
        + counts_ms
        + store_ms[f"locks_page(all {len(ordered)} tasks, offset {deep_offset})"]["median"],
        pages[3].name: names_ms + counts_ms + store_ms["lock_by_owner(owner)"]["median"],
        pages[4].name: store_ms[f"rate_windows() ({args.rate_keys} keys)"]["median"],
    }
    split_ms = {
        name: {
            "page": page_results[name]["timing_ms"]["median"],
            "redis": redis_ms,
            "django": page_results[name]["timing_ms"]["median"] - redis_ms,
        }
        for name, redis_ms in view_calls.items()
    }

    # 4. Targets.
    found: list[Target] = []
    for page in pages:
        if page.targeted:
            t = page_results[page.name]["timing_ms"]
            found.append(
                Target(
                    f"{page.name} render (p90)",
                    f"<= {TARGET_MS:g} ms",
                    f"p90 {t['p90']:.2f} ms, median {t['median']:.2f}",
                    t["p90"] <= TARGET_MS,
                )
            )
    wrong = [name for name, p in page_results.items() if not p["check"]["ok"]]
    found.append(
        Target(
            "pages show the expected rows and totals",
            "all ok",
            "all ok" if not wrong else f"wrong: {', '.join(wrong)}",
            not wrong,
        )
    )
    walks = {
        name: p["redis"]["keyspace_walks"]
        for name, p in page_results.items()
        if p["redis"]["keyspace_walks"]
    }
    found.append(
        Target(
            "no keyspace walk per render",
            "0 SCAN/KEYS",
            "0" if not walks else json.dumps(walks),
            not walks,
        )
    )
    found.append(
        Target(
            "store totals (100 rows, sum of counts)",
            "consistent",
            "ok" if store_check["ok"] else json.dumps(store_check),
            store_check["ok"],
        )
    )

    return {
        "run": {
            "redis": "private embedded",
            "redis_url": server.url,
            "redis_version": admin.info("server")["redis_version"],
            "prefix": settings.KEY_PREFIX,
            "n": args.n,
            "warmup": args.warmup,
            "store_n": args.store_n,
            "store_warmup": args.store_warmup,
            "seed": args.seed,
            "started": started,
            **_versions(),
        },
        "fill": fill,
        "pages": page_results,
        "store_ms": store_ms,
        "split_ms": split_ms,
        "store_check": store_check,
        "targets": [asdict(t) for t in found],
    }


if __name__ == "__main__":
    sys.exit(main())
