"""The demo page: one section per demo, each with a button that fires its task and a
live timeline of what happened (drawn by the page's script from ``timeline/``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from celery.result import AsyncResult
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST
from redis.exceptions import RedisError

from django_heimdall import AlreadyQueuedError, HeimdallUnavailable, services

from . import tasks, timeline

SPAN_S = 60  # seconds of history drawn
ROWS = 12  # task ids drawn per demo, the latest
WAITING = {"PENDING", "RECEIVED", "STARTED", "RETRY", "THROTTLED"}  # no admitted start yet


@dataclass(frozen=True)
class Lane:
    """A rate-limit bucket drawn as starts per sliding window against its limit."""

    name: str  # the ``lane`` of the calls and runs counted
    times: int
    per: float


@dataclass(frozen=True)
class Demo:
    slug: str
    title: str
    button: str
    expect: str  # what a visitor should see, one sentence
    fire: Callable[[], list[dict[str, Any]]] | None = field(default=None, compare=False)
    url: str = ""  # the button posts here instead of fire/<slug>/ ...
    repeat: int = 1  # ... this many times, and shows the responses
    lanes: tuple[Lane, ...] = ()
    overlap: int | None = None  # at most this many runs at once: drawn with its limit
    beat: bool = False  # beat's leader and its sent and skipped occurrences

    def chart(self) -> dict[str, Any]:
        """What the script needs to draw this demo."""
        return {
            "slug": self.slug,
            "url": self.url or f"fire/{self.slug}/",
            "repeat": self.repeat,
            "lanes": [asdict(lane) for lane in self.lanes],
            "overlap": self.overlap,
            "beat": self.beat,
        }


def _fire(
    demo: str, label: str, times: int, call: Callable[[int], Any], lane: str = ""
) -> list[dict[str, Any]]:
    fired, seen = [], set()
    for n in range(times):
        task_id = call(n).id
        note = "same id as before" if task_id in seen else "new task"
        seen.add(task_id)
        fired.append(timeline.record_call(demo, task_id, label.format(n=n + 1), lane, note))
    return fired


# The page shows these in order. A demo is one entry here, and its task (in tasks.py)
# records its runs with ``timeline.run(self, "<slug>")``.
DEMOS = [
    Demo(
        "report",
        "Unique: five clicks, one report",
        "Generate the report of customer 1, five times",
        "Five calls land on one task id: one bar, with five call marks on it.",
        fire=lambda: _fire("report", "report(1)", 5, lambda n: tasks.generate_report.delay(1)),
        overlap=1,
    ),
    Demo(
        "partner",
        "Rate limit: 2 calls per 10 s, across every worker",
        "Push six orders to the partner API",
        "Six tasks are queued at once; at most two start in any 10 s (the count stays "
        "under the dashed limit line), the others wait (hollow bars).",
        fire=lambda: _fire(
            "partner", "order {n}", 6, lambda n: tasks.call_partner_api.delay(n + 1), "partner API"
        ),
        lanes=(Lane("partner API", 2, 10),),
    ),
    Demo(
        "customers",
        "Rate limit per customer: premium 5 per 10 s, others 1",
        "Fetch 4 pages for premium customer 1 and 4 for customer 9",
        "Customer 1's pages start at once; customer 9's start one every 10 s.",
        fire=lambda: (
            _fire(
                "customers",
                "customer 1 p{n}",
                4,
                lambda n: tasks.fetch_customer_data.delay(1, page=n + 1),
                "customer 1",
            )
            + _fire(
                "customers",
                "customer 9 p{n}",
                4,
                lambda n: tasks.fetch_customer_data.delay(9, page=n + 1),
                "customer 9",
            )
        ),
        lanes=(Lane("customer 1", 5, 10), Lane("customer 9", 1, 10)),
    ),
    Demo(
        "digest",
        "At most once per 30 s",
        "Send user 7 a digest, three times",
        "One digest runs; clicking again within 30 s of it returns the same task id "
        "(more call marks on the same row), even after it finished.",
        fire=lambda: _fire("digest", "digest(7)", 3, lambda n: tasks.send_digest.delay(7)),
    ),
    Demo(
        "debounce",
        "Debounce: replace the queued call",
        "Save customer 42 five times",
        "Each call replaces the one still queued (grey, REVOKED); only the last runs, "
        "2 s after it.",
        fire=lambda: _fire(
            "debounce",
            "reindex(42)",
            5,
            lambda n: tasks.reindex_customer.apply_async((42, f"save {n + 1}"), countdown=2),
        ),
    ),
    Demo(
        "render",
        "At most two at a time",
        "Render 12 videos",
        "concurrency_limit=2: never more than two bars overlap; the others wait their turn.",
        fire=lambda: _fire("render", "render(n)", 12, lambda n: tasks.render_video.delay(n)),
        overlap=2,
    ),
    Demo(
        "sync",
        "Unique by settings, on one argument",
        "Sync customer 3 three times, with different options",
        "unique_on=['customer_id'] in settings: the three calls share one task id.",
        fire=lambda: _fire(
            "sync",
            "sync(3)",
            3,
            lambda n: tasks.sync_customer.delay(3, full=bool(n % 2)),
        ),
    ),
    Demo(
        "rebuild",
        'An API that answers "already running"',
        "Call the rebuild API for site 1, three times",
        "The first call answers 202 and starts the task, the next ones 409 with its id.",
        url="api/sites/1/rebuild/",
        repeat=3,
    ),
    Demo(
        "periodic",
        "Periodic: nightly_cleanup never overlaps itself",
        "",
        "Beat sends it every 5 s; it runs 8 s, so beat skips the occurrences that fall "
        "while it runs (grey crosses) and the runs never overlap.",
        overlap=1,
        beat=True,
    ),
]
BY_SLUG = {demo.slug: demo for demo in DEMOS}


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "demo/index.html",
        {"demos": DEMOS, "charts": [demo.chart() for demo in DEMOS], "span": SPAN_S},
    )


@require_POST
def fire(request: HttpRequest, feature: str) -> JsonResponse:
    demo = BY_SLUG.get(feature)
    if demo is None or demo.fire is None:
        return JsonResponse({"error": "unknown demo"}, status=404)
    try:
        return JsonResponse({"fired": demo.fire()})
    except HeimdallUnavailable as exc:
        return JsonResponse({"error": str(exc)}, status=503)


@require_POST
def rebuild_index(request: HttpRequest, site_id: int) -> JsonResponse:
    """An API endpoint built on ``unique_raises``: 202 when started, 409 when running."""
    label = f"rebuild({site_id})"
    try:
        result = tasks.rebuild_search_index.delay(site_id)
    except AlreadyQueuedError as exc:
        timeline.record_call("rebuild", exc.likely_culprit or "", label, note="409")
        return JsonResponse(
            {
                "status": "already running",
                "task_id": exc.likely_culprit,
                "expires_in": exc.expires_in,
            },
            status=409,
        )
    timeline.record_call("rebuild", result.id, label, note="202")
    return JsonResponse({"status": "started", "task_id": result.id}, status=202)


def _rows(
    calls: list[dict[str, Any]],
    runs: dict[str, dict[str, Any]],
    throttled: dict[str, dict[str, Any]],
    now: int,
) -> dict[str, list[dict[str, Any]]]:
    """One row per task id and demo, with the calls that got that id, oldest first."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for call in calls:
        if not call["id"]:
            continue
        row = rows.setdefault(
            (call["demo"], call["id"]),
            {"id": call["id"], "label": call["label"], "lane": call["lane"], "calls": []},
        )
        row["calls"].append({"at_us": call["at_us"], "note": call["note"]})
    for task_id, run in runs.items():
        row = rows.setdefault(
            (run["demo"], task_id),
            {
                "id": task_id,
                "label": run.get("task", run["demo"]),
                "lane": run["demo"],
                "calls": [],
            },
        )
        row.update({key: run[key] for key in ("start_us", "end_us", "state") if key in run})

    by_demo: dict[str, list[dict[str, Any]]] = {}
    for (demo, _), row in rows.items():
        times = [c["at_us"] for c in row["calls"]] + [row.get("start_us") or now]
        row["enqueued_us"] = min(times)
        by_demo.setdefault(demo, []).append(row)
    since = now - SPAN_S * 1_000_000
    for demo, demo_rows in by_demo.items():
        demo_rows.sort(key=lambda row: row["enqueued_us"])
        # The latest rows only (one result lookup each), each with the row after it.
        pairs = list(zip([*demo_rows[1:], None], demo_rows, strict=True))[-ROWS:]
        for later, row in pairs:
            if "start_us" in row:
                row["kind"] = "ran" if "end_us" in row else "running"
                continue
            state = row["state"] = AsyncResult(row["id"]).state
            if state in WAITING:
                row["kind"] = "waiting"
                if row["id"] in throttled:  # deferred by its rate limit until then
                    row["retry_us"] = throttled[row["id"]]["until_us"]
            else:  # ended without running here: replaced (REVOKED), or failed to start
                row["kind"] = "gone"
                row["end_us"] = later["enqueued_us"] if later else row["enqueued_us"]
        by_demo[demo] = [row for _, row in pairs if row.get("end_us", now) >= since]
    return by_demo


def _beat() -> dict[str, Any]:
    state = services.beat()
    leader = state.leader()
    return {
        "leader": leader
        and {
            "host": leader.host,
            "pid": leader.pid,
            "lease_left": leader.lease_left,
            "since": leader.since.isoformat(),
        },
        "occurrences": [
            {
                "at_us": int(occurrence.at.timestamp() * 1_000_000),
                "outcome": occurrence.outcome,
                "holder": occurrence.holder,
            }
            for occurrence in state.recent()
            if occurrence.task == tasks.nightly_cleanup.name
        ],
    }


@require_GET
def timeline_data(request: HttpRequest) -> JsonResponse:
    """Everything the page's charts draw, times in µs on the Redis clock."""
    try:
        now = timeline.now_us()
        calls, runs, throttled = timeline.read()
        beat = _beat()
    except (HeimdallUnavailable, RedisError) as exc:
        return JsonResponse({"error": f"Redis is unreachable: {exc}"}, status=503)
    return JsonResponse(
        {"now_us": now, "span_s": SPAN_S, "demos": _rows(calls, runs, throttled, now), "beat": beat}
    )
