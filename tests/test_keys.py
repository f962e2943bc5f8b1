"""Canonical identities: one key per logical call, whatever the spelling."""

import datetime
import decimal
import uuid

import pytest

from django_heimdall.keys import identity
from tests import tasks


def lock_of(task, *args, **kwargs):
    return identity(task, task.heimdall_policy, args, kwargs).lock


def test_positional_keyword_and_default_spellings_share_one_key():
    keys = {
        lock_of(tasks.unique_add, 1),
        lock_of(tasks.unique_add, x=1),
        lock_of(tasks.unique_add, 1, 0),
        lock_of(tasks.unique_add, x=1, y=0),
        lock_of(tasks.unique_add, y=0, x=1),
    }
    assert len(keys) == 1


def test_different_values_and_types_give_different_keys():
    assert lock_of(tasks.unique_add, 1) != lock_of(tasks.unique_add, 2)
    assert lock_of(tasks.unique_add, 1) != lock_of(tasks.unique_add, "1")
    assert lock_of(tasks.unique_add, 1, 2) != lock_of(tasks.unique_add, 2, 1)
    ident = uuid.UUID(int=5)
    assert lock_of(tasks.unique_typed, 1, ident, 1) != lock_of(tasks.unique_typed, 1, str(ident), 1)
    assert lock_of(tasks.unique_typed, 1, 1, decimal.Decimal("1")) != lock_of(
        tasks.unique_typed, 1, 1, "1"
    )


def test_kwargs_order_and_tuple_vs_list_do_not_matter():
    a = lock_of(tasks.unique_typed, 1, 2, 3, extra={"b": 1, "a": [1, 2]})
    b = lock_of(tasks.unique_typed, 1, 2, 3, extra={"a": (1, 2), "b": 1})
    assert a == b


def test_key_is_namespaced_by_task_name():
    assert lock_of(tasks.unique_add, 1).startswith("tests.tasks.unique_add:")
    assert lock_of(tasks.unique_add, 1) != lock_of(tasks.unique_failing, 1)


def test_unique_on_keeps_only_the_named_arguments(settings):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {
            "tests.tasks.configured_in_settings": {"unique": True, "unique_on": ["customer"]}
        },
    }
    task = tasks.configured_in_settings
    assert lock_of(task, 1, fmt="pdf") == lock_of(task, 1, fmt="csv")
    assert lock_of(task, 1) != lock_of(task, 2)


def test_empty_unique_on_means_task_name_only(settings):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {"tests.tasks.configured_in_settings": {"unique": True, "unique_on": []}},
    }
    task = tasks.configured_in_settings
    assert lock_of(task, 1, fmt="pdf") == lock_of(task, 2, fmt="csv")


def test_key_option_replaces_the_default_key(settings):
    settings.HEIMDALL = {
        **settings.HEIMDALL,
        "TASKS": {
            "tests.tasks.configured_in_settings": {"unique": True, "key": "tests.tasks.report_key"}
        },
    }
    task = tasks.configured_in_settings
    assert lock_of(task, 3, fmt="pdf") == "report-3"
    ident = identity(task, task.heimdall_policy, (3,), {})
    assert ident.rate == "report-3"  # a key function also makes the rate limit per key


def test_datetime_uuid_decimal_survive_the_json_round_trip():
    from kombu.serialization import dumps, loads

    args = (
        datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
        uuid.UUID(int=7),
        decimal.Decimal("1.10"),
    )
    content_type, encoding, body = dumps((args, {"extra": (1, 2)}), serializer="json")
    wire_args, wire_kwargs = loads(body, content_type, encoding)
    assert lock_of(tasks.unique_typed, *args, extra=(1, 2)) == lock_of(
        tasks.unique_typed, *wire_args, **wire_kwargs
    )


def test_arguments_that_do_not_fit_the_signature_raise_type_error():
    with pytest.raises(TypeError):
        lock_of(tasks.unique_add, 1, 2, 3)
    with pytest.raises(TypeError):
        lock_of(tasks.unique_add, z=1)


def test_unencodable_arguments_raise_a_clear_error():
    with pytest.raises(TypeError, match="'key' or 'unique_on'"):
        lock_of(tasks.unique_add, object())
    with pytest.raises(TypeError, match="sorted list"):
        lock_of(tasks.unique_add, {1, 2})


def test_unique_on_finds_names_caught_by_var_kwargs():
    task = tasks.unique_kwargs
    assert lock_of(task, 1, region="eu") == lock_of(task, 2, region="eu", other=3)
    assert lock_of(task, 1, region="eu") != lock_of(task, 1, region="us")
    assert lock_of(task, 1) == lock_of(task, 2)  # absent: None
