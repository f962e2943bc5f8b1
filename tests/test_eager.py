"""Eager mode (task_always_eager) behaves like a worker: locks are taken and
released, retries do not recurse into a deadlock, and an over-limit call fails
with RateLimitExceeded instead of sleeping."""

import pytest

from django_heimdall import RateLimitExceeded
from tests import tasks


@pytest.fixture
def eager(celery_app):
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def lock_keys(prefix, client):
    return list(client.scan_iter(match=f"{{{prefix}}}:lock:*"))


@pytest.mark.usefixtures("eager")
def test_eager_unique_task_runs_and_leaves_no_lock(heimdall_prefix, redis_client):
    result = tasks.unique_add.delay(2, 2)
    assert result.get() == 4
    assert len(tasks.records("unique_add")) == 1
    assert lock_keys(heimdall_prefix, redis_client) == []


@pytest.mark.usefixtures("eager")
def test_eager_retries_complete_without_leaking_the_lock(heimdall_prefix, redis_client):
    result = tasks.unique_retrying.delay("eager")
    assert result.get() == 2
    assert [r["retries"] for r in tasks.records("unique_retrying")] == [0, 1, 2]
    assert lock_keys(heimdall_prefix, redis_client) == []


@pytest.mark.usefixtures("eager")
def test_eager_over_the_limit_raises_rate_limit_exceeded(heimdall_prefix, redis_client):
    assert tasks.unique_and_limited.delay("a").get() == "a"
    result = tasks.unique_and_limited.delay("b")
    with pytest.raises(RateLimitExceeded) as info:
        result.get()
    assert 0 < info.value.retry_after <= 1
    assert [r["name"] for r in tasks.records("unique_and_limited")] == ["a"]
    assert lock_keys(heimdall_prefix, redis_client) == []


@pytest.mark.usefixtures("eager")
def test_an_eager_duplicate_returns_the_holders_result():
    """Celery stores no eager result: a duplicate's ``.get()`` gives the value the
    holder returned in this process (a worker's would read it from the backend),
    and never waits."""
    first = tasks.eager_interval.delay("once")
    again = tasks.eager_interval.delay("once")  # within the interval: not run
    assert again.id == first.id
    assert again.get(timeout=5) == "once"
    assert len(tasks.records("eager_interval")) == 1
