"""Admin overrides reach running processes: the top layer of the precedence,
changed through real admin URLs, applied by a worker process without a restart."""

import time

import pytest
from django.urls import reverse

from django_heimdall.conf import heimdall_settings
from django_heimdall.models import PolicyOverride
from django_heimdall.overrides import OverrideStorage, source
from django_heimdall.store import get_store
from django_heimdall.testing import max_in_window
from tests import tasks
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db

ADD = reverse("admin:heimdall_policyoverride_add")


def override_form(task_name, **values):
    form = {
        "task_name": task_name,
        "enabled": "on",
        "note": "incident 42",
        "unique": "unknown",
        "unique_raises": "unknown",
        "unique_wait_for_expiry": "unknown",
        "unique_timeout": "",
        "key": "",
        "unique_on": "",
        "rate_limit": "",
    }
    form.update(values)
    return form


def save_override(client, capture, task_name, **values):
    with capture(execute=True):
        response = client.post(ADD, override_form(task_name, **values))
    assert response.status_code == 302, response.context["adminform"].form.errors
    return PolicyOverride.objects.get(task_name=task_name)


def test_admin_override_lowers_the_rate_a_running_worker_process_applies(
    admin_client, worker_process, django_capture_on_commit_callbacks
):
    worker = worker_process(pool="prefork", concurrency=2)
    before = [tasks.limited.apply_async((n,), queue=worker.queue) for n in range(3)]
    assert sorted(r.get(timeout=60) for r in before) == [0, 1, 2]

    override = save_override(
        admin_client, django_capture_on_commit_callbacks, "tests.tasks.limited", rate_limit="1/2s"
    )
    assert override.updated_by.username == "admin"
    # The documented bound: every process sees a change within OVERRIDES_REFRESH.
    time.sleep(heimdall_settings.OVERRIDES_REFRESH + 0.5)

    after = [tasks.limited.apply_async((n,), queue=worker.queue) for n in range(10, 14)]
    assert sorted(r.get(timeout=60) for r in after) == [10, 11, 12, 13]
    starts = [r["t"] for r in tasks.records("limited") if r["n"] >= 10]
    assert len(starts) == 4
    assert max_in_window(starts, 2_000_000) == 1  # the worker obeys the lowered limit


def test_admin_override_disabling_uniqueness_lets_a_duplicate_publish(
    admin_client, heimdall_prefix, django_capture_on_commit_callbacks
):
    queue = f"{heimdall_prefix}-unconsumed"
    broker = tasks.redis()
    first = tasks.unique_add.apply_async((1,), queue=queue)
    assert tasks.unique_add.apply_async((1,), queue=queue).id == first.id

    save_override(
        admin_client, django_capture_on_commit_callbacks, "tests.tasks.unique_add", unique="false"
    )
    wait_until(
        lambda: not tasks.unique_add.heimdall_policy.unique, timeout=10, message="override applied"
    )
    assert tasks.unique_add.heimdall_policy.sources["unique"] == "admin"
    again = tasks.unique_add.apply_async((1,), queue=queue)
    assert again.id != first.id
    assert broker.llen(queue) == 2  # the duplicate was published


def test_disabled_and_deleted_overrides_stop_applying(
    admin_client, django_capture_on_commit_callbacks
):
    override = save_override(
        admin_client, django_capture_on_commit_callbacks, "tests.tasks.unique_add", unique="false"
    )
    source.reset()
    assert tasks.unique_add.heimdall_policy.unique is False

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:heimdall_policyoverride_changelist"),
            {"action": "disable", "_selected_action": [override.pk]},
        )  # a bulk action: queryset.update(), which sends no model signal
    source.reset()
    assert tasks.unique_add.heimdall_policy.unique is True

    with django_capture_on_commit_callbacks(execute=True):
        PolicyOverride.objects.filter(pk=override.pk).update(enabled=True)
    source.reset()
    assert tasks.unique_add.heimdall_policy.unique is False
    with django_capture_on_commit_callbacks(execute=True):
        override.delete()
    source.reset()
    assert tasks.unique_add.heimdall_policy.unique is True


def test_overrides_lost_with_redis_are_republished_from_the_database(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        PolicyOverride.objects.create(task_name="tests.tasks.unique_add", options={"unique": False})
    store = get_store()
    store.client.delete(store.keys.overrides, store.keys.overrides_version)
    source.reset()
    assert tasks.unique_add.heimdall_policy.unique is False
    assert OverrideStorage(store).revision() is not None


def test_admin_override_sets_the_concurrency_options_through_the_form(
    admin_client, django_capture_on_commit_callbacks
):
    override = save_override(
        admin_client,
        django_capture_on_commit_callbacks,
        "tests.tasks.two_at_a_time",
        concurrency_limit="1",
        resources='{"shared": 2}',
        on_busy="skip",
    )
    assert override.options == {
        "concurrency_limit": 1,
        "resources": {"shared": 2},
        "on_busy": "skip",
    }
    change = reverse("admin:heimdall_policyoverride_change", args=[override.pk])
    assert "{&quot;shared&quot;: 2}" in admin_client.get(change).content.decode()
    rejected = admin_client.post(
        ADD, override_form("tests.tasks.uses_shared", resources="shared, storage")
    )
    assert "does not declare" in rejected.content.decode()
