"""Script calls borrow a connection of the django-redis pool and give it back."""

import threading

import pytest

from django_heimdall.store import get_store
from tests import tasks


def run_threads(count, target):
    errors = []

    def guarded(n):
        try:
            target(n)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def unique_delays(prefix, round_):
    queue = f"{prefix}-pool"  # never consumed; deleted with the test's keys

    def enqueue(n):
        tasks.unique_add.apply_async((round_, n), queue=queue)

    return enqueue


def test_short_lived_threads_give_their_connections_back(heimdall_prefix, private_redis):
    # The locks live on a private server, so its client count is only ours.
    store = get_store()
    pool = store.client.connection_pool
    assert run_threads(50, unique_delays(heimdall_prefix, 0)) == []
    clients_before = len(store.client.client_list())
    pooled_before = len(pool._available_connections)
    in_use_before = len(pool._in_use_connections)

    assert run_threads(50, unique_delays(heimdall_prefix, 1)) == []

    assert len(pool._in_use_connections) == in_use_before == 0
    # The pool may have grown to this round's peak concurrency, but every connection
    # the server gained is one the pool holds, idle: no thread kept one.
    gained = len(store.client.client_list()) - clients_before
    assert gained == len(pool._available_connections) - pooled_before
    assert gained < 50
    # Every call really went through: one lock per thread and round.
    assert len(list(store.client.scan_iter(match=f"{{{heimdall_prefix}}}:lock:*"))) == 100


@pytest.fixture
def small_pool(settings, heimdall_prefix):
    # Another database of the server, so that django-redis builds a pool of its own.
    location = settings.CACHES["default"]["LOCATION"].rsplit("/", 1)[0] + "/15"
    settings.CACHES = {
        **settings.CACHES,
        "small": {
            **settings.CACHES["default"],
            "LOCATION": location,
            "OPTIONS": {
                **settings.CACHES["default"]["OPTIONS"],
                "CONNECTION_POOL_KWARGS": {"max_connections": 4},
            },
        },
    }
    settings.HEIMDALL = {**settings.HEIMDALL, "CACHE": "small"}
    store = get_store()
    yield store
    keys = list(store.client.scan_iter(match=f"{{{heimdall_prefix}}}*"))
    if keys:
        store.client.delete(*keys)


def test_a_pool_of_four_serves_twenty_threads_without_failing(small_pool):
    def decide(n):
        for k in range(10):
            small_pool.acquire(f"k-{n}-{k}", f"owner-{n}", 10_000, "t")
            small_pool.release(f"k-{n}-{k}", f"owner-{n}", "t")

    assert run_threads(20, decide) == []
    assert small_pool.client.connection_pool.max_connections == 4
