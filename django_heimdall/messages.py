"""What a task's message carries for heimdall: our headers and how to read them,
and the publishing options that matter to a lock (countdown/eta, canvas links)."""

from __future__ import annotations

import datetime
from typing import Any

from .conf import heimdall_settings

#: Message header carrying the lock key taken at enqueue.
LOCK_HEADER = "heimdall_lock"
#: Message header carrying the per-call options (``apply_async(heimdall={...})``).
CALL_HEADER = "heimdall_call"
#: Message header carrying a deferred task's rate-limit slot (µs, Redis clock).
SLOT_HEADER = "heimdall_slot"


def header(request: Any, name: str) -> Any:
    """A message header of ours: a request attribute on a worker, or in
    ``request.headers`` when applied eagerly."""
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    return value


def take_slot(request: Any) -> int | None:
    """The rate-limit slot (µs) a deferred message carries, if any, taken off the
    request's headers: it is spent at this start, so nothing re-sent from this
    execution (a retry copies those headers) carries it again."""
    slot = header(request, SLOT_HEADER)
    if slot is None:
        return None
    (getattr(request, "headers", None) or {}).pop(SLOT_HEADER, None)
    try:
        return None if slot is None else int(slot)
    except (TypeError, ValueError):
        return None


def in_canvas(link: Any, link_error: Any, options: dict[str, Any]) -> bool:
    """Whether a message is a step of a canvas (somebody waits for its very id)."""
    # Celery applies a chain's last step with chain=[]: present, though empty.
    return bool(
        link or link_error or "chain" in options or options.get("chord") or options.get("group_id")
    )


def delay_ms(options: dict[str, Any]) -> int:
    """How long the message waits before it may start (countdown / eta)."""
    countdown = options.get("countdown")
    if countdown:
        return max(0, int(float(countdown) * 1000))
    eta = options.get("eta")
    if isinstance(eta, datetime.datetime):
        now = datetime.datetime.now(tz=eta.tzinfo or None)
        return max(0, int((eta - now).total_seconds() * 1000))
    return 0


def max_countdown(app: Any) -> float:
    """The longest a re-sent message may be delayed in one hop: within
    ``DEFER_MAX_COUNTDOWN`` and half the broker's visibility timeout."""
    cap = float(heimdall_settings.DEFER_MAX_COUNTDOWN)
    timeout = (app.conf.broker_transport_options or {}).get("visibility_timeout")
    if timeout:
        cap = min(cap, float(timeout) / 2)
    return cap
