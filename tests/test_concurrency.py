"""Guarantees under real concurrency: several OS processes at once, and a
prefork worker. Times are read from the Redis clock by the scripts themselves."""

import math
import multiprocessing
import os
import signal

import pytest
from billiard.exceptions import WorkerLostError

from django_heimdall.services import live
from django_heimdall.store import Slot, Started, get_store
from django_heimdall.testing import max_concurrent, max_in_window
from tests import tasks
from tests.conftest import wait_until

PROCESSES = 8


def _setup_child(prefix):
    os.environ["HEIMDALL_TEST_PREFIX"] = prefix
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()


def _enqueue_same(prefix, queue, calls, barrier, out):
    _setup_child(prefix)
    from tests.celery_app import app
    from tests.tasks import unique_add

    app.connection_for_write().ensure_connection()
    barrier.wait()
    out.put([unique_add.apply_async((11, 22), queue=queue).id for _ in range(calls)])


def _hammer(prefix, seconds, times, per, barrier, out):
    _setup_child(prefix)
    import time

    from django_heimdall.ratelimits import Rate
    from django_heimdall.store import Started, get_store

    store = get_store()
    store.client.ping()
    rate = Rate(times, per)
    admitted, first, last = [], None, None
    barrier.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        decision = store.start("hammer", task_name="hammer", rates=(("hammer", rate),))
        first = decision.now_us if first is None else first
        last = decision.now_us
        if decision.status == Started.ADMITTED:
            admitted.append(decision.now_us)
    out.put((admitted, first, last))


def _spawn(target, prefix, *args):
    """Run ``target(prefix, *args, barrier, out)`` in PROCESSES spawned processes that
    start their work together; return what each put on ``out``."""
    # Children may load the settings while unpickling ``target``: give them the
    # test's key prefix through the environment they start with.
    os.environ["HEIMDALL_TEST_PREFIX"] = prefix
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(prefix, *args, barrier, out)) for _ in range(PROCESSES)
    ]
    try:
        for proc in procs:
            proc.start()
    finally:
        del os.environ["HEIMDALL_TEST_PREFIX"]
    reports = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    return reports


def test_concurrent_enqueues_publish_exactly_one_message(heimdall_prefix, redis_client):
    queue = f"{heimdall_prefix}-unconsumed"
    try:
        reports = _spawn(_enqueue_same, heimdall_prefix, queue, 50)
        ids = [task_id for report in reports for task_id in report]
        assert len(ids) == PROCESSES * 50
        assert len(set(ids)) == 1  # every caller got the one task id
        assert redis_client.llen(queue) == 1  # exactly one message was published
    finally:
        redis_client.delete(queue)


def test_hammered_rate_key_never_exceeds_its_window(heimdall_prefix):
    times, per, seconds = 5, 1.0, 3.5
    reports = _spawn(_hammer, heimdall_prefix, seconds, times, per)
    admitted = sorted(t for report in reports for t in report[0])
    duration = (max(r[2] for r in reports) - min(r[1] for r in reports)) / 1e6
    assert duration >= 3
    assert max_in_window(admitted, int(per * 1e6)) <= times
    # Not over-conservative: close to the most the limit allows.
    assert len(admitted) >= times * math.floor(duration / per) - times


def test_prefork_worker_keeps_the_window_and_runs_each_task_once(worker_process):
    worker = worker_process(pool="prefork", concurrency=4)
    results = [tasks.limited_10_per_2s.apply_async((n,), queue=worker.queue) for n in range(60)]
    assert sorted(r.get(timeout=180) for r in results) == list(range(60))

    runs = tasks.records("limited")
    assert sorted(r["n"] for r in runs) == list(range(60))  # all 60, exactly once
    assert len({r["id"] for r in runs}) == 60
    assert max_in_window([r["t"] for r in runs], 2_000_000) <= 10
    assert all(r["now"] >= r["t"] for r in runs)  # admission precedes the body
    assert {r["retries"] for r in runs} == {0}  # deferrals left request.retries alone


def test_killed_worker_process_gives_its_lock_back(worker_process):
    worker = worker_process(pool="prefork", concurrency=1)
    result = tasks.unique_crashing.apply_async(("boom",), queue=worker.queue)
    lock = tasks.identity_of(tasks.unique_crashing, "boom")
    with pytest.raises(WorkerLostError):
        result.get(timeout=60)
    # Released by the worker's main process, long before the 3600 s lease ends.
    wait_until(lambda: get_store().holder(lock) is None, message="release of a lost task")
    assert len(tasks.records("unique_crashing")) == 1


def max_overlap(runs):
    """The most bodies running at any instant, on the Redis clock."""
    return max_concurrent((r["start"], r["end"]) for r in runs)


def test_prefork_worker_never_runs_more_copies_than_the_concurrency_limit(worker_process):
    worker = worker_process(pool="prefork", concurrency=4)
    results = [tasks.two_at_a_time.apply_async((n,), queue=worker.queue) for n in range(40)]
    assert sorted(r.get(timeout=180) for r in results) == list(range(40))

    runs = tasks.records("two_at_a_time")
    assert sorted(r["n"] for r in runs) == list(range(40))  # all 40, exactly once
    assert len({r["id"] for r in runs}) == 40
    assert max_overlap(runs) <= 2
    assert {r["retries"] for r in runs} == {0}  # waiting in line used no retries
    info = live().semaphore("task:tests.tasks.two_at_a_time")
    assert info.used == 0 and info.waiting == 0


def test_two_tasks_sharing_a_resource_never_exceed_its_capacity_together(worker_process):
    worker = worker_process(pool="prefork", concurrency=4)
    results = [
        task.apply_async((n,), queue=worker.queue)
        for n in range(15)
        for task in (tasks.uses_shared, tasks.also_uses_shared)
    ]
    assert sorted(r.get(timeout=180) for r in results) == sorted(list(range(15)) * 2)
    runs = tasks.records("shared")
    assert len(runs) == 30
    assert max_overlap(runs) <= 2  # HEIMDALL["RESOURCES"]["shared"]["capacity"]
    assert {r["kind"] for r in runs} == {"a", "b"}


def test_killed_worker_process_gives_its_slot_back_at_once(worker_process):
    worker = worker_process(pool="prefork", concurrency=1)
    result = tasks.slot_crashing.apply_async(("boom",), queue=worker.queue)
    with pytest.raises(WorkerLostError):
        result.get(timeout=60)
    # Released by the worker's main process, long before the 3600 s lease ends.
    wait_until(
        lambda: live().semaphore("task:tests.tasks.slot_crashing").used == 0,
        message="release of a lost task's slot",
    )
    assert len(tasks.records("slot_crashing")) == 1


def test_a_dead_workers_slot_returns_when_its_lease_ends(worker_process):
    worker = worker_process(pool="prefork", concurrency=1)
    tasks.slot_sleeper.apply_async(queue=worker.queue)
    run = wait_until(lambda: tasks.records("slot_sleeper"), message="the holder to start")[0]
    # The whole worker dies: nobody is left to give the slot back.
    for pid in (worker.process.pid, run["pid"]):
        os.kill(pid, signal.SIGKILL)
    worker.process.wait(30)

    store = get_store()
    slot = (Slot("task:tests.tasks.slot_sleeper", 1, 1),)

    def admitted():
        decision = store.start("next", task_name="t", lease_ms=10_000, token="n", slots=slot)
        return decision if decision.status == Started.ADMITTED else None

    decision = wait_until(admitted, message="the slot to come back")
    # Not before its 2 s lease ran out, on the Redis clock.
    assert decision.now_us - run["t"] >= 2_000_000
