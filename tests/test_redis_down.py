"""Redis trouble with a real server that is stopped and started again: fail
closed raises one documented error, fail open proceeds with a warning; scripts
come back after the restart."""

import logging

import pytest
import redis

from django_heimdall import HeimdallUnavailable
from django_heimdall.store import get_store
from tests import tasks
from tests.conftest import wait_until


def test_fail_closed_enqueue_raises_and_publishes_nothing(private_redis, caplog):
    private_redis.stop()
    with (
        caplog.at_level(logging.ERROR, logger="django_heimdall"),
        pytest.raises(HeimdallUnavailable, match="'private' is unreachable"),
    ):
        tasks.unique_add.delay(1, 1)
    assert any("fail closed" in r.getMessage() for r in caplog.records)

    private_redis.start()
    result = tasks.unique_add.apply_async((1, 1), queue="nobody-listens")
    # Back up, and the scripts were reloaded into the fresh server (NOSCRIPT recovered).
    assert get_store().holder(tasks.identity_of(tasks.unique_add, 1, 1)) == result.id


@pytest.mark.usefixtures("celery_worker")
def test_fail_open_enqueue_and_start_proceed_with_a_warning(private_redis, settings, caplog):
    settings.HEIMDALL = {**settings.HEIMDALL, "ON_REDIS_ERROR": "fail_open"}
    private_redis.stop()
    with caplog.at_level(logging.WARNING, logger="django_heimdall"):
        result = tasks.unique_add.delay(5, 5)
        assert result.get(timeout=30) == 10
    messages = [r.getMessage() for r in caplog.records]
    assert any("published without its lock" in m for m in messages)
    assert any("runs unchecked" in m for m in messages)


def runs_once_redis_returns(private_redis, caplog, result, logged, record, value):
    """``result``'s task, started while Redis is down (fail closed), logs ``logged``
    and does not run; once Redis is back it runs, once, and returns ``value``."""
    with caplog.at_level(logging.ERROR, logger="django_heimdall"):
        wait_until(
            lambda: any(logged in r.getMessage() for r in caplog.records),
            message=f"the log line {logged!r}",
        )
        assert tasks.records(record) == []  # did not run while Redis was down
        private_redis.start()
        assert result.get(timeout=30) == value
    assert [r["id"] for r in tasks.records(record)] == [result.id]


@pytest.mark.usefixtures("celery_worker")
def test_fail_closed_start_is_deferred_until_redis_returns(private_redis, caplog):
    result = tasks.unique_add.apply_async((3, 4), countdown=1)
    private_redis.stop()
    runs_once_redis_returns(private_redis, caplog, result, "start deferred", "unique_add", 7)


@pytest.mark.usefixtures("celery_worker")
def test_fail_open_start_gives_the_enqueue_lock_back_at_its_end(private_redis, settings, caplog):
    """Redis unreachable only while the task starts: it runs unchecked, and its end
    releases the lock taken at enqueue (left held, it swallowed the next calls)."""
    settings.HEIMDALL = {**settings.HEIMDALL, "ON_REDIS_ERROR": "fail_open"}
    result = tasks.unique_blocking.apply_async(("unchecked",), countdown=1)
    lock = tasks.identity_of(tasks.unique_blocking, "unchecked")
    server = redis.Redis(port=private_redis.port)
    server.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")  # every script times out
    try:
        with caplog.at_level(logging.WARNING, logger="django_heimdall"):
            wait_until(
                lambda: any("runs unchecked" in r.getMessage() for r in caplog.records),
                message="the unchecked start",
            )
    finally:
        server.execute_command("CLIENT", "UNPAUSE")
    assert get_store().holder(lock) == result.id
    tasks.redis().set(tasks.gate_key("unchecked"), 1, ex=120)  # the shared server's
    result.get(timeout=30)
    wait_until(lambda: get_store().holder(lock) is None, message="the release at its end")
    assert tasks.unique_blocking.delay("unchecked").id != result.id  # published anew


@pytest.mark.usefixtures("celery_worker")
def test_fail_closed_locked_start_is_deferred_until_redis_returns(private_redis, caplog):
    private_redis.stop()
    result = tasks.plain_locked.delay(7)
    runs_once_redis_returns(private_redis, caplog, result, "not entered", "locked", 7)
