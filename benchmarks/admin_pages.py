"""The admin section: what the live admin pages cost on a large Redis.

Under a key prefix of its own, it seeds held locks over many tasks (``seed_locks``,
the one place the benchmarks write django-heimdall state directly), a million
unrelated keys, and per-key rate-limit windows (through the tasks' own start check,
``Task.apply``); then renders the admin pages through Django's test ``Client`` as a
superuser, checks what they show, splits each render into Redis (time inside
redis-py's socket calls) and Django, and counts the Redis commands of one render to
show that no ``SCAN``/``KEYS`` walks the keyspace. It runs last: its keys stay in the
private Redis, which the suite stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from benchmarks import measure as m
from benchmarks.measure import Context, Params, Result, Target, bound, clock, section, table

TARGET_MS = 250.0  # p90 render of the first page and of a filtered page
PER_PAGE = 100  # locks per admin page
KEYSPACE_WALKS = frozenset({"scan", "keys", "sscan", "hscan", "zscan", "randomkey"})
HEADER = "page | median ms | p90 ms | Redis ms | Django ms | commands | trips | server µs | rows"
HEADER += " | check"
ROW = "{} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:g} | {:g} | {:g} | {} | {}"


def seed_locks(tasks: list[str], count: int, rng: random.Random) -> dict[str, list[str]]:
    """``count`` held locks over ``tasks`` (round robin, as concurrent traffic would
    interleave them), each taken by the store's acquire with a realistic argument
    preview and a lease that outlives the run; the owners by task. Adapt here when
    the store's signature changes."""
    from django_heimdall.store import get_store

    store = get_store()
    owners: dict[str, list[str]] = {task: [] for task in tasks}
    for n in range(count):
        task = tasks[n % len(tasks)]
        arguments = {
            "customer_id": 100_000 + n,
            "period": f"2025-{n % 12 + 1:02d}",
            "kind": "usage",
        }
        preview = json.dumps(arguments, sort_keys=True, separators=(",", ":"))
        identity = f"{task}:{hashlib.sha1(preview.encode()).hexdigest()}"
        owner = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        taken = store.acquire(identity, owner, rng.randint(3_600_000, 7_200_000), task, preview)
        if taken.holder != owner:
            raise RuntimeError(f"seeding: the lock of {identity} was not taken: {taken}")
        owners[task].append(owner)
    return owners


def seed_others(client: Any, count: int) -> str:
    """``count`` unrelated keys: 95 % strings, 2.5 % hashes, 2.5 % lists."""
    small = count // 40
    strings = count - 2 * small
    try:
        client.execute_command("DEBUG", "POPULATE", strings, "other", 64)
        method = "DEBUG POPULATE"
    except redis.ResponseError:  # DEBUG disabled: pipelined MSET
        method = "MSET"
        for first in range(0, strings, 1000):
            client.mset({f"other:{i}": "x" * 64 for i in range(first, min(strings, first + 1000))})
    pipe = client.pipeline(transaction=False)
    for i in range(small):
        pipe.hset(f"otherh:{i}", mapping={"name": f"user-{i}", "email": f"u{i}@example.com"})
        pipe.rpush(f"otherl:{i}", *(f"event-{i}-{j}" for j in range(5)))
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    return method


def seed_rates(ctx: Context, keys: int) -> int:
    """``keys`` per-key rate windows over the admin rate tasks, each run ``Task.apply``
    (eager, through the start check) a share of its limit's 100 starts."""
    calls = 0
    for i in range(keys):
        task = ctx.app.tasks[ctx.t.admin_rate_task_name(i % ctx.t.ADMIN_RATE_TASKS)]
        for _ in range(max(1, 100 * (i + 1) // keys)):
            task.apply((f"{task.name}:tenant-{i:03d}",)).get()
            calls += 1
    return calls


@contextlib.contextmanager
def redis_time() -> Iterator[list[int]]:
    """Nanoseconds spent in redis-py's socket calls while the block runs (``[0]``)."""
    from redis import connection

    base = getattr(connection, "AbstractConnection", connection.Connection)
    originals = {name: getattr(base, name) for name in ("send_packed_command", "read_response")}
    spent = [0]

    def timing(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return method(*args, **kwargs)
            finally:
                spent[0] += clock() - start

        return call

    for name, method in originals.items():
        setattr(base, name, timing(method))
    try:
        yield spent
    finally:
        for name, method in originals.items():
            setattr(base, name, method)


@dataclass
class Page:
    name: str
    url: str
    rows: int
    total: int | None  # the "N locks" line; None: not a lock page
    texts: list[str] = field(default_factory=list)


def check(page: Page, status: int, html: str) -> dict[str, Any]:
    if page.total is None:
        rows, total = html.count('name="selected"'), None
    else:
        rows = html.count('class="action-select"')
        found = re.search(r'class="paginator">\s*(\d+) locks?\b', html)
        total = int(found.group(1)) if found else None
    missing = [text for text in page.texts if text not in html]
    ok = status == 200 and rows == page.rows and total == page.total and not missing
    return {"status": status, "rows": rows, "total": total, "missing": missing, "ok": ok}


@section(
    "admin",
    "Admin listing",
    full=dict(locks=100_000, tasks=50, others=1_000_000, rate_keys=50, n=20, warmup=3, deep=500),
    quick=dict(locks=10_000, others=100_000, rate_keys=20, n=5, warmup=1, deep=50),
)
def admin(ctx: Context, p: Params) -> Result:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client, override_settings

    started, tasks = clock(), [f"bench.tasks.t{i:02d}" for i in range(p.tasks)]
    own_prefix = {**settings.HEIMDALL, "KEY_PREFIX": f"{settings.KEY_PREFIX}-admin"}
    with override_settings(HEIMDALL=own_prefix):
        owners = seed_locks(tasks, p.locks, ctx.rng)
        seeded_s = (clock() - started) / 1e9
        method, starts = seed_others(ctx.redis, p.others), seed_rates(ctx, p.rate_keys)
        dbsize = ctx.redis.dbsize()
        client = Client()
        client.force_login(get_user_model().objects.create_superuser("bench", "", "bench"))
        pages = _pages(p, owners)
        results = {page.name: _render(ctx, p, client, page) for page in pages}
        dbsize_after = ctx.redis.dbsize()

    rows = []
    for name, r in results.items():
        cost, ms, verdict = (
            r["redis"],
            r["ms"],
            "ok" if r["check"]["ok"] else json.dumps(r["check"]),
        )
        cells = (ms["median"], ms["p90"], r["redis_ms"], ms["median"] - r["redis_ms"])
        counts = (cost["commands"], cost["round_trips"], cost["server_us"])
        rows.append(ROW.format(name, *cells, *counts, r["check"]["rows"], verdict))
    lines = [
        f"{p.locks:,} held locks over {p.tasks} tasks (seeded in {seeded_s:.1f} s), "
        f"{p.others:,} unrelated keys ({method}), {p.rate_keys} rate-limit keys "
        f"({starts:,} starts); DBSIZE {dbsize:,}. Median of {p.n} renders after {p.warmup} "
        "(Django test `Client`, superuser, `DEBUG=False`); Redis = time inside redis-py's "
        "socket calls, Django = the rest; commands, round trips and server µs of one render.",
        "",
        *table(HEADER, rows),
    ]
    wrong = [name for name, r in results.items() if not r["check"]["ok"]]
    walks = {name: r["walks"] for name, r in results.items() if r["walks"]}
    found = [  # the first page and a filtered one
        bound(f"admin: {page.name} (p90)", results[page.name]["ms"]["p90"], "<=", TARGET_MS, " ms")
        for page in pages[:2]
    ]
    shown = json.dumps(walks) if walks else f"0, DBSIZE {dbsize_after:,}"
    kept = not walks and dbsize_after == dbsize
    found += [
        Target(
            "admin: pages show the expected rows", "all ok", ", ".join(wrong) or "ok", not wrong
        ),
        Target("admin: no keyspace walk, no write", "0 SCAN/KEYS, DBSIZE kept", shown, kept),
    ]
    data = {"params": vars(p), "dbsize": dbsize, "seed_seconds": seeded_s, "pages": results}
    return Result(data, lines, found)


def _pages(p: Params, owners: dict[str, list[str]]) -> list[Page]:
    from django.urls import reverse

    count = {task: len(found) for task, found in owners.items()}
    filtered = sorted(count)[len(count) // 2]
    searched = owners[filtered][len(owners[filtered]) // 2]
    last = -(-p.locks // PER_PAGE)
    skip, deep_rows, deep = (p.deep - 1) * PER_PAGE, 0, [f"page {p.deep} of {last}"]
    for task in sorted(count):  # the unfiltered pages list the tasks in name order
        take = min(PER_PAGE - deep_rows, max(0, count[task] - skip))
        skip, deep_rows = max(0, skip - count[task]), deep_rows + take
        deep += [f"<td>{task}<"] if take else []
    locks, n = reverse("admin:heimdall_lock_changelist"), count[filtered]
    rates = reverse("admin:heimdall_ratelimitwindow_changelist")
    return [
        Page("(a) first page", locks, min(PER_PAGE, p.locks), p.locks, [f"page 1 of {last}"]),
        Page(f"(b) filtered ?task={filtered}", f"{locks}?task={filtered}", min(PER_PAGE, n), n),
        Page(f"(c) deep page ?p={p.deep}", f"{locks}?p={p.deep}", deep_rows, p.locks, deep),
        Page("(d) task-id search ?q=<owner>", f"{locks}?q={searched}", 1, 1, [searched]),
        Page("(e) rate-limit windows", rates, p.rate_keys, None),
        Page("admin index (reference)", reverse("admin:index"), 0, None),
    ]


def _render(ctx: Context, p: Params, client: Any, page: Page) -> dict[str, Any]:
    response = client.get(page.url)
    result = check(page, response.status_code, response.content.decode())
    for _ in range(p.warmup):
        client.get(page.url)
    totals, in_redis = [], []
    with redis_time() as spent:
        for _ in range(p.n):
            start, before = clock(), spent[0]
            client.get(page.url)
            totals.append(clock() - start)
            in_redis.append(spent[0] - before)
    cost = ctx.counter.delta(lambda: client.get(page.url))
    return {
        "url": page.url,
        "ms": asdict(m.Summary.of(totals, 1_000_000)),
        "redis_ms": m.Summary.of(in_redis, 1_000_000).median,
        "redis": asdict(cost),
        "walks": {name: n for name, n in cost.per_command.items() if name in KEYSPACE_WALKS},
        "check": result,
    }
