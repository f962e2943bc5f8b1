"""Unique policies (issue: lock phases, conflict strategies, per-call options,
public helpers, the heartbeat and the test helpers), against a real worker."""

import os
import signal
import subprocess
import time

import pytest
from celery.result import AsyncResult

from django_heimdall import AlreadyQueuedError
from django_heimdall.options import OptionError
from django_heimdall.store import get_store
from django_heimdall.testing import heimdall_disabled, heimdall_isolated
from tests import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("celery_worker")


def holder(task, *args, **kwargs):
    return get_store().holder(tasks.identity_of(task, *args, **kwargs))


# -- unique_until ------------------------------------------------------------------------


def test_started_lets_a_self_rescheduling_task_keep_running():
    tasks.self_rescheduling.delay("loop", 3)
    wait_until(lambda: len(tasks.records("self_rescheduling")) == 3, message="three runs")
    time.sleep(0.5)
    assert [r["run"] for r in tasks.records("self_rescheduling")] == [1, 2, 3]


def test_started_lets_a_copy_queue_while_one_runs(open_gate):
    first = tasks.started_blocking.delay("phase")
    wait_until(lambda: tasks.records("started_blocking"), message="first running")
    second = tasks.started_blocking.delay("phase")
    assert second.id != first.id
    assert holder(tasks.started_blocking, "phase") == second.id  # the queued copy holds it
    open_gate("phase")
    first.get(timeout=20), second.get(timeout=20)


def test_expired_keeps_the_lock_after_the_task_ended():
    result = tasks.unique_add.apply_async((7, 7), heimdall={"unique_until": "expired"})
    assert result.get(timeout=20) == 14
    # The worker applied the call's policy: the lock outlives the task.
    assert holder(tasks.unique_add, 7, 7) == result.id
    assert tasks.unique_add.delay(7, 7).id == result.id


# -- on_duplicate ----------------------------------------------------------------------


def test_raise_per_call_names_the_holder(open_gate):
    first = tasks.unique_blocking.delay("raise")
    with pytest.raises(AlreadyQueuedError) as caught:
        tasks.unique_blocking.apply_async(("raise",), heimdall={"on_duplicate": "raise"})
    assert caught.value.likely_culprit == first.id
    open_gate("raise")
    first.get(timeout=20)


def test_replace_revokes_a_queued_holder_which_never_runs():
    first = tasks.debounced.apply_async(("acme", 1), countdown=2)
    second = tasks.debounced.apply_async(("acme", 2), countdown=2)
    assert second.id != first.id
    assert holder(tasks.debounced, "acme", 0) == second.id
    assert second.get(timeout=20) == 2
    wait_until(lambda: AsyncResult(first.id).state == "REVOKED", message="first revoked")
    assert [r["payload"] for r in tasks.records("debounced")] == [2]


def test_replace_keeps_a_running_holder(open_gate):
    running = tasks.unique_blocking.delay("keep-running")
    wait_until(lambda: tasks.records("unique_blocking"), message="holder running")
    again = tasks.unique_blocking.apply_async(
        ("keep-running",), heimdall={"on_duplicate": "replace"}
    )
    assert again.id == running.id
    open_gate("keep-running")
    running.get(timeout=20)


def test_replace_with_countdown_debounces_to_the_last_call():
    results = []
    for payload in range(5):  # five calls in about a second
        results.append(tasks.debounced.apply_async(("globex", payload), countdown=2))
        time.sleep(0.2)
    assert results[-1].get(timeout=20) == 4
    time.sleep(1)
    runs = tasks.records("debounced")
    assert [(r["customer"], r["payload"]) for r in runs] == [("globex", 4)]
    for earlier in results[:-1]:
        assert AsyncResult(earlier.id).state == "REVOKED"


# -- per-call options --------------------------------------------------------------------


def test_unique_false_per_call_forces_a_run(open_gate):
    first = tasks.unique_blocking.delay("forced")
    forced = tasks.unique_blocking.apply_async(("forced",), heimdall={"unique": False})
    assert forced.id != first.id
    open_gate("forced")
    first.get(timeout=20), forced.get(timeout=20)
    assert len(tasks.records("unique_blocking")) == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate_limit": "1/s"}, "'rate_limit' cannot be given per call"),
        ({"nonsense": 1}, "'nonsense' cannot be given per call"),
        ({"on_duplicate": "ignore"}, "'on_duplicate' must be one of"),
        ({"unique_timeout": -1}, "'unique_timeout' must be a positive number"),
    ],
)
def test_invalid_per_call_options_raise_at_the_call(options, message):
    with pytest.raises(OptionError, match=message):
        tasks.unique_add.apply_async((1, 1), heimdall=options)


def test_per_call_timeout_sets_the_lease():
    result = tasks.unique_add.apply_async((5, 5), countdown=1, heimdall={"unique_timeout": 120})
    lock = get_store().keys.lock(tasks.identity_of(tasks.unique_add, 5, 5))
    assert 120_000 < get_store().client.pttl(lock) <= 121_000
    result.get(timeout=20)


# -- public helpers ------------------------------------------------------------------------


def test_key_holder_and_release_helpers(open_gate):
    task = tasks.unique_blocking
    first = task.delay("helpers")
    wait_until(lambda: tasks.records("unique_blocking"), message="running")
    assert task.heimdall_key("helpers") == tasks.identity_of(task, "helpers")
    assert task.heimdall_holder("helpers") == first.id
    assert task.heimdall_release("helpers") is True
    assert task.heimdall_holder("helpers") is None
    assert task.heimdall_release("helpers") is False
    open_gate("helpers")
    first.get(timeout=20)


def test_a_key_function_may_take_the_task_arguments_by_name():
    assert tasks.keyed_by_name.heimdall_key(42, note="x") == "customer-42"
    assert tasks.keyed_by_name.heimdall_key(customer_id=42) == "customer-42"


# -- heartbeat ---------------------------------------------------------------------------


def test_heartbeat_keeps_a_short_lease_alive_through_a_long_body():
    result = tasks.auto_heartbeat.delay("beat")
    assert result.get(timeout=30) == "beat"
    seen = tasks.records("auto_heartbeat")
    assert len(seen) >= 10  # about 6 s of a 2 s lease
    assert {r["holder"] for r in seen} == {result.id}  # never lapsed, no manual call
    assert holder(tasks.auto_heartbeat, "beat", seconds=6.0) is None  # released at the end


def test_heartbeat_lets_the_lease_lapse_after_a_crash(worker_process):
    worker = worker_process(pool="prefork", concurrency=1)
    result = tasks.auto_heartbeat.apply_async(("crash",), {"seconds": 60.0}, queue=worker.queue)
    wait_until(lambda: tasks.records("auto_heartbeat"), message="running")
    # The whole worker dies: its pool children first, then the main process.
    subprocess.run(["pkill", "-KILL", "-P", str(worker.process.pid)], check=False)
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait()
    wait_until(
        lambda: holder(tasks.auto_heartbeat, "crash", seconds=60.0) is None,
        message="the 2 s lease lapsing",
    )
    assert result.id  # it never finished


# -- test helpers for users' suites ---------------------------------------------------------


@pytest.fixture
def eager(celery_app):
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.mark.usefixtures("eager")
def test_isolated_blocks_do_not_see_each_others_locks():
    with heimdall_isolated() as first_prefix:
        tasks.eager_interval.delay("shared").get()
        assert tasks.eager_interval.heimdall_holder("shared") is not None
    with heimdall_isolated() as second_prefix:
        assert second_prefix != first_prefix
        assert tasks.eager_interval.heimdall_holder("shared") is None
        tasks.eager_interval.delay("shared").get()  # runs: nothing leaked in
    keys = get_store().client.scan_iter(match=f"{{{first_prefix}}}*")
    assert list(keys) == []


@pytest.mark.usefixtures("eager")
def test_disabled_switches_every_policy_off():
    with heimdall_isolated(), heimdall_disabled():
        tasks.eager_interval.delay("off").get()
        tasks.eager_interval.delay("off").get()
        assert tasks.eager_interval.heimdall_holder("off") is None
        assert len(tasks.records("eager_interval")) == 2  # with the policy: held, not run


@pytest.mark.usefixtures("eager")
def test_per_call_options_apply_in_eager_mode_too():
    with heimdall_isolated():
        tasks.unique_add.apply_async((8, 8), heimdall={"unique_until": "expired"}).get()
        assert tasks.unique_add.heimdall_holder(8, 8) is not None  # kept, as asked
        tasks.unique_add.apply_async((9, 9)).get()
        assert tasks.unique_add.heimdall_holder(9, 9) is None
