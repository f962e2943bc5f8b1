"""Key layout: every script's keys share one hash slot (ready for Redis Cluster)
and never collide with the project's cache keys."""

import pytest
from redis.crc import key_slot

from django_heimdall import mutex, options
from django_heimdall.models import PolicyOverride
from django_heimdall.overrides import publish
from django_heimdall.ratelimits import Rate
from django_heimdall.services import live
from django_heimdall.store import Slot, Store, get_store, scripts
from django_heimdall.store.beat import BeatStore


@pytest.fixture
def recorded_calls(monkeypatch):
    calls = []
    original = Store.call

    def recording(self, name, keys, args):
        calls.append((name, list(keys)))
        return original(self, name, keys, args)

    monkeypatch.setattr(Store, "call", recording)
    return calls


@pytest.mark.django_db
def test_every_script_touches_keys_of_one_slot(recorded_calls):
    store, state = get_store(), live()
    store.acquire("a:1", "o1", 10_000, "task.a", "{}")
    store.start("o1", task_name="task.a", lock="a:1", lease_ms=10_000, rates=(("r", Rate(5, 1)),))
    store.start("o2", task_name="task.b", rates=(("r", Rate(5, 1)), ("r", Rate(1, 60))))
    store.release("a:1", "o1", "task.a")
    store.acquire("a:2", "o3", 10_000, "task.a")
    store.start("o3", task_name="task.a", lock="a:2", lease_ms=10_000, token="t")
    store.release_owned("o3", "t")
    slots = (Slot("task:a", 1, 1), Slot("resource:storage", 2, 10))
    store.start("o4", task_name="task.a", lease_ms=10_000, token="u", slots=slots)
    store.start("o5", task_name="task.a", lease_ms=10_000, token="v", slots=slots)  # busy
    store.start(
        "o6",
        task_name="task.a",
        lock="a:3",
        lease_ms=10_000,
        token="w",
        slots=slots,
        rates=(("r", Rate(5, 1)),),
    )
    store.renew_execution("o4", "u", 10_000)
    store.release_owned("o4", "u")
    with mutex("storage", blocking=True, timeout=0.01) as ticket:
        ticket.renew()
    state.semaphores()
    state.release_slot("task:a", "o6", "w")
    state.locks_page(["task.a", "task.b"], 0, 10)
    state.release_task("task.a", state.now_ms())
    state.rate_windows()
    store.only_after("digest", 60)
    beat = BeatStore(store)
    beat.lead("b1", 10_000, "host", 1)
    beat.claim("b1", "entry", 1_000, "task.a", lock="a:3")
    beat.resign("b1")
    PolicyOverride.objects.create(task_name="task.a", options={"unique": True})
    publish()
    beat = BeatStore(store)
    beat.lead("b1", 10_000, "host", 1)
    beat.claim("b1", "entry", state.now_ms(), "task.a", lock="a:1")
    beat.resign("b1")

    assert {name for name, _ in recorded_calls} == set(scripts.NAMES)
    for name, keys in recorded_calls:
        slots = {key_slot(key.encode()) for key in keys}
        assert len(slots) == 1, f"{name} touches several slots: {keys}"
    assert len({key_slot(k.encode()) for _, keys in recorded_calls for k in keys}) == 1


def test_keys_carry_the_prefix_as_hash_tag(heimdall_prefix):
    keys = get_store().keys
    assert keys.lock("x").startswith(f"{{{heimdall_prefix}}}:")
    assert keys.rate("x").startswith(f"{{{heimdall_prefix}}}:")


def test_docs_option_table_is_derived_from_the_declarations():
    with open("docs/options.md", encoding="utf-8") as docs:
        assert options.markdown_table() in docs.read()
