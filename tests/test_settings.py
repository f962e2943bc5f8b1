"""Settings and option parsing: precedence of the layers, reloading on settings
changes, rate strings, rate-limit callables and errors of invalid options."""

import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_heimdall import HeimdallTask, policies
from django_heimdall.conf import heimdall_settings
from django_heimdall.options import CANONICAL, OPTIONS
from django_heimdall.ratelimits import Rate, RateLimit, parse_rate
from django_heimdall.store import get_store
from tests.tasks import per_customer_rate, report_key


@pytest.fixture
def task_name():
    """A fresh task name, so no policy cached by another test can answer."""
    return f"tests.settings_{uuid.uuid4().hex}"


@pytest.fixture
def override_source():
    """Install an admin override layer for one test; always removed afterwards."""
    try:
        yield policies.set_override_source
    finally:
        policies.set_override_source(None)


def admin_key(args, kwargs):
    return "admin"


# -- precedence ------------------------------------------------------------------


def test_builtin_defaults_apply_without_any_configuration(task_name):
    policy = policies.resolve(task_name, None)
    for option, value in {n: o.default for n, o in CANONICAL.items()}.items():
        assert getattr(policy, option) == value
        assert policy.sources[option] == "built-in"
    assert not policy.active


def test_a_policy_is_read_only(task_name):
    decorator = {"unique": True}
    policy = policies.resolve(task_name, decorator)
    with pytest.raises(AttributeError, match="read-only"):
        policy.unique = False
    # The cached policy every later call gets is unchanged.
    assert policies.resolve(task_name, decorator) is policy
    assert policy.unique is True and policy.values["unique"] is True


def test_precedence_builtin_defaults_decorator_settings_admin(settings, task_name, override_source):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "DEFAULTS": {
            "unique": True,
            "unique_raises": True,
            "unique_timeout": 10,
            "rate_limit": "1/s",
            "key": "tests.tasks.report_key",
        },
        "TASKS": {
            task_name: {"rate_limit": "3/s", "key": "tests.tasks.report_key", "unique": True},
            "tests.tasks.other": {"unique_timeout": 99},
        },
    }
    decorator = {
        "unique_timeout": 20,
        "rate_limit": "2/s",
        "key": "from-decorator",
        "unique": False,
    }
    asked = []

    def admin(name):
        asked.append(name)
        return {"key": admin_key, "unique": False}

    override_source(admin)
    policy = policies.resolve(task_name, decorator)

    assert asked == [task_name]
    expected = {
        # option: (value, the layer it comes from)
        "unique_wait_for_expiry": (False, "built-in"),
        "unique_on": (None, "built-in"),
        "unique_raises": (True, "settings default"),
        "unique_timeout": (20, "decorator"),
        "rate_limit": (RateLimit((3, 1)), "settings"),
        "key": (admin_key, "admin"),
        "unique": (False, "admin"),
    }
    assert {name: (getattr(policy, name), policy.sources[name]) for name in expected} == expected
    assert set(policy.sources) == set(OPTIONS)


def test_the_decorator_adds_to_a_base_class_options(celery_app, task_name, override_source):
    """The base-class form survives a decorator that gives options of its own; an
    option the decorator gives in either spelling replaces the base's."""

    class Family(HeimdallTask):
        heimdall = {"unique": True, "unique_timeout": 77, "unique_raises": True}

    class Member(Family):
        heimdall = {"heartbeat": False}

    def run(self, n):
        return n

    task = celery_app.task(
        base=Member,
        bind=True,
        name=task_name,
        shared=False,
        lazy=False,
        heimdall={"rate_limit": "5/s", "on_duplicate": "existing"},
    )(run)
    override_source(None)
    try:
        policy = task.heimdall_policy
        assert (policy.unique, policy.unique_timeout, policy.on_duplicate) == (
            True,
            77,
            "existing",
        )
        assert policy.rate_limit == RateLimit("5/s") and policy.heartbeat is False
        assert {policy.sources[o] for o in ("unique", "unique_timeout")} == {"decorator"}
        assert Family.heimdall == {"unique": True, "unique_timeout": 77, "unique_raises": True}
    finally:
        celery_app.tasks.unregister(task_name)


def test_each_layer_shows_through_when_the_layers_above_are_removed(
    settings, task_name, override_source
):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "DEFAULTS": {"unique_timeout": 10},
        "TASKS": {task_name: {"unique_timeout": 30}},
    }
    decorator = {"unique_timeout": 20}
    override_source(lambda name: {"unique_timeout": 40})

    def timeout():
        policy = policies.resolve(task_name, decorator)
        return policy.unique_timeout, policy.sources["unique_timeout"]

    assert timeout() == (40, "admin")
    override_source(None)
    assert timeout() == (30, "settings")
    settings.HEIMDALL = {**settings.HEIMDALL, "TASKS": {}}
    assert timeout() == (20, "decorator")
    decorator = None
    assert timeout() == (10, "settings default")
    settings.HEIMDALL = {**settings.HEIMDALL, "DEFAULTS": {}}
    assert timeout() == (3600, "built-in")


def test_admin_layer_is_asked_per_task_and_may_return_nothing(task_name, override_source):
    override_source(lambda name: {"unique": True} if name == task_name else None)
    assert policies.resolve(task_name).unique is True
    other = policies.resolve(f"{task_name}-other")
    assert other.unique is False
    assert other.sources["unique"] == "built-in"


def test_settings_of_another_task_do_not_apply(settings, task_name):
    settings.HEIMDALL = {**settings.HEIMDALL, "TASKS": {f"{task_name}-other": {"unique": True}}}
    policy = policies.resolve(task_name, {"unique_timeout": 5})
    assert policy.unique is False
    assert policy.sources["unique"] == "built-in"


# -- settings changes --------------------------------------------------------------


def test_override_settings_reloads_prefix_policy_and_store(settings, task_name, heimdall_prefix):
    first, second = f"{heimdall_prefix}-first", f"{heimdall_prefix}-second"
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "KEY_PREFIX": first,
        "TASKS": {task_name: {"unique_timeout": 5}},
    }
    assert first == heimdall_settings.KEY_PREFIX
    assert policies.resolve(task_name).unique_timeout == 5
    assert get_store().keys.prefix == first

    with override_settings(
        HEIMDALL={
            **settings.HEIMDALL,
            "KEY_PREFIX": second,
            "TASKS": {task_name: {"unique_timeout": 7}},
        }
    ):
        assert second == heimdall_settings.KEY_PREFIX
        assert policies.resolve(task_name).unique_timeout == 7
        assert get_store().keys.prefix == second
        assert get_store().keys.lock("x") == f"{{{second}}}:lock:x"

    assert first == heimdall_settings.KEY_PREFIX
    assert policies.resolve(task_name).unique_timeout == 5
    assert get_store().keys.prefix == first


def test_settings_fixture_changes_are_seen_by_heimdall_settings(settings, heimdall_prefix):
    # The autouse fixture's prefix is already in effect...
    assert heimdall_prefix == heimdall_settings.KEY_PREFIX
    assert get_store().keys.prefix == heimdall_prefix
    # ... and so is any further change, including a default filled in when a key goes.
    settings.HEIMDALL = {**settings.HEIMDALL, "ON_REDIS_ERROR": "fail_open"}
    assert heimdall_settings.fail_open is True
    settings.HEIMDALL = {k: v for k, v in settings.HEIMDALL.items() if k != "ON_REDIS_ERROR"}
    assert heimdall_settings.ON_REDIS_ERROR == "fail_closed"
    assert heimdall_settings.fail_open is False


def test_changing_caches_or_cache_alias_rebuilds_the_store(settings):
    redis_cache = settings.CACHES["default"]
    settings.CACHES = {**settings.CACHES, "other": dict(redis_cache)}
    settings.HEIMDALL = {**settings.HEIMDALL, "CACHE": "other"}
    assert get_store().alias == "other"
    settings.HEIMDALL = {**settings.HEIMDALL, "CACHE": "default"}
    assert get_store().alias == "default"
    store = get_store()
    settings.CACHES = {**settings.CACHES}
    assert get_store() is not store


def test_unknown_setting_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="NOT_A_SETTING"):
        heimdall_settings.NOT_A_SETTING  # noqa: B018


# -- rates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/m", (10, 60.0)),
        ("2/60s", (2, 60.0)),
        ("2/60", (2, 60.0)),
        ("5/s", (5, 1.0)),
        ("100/h", (100, 3600.0)),
        ("1/d", (1, 86400.0)),
        ("3/2.5s", (3, 2.5)),
        ("4/2m", (4, 120.0)),
        ("7/minute", (7, 60.0)),
        (" 10 / m ", (10, 60.0)),
        ((2, 60), (2, 60.0)),
        ([2, 60], (2, 60.0)),
        ((3, 0.5), (3, 0.5)),
        (Rate(1, 2.0), (1, 2.0)),
    ],
)
def test_parse_rate_accepts(text, expected):
    rate = parse_rate(text)
    assert isinstance(rate, Rate)
    assert rate == Rate(*expected)
    assert type(rate.times) is int
    assert type(rate.per) is float


@pytest.mark.parametrize(
    "value",
    [
        "10",
        "10/",
        "0/s",
        "x/s",
        "10/fortnight",
        "ten/m",
        "-1/s",
        "10/0s",
        "",
        "/s",
        (0, 1),
        (1, 0),
        (True, 1),
        (1, True),
        (1.5, 1),
        (-1, 1),
        (1, -1),
        (1, "s"),
        (1, 2, 3),
        (1, float("inf")),
        (1, float("nan")),
        None,
        10,
    ],
)
def test_parse_rate_rejects(value):
    with pytest.raises(ValueError):
        parse_rate(value)
    with pytest.raises(ValueError):
        RateLimit(value)


def test_fixed_rate_limit_resolves_to_its_rate():
    limit = RateLimit("10/m")
    assert not limit.is_dynamic
    assert limit.resolve(key="k", task=None, args=[], kwargs={}) == Rate(10, 60.0)
    assert limit == RateLimit((10, 60))
    assert RateLimit(limit) == limit


# -- rate-limit callables -------------------------------------------------------------


CALL = {"key": "the-key", "task": object(), "args": [1, 2], "kwargs": {"fmt": "pdf"}}


def recording(seen):
    """Rate-limit callables of various signatures that record what they get."""

    def only_args(args):
        seen.append({"args": args})
        return (4, 1)

    def key_and_kwargs(key, kwargs):
        seen.append({"key": key, "kwargs": kwargs})
        return "5/m"

    def task_with_default(task, extra="unused"):
        seen.append({"task": task, "extra": extra})
        return "1/s"

    def everything(**given):
        seen.append(given)
        return (2, 10)

    def nothing():
        seen.append({})
        return (6, 1)

    return {
        "only_args": (only_args, {"args": CALL["args"]}, Rate(4, 1.0)),
        "key_and_kwargs": (
            key_and_kwargs,
            {"key": "the-key", "kwargs": CALL["kwargs"]},
            Rate(5, 60.0),
        ),
        "task_with_default": (
            task_with_default,
            {"task": CALL["task"], "extra": "unused"},
            Rate(1, 1.0),
        ),
        "everything": (everything, CALL, Rate(2, 10.0)),
        "nothing": (nothing, {}, Rate(6, 1.0)),
    }


@pytest.mark.parametrize(
    "signature", ["only_args", "key_and_kwargs", "task_with_default", "everything", "nothing"]
)
def test_rate_limit_callable_gets_only_the_parameters_it_names(signature):
    seen = []
    func, received, rate = recording(seen)[signature]
    limit = RateLimit(func)
    assert limit.is_dynamic
    assert limit.resolve(**CALL) == rate
    assert seen == [received]


def test_rate_limit_callable_may_return_a_tuple_or_a_string():
    rates = iter([(3, 2), "3/2s", "10/m", Rate(1, 5.0)])
    limit = RateLimit(lambda: next(rates))
    assert [limit.resolve(**CALL) for _ in range(4)] == [
        Rate(3, 2.0),
        Rate(3, 2.0),
        Rate(10, 60.0),
        Rate(1, 5.0),
    ]


def test_rate_limit_callable_may_return_rate_limits():
    """Every form the option takes, ``RateLimit`` included, alone or in a list."""
    given = iter([RateLimit((2, 60)), [RateLimit("5/s"), "100/d"], RateLimit(["1/s", (9, 9)])])
    limit = RateLimit(lambda: next(given))
    assert limit.rates(**CALL) == (Rate(2, 60.0),)
    assert limit.rates(**CALL) == (Rate(5, 1.0), Rate(100, 86400.0))
    assert limit.rates(**CALL) == (Rate(1, 1.0), Rate(9, 9.0))
    with pytest.raises(ValueError, match="not a rate"):
        RateLimit(lambda: []).rates(**CALL)


def test_rate_limit_callable_with_an_invalid_return_raises_value_error():
    limit = RateLimit(lambda key: "10/fortnight")
    with pytest.raises(ValueError, match="fortnight"):
        limit.resolve(**CALL)


def test_rate_limit_callable_needing_other_parameters_raises_value_error():
    def needs_customer(args, customer):
        return (1, 1)

    with pytest.raises(ValueError, match="customer"):
        RateLimit(needs_customer)


def test_rate_limit_callable_with_positional_only_parameters_raises_value_error():
    def positional(args, /):
        return (1, 1)

    with pytest.raises(ValueError, match="positional-only"):
        RateLimit(positional)


def test_rate_limit_callable_needing_other_parameters_is_an_invalid_option(task_name):
    with pytest.raises(ImproperlyConfigured, match=r"heimdall\.E007"):
        policies.resolve(task_name, {"rate_limit": lambda customer: (1, 1)})


# -- invalid options --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "check_id"),
    [
        ("unique_timeout", -1, "heimdall.E007"),
        ("unique", "yes", "heimdall.E007"),
        ("rate_limit", "10/fortnight", "heimdall.E007"),
        ("unique_on", "customer", "heimdall.E007"),
        ("key", "", "heimdall.E007"),
        ("colour", "red", "heimdall.E006"),
    ],
)
def test_invalid_decorator_option_makes_resolve_raise_improperly_configured(
    task_name, option, value, check_id
):
    with pytest.raises(ImproperlyConfigured) as raised:
        policies.resolve(task_name, {option: value})
    message = str(raised.value)
    assert check_id in message
    assert task_name in message
    assert repr(option) in message
    assert "heimdall={...}" in message


def test_invalid_settings_option_makes_resolve_raise_improperly_configured(settings, task_name):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {task_name: {"rate_limit": "nope.missing.func"}},
    }
    with pytest.raises(ImproperlyConfigured) as raised:
        policies.resolve(task_name)
    message = str(raised.value)
    assert "heimdall.E008" in message
    assert task_name in message
    assert "'rate_limit'" in message
    assert "HEIMDALL['TASKS']" in message


def test_fixing_an_invalid_option_makes_resolve_work(settings, task_name):
    settings.HEIMDALL = {**settings.HEIMDALL, "DEFAULTS": {"unique_timeout": 0}}
    with pytest.raises(ImproperlyConfigured, match="HEIMDALL\\['DEFAULTS'\\]"):
        policies.resolve(task_name)
    settings.HEIMDALL = {**settings.HEIMDALL, "DEFAULTS": {"unique_timeout": 1}}
    assert policies.resolve(task_name).unique_timeout == 1


# -- dotted paths -------------------------------------------------------------------------


def test_key_in_settings_is_an_imported_dotted_path(settings, task_name):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {task_name: {"key": "tests.tasks.report_key"}},
    }
    policy = policies.resolve(task_name)
    assert policy.key is report_key
    assert policy.sources["key"] == "settings"


def test_key_in_settings_defaults_is_an_imported_dotted_path(settings, task_name):
    settings.HEIMDALL = {**settings.HEIMDALL, "DEFAULTS": {"key": "tests.tasks.report_key"}}
    policy = policies.resolve(task_name)
    assert policy.key is report_key
    assert policy.sources["key"] == "settings default"


def test_rate_limit_in_settings_is_an_imported_dotted_path(settings, task_name):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {task_name: {"rate_limit": "tests.tasks.per_customer_rate"}},
    }
    limit = policies.resolve(task_name).rate_limit
    assert limit == RateLimit(per_customer_rate)
    assert limit.is_dynamic
    assert limit.resolve(key="k", task=None, args=[1], kwargs={}) == Rate(4, 1.0)


def test_rate_string_in_settings_is_not_taken_for_a_dotted_path(settings, task_name):
    settings.HEIMDALL = {**settings.HEIMDALL, "TASKS": {task_name: {"rate_limit": "10/m"}}}
    assert policies.resolve(task_name).rate_limit == RateLimit("10/m")


def test_string_key_in_decorator_is_a_literal_key(task_name):
    policy = policies.resolve(task_name, {"key": "tests.tasks.report_key"})
    assert policy.key == "tests.tasks.report_key"
    assert policy.sources["key"] == "decorator"


def test_callable_key_in_settings_is_rejected(settings, task_name):
    settings.HEIMDALL = {**settings.HEIMDALL, "TASKS": {task_name: {"key": report_key}}}
    with pytest.raises(ImproperlyConfigured, match="dotted path"):
        policies.resolve(task_name)


def test_rate_limit_lists_in_every_form():
    from django_heimdall.options import OptionError, parse_option

    call = {"key": "k", "task": None, "args": [1], "kwargs": {}}
    fixed = RateLimit(["10/s", (1000, 86400)])
    assert fixed.rates(**call) == (Rate(10, 1.0), Rate(1000, 86400.0))
    assert str(fixed) == "10/1s, 1000/86400s"
    assert RateLimit([RateLimit("10/s"), "1000/d"]) == fixed

    def both():
        return ["2/s", (100, 3600)]

    assert RateLimit(both).rates(**call) == (Rate(2, 1.0), Rate(100, 3600.0))
    mixed = parse_option("rate_limit", ["5/s", "tests.tasks.per_customer_rate"], dotted_paths=True)
    assert mixed.rates(**call) == (Rate(5, 1.0), Rate(4, 1.0))
    kind = OPTIONS["rate_limit"].kind
    assert kind.from_form("10/s, 1000/d") == ["10/s", "1000/d"]
    assert kind.from_form("10/s") == "10/s"
    assert kind.to_form(["10/s", "1000/d"]) == "10/s, 1000/d"
    for bad in (["10/s", "ten"], [], ["10/s", (0, 1)]):
        with pytest.raises(OptionError):
            parse_option("rate_limit", bad)
