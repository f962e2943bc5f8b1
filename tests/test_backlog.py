"""A backlog on a prefork worker (4 processes): exact windows, every task once,
FIFO admission order. Times are the admission stamps the start script returned."""

import itertools

import pytest

from django_heimdall.testing import max_in_window
from tests import tasks
from tests.conftest import wait_until

BACKLOG = 60
TIMES = 5  # tests.tasks.backlog_limited: 5/s
CONCURRENCY = 4


def _warm(queue, processes):
    """Let every pool process connect first, so that a cold process does not make
    the first reservations out of order (in production workers are warm)."""
    for _ in range(2 * processes):
        tasks.warm_up.apply_async(queue=queue)
    wait_until(lambda: len(tasks.records("warm_up")) >= 2 * processes, message="warm workers")


@pytest.mark.slow
def test_backlog_on_prefork_worker_is_exact_complete_and_fifo(worker_process, heimdall_prefix):
    queue = f"{heimdall_prefix}-q"
    worker_process(pool="prefork", concurrency=CONCURRENCY)
    _warm(queue, CONCURRENCY)
    results = [tasks.backlog_limited.apply_async((n,), queue=queue) for n in range(BACKLOG)]
    assert sorted(r.get(timeout=120) for r in results) == list(range(BACKLOG))

    runs = tasks.records("backlog")
    assert sorted(r["n"] for r in runs) == list(range(BACKLOG))  # every task once
    stamps = [r["t"] for r in runs]
    assert max_in_window(stamps, 1_000_000) == TIMES  # no window over the limit

    # A task that waited carries its slot; one admitted at once was its own slot.
    slot = {r["n"]: r["slot"] or r["t"] for r in runs}
    admitted = {r["n"]: r["t"] for r in runs}
    inverted = [
        (i, j) for i, j in itertools.combinations(range(BACKLOG), 2) if admitted[j] < admitted[i]
    ]
    # Two reasons only: four processes take consecutive messages at the same moment,
    # so neighbours reserve in whichever order their calls reach Redis (the slots
    # themselves are then out of order, a few places at most); or a task arrived late
    # for its slot and was admitted after the next one's slot.
    unexplained = [
        (i, j)
        for i, j in inverted
        if not (slot[j] < slot[i] and j - i <= 2 * CONCURRENCY) and not admitted[i] > slot[j]
    ]
    assert unexplained == []
    late = [(i, j) for i, j in inverted if slot[i] < slot[j]]
    # Few: at most one inverted pair per task on average (of 1,770 pairs; a random
    # order has half of them inverted). On a loaded machine most come from late
    # arrivals: slots of one window lie milliseconds apart.
    assert len(inverted) <= BACKLOG, inverted
    assert len(late) <= BACKLOG // 2, late
