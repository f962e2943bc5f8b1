"""Canvas behaviour: a duplicate inside a chain or group is published and then
skipped at start (DuplicateTaskSkipped), so results never hang and error
callbacks run."""

import pytest
from celery import chain, group

from django_heimdall import DuplicateTaskSkipped
from tests import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.usefixtures("celery_worker")


def test_chain_with_duplicate_head_fails_visibly_and_runs_its_errback(open_gate):
    holder = tasks.unique_blocking.delay("chain")
    wait_until(lambda: tasks.records("unique_blocking"), message="holder started")

    flow = chain(tasks.unique_blocking.s("chain"), tasks.collect.s()).on_error(
        tasks.plain_record.si("errback")
    )
    result = flow.apply_async()
    with pytest.raises(DuplicateTaskSkipped):
        result.get(timeout=20)
    wait_until(lambda: tasks.records("plain_record"), message="errback")
    assert [r["value"] for r in tasks.records("plain_record")] == ["errback"]
    assert tasks.records("collect") == []

    open_gate("chain")
    assert holder.get(timeout=20) == "chain"
    assert [r["id"] for r in tasks.records("unique_blocking")] == [holder.id]


def test_chain_with_free_head_runs_normally():
    result = chain(tasks.unique_add.s(1, 1), tasks.collect.s()).apply_async()
    assert result.get(timeout=20) == 2


def test_group_with_two_identical_signatures_runs_one_and_skips_the_other(open_gate):
    result = group(tasks.unique_blocking.s("g"), tasks.unique_blocking.s("g")).apply_async()
    first, second = result.results
    wait_until(
        lambda: first.state == "FAILURE" or second.state == "FAILURE", message="one member skipped"
    )
    open_gate("g")
    values = result.get(timeout=20, propagate=False)
    assert sorted(type(v).__name__ for v in values) == ["DuplicateTaskSkipped", "str"]
    assert len(tasks.records("unique_blocking")) == 1
