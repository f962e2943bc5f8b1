"""celery-heimdall 1.0.1's remaining API: legacy options, lock_prefix,
heimdall_config, release_lock / unique_key_for_task, and only_after."""

import time

import pytest

from django_heimdall import RateLimit, only_after
from django_heimdall.compat import release_lock, unique_key_for_task
from django_heimdall.options import OptionError, parse_options
from django_heimdall.store import get_store
from django_heimdall.testing import max_in_window
from tests import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("celery_worker")


def test_legacy_times_and_per_are_a_rate_limit_that_holds():
    assert parse_options({"times": 2, "per": 1}) == {"rate_limit": RateLimit((2, 1))}
    assert tasks.legacy_limited.heimdall_policy.rate_limit == RateLimit("2/s")
    results = [tasks.legacy_limited.delay(n) for n in range(5)]
    assert sorted(r.get(timeout=60) for r in results) == list(range(5))
    runs = tasks.records("legacy_limited")
    assert max_in_window([r["t"] for r in runs], 1_000_000) == 2


@pytest.mark.parametrize(
    "options", [{"times": 2}, {"per": 60}, {"times": 2, "per": 60, "rate_limit": "2/m"}]
)
def test_legacy_times_and_per_come_together_and_alone(options):
    with pytest.raises(OptionError) as raised:
        parse_options(options)
    assert raised.value.check_id == "heimdall.E007"


def test_lock_prefix_heimdall_config_unique_key_for_task_and_release_lock(open_gate):
    task = tasks.unique_prefixed
    config = task.heimdall_config
    assert (config.lock_prefix, config.unique_timeout, config.unique_raises) == (
        "h-lock:",
        3600,
        False,
    )
    assert config.unique_lock_blocking is False
    result = task.delay("a")
    key = unique_key_for_task(task, ["a"], {}, prefix=config.lock_prefix)
    assert key.startswith("h-lock:")
    assert not unique_key_for_task(task, ["a"], {}).startswith("h-lock:")
    assert get_store().holder(key) == result.id
    assert task.delay("a").id == result.id  # held: a duplicate
    store = get_store()
    wait_until(  # running, so that its start cannot take the lock again after the release
        lambda: store.client.hget(store.keys.lock(key), "phase") == b"running",
        message="the holder running",
    )
    assert release_lock(task, key) is True
    assert get_store().holder(key) is None
    assert release_lock(task, key) is False
    assert task.delay("a").id != result.id  # free again
    open_gate("a")
    assert result.get(timeout=30) == "a"


def test_only_after_is_true_once_per_interval():
    assert only_after("report", 0.3) is True
    assert only_after("report", 0.3) is False
    assert only_after("other", 0.3) is True  # per key
    time.sleep(0.05)
    assert only_after("report", 0.3) is False
    wait_until(lambda: only_after("report", 0.3), message="the interval to end")
    with pytest.raises(ValueError):
        only_after("report", 0)


@pytest.mark.parametrize("seconds", [1.001, 1.005, 0.0015, 0.1 * 3, 2])
def test_only_after_never_asks_redis_for_a_shorter_interval(monkeypatch, seconds):
    """1.001 s is 1000.999… ms in floating point: truncated, the interval ended a
    millisecond early and a second True came within it."""
    store = get_store()
    sent = []
    call = store.call
    monkeypatch.setattr(
        store, "call", lambda name, keys, args: sent.append(args) or call(name, keys, args)
    )
    store.only_after(f"edge-{seconds}", seconds)
    ((ms, _owner),) = sent
    assert ms * 1000 >= seconds * 1_000_000


def test_only_after_method_in_a_task_body():
    assert [tasks.digest.delay("x").get(timeout=30) for _ in range(3)] == [True, False, False]
    assert tasks.digest.delay("y").get(timeout=30) is True
