"""The unique lifecycle (design §3 "Unique") against a real Redis and an
in-thread Celery worker."""

import datetime
import decimal
import logging
import uuid

import pytest
from kombu import Connection
from kombu.exceptions import OperationalError

from django_heimdall import AlreadyQueuedError, DuplicateTaskSkipped, signals
from django_heimdall.keys import identity
from django_heimdall.store import Acquired, get_store
from tests import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("celery_worker")


def lock_of(task, *args, **kwargs):
    return identity(task, task.heimdall_policy, args, kwargs).lock


def holder_of(task, *args, **kwargs):
    return get_store().holder(lock_of(task, *args, **kwargs))


def lock_keys(prefix, client):
    return list(client.scan_iter(match=f"{{{prefix}}}:lock:*"))


@pytest.fixture
def received():
    """Collects the django-heimdall signals sent during a test."""
    seen = []

    def receiver(signal, sender, **kwargs):
        seen.append((signal, kwargs))

    for signal in (
        signals.lock_acquired,
        signals.duplicate_blocked,
        signals.lock_released,
        signals.throttled,
    ):
        signal.connect(receiver, weak=False)
    yield seen
    for signal in (
        signals.lock_acquired,
        signals.duplicate_blocked,
        signals.lock_released,
        signals.throttled,
    ):
        signal.disconnect(receiver)


def test_duplicate_delay_returns_the_holders_result_without_publishing(open_gate, received):
    first = tasks.unique_blocking.delay("dup")
    wait_until(lambda: tasks.records("unique_blocking"), message="holder started")
    second = tasks.unique_blocking.delay("dup")
    third = tasks.unique_blocking.apply_async(kwargs={"name": "dup"})

    assert second.id == first.id == third.id
    assert holder_of(tasks.unique_blocking, "dup") == first.id
    blocked = [kw for sig, kw in received if sig is signals.duplicate_blocked]
    assert [kw["stage"] for kw in blocked] == ["enqueue", "enqueue"]
    assert all(kw["holder"] == first.id for kw in blocked)

    open_gate("dup")
    assert first.get(timeout=20) == "dup"
    assert [r["id"] for r in tasks.records("unique_blocking")] == [first.id]


def test_unique_raises_names_the_holder_and_time_left(open_gate):
    first = tasks.unique_raising.delay("r")
    with pytest.raises(AlreadyQueuedError) as info:
        tasks.unique_raising.delay("r")
    assert info.value.likely_culprit == first.id
    assert 0 < info.value.expires_in <= 3600
    open_gate("r")
    assert first.get(timeout=20) == "r"


def test_retry_keeps_lock_and_runs_once():
    result = tasks.unique_retrying.delay("retry")
    assert result.get(timeout=30) == 2

    runs = tasks.records("unique_retrying")
    assert [r["retries"] for r in runs] == [0, 1, 2]
    # Every attempt ran under the same id and found its own lock in place.
    assert {r["id"] for r in runs} == {result.id}
    assert all(r["holder"] == result.id for r in runs)
    # Released at the end: a new delay() publishes a new task.
    wait_until(lambda: holder_of(tasks.unique_retrying, "retry") is None, message="release")
    again = tasks.unique_retrying.delay("retry")
    assert again.id != result.id
    assert again.get(timeout=30) == 2


def test_lock_released_after_success(received):
    result = tasks.unique_add.delay(2, 3)
    assert result.get(timeout=20) == 5
    wait_until(lambda: holder_of(tasks.unique_add, 2, 3) is None, message="release")
    # Taken at enqueue (the worker may have run and released it before a read here).
    lock = tasks.identity_of(tasks.unique_add, 2, 3)
    acquired = [kw for sig, kw in received if sig is signals.lock_acquired]
    assert [(kw["task_id"], kw["key"]) for kw in acquired] == [(result.id, lock)]
    released = [kw for sig, kw in received if sig is signals.lock_released]
    assert [(kw["task_id"], kw["key"]) for kw in released] == [(result.id, lock)]


def test_lock_released_after_failure():
    result = tasks.unique_failing.delay("f")
    with pytest.raises(ValueError, match="boom f"):
        result.get(timeout=20)
    wait_until(lambda: holder_of(tasks.unique_failing, "f") is None, message="release")
    assert tasks.unique_failing.delay("f").id != result.id


def test_stale_holder_cannot_release_a_newer_lock(settings, open_gate):
    """A holder whose lease ran out while it ran must not delete its successor's lock."""
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {"tests.tasks.unique_blocking": {"unique_timeout": 1}},
    }
    first = tasks.unique_blocking.delay("stale")
    wait_until(lambda: tasks.records("unique_blocking"), message="first started")
    wait_until(lambda: holder_of(tasks.unique_blocking, "stale") is None, message="lease end")
    second = tasks.unique_blocking.delay("stale")
    assert second.id != first.id
    wait_until(lambda: len(tasks.records("unique_blocking")) == 2, message="second started")

    # Both wait on the same gate; lengthen the lease so the second keeps it.
    get_store().client.pexpire(
        get_store().keys.lock(lock_of(tasks.unique_blocking, "stale")), 60000
    )
    open_gate("stale")
    assert first.get(timeout=20) == "stale"
    assert second.get(timeout=20) == "stale"
    assert holder_of(tasks.unique_blocking, "stale") is None  # released by its owner
    # And at store level: a release by a non-owner is refused.
    store = get_store()
    assert store.acquire("x", "owner-b", 10_000, "t").status == Acquired.TAKEN
    assert store.release("x", "owner-a", "t") is False
    assert store.holder("x") == "owner-b"


def test_failed_publish_gives_the_lock_back_and_reraises():
    with (
        Connection("redis://127.0.0.1:1/0", connect_timeout=1) as dead,
        pytest.raises(OperationalError, match="Connection refused"),
    ):
        tasks.unique_add.apply_async((40, 2), producer=dead.Producer(), retry=False)
    assert holder_of(tasks.unique_add, 40, 2) is None
    assert tasks.unique_add.delay(40, 2).get(timeout=20) == 42


def test_send_task_duplicate_is_skipped_visibly(celery_app, open_gate, received, caplog):
    holder = tasks.unique_blocking.delay("beat")
    wait_until(lambda: tasks.records("unique_blocking"), message="holder started")

    with caplog.at_level(logging.INFO, logger="django_heimdall"):
        dup = celery_app.send_task("tests.tasks.unique_blocking", args=["beat"])
        with pytest.raises(DuplicateTaskSkipped) as info:
            dup.get(timeout=20)
    assert info.value.holder == holder.id
    assert dup.state == "FAILURE"
    assert holder_of(tasks.unique_blocking, "beat") == holder.id  # untouched
    assert any(dup.id in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    starts = [
        kw for sig, kw in received if sig is signals.duplicate_blocked and kw["stage"] == "start"
    ]
    assert [(kw["task_id"], kw["holder"]) for kw in starts] == [(dup.id, holder.id)]

    open_gate("beat")
    assert holder.get(timeout=20) == "beat"
    assert [r["id"] for r in tasks.records("unique_blocking")] == [holder.id]


def test_send_task_without_a_holder_takes_the_lock_at_start(celery_app):
    result = celery_app.send_task("tests.tasks.unique_add", args=[9], kwargs={"y": 1})
    assert result.get(timeout=20) == 10
    wait_until(lambda: holder_of(tasks.unique_add, 9, 1) is None, message="release")


def test_direct_call_takes_no_lock(heimdall_prefix, redis_client):
    assert tasks.unique_add(20, 1) == 21
    assert tasks.unique_add.run(20, 1) == 21
    assert lock_keys(heimdall_prefix, redis_client) == []


def test_wait_for_expiry_keeps_lock_until_timeout():
    first = tasks.unique_interval.delay("i")
    assert first.get(timeout=20) == "i"
    # Finished, yet still locked: the next call is a duplicate of the first.
    assert tasks.unique_interval.delay("i").id == first.id
    assert holder_of(tasks.unique_interval, "i") == first.id
    wait_until(
        lambda: holder_of(tasks.unique_interval, "i") is None, timeout=10, message="lease end"
    )
    second = tasks.unique_interval.delay("i")
    assert second.id != first.id
    assert second.get(timeout=20) == "i"
    assert [r["id"] for r in tasks.records("unique_interval")] == [first.id, second.id]


def test_revoked_task_gives_its_lock_back():
    result = tasks.unique_add.apply_async((7, 7), countdown=2)
    assert holder_of(tasks.unique_add, 7, 7) == result.id
    result.revoke()
    wait_until(lambda: holder_of(tasks.unique_add, 7, 7) is None, message="release on revoke")
    assert result.state == "REVOKED"
    assert tasks.records("unique_add") == []


def test_worker_computes_the_enqueue_key_from_the_deserialised_message():
    when = datetime.datetime(2026, 11, 21, 12, 30, tzinfo=datetime.timezone.utc)
    ident, amount = uuid.UUID("12345678-1234-5678-1234-567812345678"), decimal.Decimal("10.50")
    expected = lock_of(tasks.unique_typed, when, ident, amount)
    result = tasks.unique_typed.delay(when, ident, amount=amount)
    assert result.get(timeout=20) == expected
    (run,) = tasks.records("unique_typed")
    assert run["types"] == ["datetime", "UUID", "Decimal"]


def test_recovers_from_script_flush(redis_client):
    assert tasks.unique_add.delay(1, 1).get(timeout=20) == 2
    redis_client.script_flush()
    assert tasks.unique_add.delay(1, 2).get(timeout=20) == 3


def test_heartbeat_keeps_a_short_lease_alive(settings):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {"tests.tasks.unique_heartbeat": {"unique_timeout": 1}},
    }
    result = tasks.unique_heartbeat.delay("hb")
    assert result.get(timeout=30) == "hb"
    beats = tasks.records("unique_heartbeat")
    assert len(beats) == 6  # 2.4 s of work under a 1 s lease
    assert all(b["renewed"] and b["holder"] == result.id for b in beats)
    wait_until(lambda: holder_of(tasks.unique_heartbeat, "hb", beats=6) is None, message="release")


def test_heartbeat_outside_a_worker_renews_nothing():
    assert tasks.unique_heartbeat.heimdall_heartbeat() is False


def test_a_lock_taken_at_start_is_signalled(celery_app, received):
    result = celery_app.send_task("tests.tasks.unique_add", args=[30])
    assert result.get(timeout=20) == 30
    acquired = [kw for sig, kw in received if sig is signals.lock_acquired]
    assert [kw["task_id"] for kw in acquired] == [result.id]


def test_heartbeat_with_redis_down_fails_open_or_closed(settings, private_redis):
    from django_heimdall import HeimdallUnavailable

    task = tasks.unique_heartbeat._get_current_object()
    task.push_request(id="hb-1", heimdall_lock="some-lock")
    try:
        private_redis.stop()
        with pytest.raises(HeimdallUnavailable):
            task.heimdall_heartbeat()
        settings.HEIMDALL = {**settings.HEIMDALL, "ON_REDIS_ERROR": "fail_open"}
        assert task.heimdall_heartbeat() is True
    finally:
        task.pop_request()


def test_heartbeat_renews_for_the_calls_own_unique_timeout():
    """A per-call unique_timeout travels in the message: heimdall_heartbeat() renews
    for it, not for the task's (an hour here)."""
    task = tasks.unique_heartbeat._get_current_object()
    store = get_store()
    store.acquire("hb-call", "hb-2", 5_000, task.name)
    store.start("hb-2", task_name=task.name, lock="hb-call", lease_ms=5_000, token="exec")
    task.push_request(
        id="hb-2",
        heimdall_lock="hb-call",
        heimdall_token="exec",
        heimdall_call={"unique_timeout": 5},
    )
    try:
        assert task.heimdall_heartbeat() is True
    finally:
        task.pop_request()
    assert 0 < store.client.pttl(store.keys.lock("hb-call")) <= 5_000
