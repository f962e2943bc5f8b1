"""Global rate limits on a real worker: exact windows on the Redis clock,
deferral that keeps the task id and its retry count."""

import pytest

from django_heimdall import signals
from django_heimdall.keys import identity
from django_heimdall.store import get_store
from django_heimdall.testing import max_in_window
from tests import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("celery_worker")


def test_max_in_window_counts_what_it_should():
    assert max_in_window([0, 1, 2], 3) == 3
    assert max_in_window([0, 1, 3], 3) == 2
    assert max_in_window([0, 10, 20, 21], 10) == 2


def test_limit_is_global_per_task_and_deferred_tasks_all_run(settings):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {"tests.tasks.limited": {"rate_limit": "2/s"}},
    }
    results = [tasks.limited.delay(n) for n in range(7)]
    assert sorted(r.get(timeout=60) for r in results) == list(range(7))

    runs = tasks.records("limited")
    assert sorted(r["n"] for r in runs) == list(range(7))  # each exactly once
    assert max_in_window([r["t"] for r in runs], 1_000_000) == 2
    assert {r["retries"] for r in runs} == {0}  # deferral is not a retry
    assert {r["id"] for r in runs} == {r.id for r in results}  # same ids after deferral


def test_deferral_sends_throttled_signal_and_leaves_task_object_unchanged(settings):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {"tests.tasks.limited": {"rate_limit": "1/s"}},
    }
    task = tasks.limited._get_current_object()
    before = {k: v for k, v in vars(task).items() if not k.startswith("_")}
    throttled = []

    def receiver(sender, **kwargs):
        throttled.append(kwargs)

    signals.throttled.connect(receiver, weak=False)
    try:
        results = [tasks.limited.delay(n) for n in range(3)]
        assert sorted(r.get(timeout=60) for r in results) == [0, 1, 2]
    finally:
        signals.throttled.disconnect(receiver)
    assert throttled, "no start was throttled"
    # Each waits for its own slot: the second one window, the third two.
    assert all(0 < t["countdown"] <= 2 for t in throttled)
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


def test_unique_and_rate_limited_task_runs_exactly_once_after_deferral(settings):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {"tests.tasks.unique_and_limited": {"rate_limit": "1/3s"}},
    }
    throttled = []

    def receiver(sender, task_id, **kwargs):
        throttled.append(task_id)

    signals.throttled.connect(receiver, weak=False)
    try:
        results = {name: tasks.unique_and_limited.delay(name) for name in ("a", "b")}
        # Whichever starts second is over the 1/3s limit and deferred.
        wait_until(lambda: throttled, message="one start deferred")
    finally:
        signals.throttled.disconnect(receiver)
    (name,) = [n for n, r in results.items() if r.id == throttled[0]]
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


def lock_of(name):
    task = tasks.unique_and_limited
    return identity(task, task.heimdall_policy, (name,), {}).lock


def test_deferral_hop_stays_well_below_the_visibility_timeout(celery_app, settings):
    from django_heimdall.task import _max_countdown

    settings.HEIMDALL = {**settings.HEIMDALL, "DEFER_MAX_COUNTDOWN": 300}
    saved = celery_app.conf.broker_transport_options
    try:
        celery_app.conf.broker_transport_options = {}
        assert _max_countdown(celery_app) == 300
        celery_app.conf.broker_transport_options = {"visibility_timeout": 30}
        assert _max_countdown(celery_app) == 15
    finally:
        celery_app.conf.broker_transport_options = saved
