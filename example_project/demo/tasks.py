"""One task per django-heimdall feature.

Each run is recorded on the demo page's timeline (``timeline.run``): from the time
django-heimdall admitted its start (``self.request.heimdall_started_at``, on the
Redis clock) to its end.
"""

import time

from celery import shared_task

from django_heimdall import HeimdallTask, RateLimit

from . import timeline

PREMIUM_CUSTOMERS = {1, 2}


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True})
def generate_report(self, customer_id: int) -> str:
    """Unique: repeated clicks get the same task id while a report is queued or running."""
    with timeline.run(self, "report"):
        time.sleep(6)
    return f"report for customer {customer_id}"


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True, "unique_raises": True})
def rebuild_search_index(self, site_id: int) -> str:
    """Unique, and the caller is told: the API view answers "already running"."""
    with timeline.run(self, "rebuild"):
        time.sleep(8)
    return f"index of site {site_id} rebuilt"


@shared_task(
    base=HeimdallTask,
    bind=True,
    heimdall={"unique": True, "unique_timeout": 30, "unique_wait_for_expiry": True},
)
def send_digest(self, user_id: int) -> str:
    """Interval-unique: at most one digest per user every 30 seconds."""
    with timeline.run(self, "digest"):
        time.sleep(0.5)
    return f"digest sent to user {user_id}"


@shared_task(base=HeimdallTask, bind=True, heimdall={"rate_limit": RateLimit((2, 10))})
def call_partner_api(self, order_id: int) -> str:
    """A partner API that allows 2 calls per 10 s, across every worker."""
    with timeline.run(self, "partner"):
        time.sleep(0.5)
    return f"order {order_id} pushed"


def customer_rate(args):
    """Premium customers get 5 calls per 10 s, the others 1."""
    return (5, 10) if args[0] in PREMIUM_CUSTOMERS else (1, 10)


@shared_task(
    base=HeimdallTask,
    bind=True,
    heimdall={
        "rate_limit": RateLimit(customer_rate),
        "key": lambda args, kwargs: f"customer-api-{args[0]}",
    },
)
def fetch_customer_data(self, customer_id: int, page: int = 1) -> str:
    """A dynamic limit per customer: one bucket per key, its size decided per call."""
    with timeline.run(self, "customers"):
        time.sleep(0.5)
    return f"customer {customer_id}, page {page}"


@shared_task(base=HeimdallTask, bind=True)
def sync_customer(self, customer_id: int, full: bool = False) -> int:
    """Made unique per customer by ``settings.HEIMDALL["TASKS"]``, not by its code."""
    with timeline.run(self, "sync"):
        time.sleep(5)
    return customer_id


@shared_task(
    base=HeimdallTask,
    bind=True,
    heimdall={"unique": True, "unique_on": ["customer_id"], "on_duplicate": "replace"},
)
def reindex_customer(self, customer_id: int, reason: str) -> str:
    """Debounced: of a burst of calls, only the last runs, its countdown after it."""
    with timeline.run(self, "debounce"):
        time.sleep(1)
    return f"customer {customer_id} reindexed ({reason})"


@shared_task(base=HeimdallTask, bind=True, heimdall={"unique": True, "unique_timeout": 60})
def nightly_cleanup(self) -> str:
    """A periodic task that must never overlap itself (beat sends it every 5 s)."""
    with timeline.run(self, "periodic"):
        time.sleep(8)
    return "cleaned"


@shared_task(base=HeimdallTask, bind=True, heimdall={"concurrency_limit": 2})
def render_video(self, video_id: int) -> str:
    """At most 2 renders at a time across every worker; the others wait their turn
    (state THROTTLED) and run in order."""
    with timeline.run(self, "render"):
        time.sleep(3)
    return f"video {video_id} rendered"


@shared_task
def ping_demo(value: int) -> int:
    """A plain task: the demo's smoke test round-trips it."""
    return value
