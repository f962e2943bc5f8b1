"""The store: one round trip per decision, owner-checked release, key layout."""

import time

import pytest
import redis
from django.core.cache import caches

from django_heimdall.ratelimits import Rate
from django_heimdall.services import live as store_live
from django_heimdall.store import Acquired, Released, Started, get_store
from tests import tasks


class CountingConnection(redis.connection.Connection):
    """A real connection that counts the requests it writes: one per round trip
    (a pipeline would be one write)."""

    writes = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.writes += 1
        return super().send_packed_command(command, check_health)


def evalsha_calls(client):
    return client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


@pytest.fixture
def count_round_trips(private_redis, settings):
    """Runs a block and returns (round trips to Redis, EVALSHA commands served)."""
    settings.CACHES["private"]["OPTIONS"]["CONNECTION_POOL_KWARGS"] = {
        "connection_class": CountingConnection
    }
    settings.CACHES = {**settings.CACHES}  # announce the change: clients are rebuilt
    client = get_store().client

    def run(func):
        scripts = evalsha_calls(client)
        writes = CountingConnection.writes
        func()
        writes = CountingConnection.writes - writes
        return writes, evalsha_calls(client) - scripts

    # Steady state: scripts loaded, and the admin overrides just checked (a process
    # looks for changed overrides at most every OVERRIDES_REFRESH seconds).
    tasks.unique_add.heimdall_policy  # noqa: B018
    store = get_store()
    store.acquire("warm", "w", 1000, "t")
    store.start("w", task_name="t", lock="warm", lease_ms=1000, rates=(("warm", Rate(1, 1)),))
    store.release("warm", "w", "t")
    return run


def test_every_store_decision_is_one_round_trip(count_round_trips):
    store = get_store()
    one = (1, 1)
    assert count_round_trips(lambda: store.acquire("k", "a", 10_000, "t")) == one
    assert count_round_trips(lambda: store.acquire("k", "b", 10_000, "t")) == one  # duplicate
    assert (
        count_round_trips(
            lambda: store.start(
                "a", task_name="t", lock="k", lease_ms=10_000, rates=(("r", Rate(5, 1)),)
            )
        )
        == one
    )
    assert count_round_trips(lambda: store.release("k", "a", "t")) == one


def test_enqueue_and_duplicate_cost_one_round_trip_each(count_round_trips):
    broker = tasks.redis()  # the broker is the shared server, heimdall the private one
    queue = f"{get_store().keys.prefix}-unconsumed"
    try:
        first = {}
        assert count_round_trips(
            lambda: first.setdefault("r", tasks.unique_add.apply_async((1,), queue=queue))
        ) == (1, 1)
        dup = {}
        assert count_round_trips(
            lambda: dup.setdefault("r", tasks.unique_add.apply_async((1,), queue=queue))
        ) == (1, 1)
        assert dup["r"].id == first["r"].id
        assert broker.llen(queue) == 1
    finally:
        broker.delete(queue)


def test_acquire_reports_owner_and_duplicates():
    store = get_store()
    assert store.acquire("k", "a", 10_000, "t").status == Acquired.TAKEN
    assert store.acquire("k", "a", 10_000, "t").status == Acquired.OWNED
    dup = store.acquire("k", "b", 10_000, "t")
    assert (dup.status, dup.holder) == (Acquired.HELD, "a")
    assert 9 < dup.expires_in <= 10


def test_a_replacing_lock_keeps_nothing_of_the_one_it_replaced():
    store = get_store()
    store.acquire("k", "a", 10_000, "t", keep=True)  # unique_until="expired"
    assert store.acquire("k", "b", 10_000, "t", replace=True).status == Acquired.REPLACED
    # b's own policy does not keep the lock after the task: it is released.
    assert store.release_owned("b") == Released.RELEASED
    assert store.holder("k") is None


def test_release_is_compare_and_delete():
    store = get_store()
    store.acquire("k", "a", 10_000, "t")
    assert store.release("k", "b", "t") is False
    assert store.holder("k") == "a"
    assert store.release("k", "a", "t") is True
    assert store.holder("k") is None
    assert store.release("k", "a", "t") is False


def test_start_duplicate_changes_nothing_and_throttle_counts_nothing():
    store = get_store()
    rate = (("r", Rate(1, 60)),)
    store.acquire("k", "a", 10_000, "t")
    dup = store.start("b", task_name="t", lock="k", lease_ms=10_000, rates=rate)
    assert (dup.status, dup.holder) == (Started.DUPLICATE, "a")
    assert (
        store.start("a", task_name="t", lock="k", lease_ms=10_000, rates=rate).status
        == Started.ADMITTED
    )
    throttled = store.start("c", task_name="t", lock="k2", lease_ms=10_000, rates=rate)
    assert throttled.status == Started.THROTTLED
    assert 59 < throttled.wait <= 60
    assert store.holder("k2") == "c"  # the deferred task keeps its lock
    assert store.client.zcard(store.keys.rate("r")) == 1  # the throttled start was not counted


def test_the_admissions_log_keeps_only_what_can_still_hold_a_start_back():
    store = get_store()
    wide = (("wide", Rate(1_000_000, 1)),)  # never binds
    for i in range(25):  # a steady flow over 2.5 s: the log never lapses
        started = store.start(f"t{i}", task_name="t", lock=None, lease_ms=10_000, rates=wide)
        assert started.status == Started.ADMITTED
        time.sleep(0.1)
    # The log keeps the last window (and its 20 ms margin), not every admission up
    # to `times`: each start reads and keeps what can still hold one back.
    assert store.client.zcard(store.keys.rate("wide")) <= 12


def test_keys_never_collide_with_django_cache_keys(settings):
    settings.CACHES["default"]["KEY_PREFIX"] = get_store().keys.prefix
    cache = caches["default"]
    store = get_store()
    store.acquire("report", "a", 10_000, "t")
    cache.set("lock:report", "cache value")
    cache_key = cache.make_key("lock:report")
    assert cache_key != store.keys.lock("report")
    assert store.holder("report") == "a"
    assert cache.get("lock:report") == "cache value"
    store.client.delete(cache_key)


def test_lock_index_forgets_expired_locks():
    store = get_store()
    store.acquire("short", "a", 1, "t")  # 1 ms lease
    time.sleep(0.01)
    store.client.zadd(store.keys.index("t"), {"stale-member": 1})
    store.acquire("long", "b", 10_000, "t")
    members = {m.decode() for m in store.client.zrange(store.keys.index("t"), 0, -1)}
    assert members == {store.keys.lock("long")}


def test_lock_pages_cover_every_live_lock_once_in_lease_order():
    store = get_store()
    for n in range(5):
        store.acquire(f"gone-{n}", f"g{n}", 1, "t")  # expire at once, stay in the index
    for n in range(23):
        store.acquire(f"live-{n:02d}", f"o{n}", 60_000 + n * 10, "t")
    store.acquire("other", "x", 60_000, "u")
    time.sleep(0.01)
    seen = []
    for offset in range(0, 30, 7):
        page = store_live().locks_page(["t", "u"], offset, 7)
        assert page.total == 24
        seen += [lock.identity for lock in page.locks]
    assert seen == [f"live-{n:02d}" for n in range(23)] + ["other"]


def test_rate_windows_count_the_current_window_and_the_next_slot():
    store = get_store()
    rate = Rate(3, 60)
    for n in range(3):
        store.start(f"t{n}", task_name="t", rates=(("r", rate),))
    store.start("t9", task_name="t", rates=(("free", Rate(5, 60)),))
    windows = {w.identity: w for w in store_live().rate_windows().windows}
    assert (windows["r"].times, windows["r"].per, windows["r"].starts) == (3, 60.0, 3)
    assert 59 < windows["r"].next_slot_in <= 60  # full: the next slot is a window away
    assert (windows["free"].starts, windows["free"].next_slot_in) == (1, 0)
    assert store_live().reset_rate("r") is True
    # A reset window stays listed, with nothing counted, until it would have ended.
    after = {w.identity: w for w in store_live().rate_windows().windows}
    assert (after["r"].starts, after["r"].next_slot_in) == (0, 0)


def test_rate_registry_forgets_keys_whose_window_expired():
    store = get_store()
    store.start("t", task_name="t", rates=(("short", Rate(1, 0.001)),))
    time.sleep(0.01)
    assert store_live().rate_windows().windows == []
    assert store.client.hlen(store.keys.rate_details) == 0
    assert store.client.zcard(store.keys.rates) == 0
