"""The Concurrency admin page: permissions, holders linked to their results, and
releasing a slot through the owner-checked, audited confirmation flow."""

import json

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse
from django_celery_results.models import TaskResult

from django_heimdall.services import live
from django_heimdall.store import Slot, Started, get_store
from tests.test_admin import client_for, messages_of, staff

pytestmark = pytest.mark.django_db

PAGE = reverse("admin:heimdall_concurrencyslot_changelist")
CONFIRM = reverse("admin:heimdall_concurrencyslot_confirm")
NAME = "task:tests.tasks.two_at_a_time"


def hold(task_id="running-1", token="exec-1", name=NAME, capacity=2):
    decision = get_store().start(
        task_id,
        task_name="tests.tasks.two_at_a_time",
        lease_ms=60_000,
        token=token,
        slots=(Slot(name, 1, capacity),),
    )
    assert decision.status == Started.ADMITTED
    return json.dumps([name, task_id, token])


@pytest.mark.parametrize("url", [PAGE])
def test_staff_without_permission_gets_403(django_user_model, url):
    assert client_for(staff(django_user_model)).get(url).status_code == 403


def test_view_lists_holders_capacity_and_line_without_controls(django_user_model):
    hold()
    TaskResult.objects.create(task_id="running-1", status="STARTED")
    get_store().start(
        "waiting-1", task_name="t", lease_ms=60_000, token="w", slots=(Slot(NAME, 1, 1),)
    )
    response = client_for(staff(django_user_model, "view_concurrencyslot")).get(PAGE)
    content = response.content.decode()
    assert response.status_code == 200
    assert "tests.tasks.two_at_a_time" in content and "1 of 2 in use" in content
    assert "1 waiting" in content
    assert reverse("admin:django_celery_results_taskresult_change", args=[1]) in content
    assert 'name="selected"' not in content
    denied = client_for(staff(django_user_model, "view_concurrencyslot", username="v2")).post(
        CONFIRM, {"selected": [hold("r2", "e2", name="task:other")]}
    )
    assert denied.status_code == 403


def test_release_goes_through_confirmation_is_owner_checked_and_audited(django_user_model):
    value = hold()
    stale = json.dumps([NAME, "running-1", "an-earlier-execution"])
    client = client_for(staff(django_user_model, "view_concurrencyslot", "release_slot"))
    page = client.get(PAGE).content.decode()
    assert 'name="selected"' in page
    confirm = client.post(CONFIRM, {"selected": [value], "action": "release"})
    assert confirm.status_code == 200 and "Are you sure" in confirm.content.decode()
    assert live().semaphore(NAME).used == 1  # nothing changed before confirming
    done = client.post(
        CONFIRM, {"selected": [value, stale], "action": "release", "confirm": "yes"}, follow=True
    )
    assert "1 slot released." in messages_of(done)
    assert any("left alone" in m for m in messages_of(done))
    assert live().semaphore(NAME).used == 0
    entry = LogEntry.objects.get()
    assert "running-1" in entry.change_message and entry.object_repr.startswith(NAME)
    # The task's own end finds nothing left to give back: a no-op.
    get_store().release_owned("running-1", "exec-1")
    assert live().semaphore(NAME).used == 0


def test_custom_admin_site_links_within_itself(django_user_model, settings):
    settings.ROOT_URLCONF = "tests.urls"
    hold()
    client = client_for(staff(django_user_model, "view_concurrencyslot", "release_slot"))
    page = reverse("ops:heimdall_concurrencyslot_changelist")
    response = client.get(page)
    assert response.status_code == 200
    assert reverse("ops:heimdall_concurrencyslot_confirm") in response.content.decode()
