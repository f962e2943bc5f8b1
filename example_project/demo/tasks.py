"""One task per django-heimdall feature."""

import time

from celery import shared_task

from django_heimdall import HeimdallTask, RateLimit

PREMIUM_CUSTOMERS = {1, 2}


@shared_task(base=HeimdallTask, heimdall={"unique": True})
def generate_report(customer_id: int) -> str:
    """Unique: repeated clicks get the same task id while a report is queued or running."""
    time.sleep(6)
    return f"report for customer {customer_id}"


@shared_task(base=HeimdallTask, heimdall={"unique": True, "unique_raises": True})
def rebuild_search_index(site_id: int) -> str:
    """Unique, and the caller is told: the API view answers "already running"."""
    time.sleep(8)
    return f"index of site {site_id} rebuilt"


@shared_task(
    base=HeimdallTask,
    heimdall={"unique": True, "unique_timeout": 30, "unique_wait_for_expiry": True},
)
def send_digest(user_id: int) -> str:
    """Interval-unique: at most one digest per user every 30 seconds."""
    return f"digest sent to user {user_id}"


@shared_task(base=HeimdallTask, heimdall={"rate_limit": RateLimit((2, 10))})
def call_partner_api(order_id: int) -> str:
    """A partner API that allows 2 calls per 10 s, across every worker."""
    return f"order {order_id} pushed"


def customer_rate(args):
    """Premium customers get 5 calls per 10 s, the others 1."""
    return (5, 10) if args[0] in PREMIUM_CUSTOMERS else (1, 10)


@shared_task(
    base=HeimdallTask,
    heimdall={
        "rate_limit": RateLimit(customer_rate),
        "key": lambda args, kwargs: f"customer-api-{args[0]}",
    },
)
def fetch_customer_data(customer_id: int, page: int = 1) -> str:
    """A dynamic limit per customer: one bucket per key, its size decided per call."""
    return f"customer {customer_id}, page {page}"


@shared_task(base=HeimdallTask)
def sync_customer(customer_id: int, full: bool = False) -> int:
    """Made unique per customer by ``settings.HEIMDALL["TASKS"]``, not by its code."""
    time.sleep(5)
    return customer_id


@shared_task(base=HeimdallTask, heimdall={"unique": True, "unique_timeout": 60})
def nightly_cleanup() -> str:
    """A periodic task that must never overlap itself (beat sends it every 5 s)."""
    time.sleep(8)
    return "cleaned"


@shared_task(base=HeimdallTask, heimdall={"concurrency_limit": 2})
def render_video(video_id: int) -> str:
    """At most 2 renders at a time across every worker; the others wait their turn
    (state THROTTLED) and run in order."""
    time.sleep(3)
    return f"video {video_id} rendered"


@shared_task
def ping_demo(value: int) -> int:
    """A plain task: the demo's smoke test round-trips it."""
    return value
