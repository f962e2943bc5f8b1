"""The admin through real URLs: permissions, the confirmation flow, escaping,
Redis down."""

import json

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from django_heimdall.checks import check_settings
from django_heimdall.models import PolicyOverride
from django_heimdall.store import Acquired, get_store

pytestmark = pytest.mark.django_db

LOCKS = reverse("admin:heimdall_lock_changelist")
LOCKS_CONFIRM = reverse("admin:heimdall_lock_confirm")
RATES = reverse("admin:heimdall_ratelimitwindow_changelist")
RATES_CONFIRM = reverse("admin:heimdall_ratelimitwindow_confirm")
EFFECTIVE = reverse("admin:heimdall_policyoverride_effective")


def staff(django_user_model, *codenames, username="staff"):
    user = django_user_model.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="heimdall", codename__in=codenames)
    )
    return user


def client_for(user, **kwargs):
    client = Client(**kwargs)
    client.force_login(user)
    return client


def hold(
    identity="tests.tasks.unique_add:abc",
    owner="owner-1",
    task="tests.tasks.unique_add",
    args='{"x":1}',
):
    assert get_store().acquire(identity, owner, 60_000, task, args).status == Acquired.TAKEN
    return identity, owner


def selected(identity, owner):
    return json.dumps([identity, owner])


def messages_of(response):
    return [str(m) for m in response.context["messages"]] if response.context else []


# -- permissions --------------------------------------------------------------------


@pytest.mark.parametrize("url", [LOCKS, RATES, EFFECTIVE])
def test_anonymous_is_sent_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


@pytest.mark.parametrize("url", [LOCKS, RATES, EFFECTIVE])
def test_staff_without_permissions_gets_403(django_user_model, url):
    response = client_for(staff(django_user_model)).get(url)
    assert response.status_code == 403


def test_staff_without_permissions_does_not_see_the_models(django_user_model):
    response = client_for(staff(django_user_model)).get(reverse("admin:index"))
    content = response.content.decode()
    assert "Held locks" not in content
    assert "Rate-limit windows" not in content
    assert "Policy overrides" not in content


def test_view_only_sees_locks_without_controls_and_cannot_post(django_user_model):
    identity, owner = hold()
    client = client_for(staff(django_user_model, "view_lock"))
    response = client.get(LOCKS)
    assert response.status_code == 200
    content = response.content.decode()
    assert owner in content
    assert 'name="selected"' not in content
    assert 'name="action"' not in content
    response = client.post(
        LOCKS_CONFIRM,
        {"action": "release", "selected": selected(identity, owner), "confirm": "yes"},
    )
    assert response.status_code == 403
    assert get_store().holder(identity) == owner


def test_clearing_without_viewing_shows_nothing(django_user_model):
    """The confirmation page lists holders and arguments: it needs the view
    permission too, not only the permission to clear."""
    identity, owner = hold(args='{"card": "4111-1111"}')
    client = client_for(staff(django_user_model, "clear_lock"))
    for data in (
        {"action": "release_task", "task": "tests.tasks.unique_add"},
        {"action": "release", "selected": selected(identity, "someone")},
    ):
        response = client.post(LOCKS_CONFIRM, data)
        assert response.status_code == 403
        assert b"4111" not in response.content and owner.encode() not in response.content
    assert get_store().holder(identity) == owner


@pytest.mark.parametrize(
    "url", [LOCKS, RATES, reverse("admin:heimdall_concurrencyslot_changelist")]
)
def test_a_page_past_the_end_is_an_empty_page(admin_client, url):
    for page in (10**15, 10**30):
        response = admin_client.get(url, {"p": page})
        assert response.status_code == 200


def test_index_lists_the_live_models_for_a_viewer(django_user_model):
    content = (
        client_for(staff(django_user_model, "view_lock", "view_ratelimitwindow"))
        .get(reverse("admin:index"))
        .content.decode()
    )
    assert "Held locks" in content
    assert "Rate-limit windows" in content


def test_csrf_is_enforced(django_user_model):
    identity, owner = hold()
    client = client_for(
        staff(django_user_model, "view_lock", "clear_lock"), enforce_csrf_checks=True
    )
    response = client.post(
        LOCKS_CONFIRM,
        {"action": "release", "selected": selected(identity, owner), "confirm": "yes"},
    )
    assert response.status_code == 403
    assert get_store().holder(identity) == owner


def test_get_never_changes_state(django_user_model):
    identity, owner = hold()
    client = client_for(staff(django_user_model, "view_lock", "clear_lock"))
    response = client.get(
        LOCKS_CONFIRM,
        {"action": "release", "selected": selected(identity, owner), "confirm": "yes"},
    )
    assert response.status_code == 405
    assert get_store().holder(identity) == owner


# -- the confirmation flow ----------------------------------------------------------


@pytest.fixture
def clearer(django_user_model):
    return client_for(staff(django_user_model, "view_lock", "clear_lock"))


def test_release_goes_through_confirmation_and_is_logged(clearer):
    identity, owner = hold()
    first = clearer.post(
        LOCKS_CONFIRM, {"action": "release", "selected": selected(identity, owner)}
    )
    assert first.status_code == 200
    assert "Are you sure?" in first.content.decode()
    assert get_store().holder(identity) == owner  # the first POST deleted nothing

    second = clearer.post(
        LOCKS_CONFIRM,
        {"action": "release", "selected": selected(identity, owner), "confirm": "yes"},
        follow=True,
    )
    assert second.redirect_chain[-1][0].startswith(LOCKS)
    assert get_store().holder(identity) is None
    assert "1 lock released." in messages_of(second)
    entry = LogEntry.objects.get()
    assert entry.object_id == identity
    assert owner in entry.change_message


def test_lock_retaken_between_confirmation_and_submit_survives(clearer):
    identity, owner = hold()
    clearer.post(LOCKS_CONFIRM, {"action": "release", "selected": selected(identity, owner)})
    store = get_store()
    assert store.release(identity, owner, "tests.tasks.unique_add")
    hold(identity, owner="owner-2")

    response = clearer.post(
        LOCKS_CONFIRM,
        {"action": "release", "selected": selected(identity, owner), "confirm": "yes"},
        follow=True,
    )
    assert store.holder(identity) == "owner-2"
    assert any("taken by another task" in m for m in messages_of(response))
    assert not LogEntry.objects.exists()


def test_lock_gone_before_submit_is_reported(clearer):
    identity, owner = hold()
    get_store().release(identity, owner, "tests.tasks.unique_add")
    response = clearer.post(
        LOCKS_CONFIRM,
        {"action": "release", "selected": selected(identity, owner), "confirm": "yes"},
        follow=True,
    )
    assert any("already gone" in m for m in messages_of(response))


def test_release_all_of_a_task_spares_locks_taken_after_confirmation(clearer):
    import time

    task = "tests.tasks.unique_add"
    for n in range(3):
        hold(f"{task}:{n}", owner=f"o{n}")
    page = clearer.post(LOCKS_CONFIRM, {"action": "release_task", "task": task})
    assert "Release all 3 locks" in page.content.decode()
    cutoff = dict(page.context["hidden"])["cutoff"]
    time.sleep(0.01)  # a later millisecond on the Redis clock
    hold(f"{task}:late", owner="late")

    response = clearer.post(
        LOCKS_CONFIRM,
        {"action": "release_task", "task": task, "cutoff": cutoff, "confirm": "yes"},
        follow=True,
    )
    assert "3 locks of tests.tasks.unique_add released." in messages_of(response)
    store = get_store()
    assert [store.holder(f"{task}:{n}") for n in range(3)] == [None, None, None]
    assert store.holder(f"{task}:late") == "late"
    assert LogEntry.objects.count() == 1


def test_release_all_of_a_task_with_nothing_to_release_logs_nothing(clearer):
    task = "tests.tasks.unique_add"
    page = clearer.post(LOCKS_CONFIRM, {"action": "release_task", "task": task})
    cutoff = dict(page.context["hidden"])["cutoff"]
    response = clearer.post(
        LOCKS_CONFIRM,
        {"action": "release_task", "task": task, "cutoff": cutoff, "confirm": "yes"},
        follow=True,
    )
    assert "0 locks of tests.tasks.unique_add released." in messages_of(response)
    assert not LogEntry.objects.exists()


def test_release_and_revoke_revokes_the_holder(clearer, celery_worker):
    from celery.worker import state

    from tests.conftest import wait_until

    identity, owner = hold(owner="to-revoke")
    clearer.post(
        LOCKS_CONFIRM,
        {"action": "release_revoke", "selected": selected(identity, owner), "confirm": "yes"},
    )
    assert get_store().holder(identity) is None
    wait_until(lambda: owner in state.revoked, message="revoke broadcast")
    change = LogEntry.objects.get().change_message
    assert change == "Released lock held by to-revoke and revoked the task"


def test_release_all_of_a_task_leaves_a_key_another_task_took_since(clearer):
    """Two tasks share a key (option ``key``): A's lease on it ended, B took it. A's
    index still lists the key until it is pruned; releasing A's locks must keep B's."""
    from tests.conftest import wait_until

    store = get_store()
    hold("a-own", owner="a-2", task="tests.A")
    assert store.acquire("shared", "a-1", 50, "tests.A", "").status == Acquired.TAKEN
    wait_until(lambda: store.holder("shared") is None, message="A's lease on the key ended")
    hold("shared", owner="b-1", task="tests.B")
    page = clearer.post(LOCKS_CONFIRM, {"action": "release_task", "task": "tests.A"})
    form = {"action": "release_task", **dict(page.context["hidden"]), "confirm": "yes"}
    clearer.post(LOCKS_CONFIRM, form)
    assert store.holder("a-own") is None
    assert store.holder("shared") == "b-1"
    assert LogEntry.objects.get().change_message == "Released 1 locks of task tests.A"


def test_locks_page_filters_by_task_and_finds_a_task_id(clearer):
    hold("tests.tasks.unique_add:a", owner="owner-a")
    hold("tests.tasks.unique_failing:b", owner="owner-b", task="tests.tasks.unique_failing")
    content = clearer.get(LOCKS, {"task": "tests.tasks.unique_failing"}).content.decode()
    assert "owner-b" in content and "owner-a" not in content
    content = clearer.get(LOCKS, {"q": "owner-a"}).content.decode()
    assert "owner-a" in content and "owner-b" not in content


def test_lock_arguments_are_escaped(clearer):
    hold(args='{"name":"<script>alert(1)</script>"}')
    content = clearer.get(LOCKS).content.decode()
    assert "<script>alert(1)</script>" not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content


# -- rate-limit windows ---------------------------------------------------------------


def test_rate_windows_are_listed_and_reset_after_confirmation(django_user_model):
    from django_heimdall.ratelimits import Rate

    store = get_store()
    for n in range(2):
        store.start(
            f"t{n}", task_name="tests.tasks.limited", rates=(("tests.tasks.limited", Rate(2, 60)),)
        )
    client = client_for(staff(django_user_model, "view_ratelimitwindow", "reset_ratelimit"))
    content = client.get(RATES).content.decode()
    assert "tests.tasks.limited" in content and "2 / 60 s" in content

    page = client.post(RATES_CONFIRM, {"selected": "tests.tasks.limited"})
    assert page.status_code == 200
    assert store.client.zcard(store.keys.rate("tests.tasks.limited")) == 2
    response = client.post(
        RATES_CONFIRM, {"selected": "tests.tasks.limited", "confirm": "yes"}, follow=True
    )
    assert "1 rate-limit window reset." in messages_of(response)
    assert store.client.zcard(store.keys.rate("tests.tasks.limited")) == 0
    assert LogEntry.objects.get().object_id == "tests.tasks.limited"


def test_rate_reset_needs_its_permission(django_user_model):
    client = client_for(staff(django_user_model, "view_ratelimitwindow"))
    response = client.post(RATES_CONFIRM, {"selected": "x", "confirm": "yes"})
    assert response.status_code == 403


# -- Redis down ---------------------------------------------------------------------


@pytest.mark.parametrize("url", [LOCKS, RATES])
def test_redis_down_shows_a_banner_not_an_error(django_user_model, private_redis, url):
    private_redis.stop()
    client = client_for(staff(django_user_model, "view_lock", "view_ratelimitwindow"))
    response = client.get(url)
    assert response.status_code == 200
    assert "Redis is unreachable" in response.content.decode()


def test_redis_down_still_shows_effective_policies(admin_client, private_redis):
    private_redis.stop()
    response = admin_client.get(EFFECTIVE)
    assert response.status_code == 200
    assert "tests.tasks.unique_add" in response.content.decode()


def test_redis_down_during_a_release_is_reported(clearer, private_redis):
    identity, owner = hold()
    private_redis.stop()
    response = clearer.post(
        LOCKS_CONFIRM,
        {"action": "release", "selected": selected(identity, owner), "confirm": "yes"},
        follow=True,
    )
    assert response.status_code == 200
    assert any("unreachable" in m for m in messages_of(response))


# -- overrides and effective policies --------------------------------------------------


def test_override_form_rejects_a_bad_value_with_the_check_wording(admin_client):
    response = admin_client.post(
        reverse("admin:heimdall_policyoverride_add"),
        {
            "task_name": "tests.tasks.limited",
            "enabled": "on",
            "rate_limit": "10/fortnight",
            "unique": "unknown",
            "unique_raises": "unknown",
            "unique_wait_for_expiry": "unknown",
            "unique_on": "null",
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "rate_limit" in errors
    assert "'rate_limit' is invalid" in errors["rate_limit"][0]
    assert not PolicyOverride.objects.exists()


@pytest.mark.parametrize(
    "option, typed, wording",
    [
        ("unique_timeout", "-5", "'unique_timeout' must be a positive number of seconds, not -5"),
        ("unique_timeout", "abc", "'unique_timeout' must be a positive number of seconds, not 'a"),
        ("concurrency_limit", "0", "'concurrency_limit' must be a positive integer, not 0."),
        ("concurrency_limit", "1.5", "'concurrency_limit' must be a positive integer, not 1.5."),
    ],
)
def test_override_form_words_number_errors_like_the_check(
    admin_client, settings, option, typed, wording
):
    response = admin_client.post(
        reverse("admin:heimdall_policyoverride_add"),
        {"task_name": "tests.tasks.limited", "enabled": "on", option: typed},
    )
    assert response.status_code == 200
    (error,) = response.context["adminform"].form.errors[option]
    assert wording in error
    assert not PolicyOverride.objects.exists()
    # The same value in settings: the check's message says the same.
    value = json.loads(typed) if typed[0].isdigit() or typed[0] == "-" else typed
    settings.HEIMDALL = {**settings.HEIMDALL, "TASKS": {"tests.tasks.limited": {option: value}}}
    (message,) = check_settings()
    assert wording in message.msg


def test_effective_policies_show_values_and_sources(admin_client, settings):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {"tests.tasks.configured_in_settings": {"unique": True}},
    }
    PolicyOverride.objects.create(task_name="tests.tasks.limited", options={"rate_limit": "7/m"})
    from django_heimdall.overrides import source

    source.reset()  # do not wait for the refresh interval in this test
    content = admin_client.get(EFFECTIVE).content.decode()
    assert "tests.tasks.configured_in_settings" in content
    assert "tests.tasks.unique_add" in content
    assert "7/60s" in content  # the admin override of tests.tasks.limited
    assert ">admin<" in content and ">settings<" in content and ">decorator<" in content


def test_bulk_enable_and_disable_are_audited(admin_client, django_user_model):
    override = PolicyOverride.objects.create(
        task_name="tests.tasks.limited", options={"rate_limit": "5/m"}
    )
    response = admin_client.post(
        reverse("admin:heimdall_policyoverride_changelist"),
        {"action": "disable", "_selected_action": [override.pk]},
        follow=True,
    )
    assert "1 override disabled." in messages_of(response)
    override.refresh_from_db()
    assert override.enabled is False
    assert override.updated_by.username == "admin"
    entry = LogEntry.objects.get()
    assert entry.object_id == str(override.pk) and entry.is_change()
    assert entry.get_change_message() == "Changed enabled: True → False."


def test_changing_an_override_logs_each_old_and_new_value(admin_client):
    override = PolicyOverride.objects.create(
        task_name="tests.tasks.limited", options={"rate_limit": "5/m", "unique_timeout": 30}
    )
    response = admin_client.post(
        reverse("admin:heimdall_policyoverride_change", args=[override.pk]),
        {
            "task_name": "tests.tasks.limited",
            "enabled": "on",
            "rate_limit": "1/m",
            "concurrency_limit": "2",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert LogEntry.objects.get().get_change_message() == (
        "Changed concurrency_limit: (inherit) → 2; rate_limit: '5/m' → '1/m'; "
        "unique_timeout: 30 → (inherit)."
    )


@pytest.mark.django_db(transaction=True)
def test_saving_while_redis_is_down_warns_and_publishes_later(admin_client, private_redis):
    from django_heimdall.overrides import source
    from tests import tasks

    private_redis.stop()
    # The admin's own transaction commits, and runs the publish, within the request.
    response = admin_client.post(
        reverse("admin:heimdall_policyoverride_add"),
        {
            "task_name": "tests.tasks.unique_add",
            "enabled": "on",
            "unique": "false",
            "unique_raises": "unknown",
            "unique_wait_for_expiry": "unknown",
            "unique_on": "",
        },
    )
    assert response.status_code == 302
    messages = [str(m) for m in admin_client.get(reverse("admin:index")).context["messages"]]
    assert any("Redis is unreachable" in m for m in messages)

    private_redis.start()
    source._checked = float("-inf")  # the next refresh is due now
    assert tasks.unique_add.heimdall_policy.unique is False  # published and applied


# -- a custom AdminSite -----------------------------------------------------------------


def test_effective_policies_work_on_a_site_without_the_lock_admin(admin_client):
    response = admin_client.get(reverse("policies:heimdall_policyoverride_effective"))
    assert response.status_code == 200
    content = response.content.decode()
    assert "tests.tasks.unique_add" in content
    assert "/heimdall/lock/" not in content  # no link to a page this site does not have


def test_live_pages_work_on_a_custom_admin_site(admin_client):
    from django_celery_results.models import TaskResult

    identity, owner = hold()
    TaskResult.objects.create(task_id=owner, status="STARTED")
    locks = reverse("ops:heimdall_lock_changelist")
    assert locks.startswith("/ops/")
    content = admin_client.get(locks).content.decode()
    assert identity in content
    assert "taskresult" not in content  # not registered on this site: no link, no 500
    assert 'action="/ops/heimdall/lock/confirm/"' in content

    response = admin_client.post(
        reverse("ops:heimdall_lock_confirm"),
        {"action": "release", "selected": [selected(identity, owner)], "confirm": "1"},
    )
    assert response.status_code == 302 and response["Location"].startswith("/ops/")
    assert get_store().holder(identity) is None
    for name in ("heimdall_ratelimitwindow_changelist", "heimdall_policyoverride_effective"):
        assert admin_client.get(reverse(f"ops:{name}")).status_code == 200


def test_task_result_link_shows_where_that_admin_is_registered(admin_client):
    from django_celery_results.models import TaskResult

    _identity, owner = hold()
    result = TaskResult.objects.create(task_id=owner, status="STARTED")
    content = admin_client.get(LOCKS).content.decode()
    assert f"/admin/django_celery_results/taskresult/{result.pk}/change/" in content


def test_rate_windows_page_is_paginated(admin_client):
    from django_heimdall.ratelimits import Rate

    for n in range(105):
        get_store().start(f"o{n}", task_name="t", rates=((f"key-{n:03d}", Rate(5, 60)),))
    first = admin_client.get(RATES).content.decode()
    second = admin_client.get(RATES, {"p": 2}).content.decode()
    assert "page 1 of 2" in first and "key-000" in first and "key-104" not in first
    assert "key-104" in second and "key-000" not in second


def test_override_form_takes_several_limits_and_the_pages_show_each(admin_client):
    response = admin_client.post(
        reverse("admin:heimdall_policyoverride_add"),
        {
            "task_name": "tests.tasks.limited",
            "enabled": "on",
            "rate_limit": "10/s, 1000/d",
            "unique": "unknown",
            "unique_raises": "unknown",
            "unique_wait_for_expiry": "unknown",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    override = PolicyOverride.objects.get()
    assert override.options["rate_limit"] == ["10/s", "1000/d"]
    change = admin_client.get(
        reverse("admin:heimdall_policyoverride_change", args=[override.pk])
    ).content.decode()
    assert 'value="10/s, 1000/d"' in change
    from django_heimdall.overrides import source

    source.reset()
    assert "10/1s, 1000/86400s" in admin_client.get(EFFECTIVE).content.decode()

    from django_heimdall.ratelimits import Rate

    rates = (("tests.tasks.limited", Rate(10, 1)), ("tests.tasks.limited", Rate(1000, 86400)))
    get_store().start("t0", task_name="tests.tasks.limited", rates=rates)
    content = admin_client.get(RATES).content.decode()
    assert "10 / 1 s<br>1000 / 86400 s" in content


def test_override_form_rate_error_is_one_sentence_for_an_admin_user(admin_client):
    response = admin_client.post(
        reverse("admin:heimdall_policyoverride_add"),
        {"task_name": "tests.tasks.limited", "enabled": "on", "rate_limit": "10/fortnight"},
    )
    (error,) = response.context["adminform"].form.errors["rate_limit"]
    assert error.endswith(".") and error.count(". ") == 0  # one sentence
    assert "RateLimit(" not in error and "callable" not in error  # no Python advice
    assert "10/m" in error


def submitted(content, name):
    """What a browser submits for the field ``name`` of a rendered form: a select's
    selected option (its first one when none is), an input's value."""
    import re

    select = re.search(rf'<select name="{name}".*?</select>', content, re.S)
    if select:
        options = re.findall(r'<option value="([^"]*)"(\s+selected)?', select.group(0))
        return next((value for value, chosen in options if chosen), options[0][0])
    found = re.search(rf'<input type="text" name="{name}"(?:[^>]*value="([^"]*)")?', content)
    return found.group(1) or ""


@pytest.mark.parametrize("options", [{"unique": True}, {"heartbeat": False}, {"unique_on": []}])
def test_an_override_saved_unchanged_keeps_its_options(admin_client, options):
    override = PolicyOverride.objects.create(
        task_name="tests.tasks.unique_add", options={**options, "unique_timeout": 30}
    )
    url = reverse("admin:heimdall_policyoverride_change", args=[override.pk])
    content = admin_client.get(url).content.decode()
    fields = {name: submitted(content, name) for name in [*options, "unique_timeout"]}
    data = {"task_name": "tests.tasks.unique_add", "enabled": "on", "note": "why", **fields}
    assert admin_client.post(url, data).status_code == 302
    override.refresh_from_db()
    assert override.options == {**options, "unique_timeout": 30}


def test_override_form_takes_names_without_brackets_and_starts_empty(admin_client):
    add = reverse("admin:heimdall_policyoverride_add")
    form = admin_client.get(add).context["adminform"].form
    assert not form["unique_on"].value()  # not "null"
    response = admin_client.post(
        add,
        {"task_name": "tests.tasks.unique_typed", "enabled": "on", "unique_on": "when, ident"},
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert PolicyOverride.objects.get().options == {"unique_on": ["when", "ident"]}
