"""Global rate limits on a real worker: exact windows on the Redis clock, FIFO
slot reservations, several limits per task, deferral that keeps the task id and
its retry count and is stored as THROTTLED."""

import time

import pytest
from celery import states
from celery.app.trace import build_tracer
from celery.result import AsyncResult
from kombu.utils.uuid import uuid

from django_heimdall import signals
from django_heimdall.keys import identity
from django_heimdall.ratelimits import Rate
from django_heimdall.store import Started, get_store
from django_heimdall.testing import max_in_window
from tests import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("celery_worker")


@pytest.fixture
def throttled():
    """The ``throttled`` signals sent during the test, as dicts of their arguments."""
    sent = []

    def receiver(sender, **kwargs):
        sent.append(kwargs)

    signals.throttled.connect(receiver, weak=False)
    yield sent
    signals.throttled.disconnect(receiver)


def limit(settings, task, rate, **extra):
    """Set ``task``'s rate limit (and other settings) through HEIMDALL['TASKS']."""
    settings.HEIMDALL = {**settings.HEIMDALL, **extra, "TASKS": {task: {"rate_limit": rate}}}


def test_max_in_window_counts_what_it_should():
    assert max_in_window([0, 1, 2], 3) == 3
    assert max_in_window([0, 1, 3], 3) == 2
    assert max_in_window([0, 10, 20, 21], 10) == 2


def test_limit_is_global_per_task_and_deferred_tasks_all_run(settings):
    limit(settings, "tests.tasks.limited", "2/s")
    results = [tasks.limited.delay(n) for n in range(7)]
    assert sorted(r.get(timeout=60) for r in results) == list(range(7))

    runs = tasks.records("limited")
    assert sorted(r["n"] for r in runs) == list(range(7))  # each exactly once
    assert max_in_window([r["t"] for r in runs], 1_000_000) == 2
    assert {r["retries"] for r in runs} == {0}  # deferral is not a retry
    assert {r["id"] for r in runs} == {r.id for r in results}  # same ids after deferral


def test_deferral_sends_throttled_signal_and_leaves_task_object_unchanged(settings, throttled):
    limit(settings, "tests.tasks.limited", "1/s")
    task = tasks.limited._get_current_object()
    before = {k: v for k, v in vars(task).items() if not k.startswith("_")}
    results = [tasks.limited.delay(n) for n in range(3)]
    assert sorted(r.get(timeout=60) for r in results) == [0, 1, 2]
    assert throttled, "no start was throttled"
    # Each waits for its own slot: the second one window, the third two (plus the
    # margin a slot keeps after another reservation).
    assert all(0 < t["countdown"] <= 2.1 for t in throttled)
    assert {k: v for k, v in vars(task).items() if not k.startswith("_")} == before
    assert task.max_retries == 3


def test_key_function_makes_the_limit_per_key_and_callable_sets_it():
    results = [tasks.limited_per_customer.delay(c, n) for n in range(4) for c in (1, 2)]
    assert len([r.get(timeout=60) for r in results]) == 8
    runs = tasks.records("per_customer")
    premium = [r["t"] for r in runs if r["customer"] == 1]
    basic = [r["t"] for r in runs if r["customer"] == 2]
    assert len(premium) == len(basic) == 4
    assert max_in_window(premium, 1_000_000) <= 4
    assert max_in_window(basic, 1_000_000) == 1
    # The buckets are independent: premium used more of its window than basic could.
    assert max_in_window(premium, 1_000_000) > 1


def test_unique_and_rate_limited_task_runs_exactly_once_after_deferral(settings, throttled):
    limit(settings, "tests.tasks.unique_and_limited", "1/3s")
    results = {name: tasks.unique_and_limited.delay(name) for name in ("a", "b")}
    # Whichever starts second is over the 1/3s limit and deferred.
    wait_until(lambda: throttled, message="one start deferred")
    (name,) = [n for n, r in results.items() if r.id == throttled[0]["task_id"]]
    deferred = results[name]
    assert get_store().holder(lock_of(name)) == deferred.id
    # While it waits for a slot it still holds its lock: a copy is a duplicate.
    assert tasks.unique_and_limited.delay(name).id == deferred.id
    assert {r.get(timeout=30) for r in results.values()} == {"a", "b"}
    runs = tasks.records("unique_and_limited")
    assert sorted(r["name"] for r in runs) == ["a", "b"]
    assert max_in_window([r["t"] for r in runs], 3_000_000) == 1
    assert {r["retries"] for r in runs} == {0}
    wait_until(lambda: get_store().holder(lock_of(name)) is None, message="release after run")


def test_a_deferral_ends_its_traceback_at_the_task(settings, throttled):
    """Celery's tracer copies the code positions of every frame an ``Ignore`` passed
    through (into two ``ExceptionInfo``s it never shows): the deferral's traceback
    ends at ``HeimdallTask.__call__``, without the engine's large frames."""
    limit(settings, "tests.tasks.limited", "1/5s")
    assert tasks.limited.delay(0).get(timeout=30) == 0  # the window's one start
    task = tasks.limited._get_current_object()
    tracer = build_tracer(task.name, task, eager=False, propagate=False, app=task.app)
    task_id = uuid()
    einfo, info, *_ = tracer(task_id, (1,), {}, {"id": task_id})
    assert info.state == states.IGNORED
    assert throttled and throttled[0]["task_id"] == task_id  # deferred, not run
    frames, tb = [], einfo.tb
    while tb is not None:
        frames.append((tb.tb_frame.f_globals["__name__"], tb.tb_frame.f_code.co_name))
        tb = tb.tb_next
    assert frames[-1] == ("django_heimdall.task", "__call__")
    assert not [f for f in frames if f[0] == "django_heimdall.execution"]
    assert AsyncResult(task_id).get(timeout=30) == 1  # the re-sent message ran


def test_a_retry_is_a_new_arrival_for_its_rate_limit():
    """A task that came back for its slot and then retries must queue after the
    tasks waiting meanwhile: Celery copies the message's headers into the retry,
    the slot header included, and that slot is spent."""
    first = tasks.limited_retrying.delay("first")  # the window's start
    wait_until(lambda: tasks.records("limited_retrying"), message="the first start")
    retrying = tasks.limited_retrying.delay("retry-once")  # waits one window, then retries
    # The worker has four threads: the others are sent once this one holds its place.
    wait_until(lambda: retrying.state == "THROTTLED", message="retry-once waiting its turn")
    waiting = [tasks.limited_retrying.delay(f"w{n}") for n in range(3)]
    for result in (first, retrying, *waiting):
        result.get(timeout=60)
    starts = {(r["name"], r["retries"]): r["t"] for r in tasks.records("limited_retrying")}
    assert starts[("retry-once", 0)] < min(starts[(f"w{n}", 0)] for n in range(3))
    assert starts[("retry-once", 1)] > max(starts[(f"w{n}", 0)] for n in range(3))


def test_revoked_waiters_leave_the_line(settings, throttled):
    """Waiters revoked while they wait give their slots back: a task sent once they
    are discarded starts at once, not after slots nobody will use."""
    limit(settings, "tests.tasks.limited", "1/s")
    assert tasks.limited.delay(0).get(timeout=30) == 0
    waiters = [tasks.limited.delay(n) for n in range(1, 5)]
    wait_until(lambda: len({t["task_id"] for t in throttled}) == 4, message="four waiting")
    for waiter in waiters:
        waiter.revoke()
    wait_until(lambda: all(w.state == "REVOKED" for w in waiters), message="all discarded")
    store = get_store()
    assert store.client.zcard(store.keys.rate_queue("tests.tasks.limited")) == 0
    late = tasks.limited.delay(5)
    assert late.get(timeout=30) == 5
    assert late.id not in {t["task_id"] for t in throttled}


def lock_of(name):
    task = tasks.unique_and_limited
    return identity(task, task.heimdall_policy, (name,), {}).lock


def test_deferral_hop_stays_well_below_the_visibility_timeout(celery_app, settings):
    from django_heimdall.messages import max_countdown

    settings.HEIMDALL = {**settings.HEIMDALL, "DEFER_MAX_COUNTDOWN": 300}
    saved = celery_app.conf.broker_transport_options
    try:
        celery_app.conf.broker_transport_options = {}
        assert max_countdown(celery_app) == 300
        celery_app.conf.broker_transport_options = {"visibility_timeout": 30}
        assert max_countdown(celery_app) == 15
    finally:
        celery_app.conf.broker_transport_options = saved


def test_two_limits_hold_at_once_over_a_run_crossing_both_windows(settings):
    limit(settings, "tests.tasks.limited", ["3/s", "5/4s"])
    results = [tasks.limited.delay(n) for n in range(12)]
    assert sorted(r.get(timeout=90) for r in results) == list(range(12))
    runs = tasks.records("limited")
    assert sorted(r["n"] for r in runs) == list(range(12))
    stamps = [r["t"] for r in runs]
    # Both bind: 3 in the first second, then the 4-second limit holds the rest back,
    # and the run spans three 4-second windows.
    assert max_in_window(stamps, 1_000_000) == 3
    assert max_in_window(stamps, 4_000_000) == 5
    assert max(stamps) - min(stamps) >= 8_000_000


def test_throttled_task_is_stored_as_throttled_and_ends_success():
    from celery.result import AsyncResult

    # track_started=True: the start stores STARTED, the deferral then THROTTLED.
    results = [tasks.tracked_limited.delay(n) for n in range(2)]

    def throttled():
        return [r for r in results if AsyncResult(r.id).state == "THROTTLED"]

    (waiting,) = wait_until(throttled, message="a task stored as THROTTLED")
    info = AsyncResult(waiting.id).info
    assert info["key"] == "tests.tasks.tracked_limited"
    assert 0 < info["countdown"] <= 2
    # .get() waits through THROTTLED (not a ready state) until the task ran.
    assert [r.get(timeout=30) for r in results] == [0, 1]
    assert [AsyncResult(r.id).state for r in results] == ["SUCCESS", "SUCCESS"]


def test_a_reserved_task_keeps_its_place_and_a_late_one_never_breaks_the_bound():
    store = get_store()
    rate = (("fifo", Rate(1, 0.3)),)
    assert store.start("a", task_name="t", rates=rate).status == Started.ADMITTED
    b = store.start("b", task_name="t", rates=rate)
    c = store.start("c", task_name="t", rates=rate)
    assert (b.status, c.status) == (Started.THROTTLED, Started.THROTTLED)
    assert b.wait < c.wait  # FIFO: c's slot comes after b's
    # b asking again before its slot keeps its slot; a newcomer queues behind c.
    again = store.start("b", task_name="t", rates=rate)
    assert abs((again.now_us + again.wait * 1e6) - (b.now_us + b.wait * 1e6)) < 2_000
    assert store.start("d", task_name="t", rates=rate).wait > c.wait
    # c arrives at its slot but b never came (revoked): c runs, b's slot is wasted.
    time.sleep(c.wait)
    admitted = store.start("c", task_name="t", rates=rate)
    assert admitted.status == Started.ADMITTED
    # b arrives late: admitted only where the admissions leave room, never sooner.
    late = store.start("b", task_name="t", rates=rate)
    stamps = [admitted.now_us]
    if late.status == Started.ADMITTED:
        stamps.append(late.now_us)
    assert max_in_window(stamps, 300_000) == 1


def test_lowering_a_limit_holds_at_once():
    store = get_store()
    for n in range(5):
        assert store.start(f"o{n}", task_name="t", rates=(("low", Rate(5, 60)),)).status == (
            Started.ADMITTED
        )
    lowered = store.start("p", task_name="t", rates=(("low", Rate(2, 60)),))
    assert lowered.status == Started.THROTTLED
    assert 59 < lowered.wait <= 61


def test_several_limits_are_decided_in_one_call_and_listed_each():
    from django_heimdall.services import live

    store = get_store()
    rates = (("multi", Rate(2, 60)), ("multi", Rate(3, 3600)))
    decisions = [store.start(f"o{n}", task_name="t", rates=rates) for n in range(4)]
    assert [d.status for d in decisions] == [Started.ADMITTED] * 2 + [Started.THROTTLED] * 2
    (window,) = live().rate_windows().windows
    assert [(x.times, x.per, x.starts) for x in window.limits] == [(2, 60.0, 2), (3, 3600.0, 2)]
    assert window.waiting == 2
    assert window.next_slot_in > 3000  # the hour's third slot is taken by a waiter


@pytest.mark.slow
def test_six_tasks_at_two_per_ten_seconds_run_in_enqueue_order(settings, throttled):
    """celery-heimdall's own suite expects this: of six tasks at 2/10 s, the third
    and fourth start in the second window, the last two in the third."""
    limit(settings, "tests.tasks.limited", "2/10s")

    def decided():
        return {t["task_id"] for t in throttled} | {r["id"] for r in tasks.records("limited")}

    results = []
    for n in range(6):
        # One at a time, so that the enqueue order is the order of first starts.
        results.append(tasks.limited.delay(n))
        wait_until(lambda n=n: len(decided()) > n, message=f"task {n} decided")
    assert [r.get(timeout=60) for r in results] == list(range(6))
    start = {r["n"]: r["t"] for r in tasks.records("limited")}
    since = {n: (t - start[0]) / 1e6 for n, t in start.items()}
    assert since[1] < 10
    assert all(10 <= since[n] < 20 for n in (2, 3)), since
    assert all(since[n] >= 20 for n in (4, 5)), since
    assert max_in_window(start.values(), 10_000_000) == 2


def test_a_long_wait_takes_hops_below_the_cap_and_keeps_its_slot(settings, throttled):
    limit(settings, "tests.tasks.limited", "1/3s", DEFER_MAX_COUNTDOWN=1)
    results = [tasks.limited.delay(n) for n in range(2)]
    assert sorted(r.get(timeout=60) for r in results) == [0, 1]
    (waiter,) = {t["task_id"] for t in throttled}
    countdowns = [t["countdown"] for t in throttled]
    # About 3 s to its slot, in hops of at most 1 s, each asking again for the rest.
    assert len(countdowns) >= 3 and countdowns == sorted(countdowns, reverse=True)
    runs = {r["id"]: r for r in tasks.records("limited")}
    first, second = sorted(runs.values(), key=lambda r: r["t"])
    assert second["id"] == waiter and second["t"] - first["t"] >= 3_000_000
    # It ran at the slot it was given on its first deferral, carried in the header.
    assert abs(second["slot"] - second["t"]) < 100_000
    assert {r["retries"] for r in runs.values()} == {0}
