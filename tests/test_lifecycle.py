"""The unique lock follows its message (design §3 "Unique"): each test is a bug
that lost work or blocked a key on the engine before the lock key travelled in the
message, releases followed the owner and executions carried a token."""

import logging
import time

import pytest
from celery.result import AsyncResult
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from kombu.utils.uuid import uuid

from django_heimdall import DuplicateTaskSkipped, HeimdallError
from django_heimdall.models import PolicyOverride
from django_heimdall.overrides import OverrideStorage, source
from django_heimdall.ratelimits import Rate
from django_heimdall.store import get_store
from tests import tasks
from tests.conftest import overlapping_twins, wait_until

pytestmark = pytest.mark.usefixtures("celery_worker")


def lock_of(task, *args, **kwargs):
    return tasks.identity_of(task, *args, **kwargs)


def test_a_callers_own_task_id_is_published_not_swallowed(open_gate):
    holder = tasks.unique_blocking.delay("own-id")
    wait_until(lambda: tasks.records("unique_blocking"), message="holder started")
    mine = tasks.unique_blocking.apply_async(("own-id",), task_id="caller-chosen-id")
    assert mine.id == "caller-chosen-id"
    with pytest.raises(DuplicateTaskSkipped):
        mine.get(timeout=20)  # decided at start, never PENDING for ever
    open_gate("own-id")
    holder.get(timeout=20)


def test_release_uses_the_enqueue_time_key_after_the_policy_changed(settings):
    lock = lock_of(tasks.unique_add, 3, 4)
    first = tasks.unique_add.apply_async((3, 4), countdown=1)
    assert get_store().holder(lock) == first.id
    # Before it starts, uniqueness is switched off (an override, a deploy).
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {"tests.tasks.unique_add": {"unique": False}},
    }
    assert first.get(timeout=20) == 7
    # The start and the end followed the key the message carries: no orphaned lock.
    wait_until(lambda: get_store().holder(lock) is None, message="enqueue-time lock released")


def test_a_failing_key_function_at_start_fails_the_task_and_releases(open_gate):
    first = tasks.unique_flaky_key.apply_async((1,), countdown=1)
    lock = "flaky-1"
    assert get_store().holder(lock) == first.id
    open_gate("flaky-key")  # the key function now raises on the worker
    with pytest.raises(HeimdallError, match="'key'"):
        first.get(timeout=20)
    assert get_store().holder(lock) is None
    assert tasks.records("unique_flaky_key") == []


def test_an_invalid_policy_at_start_fails_the_task_and_releases(settings):
    first = tasks.unique_add.apply_async((7,), countdown=1)
    lock = lock_of(tasks.unique_add, 7)
    assert get_store().holder(lock) == first.id
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {"tests.tasks.unique_add": {"unique_timeout": 0}},  # E007, on the worker too
    }
    with pytest.raises(ImproperlyConfigured):
        first.get(timeout=20)
    assert get_store().holder(lock) is None
    assert tasks.records("unique_add") == []


def test_a_second_delivery_failing_at_start_keeps_the_first_ones_lock(celery_app, open_gate):
    task_id = uuid()
    first = tasks.unique_flaky_blocking.apply_async((1,), task_id=task_id)
    wait_until(lambda: tasks.records("unique_flaky_blocking"), message="the first delivery")
    open_gate("flaky-key")  # the key function now raises on the worker
    celery_app.send_task(tasks.unique_flaky_blocking.name, args=(1,), task_id=task_id)
    wait_until(lambda: first.state == "FAILURE", message="the second delivery's failed start")
    assert get_store().holder("flaky-1") == task_id  # still the running first one's
    open_gate("flaky-block")
    wait_until(lambda: get_store().holder("flaky-1") is None, message="the first one's release")
    assert len(tasks.records("unique_flaky_blocking")) == 1


def test_the_same_task_id_published_while_it_runs_does_not_run_twice(open_gate):
    task_id = uuid()
    first = tasks.unique_blocking.apply_async(("again",), task_id=task_id)
    wait_until(lambda: tasks.records("unique_blocking"), message="the first run")
    assert tasks.unique_blocking.apply_async(("again",), task_id=task_id).id == task_id
    time.sleep(1)  # the copy reaches the worker, which must not run it beside the first
    assert len(tasks.records("unique_blocking")) == 1
    open_gate("again")
    assert first.get(timeout=20) == "again"


def test_a_replaced_holder_stays_replaced_for_its_own_longer_lease():
    """The replaced message may come later than the new call's lease (its own
    countdown): the marker that stops it lasts as long as its lease did."""
    store = get_store()
    store.acquire("debounced", "old", 30_000, "t")  # a countdown's long lease
    store.acquire("debounced", "new", 2_000, "t", replace=True)
    assert store.client.pttl(store.keys.owner("old")) > 20_000


def test_the_lease_covers_a_countdown_longer_than_the_timeout():
    result = tasks.unique_short_lease.apply_async(("later",), countdown=3)
    lock = get_store().keys.lock(lock_of(tasks.unique_short_lease, "later"))
    assert get_store().client.pttl(lock) > 3000  # unique_timeout is 1 s
    assert tasks.unique_short_lease.delay("later").id == result.id
    assert result.get(timeout=20) is None


def test_a_second_delivery_never_runs_alongside_the_first(celery_app):
    ids, overlapping = overlapping_twins(
        celery_app, "tests.tasks.unique_sleepy", "unique_sleepy", 20
    )
    assert overlapping == 0
    assert all(AsyncResult(task_id).state == "SUCCESS" for task_id in ids)


def test_interval_uniqueness_survives_a_revoke(celery_app):
    result = tasks.unique_interval.apply_async(("revoked",), countdown=2)
    lock = lock_of(tasks.unique_interval, "revoked")
    result.revoke()
    wait_until(lambda: AsyncResult(result.id).state == "REVOKED", message="revoked")
    assert get_store().holder(lock) == result.id  # kept until its lease ends


def test_user_throws_keeps_duplicate_skipped():
    assert DuplicateTaskSkipped in tasks.unique_with_throws.throws
    assert KeyError in tasks.unique_with_throws.throws


@pytest.mark.django_db
def test_override_naming_a_missing_argument_is_a_form_error(admin_client):
    response = admin_client.post(
        reverse("admin:heimdall_policyoverride_add"),
        {"task_name": "tests.tasks.unique_add", "enabled": "on", "unique_on": "customer_id"},
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "which the task does not take" in errors["unique_on"][0]
    assert not PolicyOverride.objects.exists()


@pytest.mark.django_db
def test_an_override_that_cannot_apply_falls_back_with_one_error(caplog, open_gate):
    overrides = {"tests.tasks.unique_blocking": {"unique_on": ["zz"]}}
    OverrideStorage(get_store()).publish(10**9, overrides)
    source.reset()
    with caplog.at_level(logging.ERROR, logger="django_heimdall"):
        first = tasks.unique_blocking.delay("fallback")  # no TypeError for the caller
        assert tasks.unique_blocking.delay("fallback").id == first.id
    errors = [r for r in caplog.records if "ignored" in r.getMessage()]
    assert len(errors) == 1
    open_gate("fallback")
    first.get(timeout=20)


def test_structures_shrink_back_after_distinct_keys_and_crashed_holders(heimdall_prefix):
    store = get_store()
    for n in range(20_000):
        store.start(f"o{n}", task_name="t", rates=((f"customer-{n}", Rate(1, 0.3)),))
    for n in range(1_000):  # holders that never release: their lease is all that ends them
        store.acquire(f"crashed-{n}", f"c{n}", 300, f"retired.task{n % 50}", "{}")
    time.sleep(1.0)  # past the window and twice the lease (the indexes' own expiry)
    left = list(store.client.scan_iter(match=f"*{heimdall_prefix}*", count=5000))
    assert left == []


def test_interval_uniqueness_survives_a_killed_worker_process(worker_process):
    from billiard.exceptions import WorkerLostError

    worker = worker_process(pool="prefork", concurrency=1)
    result = tasks.interval_crashing.apply_async(("oom",), queue=worker.queue)
    lock = lock_of(tasks.interval_crashing, "oom")
    with pytest.raises(WorkerLostError):
        result.get(timeout=60)
    assert get_store().holder(lock) == result.id  # the "once an interval" still holds
    assert tasks.interval_crashing.delay("oom").id == result.id


def test_a_message_redelivered_after_its_process_was_killed_runs(worker_process):
    """acks_late + reject_on_worker_lost: Celery requeues the message instead of
    failing it; the redelivery must not meet the dead execution's token."""
    worker = worker_process(pool="prefork", concurrency=1)
    result = tasks.unique_crashing_once.apply_async(("lost",), queue=worker.queue)
    assert result.get(timeout=60) == "lost"
    assert [r["id"] for r in tasks.records("unique_crashing_once")] == [result.id] * 2
    lock = lock_of(tasks.unique_crashing_once, "lost")
    wait_until(lambda: get_store().holder(lock) is None, message="the release at its end")


def test_reject_with_requeue_keeps_the_lock_like_a_retry():
    from django_heimdall import signals

    released = []

    def receiver(sender, task_id, key, **kwargs):
        released.append((task_id, key))

    signals.lock_released.connect(receiver, weak=False)
    try:
        result = tasks.unique_rejecting_once.delay("again")
        assert result.get(timeout=30) == "again"
    finally:
        signals.lock_released.disconnect(receiver)
    runs = tasks.records("unique_rejecting_once")
    assert [r["id"] for r in runs] == [result.id, result.id]
    assert runs[1]["holder"] == result.id
    # Once, at the end (not when it was requeued), naming the key.
    assert released == [(result.id, lock_of(tasks.unique_rejecting_once, "again"))]


@pytest.fixture
def ended():
    """The ids of the executions that ended (``task_postrun``), in order."""
    from celery.signals import task_postrun

    ids = []

    def receiver(task_id=None, **kwargs):
        ids.append(task_id)

    task_postrun.connect(receiver, weak=False)
    yield ids
    task_postrun.disconnect(receiver)


@pytest.mark.parametrize("into", ["other", "next", "self"])
def test_task_replace_passes_the_task_id_to_the_replacements_own_lock(into, ended):
    """Task.replace() publishes the replacement under the same task id. The
    replacement holds the lock of its own key from then on; the replaced execution
    frees its own lock, or leaves it to the replacement when the key is the same."""
    name = f"replace-{into}"
    own = lock_of(tasks.unique_replaced, name)
    successor, returns = {
        "other": (lock_of(tasks.unique_replacement, name), name),
        "next": (lock_of(tasks.unique_replaced, f"{name}-next"), f"{name}-next"),
        "self": (own, name),
    }[into]
    result = tasks.unique_replaced.delay(name, into)
    wait_until(lambda: result.id in ended, message="the replaced execution's end")
    # The replacement waits for its countdown, or runs: its lock is held for it.
    assert get_store().holder(successor) == result.id
    if successor != own:
        assert get_store().holder(own) is None
    assert result.get(timeout=30) == returns
    wait_until(lambda: get_store().holder(successor) is None, message="the replacement's release")


def test_clearing_a_replaced_tasks_kept_lock_leaves_the_replacement_releasable(ended):
    """After Task.replace() one task id holds two locks: the replaced one's, kept
    for its interval, and the replacement's. Clearing the kept one must leave the
    replacement's findable: its revoke then releases it."""
    kept = lock_of(tasks.kept_replaced, "kept")
    successor = lock_of(tasks.unique_replacement, "kept")
    result = tasks.kept_replaced.delay("kept")
    wait_until(lambda: result.id in ended, message="the replaced execution's end")
    assert get_store().holder(kept) == get_store().holder(successor) == result.id
    assert tasks.kept_replaced.heimdall_release("kept")  # an operator clears the interval
    result.revoke()
    wait_until(lambda: get_store().holder(successor) is None, message="the revoked one's release")


def test_a_retry_after_a_failed_replace_is_a_retry(open_gate):
    """replace() raised (the replacement's key is taken, unique_raises) and the task
    retries: the retry keeps the call's options and lock, and runs."""
    holder = tasks.unique_raising.delay("taken")
    wait_until(lambda: tasks.unique_raising.heimdall_holder("taken"), message="the holder")
    result = tasks.replace_or_retry.apply_async(("taken",), heimdall={"unique": True})
    assert result.get(timeout=20) == "taken"
    first, retry = tasks.records("replace_or_retry")
    assert retry["retries"] == 1 and retry["lock"] == first["lock"] is not None
    open_gate("taken")
    holder.get(timeout=20)


def test_a_replacement_holding_the_same_concurrency_slot_runs():
    """The replacement is the slot's holder too (the task id): it must not be taken
    for a second delivery of a running task while the replaced one ends."""
    assert tasks.limited_replaced.delay("slot").get(timeout=20) == "slot"
