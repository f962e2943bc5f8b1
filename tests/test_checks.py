"""System checks: every check id is reported for the configuration it is about.

The checks are called directly (``check_settings`` / ``check_tasks``) and, where
it matters that they are registered, through ``django.core.checks.run_checks``.
"""

import uuid
from contextlib import contextmanager

import pytest
from django.core import checks

from django_heimdall import HeimdallTask
from django_heimdall.checks import check_settings, check_tasks

CONFIGURED = "tests.tasks.configured_in_settings"  # signature: (self, customer, fmt="pdf")
LOCMEM = "django.core.cache.backends.locmem.LocMemCache"


@pytest.fixture(autouse=True)
def restore_valid_settings(settings, heimdall_prefix):
    """Put the valid HEIMDALL and CACHES back before ``heimdall_prefix`` tears down:
    its cleanup needs a store on a django-redis alias, which some tests break."""
    heimdall, caches = settings.HEIMDALL, settings.CACHES
    yield
    settings.CACHES = caches
    settings.HEIMDALL = heimdall


def heimdall_messages(messages):
    return [m for m in messages if (m.id or "").startswith("heimdall.")]


def with_id(messages, check_id):
    """The messages of ``check_id``; fails (listing what was reported) if there is none."""
    found = [m for m in messages if m.id == check_id]
    assert found, f"{check_id} not reported; got {[(m.id, m.msg) for m in messages]}"
    return found


def the_error(messages, check_id):
    """The single message of ``check_id``, which must be an Error with a hint."""
    found = with_id(messages, check_id)
    assert len(found) == 1, [m.msg for m in found]
    msg = found[0]
    assert isinstance(msg, checks.Error)
    assert msg.hint
    return msg


def task_options_error(messages, check_id, task_name, option):
    """The single ``check_id`` Error about ``option`` of ``task_name``."""
    found = [m for m in with_id(messages, check_id) if task_name in m.msg and option in m.msg]
    assert len(found) == 1, [m.msg for m in messages]
    msg = found[0]
    assert isinstance(msg, checks.Error)
    assert msg.hint
    return msg


@contextmanager
def throwaway_task(celery_app, heimdall):
    """A HeimdallTask registered on the app for the duration of the block."""
    name = f"tests.bad_decorator_{uuid.uuid4().hex}"
    celery_app.tasks  # noqa: B018  (finalize the app, so the task is created now)

    def run(self, customer, fmt="pdf"):
        return customer

    task = celery_app.task(
        base=HeimdallTask, bind=True, heimdall=heimdall, name=name, shared=False, lazy=False
    )(run)
    try:
        assert name in celery_app.tasks
        yield task
    finally:
        celery_app.tasks.unregister(name)


# -- valid configurations ------------------------------------------------------


def test_valid_test_settings_produce_no_heimdall_messages():
    assert check_settings() == []
    assert check_tasks() == []
    assert heimdall_messages(checks.run_checks()) == []


def test_heimdall_checks_are_registered_with_django(settings):
    settings.HEIMDALL = {**settings.HEIMDALL, "KEY_PREFIX": ""}
    assert [m.id for m in heimdall_messages(checks.run_checks())] == ["heimdall.E005"]


def test_zero_defer_jitter_is_valid(settings):
    settings.HEIMDALL = {**settings.HEIMDALL, "DEFER_JITTER": 0}
    assert check_settings() == []


def test_valid_dotted_paths_in_settings_pass(settings):
    options = {"key": "tests.tasks.report_key", "rate_limit": "tests.tasks.per_customer_rate"}
    settings.HEIMDALL = {**settings.HEIMDALL, "DEFAULTS": options, "TASKS": {CONFIGURED: options}}
    assert check_settings() == []
    assert check_tasks() == []


def test_unique_on_naming_taken_arguments_passes(settings):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {CONFIGURED: {"unique": True, "unique_on": ["customer", "fmt"]}},
    }
    assert check_settings() == []
    assert check_tasks() == []


# -- E001 to E005: the settings themselves -------------------------------------


@pytest.mark.parametrize("value", [None, ["CACHE", "default"], "default"])
def test_heimdall_not_a_dict_is_e001(settings, value):
    settings.HEIMDALL = value
    messages = check_settings()
    assert [m.id for m in messages] == ["heimdall.E001"]
    msg = the_error(messages, "heimdall.E001")
    assert type(value).__name__ in msg.msg
    # The task check must not trip over it (no W001 from a non-dict TASKS).
    assert check_tasks() == []
    assert "heimdall.E001" in [m.id for m in checks.run_checks()]


def test_unknown_setting_is_e002(settings):
    settings.HEIMDALL = {**settings.HEIMDALL, "PREFIX": "typo"}
    msg = the_error(check_settings(), "heimdall.E002")
    assert "'PREFIX'" in msg.msg
    assert "KEY_PREFIX" in msg.hint


def test_unknown_cache_alias_is_e003(settings):
    settings.HEIMDALL = {**settings.HEIMDALL, "CACHE": "missing"}
    messages = check_settings()
    msg = the_error(messages, "heimdall.E003")
    assert "'missing'" in msg.msg
    assert "heimdall.E004" not in [m.id for m in messages]


def test_default_cache_alias_missing_from_caches_is_e003(settings):
    settings.HEIMDALL = {k: v for k, v in settings.HEIMDALL.items() if k != "CACHE"}
    settings.CACHES = {"locmem": {"BACKEND": LOCMEM}}
    msg = the_error(check_settings(), "heimdall.E003")
    assert "'default'" in msg.msg


def test_non_redis_cache_alias_is_e004(settings):
    settings.HEIMDALL = {**settings.HEIMDALL, "CACHE": "locmem"}
    messages = check_settings()
    msg = the_error(messages, "heimdall.E004")
    assert "'locmem'" in msg.msg
    assert LOCMEM in msg.msg
    assert "django_redis.cache.RedisCache" in msg.hint
    assert "heimdall.E003" not in [m.id for m in messages]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KEY_PREFIX", ""),
        ("KEY_PREFIX", "my prefix"),
        ("KEY_PREFIX", "tab\there"),
        ("KEY_PREFIX", 42),
        ("ON_REDIS_ERROR", "ignore"),
        ("ON_REDIS_ERROR", True),
        ("DEFER_MAX_COUNTDOWN", 0),
        ("DEFER_MAX_COUNTDOWN", -5),
        ("DEFER_MAX_COUNTDOWN", "60"),
        ("DEFER_MAX_COUNTDOWN", True),
        ("DEFER_JITTER", -0.1),
        ("UNAVAILABLE_COUNTDOWN", 0),
        ("TASKS", ["tests.tasks.unique_add"]),
        ("TASKS", None),
    ],
)
def test_invalid_setting_value_is_e005(settings, name, value):
    settings.HEIMDALL = {**settings.HEIMDALL, name: value}
    messages = check_settings()
    msg = the_error(messages, "heimdall.E005")
    assert f"HEIMDALL[{name!r}]" in msg.msg
    assert [m.id for m in messages] == ["heimdall.E005"]


# -- E006 to E008: task options in settings -------------------------------------


@pytest.mark.parametrize("where", ["DEFAULTS", "TASKS"])
def test_unknown_option_in_settings_is_e006(settings, where):
    options = {"unique": True, "uniqe_timeout": 60}
    if where == "DEFAULTS":
        settings.HEIMDALL = {**settings.HEIMDALL, "DEFAULTS": options}
        names = "HEIMDALL['DEFAULTS']"
    else:
        settings.HEIMDALL = {**settings.HEIMDALL, "TASKS": {CONFIGURED: options}}
        names = CONFIGURED
    messages = check_settings()
    assert [m.id for m in messages] == ["heimdall.E006"]
    msg = task_options_error(messages, "heimdall.E006", names, "'uniqe_timeout'")
    assert "unique_timeout" in msg.hint  # lists the valid options


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("rate_limit", "10/fortnight"),
        ("rate_limit", "ten/m"),
        ("rate_limit", "0/s"),
        ("rate_limit", "10"),
        ("rate_limit", (0, 1)),
        ("unique_timeout", 0),
        ("unique_timeout", -5),
        ("unique_timeout", "3600"),
        ("unique_timeout", True),
        ("unique", "yes"),
        ("unique", 1),
        ("unique_raises", None),
        ("unique_wait_for_expiry", "no"),
        ("unique_on", "customer"),
        ("unique_on", ["customer", 3]),
        ("unique_on", ["not an identifier"]),
        ("key", 42),
        ("concurrency_limit", 0),
        ("concurrency_limit", 2.5),
        ("concurrency_limit", True),
        ("resources", "shared"),
        ("resources", []),
        ("resources", {"shared": 0}),
        ("resources", ["shared", 3]),
        ("on_busy", "wait"),
    ],
)
def test_invalid_option_value_in_settings_is_e007(settings, option, value):
    settings.HEIMDALL = {**settings.HEIMDALL, "TASKS": {CONFIGURED: {option: value}}}
    messages = check_settings()
    assert [m.id for m in messages] == ["heimdall.E007"]
    task_options_error(messages, "heimdall.E007", CONFIGURED, f"'{option}'")


def test_invalid_option_value_in_defaults_is_e007(settings):
    settings.HEIMDALL = {**settings.HEIMDALL, "DEFAULTS": {"unique_timeout": -1}}
    msg = the_error(check_settings(), "heimdall.E007")
    assert "HEIMDALL['DEFAULTS']" in msg.msg
    assert "'unique_timeout'" in msg.msg


def test_defaults_not_a_dict_is_e005(settings):
    settings.HEIMDALL = {**settings.HEIMDALL, "DEFAULTS": ["unique"]}
    assert "HEIMDALL['DEFAULTS']" in the_error(check_settings(), "heimdall.E005").msg


def test_unique_on_in_defaults_is_e007(settings):
    settings.HEIMDALL = {**settings.HEIMDALL, "DEFAULTS": {"unique_on": ["customer"]}}
    msg = the_error(check_settings(), "heimdall.E007")
    assert "'unique_on'" in msg.msg


def test_cache_alias_that_is_not_a_string_is_e005(settings):
    settings.HEIMDALL = {**settings.HEIMDALL, "CACHE": ["default"]}
    assert "HEIMDALL['CACHE']" in the_error(check_settings(), "heimdall.E005").msg


def test_task_options_not_a_dict_is_e007(settings):
    settings.HEIMDALL = {**settings.HEIMDALL, "TASKS": {CONFIGURED: True}}
    msg = the_error(check_settings(), "heimdall.E007")
    assert CONFIGURED in msg.msg


@pytest.mark.parametrize("option", ["key", "rate_limit"])
@pytest.mark.parametrize("path", ["nope.missing.func", "tests.tasks.no_such_function"])
def test_unimportable_dotted_path_in_settings_is_e008(settings, option, path):
    settings.HEIMDALL = {**settings.HEIMDALL, "TASKS": {CONFIGURED: {option: path}}}
    messages = check_settings()
    assert [m.id for m in messages] == ["heimdall.E008"]
    msg = task_options_error(messages, "heimdall.E008", CONFIGURED, f"'{option}'")
    assert repr(path) in msg.msg


@pytest.mark.parametrize("path", ["tests.settings.REDIS_URL", "django.conf.settings"])
def test_key_path_naming_something_not_callable_is_e008(settings, path):
    """A string constant would become every call's key; an object fails every call."""
    settings.HEIMDALL = {**settings.HEIMDALL, "TASKS": {CONFIGURED: {"key": path}}}
    messages = check_settings()
    assert [m.id for m in messages] == ["heimdall.E008"]
    msg = task_options_error(messages, "heimdall.E008", CONFIGURED, "'key'")
    assert repr(path) in msg.msg and "not callable" in msg.msg


def test_unimportable_dotted_path_in_defaults_is_e008(settings):
    settings.HEIMDALL = {**settings.HEIMDALL, "DEFAULTS": {"key": "nope.missing.func"}}
    msg = the_error(check_settings(), "heimdall.E008")
    assert "HEIMDALL['DEFAULTS']" in msg.msg
    assert "'nope.missing.func'" in msg.msg


# -- E009 and W001: settings against the registered tasks ----------------------


def test_unique_on_naming_missing_argument_is_e009(settings):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {CONFIGURED: {"unique": True, "unique_on": ["customer", "format"]}},
    }
    assert check_settings() == []  # only the task check knows the signature
    messages = check_tasks()
    assert [m.id for m in messages] == ["heimdall.E009"]
    msg = task_options_error(messages, "heimdall.E009", CONFIGURED, "'unique_on'")
    assert "HEIMDALL['TASKS']" in msg.msg
    assert "'format'" in msg.msg
    assert "'customer'" not in msg.msg  # only the missing name is reported
    assert "customer, fmt" in msg.hint  # the parameters it could use (no 'self')


def test_decorator_unique_on_naming_missing_argument_is_e009(celery_app):
    with throwaway_task(celery_app, {"unique": True, "unique_on": ["customer_id"]}) as task:
        messages = check_tasks()
        assert [m.id for m in messages] == ["heimdall.E009"]
        msg = task_options_error(messages, "heimdall.E009", task.name, "'unique_on'")
        assert "heimdall={...}" in msg.msg
        assert "'customer_id'" in msg.msg


def test_unregistered_task_in_settings_is_w001(settings):
    missing = "tests.tasks.no_such_task"
    settings.HEIMDALL = {**settings.HEIMDALL, "TASKS": {missing: {"unique": True}}}
    assert check_settings() == []
    messages = check_tasks()
    assert [m.id for m in messages] == ["heimdall.W001"]
    msg = messages[0]
    assert isinstance(msg, checks.Warning)
    assert not isinstance(msg, checks.Error)
    assert msg.level == checks.WARNING
    assert repr(missing) in msg.msg
    assert msg.hint
    assert "heimdall.W001" in [m.id for m in checks.run_checks()]


# -- decorator options -----------------------------------------------------------


def test_decorator_options_are_validated_by_check_tasks(celery_app):
    heimdall = {"unique_timeout": -1, "rate_limit": "ten/m", "colour": "red"}
    with throwaway_task(celery_app, heimdall) as task:
        messages = check_tasks()
        assert sorted(m.id for m in messages) == [
            "heimdall.E006",
            "heimdall.E007",
            "heimdall.E007",
        ]
        for check_id, option in [
            ("heimdall.E007", "'unique_timeout'"),
            ("heimdall.E007", "'rate_limit'"),
            ("heimdall.E006", "'colour'"),
        ]:
            msg = task_options_error(messages, check_id, task.name, option)
            assert "heimdall={...}" in msg.msg
        # Settings checks do not look at decorators.
        assert check_settings() == []
    assert check_tasks() == []  # gone with the task


def test_legacy_times_without_per_is_e007_and_rate_limit_lists_are_checked_per_element(
    celery_app, settings
):
    with throwaway_task(celery_app, {"times": 2}) as task:
        (message,) = check_tasks()
        assert message.id == "heimdall.E007" and "'times' and 'per'" in message.msg
        assert task.name in message.msg
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {"tests.tasks.limited": {"rate_limit": ["10/s", "10/fortnight"]}},
    }
    (message,) = check_settings()
    assert message.id == "heimdall.E007" and "'10/fortnight'" in message.msg


def test_decorator_options_not_a_dict_is_e007(celery_app):
    with throwaway_task(celery_app, ["unique"]) as task:
        messages = check_tasks()
        assert [m.id for m in messages] == ["heimdall.E007"]
        assert task.name in messages[0].msg
        assert isinstance(messages[0], checks.Error)


def test_decorator_callables_are_not_taken_for_dotted_paths(celery_app):
    # In the decorator a callable key and rate_limit are given as objects, and a
    # string key is a literal key, not an import path.
    from tests.tasks import per_customer_rate, report_key

    with throwaway_task(celery_app, {"key": report_key, "rate_limit": per_customer_rate}):
        assert check_tasks() == []
    with throwaway_task(celery_app, {"unique": True, "key": "nope.missing.func"}):
        assert check_tasks() == []


def test_settings_for_a_task_that_is_not_a_heimdall_task_is_w002(settings):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {"tests.tasks.plain_configured": {"unique": True}},
    }
    (msg,) = with_id(check_tasks(), "heimdall.W002")
    assert isinstance(msg, checks.Warning)
    assert "tests.tasks.plain_configured" in msg.msg
    assert msg.hint


def test_the_default_cache_alias_is_w003(settings):
    settings.HEIMDALL = {**settings.HEIMDALL, "CACHE": "default"}
    (message,) = with_id(check_settings(), "heimdall.W003")
    assert "cache.clear()" in message.msg and "HEIMDALL['CACHE']" in message.hint


@pytest.mark.django_db(transaction=True)
def test_a_missing_override_table_is_w005_in_the_database_checks():
    from django.db import connection

    from django_heimdall.checks import check_override_table
    from django_heimdall.models import PolicyOverride

    assert check_override_table(databases=["default"]) == []
    with connection.schema_editor() as editor:
        editor.delete_model(PolicyOverride)
    try:
        (message,) = with_id(check_override_table(databases=["default"]), "heimdall.W005")
        assert "migrate" in message.hint
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(PolicyOverride)


def test_a_cache_that_is_not_django_redis_names_heimdall_and_e004(settings):
    from django.core.exceptions import ImproperlyConfigured

    from django_heimdall.store import get_store

    settings.HEIMDALL = {**settings.HEIMDALL, "CACHE": "locmem"}
    with pytest.raises(ImproperlyConfigured, match=r"heimdall\.E004.*django-redis"):
        _ = get_store().client


@pytest.mark.parametrize(
    ("attribute", "value", "peer"),
    [
        ("once", {"graceful": True}, "celery-once"),
        ("unique_on", ["customer"], "celery-singleton"),
        ("raise_on_duplicate", True, "celery-singleton"),
        ("lock_expiry", 60, "celery-singleton"),
    ],
)
def test_peer_options_left_on_a_heimdall_task_are_w010(celery_app, attribute, value, peer):
    name = f"tests.throwaway_{uuid.uuid4().hex[:8]}"

    @celery_app.task(name=name, base=HeimdallTask, shared=False, **{attribute: value})
    def leftover():
        return None

    try:
        (message,) = with_id(check_tasks(), "heimdall.W010")
        assert peer in message.msg and repr(attribute) in message.msg
        assert "heimdall={" in message.hint
    finally:
        celery_app.tasks.pop(name, None)


@pytest.mark.parametrize(
    "resources",
    [
        ["storage"],
        {"storage": "10"},
        {"storage": {"capacity": 0}},
        {"storage": {"capacity": 2.5}},
        {"storage": {"capacity": 10, "fair": True}},
        {"": {"capacity": 1}},
    ],
)
def test_invalid_resources_are_e011(settings, resources):
    settings.HEIMDALL = {**settings.HEIMDALL, "RESOURCES": resources}
    msg = the_error(check_settings(), "heimdall.E011")
    assert "RESOURCES" in msg.msg


def test_valid_resources_pass(settings):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "RESOURCES": {"storage": {"capacity": 10}, "import-data": {"capacity": 1}},
        "TASKS": {CONFIGURED: {"resources": {"storage": 2}, "concurrency_limit": 1}},
    }
    assert heimdall_messages(check_settings()) == []


@pytest.mark.parametrize(
    ("value", "text"),
    [(["undeclared"], "does not declare"), ({"shared": 3}, "capacity is 2")],
)
def test_resources_option_naming_an_undeclared_or_too_small_resource_is_e012(settings, value, text):
    settings.HEIMDALL = {**settings.HEIMDALL, "TASKS": {CONFIGURED: {"resources": value}}}
    msg = task_options_error(check_settings(), "heimdall.E012", CONFIGURED, "'resources'")
    assert text in msg.msg


def test_an_infinite_number_of_seconds_fails_e005(settings):
    settings.HEIMDALL = {**settings.HEIMDALL, "DEFER_JITTER": float("inf")}
    (error,) = [m for m in check_settings() if m.id == "heimdall.E005"]
    assert error.msg == "HEIMDALL['DEFER_JITTER'] is inf."
    assert error.hint == "Give a number of seconds, 0 or more."


def test_unique_on_in_defaults_does_not_hide_the_other_defaults_errors(settings):
    settings.HEIMDALL = {**settings.HEIMDALL, "DEFAULTS": {"unique_on": ["a"], "uniqe": True}}
    assert sorted(m.id for m in check_settings()) == ["heimdall.E006", "heimdall.E007"]
