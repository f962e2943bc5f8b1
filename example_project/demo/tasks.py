import time

from celery import shared_task

from django_heimdall import HeimdallTask, RateLimit


@shared_task(base=HeimdallTask, heimdall={"unique": True})
def generate_report(customer_id: int) -> str:
    """Repeated clicks return the same task id while a report is queued or running."""
    time.sleep(5)
    return f"report for {customer_id}"


@shared_task(base=HeimdallTask, heimdall={"rate_limit": RateLimit((2, 10))})
def call_external_api(n: int) -> int:
    """At most 2 calls per 10 seconds across every worker."""
    return n


@shared_task(base=HeimdallTask)
def sync_customer(customer_id: int, full: bool = False) -> int:
    """Made unique per customer by settings.HEIMDALL['TASKS'], not by its code."""
    time.sleep(2)
    return customer_id
