"""Named semaphores for any code (``semaphore()``, ``mutex()``) and the store's
semaphore scripts: capacity under contention of several OS processes, leases,
owner checks, the FIFO line. Times come from the Redis clock, returned by the
scripts themselves."""

import multiprocessing
import os
import signal
import time

import pytest

from django_heimdall import ResourceBusy, mutex, semaphore
from django_heimdall.locks import SecondDelivery
from django_heimdall.services import live
from django_heimdall.store import Released, Renewed, Sem, Semaphores, Slot, Started, get_store
from django_heimdall.testing import max_concurrent

PROCESSES = 8


def _setup_child(prefix):
    os.environ["HEIMDALL_TEST_PREFIX"] = prefix
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()


def _contend(prefix, seconds, barrier, out):
    """Hold a ticket of a capacity-3 semaphore again and again for ``seconds``."""
    _setup_child(prefix)
    import random
    import time

    from django_heimdall import semaphore

    holds = []
    barrier.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with semaphore("contended", 3, lease=30, blocking=True, timeout=60) as ticket:
            time.sleep(random.uniform(0.002, 0.02))
        holds.append((ticket.acquired_at, ticket.released_at))
    out.put(holds)


def _crash_holding(prefix, barrier, out):
    """Take the mutex under a 1 s lease, report when, and die without releasing."""
    _setup_child(prefix)
    from django_heimdall import mutex

    ticket = mutex("crashing", lease=1).__enter__()
    out.put(ticket.acquired_at)
    out.close()
    out.join_thread()  # flushed before the process dies
    barrier.wait()
    os.kill(os.getpid(), signal.SIGKILL)


def _spawn(target, prefix, count, *args):
    os.environ["HEIMDALL_TEST_PREFIX"] = prefix
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(count), ctx.Queue()
    procs = [ctx.Process(target=target, args=(prefix, *args, barrier, out)) for _ in range(count)]
    try:
        for proc in procs:
            proc.start()
    finally:
        del os.environ["HEIMDALL_TEST_PREFIX"]
    return procs, barrier, out


def test_contending_processes_never_hold_more_tickets_than_the_capacity(heimdall_prefix):
    procs, _barrier, out = _spawn(_contend, heimdall_prefix, PROCESSES, 3.5)
    reports = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    holds = [hold for report in reports for hold in report]
    assert all(report for report in reports)  # every contender was served
    assert all(acquired <= released for acquired, released in holds)
    span = max(r for _, r in holds) - min(a for a, _ in holds)
    assert span >= 3_000_000  # contended for at least 3 s on the Redis clock
    assert max_concurrent(holds) <= 3
    assert max_concurrent(holds) == 3  # and the capacity was used
    assert live().semaphore("resource:contended").used == 0  # nothing left behind


def test_a_killed_holder_frees_its_ticket_when_its_lease_ends(heimdall_prefix):
    procs, _barrier, out = _spawn(_crash_holding, heimdall_prefix, 1)
    crashed_at = out.get(timeout=60)
    procs[0].join(30)
    assert procs[0].exitcode == -signal.SIGKILL
    holder = live().semaphore("resource:crashing")
    assert holder is not None and holder.used == 1  # still held by the dead process
    with mutex("crashing", lease=5, blocking=True, timeout=30) as ticket:
        # Not before the lease ended, and as soon as it did (give or take polling).
        assert ticket.acquired_at - crashed_at >= 1_000_000
    assert live().semaphore("resource:crashing").used == 0


def test_no_free_ticket_raises_resource_busy():
    with mutex("busy-one"):
        with pytest.raises(ResourceBusy) as busy, mutex("busy-one"):
            pass
        assert busy.value.name == "busy-one"
        with pytest.raises(ResourceBusy), mutex("busy-one", blocking=True, timeout=0.3):
            pass
    # The timed-out waiter left the line: the next caller is not held up by it.
    info = live().semaphore("resource:busy-one")
    assert info is None or info.waiting == 0
    with semaphore("busy-one", 1):
        pass


def test_a_foreign_release_is_a_noop():
    ops = Semaphores(get_store())
    with mutex("owned") as ticket:
        assert ops.release("resource:owned", "somebody-else").status == Sem.NOT_HOLDER
        assert ops.release("resource:owned", ticket.holder, "wrong-token").status == Sem.NOT_HOLDER
        assert live().semaphore("resource:owned").holders[0].holder == ticket.holder
    assert ticket.released_at is not None

    store = get_store()
    slot = Slot("task:foreign", 1, 1)
    assert store.start("t1", task_name="t", lease_ms=10_000, token="a", slots=(slot,)).status == (
        Started.ADMITTED
    )
    assert store.release_owned("t1", "another-execution") == Released.NOT_OWNER
    assert store.release_owned("t2", "a") == Released.NOT_OWNER
    assert live().semaphore("task:foreign").used == 1  # both were no-ops
    store.release_owned("t1", "a")
    assert live().semaphore("task:foreign").used == 0


def test_renewed_tickets_outlive_their_first_lease():
    with semaphore("renewed", 2, lease=0.5) as ticket:
        before = live().semaphore("resource:renewed").holders[0].expires_in
        assert ticket.renew(30)
        assert live().semaphore("resource:renewed").holders[0].expires_in > before
    assert not ticket.renew()  # released: nothing to renew


def test_heartbeat_renews_lock_and_slots_of_one_execution_only():
    store = get_store()
    slot = Slot("task:beat", 1, 1)
    store.acquire("beat:1", "b1", 1000, "t")
    store.start("b1", task_name="t", lock="beat:1", lease_ms=1000, token="x", slots=(slot,))
    assert store.renew_execution("b1", "x", 60_000) == Renewed.RENEWED
    assert live().semaphore("task:beat").holders[0].expires_in > 30
    assert live().lock_info("beat:1").expires_in > 30
    assert store.renew_execution("b1", "other", 60_000) == Renewed.LOST
    assert store.renew_execution("nobody", "x", 60_000) == Renewed.NOTHING


def test_busy_starts_wait_their_turn_in_arrival_order():
    store = get_store()
    slot = (Slot("task:fifo", 1, 1),)

    def start(task_id):
        return store.start(task_id, task_name="t", lease_ms=10_000, token=task_id, slots=slot)

    assert start("first").status == Started.ADMITTED
    assert start("second").status == Started.BUSY  # in line, first
    assert start("third").status == Started.BUSY  # in line, second
    store.release_owned("first", "first")
    # A slot is free, but "second" arrived earlier and is due back: "third" waits.
    assert start("third").status == Started.BUSY
    assert live().semaphore("task:fifo").waiting == 2
    assert start("second").status == Started.ADMITTED
    store.release_owned("second", "second")
    assert start("third").status == Started.ADMITTED
    assert live().semaphore("task:fifo").waiting == 0


def test_a_request_for_several_semaphores_is_all_or_nothing():
    store = get_store()
    a, b = Slot("resource:a", 1, 1), Slot("resource:b", 2, 2)
    assert store.start("x", task_name="t", lease_ms=10_000, token="x", slots=(b,)).status == (
        Started.ADMITTED
    )
    decision = store.start("y", task_name="t", lease_ms=10_000, token="y", slots=(a, b))
    assert decision.status == Started.BUSY and decision.holder == "resource:b"
    assert live().semaphore("resource:a") is None or live().semaphore("resource:a").used == 0


def test_a_semaphore_only_checked_leaves_nothing_behind(heimdall_prefix, redis_client):
    """A start that finds one of its semaphores busy takes none: the free ones it
    checked must not leave a key behind (one per distinct key, for ever)."""
    store = get_store()
    with mutex("shared-busy"):
        for n in range(50):
            slots = (Slot(f"task:checked:{n}", 1, 1), Slot("resource:shared-busy", 1, 1))
            decision = store.start(
                f"c{n}", task_name="t", lease_ms=10_000, token="x", slots=slots, queue=False
            )
            assert decision.status == Started.BUSY
    left = [k for k in redis_client.scan_iter(match=f"{{{heimdall_prefix}}}:*checked*")]
    assert left == []


def test_taking_a_held_ticket_again_renews_it_without_counting_it_twice():
    with semaphore("twice", 2) as first:
        again = Semaphores(get_store()).acquire(
            "resource:twice", first.holder, tickets=1, capacity=2, lease_ms=10_000
        )
        assert again.status == Sem.ACQUIRED
        assert live().semaphore("resource:twice").used == 1
        with semaphore("twice", 2):  # the second ticket is still free
            pass


def test_a_second_execution_of_a_holder_neither_enters_nor_releases():
    """@locked's holder is the task id: another delivery of the same message is
    another execution (token), refused while the first holds the ticket, and its
    release cannot free the first's ticket."""
    first = semaphore("twin", 1)
    first.holder, first.token = "locked:task-1", "execution-a"
    second = semaphore("twin", 1)
    second.holder, second.token = "locked:task-1", "execution-b"
    with first:
        with pytest.raises(SecondDelivery):
            second.acquire()
        second.held = True  # as if it had entered: its release is a no-op
        assert second.release() is False
        assert live().semaphore("resource:twin").holders[0].holder == "locked:task-1"
        with pytest.raises(ResourceBusy):
            semaphore("twin", 1).acquire()
    assert live().semaphore("resource:twin") is None or live().semaphore("resource:twin").used == 0


def test_a_lease_that_ran_out_cannot_be_renewed():
    ticket = semaphore("lapsed", 2, lease=0.2)
    ticket.acquire()
    with semaphore("lapsed", 2, lease=30):  # keeps the semaphore's keys alive
        time.sleep(0.4)
        assert ticket.renew() is False
