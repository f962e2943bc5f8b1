"""A page that fires each demo task several times and shows what happened."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from celery.result import AsyncResult
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from django_heimdall import AlreadyQueuedError, HeimdallUnavailable

from . import tasks

FIRED = "demo:fired"  # the last tasks fired from this page, newest first
KEEP = 80


def _record(label: str, task_id: str, note: str = "") -> dict[str, Any]:
    entry = {"label": label, "id": task_id, "note": note, "at": time.time()}
    client = cache.client.get_client(write=True)
    key = cache.make_key(FIRED)
    client.lpush(key, json.dumps(entry))
    client.ltrim(key, 0, KEEP - 1)
    return entry


def _fire(label: str, times: int, call: Callable[[int], Any]) -> list[dict[str, Any]]:
    fired, seen = [], set()
    for n in range(times):
        task_id = call(n).id
        note = (
            "same id as before: a duplicate returned the holder's result" if task_id in seen else ""
        )
        seen.add(task_id)
        fired.append(_record(label, task_id, note))
    return fired


FEATURES: dict[str, tuple[str, Callable[[], list[dict[str, Any]]]]] = {
    "report": (
        "Generate the report of customer 1, five clicks (unique)",
        lambda: _fire("report(1)", 5, lambda n: tasks.generate_report.delay(1)),
    ),
    "digest": (
        "Send user 7 a digest, three times (at most once per 30 s)",
        lambda: _fire("digest(7)", 3, lambda n: tasks.send_digest.delay(7)),
    ),
    "partner": (
        "Push six orders to the partner API (2 calls per 10 s, global)",
        lambda: _fire("partner_api", 6, lambda n: tasks.call_partner_api.delay(n)),
    ),
    "customers": (
        "Fetch 4 pages for premium customer 1 and 4 for customer 9 (5 vs 1 per 10 s)",
        lambda: (
            _fire("customer 1", 4, lambda n: tasks.fetch_customer_data.delay(1, page=n))
            + _fire("customer 9", 4, lambda n: tasks.fetch_customer_data.delay(9, page=n))
        ),
    ),
    "render": (
        "Render 12 videos, at most 2 at a time (concurrency_limit=2)",
        lambda: _fire("render", 12, lambda n: tasks.render_video.delay(n)),
    ),
    "sync": (
        "Sync customer 3 three times, with different options (unique by settings)",
        lambda: _fire("sync(3)", 3, lambda n: tasks.sync_customer.delay(3, full=bool(n % 2))),
    ),
}


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    features = [(name, label) for name, (label, _) in FEATURES.items()]
    return render(request, "demo/index.html", {"features": features})


@require_POST
def fire(request: HttpRequest, feature: str) -> JsonResponse:
    if feature not in FEATURES:
        return JsonResponse({"error": "unknown feature"}, status=404)
    try:
        return JsonResponse({"fired": FEATURES[feature][1]()})
    except HeimdallUnavailable as exc:
        return JsonResponse({"error": str(exc)}, status=503)


@require_POST
def rebuild_index(request: HttpRequest, site_id: int) -> JsonResponse:
    """An API endpoint built on ``unique_raises``: 202 when started, 409 when running."""
    try:
        result = tasks.rebuild_search_index.delay(site_id)
    except AlreadyQueuedError as exc:
        _record(f"rebuild({site_id})", exc.likely_culprit or "", "409: already running")
        return JsonResponse(
            {
                "status": "already running",
                "task_id": exc.likely_culprit,
                "expires_in": exc.expires_in,
            },
            status=409,
        )
    _record(f"rebuild({site_id})", result.id, "202: started")
    return JsonResponse({"status": "started", "task_id": result.id}, status=202)


@require_GET
def status(request: HttpRequest) -> JsonResponse:
    """The fired tasks with their current state, for the page's live table."""
    client = cache.client.get_client(write=False)
    entries = [json.loads(item) for item in client.lrange(cache.make_key(FIRED), 0, -1)]
    states: dict[str, str] = {}
    for entry in entries:
        if entry["id"] and entry["id"] not in states:
            states[entry["id"]] = AsyncResult(entry["id"]).state
    for entry in entries:
        entry["state"] = states.get(entry["id"], "")
    return JsonResponse({"tasks": entries})
