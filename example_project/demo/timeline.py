"""What the demo page draws: every call made from the page and every run of a demo
task, with times on the Redis server's clock (the clock django-heimdall decides on).

Two bounded Redis lists, newest first:

* calls: ``{demo, lane, label, id, at_us, note}``, one per ``delay()`` from the page;
* runs: ``{demo, id, task, start_us}`` when a run is admitted (``heimdall_started_at``),
  then ``{demo, id, end_us, state}`` when it ends;

and ``{id, at_us, until_us}`` when a start was over its rate limit and deferred (the
``throttled`` signal), kept in a third list.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from django.core.cache import cache

CALLS = "demo:calls"
RUNS = "demo:runs"
THROTTLES = "demo:throttles"
KEEP = 300  # entries per list


def _client(write: bool = False) -> Any:
    return cache.client.get_client(write=write)


def now_us() -> int:
    """The Redis server's clock, in µs since the epoch."""
    seconds, micros = _client().time()
    return seconds * 1_000_000 + micros


def _push(name: str, entry: dict[str, Any]) -> None:
    key = cache.make_key(name)
    pipe = _client(write=True).pipeline(transaction=False)
    pipe.lpush(key, json.dumps(entry))
    pipe.ltrim(key, 0, KEEP - 1)
    pipe.execute()


def record_call(demo: str, task_id: str, label: str, lane: str = "", note: str = "") -> dict:
    """One call made from the page, at the current Redis time."""
    entry = {
        "demo": demo,
        "lane": lane or label,
        "label": label,
        "id": task_id,
        "at_us": now_us(),
        "note": note,
    }
    _push(CALLS, entry)
    return entry


@contextlib.contextmanager
def run(task: Any, demo: str) -> Iterator[None]:
    """Record a run of ``task`` (a bound task) from its admission to its end."""
    request = task.request
    start = getattr(request, "heimdall_started_at", None) or now_us()
    task_name = task.name.rsplit(".", 1)[-1]
    _push(RUNS, {"demo": demo, "id": request.id, "task": task_name, "start_us": start})
    state = "FAILURE"
    try:
        yield
        state = "SUCCESS"
    finally:
        _push(RUNS, {"demo": demo, "id": request.id, "end_us": now_us(), "state": state})


def record_throttle(sender: Any, task_id: str, countdown: float, **kwargs: Any) -> None:
    """Receiver of django_heimdall's ``throttled`` signal: a start deferred by
    ``countdown`` seconds."""
    now = now_us()
    _push(THROTTLES, {"id": task_id, "at_us": now, "until_us": now + int(countdown * 1e6)})


def read() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The calls (oldest first), the runs by task id and the latest deferral by task id."""
    pipe = _client().pipeline(transaction=False)
    for name in (CALLS, RUNS, THROTTLES):
        pipe.lrange(cache.make_key(name), 0, -1)
    calls, events, deferrals = pipe.execute()
    runs: dict[str, dict[str, Any]] = {}
    for item in reversed(events):
        event = json.loads(item)
        runs.setdefault(event["id"], {"demo": event["demo"]}).update(event)
    throttled = {}
    for item in reversed(deferrals):
        deferral = json.loads(item)
        throttled[deferral["id"]] = deferral
    return [json.loads(item) for item in reversed(calls)], runs, throttled
