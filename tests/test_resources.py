"""Concurrency limits and shared resources as task options, and ``@locked``, on a
real (in-thread) worker: what a busy start does with ``on_busy`` "skip" and
"defer", and the decorator on HeimdallTask and on a plain Celery task."""

import logging
import time

import pytest

from django_heimdall import ResourceBusy, mutex, signals
from django_heimdall.services import live
from django_heimdall.store import Slot, get_store
from django_heimdall.testing import max_concurrent
from tests import tasks
from tests.conftest import overlapping_twins, wait_until


@pytest.fixture
def busy_signals():
    seen = []

    def receive(sender, **kwargs):
        seen.append(kwargs)

    signals.busy.connect(receive)
    yield seen
    signals.busy.disconnect(receive)


def _started(task):
    return lambda: any(r["task"] == task for r in tasks.records("single"))


def test_on_busy_skip_does_not_run_and_its_result_raises_resource_busy(
    celery_worker, open_gate, busy_signals
):
    holder = tasks.holds_single.delay("skip-gate")
    wait_until(_started("holder"), message="the holder to start")
    skipped = tasks.skips_single.delay("x")
    with pytest.raises(ResourceBusy) as busy:
        skipped.get(timeout=30)
    assert busy.value.name == "single"
    assert [s["action"] for s in busy_signals if s["task_id"] == skipped.id] == ["skip"]
    open_gate("skip-gate")
    assert holder.get(timeout=30) == "skip-gate"
    assert not _started("skipper")()
    assert live().semaphore("resource:single").used == 0


def test_on_busy_defer_waits_in_line_and_runs_after_the_holder_without_retries(
    celery_worker, open_gate, busy_signals
):
    holder = tasks.holds_single.delay("defer-gate")
    wait_until(_started("holder"), message="the holder to start")
    deferred = tasks.defers_single.delay("d")
    wait_until(
        lambda: any(s["task_id"] == deferred.id for s in busy_signals), message="a busy start"
    )
    assert {s["action"] for s in busy_signals} == {"defer"}
    assert live().semaphore("resource:single").waiting == 1
    assert not _started("deferred")()
    open_gate("defer-gate")
    assert deferred.get(timeout=60) == "d"
    assert holder.get(timeout=30) == "defer-gate"
    runs = {r["task"]: r for r in tasks.records("single")}
    assert runs["deferred"]["t"] > runs["holder-end"]["t"]  # on the Redis clock
    assert runs["deferred"]["retries"] == 0  # deferral used no retry


def test_a_busy_start_comes_back_when_its_turn_is_due_unjittered(
    celery_worker, open_gate, busy_signals, settings, caplog
):
    """Jitter would bring a waiter back after the turn kept for it (it lost it to the
    one behind): it spreads the waiters of a Redis outage only."""
    settings.HEIMDALL = {**settings.HEIMDALL, "DEFER_JITTER": 30}
    holder = tasks.holds_single.delay("jitter-gate")
    wait_until(_started("holder"), message="the holder to start")
    with caplog.at_level(logging.INFO, logger="django_heimdall"):
        deferred = tasks.defers_single.delay("j")
        wait_until(
            lambda: any(f"{deferred.id}] deferred by" in r.getMessage() for r in caplog.records),
            message="the deferral",
        )
    # Its first busy start, and the deferral that followed it.
    due = next(s["countdown"] for s in busy_signals if s["task_id"] == deferred.id)
    line = next(r.getMessage() for r in caplog.records if "deferred by" in r.getMessage())
    assert float(line.rsplit(" ", 1)[1].rstrip("s")) <= due
    open_gate("jitter-gate")
    assert deferred.get(timeout=60) == "j"
    holder.get(timeout=30)


def test_locked_on_a_heimdall_task_defers_without_retries(celery_worker):
    with mutex("heimdall-locked"):
        result = tasks.heimdall_locked.delay(7)
        wait_until(
            lambda: (
                (live().semaphore("resource:heimdall-locked") or None)
                and live().semaphore("resource:heimdall-locked").waiting == 1
            ),
            message="the task to wait in line",
        )
    assert result.get(timeout=30) == 7
    assert [r["retries"] for r in tasks.records("locked")] == [0]


def test_locked_on_a_plain_celery_task_waits_in_line_without_retries(celery_worker):
    """max_retries=0: a retry would fail the task; the re-sent message does not."""
    with mutex("plain-locked"):
        result = tasks.plain_locked.delay(3)
        wait_until(
            lambda: (
                (live().semaphore("resource:plain-locked") or None)
                and live().semaphore("resource:plain-locked").waiting == 1
            ),
            message="the task to wait in line",
        )
        time.sleep(2)  # more than one re-send while the mutex is held
    assert result.get(timeout=30) == 3
    assert [(r["id"], r["retries"]) for r in tasks.records("locked")] == [(result.id, 0)]


def test_a_second_delivery_of_a_locked_task_never_runs_alongside_the_first(
    celery_app, celery_worker
):
    _ids, overlapping = overlapping_twins(
        celery_app, "tests.tasks.locked_sleepy", "locked_sleepy", 10
    )
    assert overlapping == 0
    info = live().semaphore("resource:locked-twins")
    assert info is None or info.used == 0  # no ticket left behind by either delivery


def test_heartbeat_renews_a_locked_ticket_through_a_long_body(celery_worker):
    assert tasks.locked_heartbeat.delay(5.0).get(timeout=30) == "done"
    checks = tasks.records("locked_heartbeat")
    assert len(checks) >= 8  # about 5 s of a 1.5 s lease
    assert not any(check["taken"] for check in checks)  # never lapsed
    with mutex("heartbeat-locked"):  # given back at the end
        pass


def test_heartbeat_keeps_a_slot_past_its_lease(celery_worker):
    assert tasks.slot_heartbeat.delay(5).get(timeout=30) == [True] * 5


def test_eager_run_takes_and_gives_back_its_slot_and_raises_when_busy(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    assert tasks.two_at_a_time.apply((1,)).get() == 1
    name = "task:tests.tasks.two_at_a_time"
    assert live().semaphore(name).used == 0
    store = get_store()
    for holder in ("h1", "h2"):
        store.start(holder, task_name="t", lease_ms=10_000, token=holder, slots=(Slot(name, 1, 2),))
    with pytest.raises(ResourceBusy):
        tasks.two_at_a_time.apply((2,)).get()
    assert [r["n"] for r in tasks.records("two_at_a_time")] == [1]


@pytest.mark.slow
def test_a_backlog_waits_in_line_without_being_re_sent_over_and_over(celery_worker, busy_signals):
    results = [tasks.slow_two_at_a_time.delay(n) for n in range(30)]
    assert sorted(r.get(timeout=300) for r in results) == list(range(30))
    runs = tasks.records("slow_two_at_a_time")
    assert max_concurrent((r["start"], r["end"]) for r in runs) <= 2
    assert {r["retries"] for r in runs} == {0}
    resends = [sum(s["task_id"] == r.id for s in busy_signals) for r in results]
    assert sum(resends) / len(resends) <= 3


def test_a_task_waiting_for_its_turn_is_throttled_not_started(celery_worker, open_gate):
    holder = tasks.holds_single.delay("state-gate")
    wait_until(_started("holder"), message="the holder to start")
    deferred = tasks.defers_single.delay("s")
    wait_until(lambda: deferred.state == "THROTTLED", message="the waiting state")
    assert deferred.info["resource"] == "resource:single"
    open_gate("state-gate")
    assert deferred.get(timeout=60) == "s"
    assert holder.get(timeout=30) == "state-gate"
