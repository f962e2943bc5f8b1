"""Kinds of option values: how each is parsed (settings, decorator, admin, per
call), edited in the admin override form and converted between the two; and
``OptionError``, which every parser raises with its system-check id and hint."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _

from .ratelimits import RateLimit, is_single_rate


class OptionError(ValueError):
    """An invalid option; carries the system-check id and a one-line hint."""

    def __init__(self, check_id: str, option: str, message: str, hint: str):
        super().__init__(f"{message} {hint}")
        self.check_id = check_id
        self.option = option
        self.message = message
        self.hint = hint


def invalid_option(name: str, message: str, hint: str) -> OptionError:
    """An invalid value of option ``name`` (check E007)."""
    return OptionError("heimdall.E007", name, message, hint)


def import_callable(name: str, path: str) -> Any:
    """Import a dotted path given for option ``name`` (settings, admin)."""
    try:
        return import_string(path)
    except ImportError as exc:
        raise OptionError(
            "heimdall.E008",
            name,
            f"'{name}' names {path!r}, which cannot be imported: {exc}.",
            "Give the dotted path of a module-level callable, e.g. 'myapp.keys.report_key'.",
        ) from None


@dataclass(frozen=True)
class Kind:
    """How values of one type are parsed, edited and shown."""

    parse: Callable[[str, Any, bool], Any]  # (name, value, dotted_paths) -> parsed
    form_field: Callable[[], forms.Field]
    from_form: Callable[[Any], Any] = lambda value: None if value in (None, "") else value
    to_form: Callable[[Any], Any] = lambda raw: raw


def _parse_bool(name: str, value: Any, dotted_paths: bool) -> bool:
    if not isinstance(value, bool):
        raise invalid_option(
            name, f"'{name}' must be True or False, not {value!r}.", "Use True or False."
        )
    return value


def _parse_seconds(name: str, value: Any, dotted_paths: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise invalid_option(
            name,
            f"'{name}' must be a positive number of seconds, not {value!r}.",
            "Give a number of seconds, e.g. 3600.",
        )
    return value


def _parse_key(name: str, value: Any, dotted_paths: bool) -> Any:
    if dotted_paths:
        if not isinstance(value, str) or not value:
            raise invalid_option(
                name,
                f"'{name}' must be a dotted path, not {value!r}.",
                "Give the dotted path of a callable(args, kwargs) -> str.",
            )
        func = import_callable(name, value)
        if not callable(func):
            raise OptionError(
                "heimdall.E008",
                name,
                f"'{name}' names {value!r}, which is not callable but {type(func).__name__}.",
                "Give the dotted path of a callable(args, kwargs) -> str.",
            )
        return func
    if callable(value) or (isinstance(value, str) and value):
        return value
    raise invalid_option(
        name,
        f"'{name}' must be a callable(args, kwargs) or a string, not {value!r}.",
        "Use e.g. lambda args, kwargs: f'report-{args[0]}'.",
    )


def _parse_names(name: str, value: Any, dotted_paths: bool) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, str) and v.isidentifier() for v in value
    ):
        return tuple(value)
    raise invalid_option(
        name,
        f"'{name}' must be a list of argument names, not {value!r}.",
        "List the task's parameter names, e.g. ['customer_id']; [] means the task name only.",
    )


def _parse_rate_limit(name: str, value: Any, dotted_paths: bool) -> RateLimit:
    if isinstance(value, RateLimit):
        return value
    if dotted_paths:
        value = (
            _import_rate(name, value)
            if is_single_rate(value) or not isinstance(value, (list, tuple))
            else [_import_rate(name, item) for item in value]
        )
    try:
        return RateLimit(value)
    except (ValueError, TypeError) as exc:
        raise invalid_option(
            name,
            f"'{name}' is invalid: {exc}.",
            "Use a rate such as '10/m' or '2/60s', (times, per_seconds), a callable, "
            "or a list of those, e.g. ['10/s', '1000/d'].",
        ) from None


def _import_rate(name: str, value: Any) -> Any:
    # Rate strings start with a digit and hold a "/"; dotted paths do neither.
    if isinstance(value, str) and "/" not in value and value[:1].isalpha():
        return import_callable(name, value)
    return value


def _rate_limit_from_form(value: Any) -> Any:
    if value in (None, ""):
        return None
    parts = [part.strip() for part in value.split(",") if part.strip()]
    return parts if len(parts) > 1 else value.strip()


def _parse_int(name: str, value: Any, dotted_paths: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid_option(
            name, f"'{name}' must be a positive integer, not {value!r}.", "Give e.g. 10."
        )
    return value


def _parse_resources(name: str, value: Any, dotted_paths: bool) -> dict[str, int]:
    """A list of resource names, or ``{name: tickets}``; each declared in
    ``HEIMDALL["RESOURCES"]`` with at least that many tickets."""
    from .conf import heimdall_settings

    if isinstance(value, (list, tuple)):
        value = dict.fromkeys(value, 1) if all(isinstance(v, str) for v in value) else None
    if (
        not isinstance(value, dict)
        or not value
        or not all(
            isinstance(k, str) and k and isinstance(t, int) and not isinstance(t, bool) and t > 0
            for k, t in value.items()
        )
    ):
        raise invalid_option(
            name,
            f"'{name}' must be a non-empty list of resource names or a dict of "
            f"name: tickets, not {value!r}.",
            "Use e.g. ['storage'] or {'storage': 2}.",
        )
    declared = heimdall_settings.RESOURCES
    for resource, tickets in value.items():
        if resource not in declared:
            raise OptionError(
                "heimdall.E012",
                name,
                f"'{name}' names resource {resource!r}, which HEIMDALL['RESOURCES'] does not "
                "declare.",
                f"Declare it, e.g. HEIMDALL['RESOURCES'] = {{{resource!r}: {{'capacity': 10}}}}"
                f"; declared: {', '.join(declared) or '(none)'}.",
            )
        if tickets > declared[resource]:
            raise OptionError(
                "heimdall.E012",
                name,
                f"'{name}' asks for {tickets} tickets of {resource!r}, whose capacity is "
                f"{declared[resource]}: the task could never start.",
                "Ask for at most the capacity, or raise the capacity.",
            )
    return dict(value)


def _resources_from_form(value: Any) -> Any:
    if value in (None, ""):
        return None
    try:
        return json.loads(value)
    except ValueError:
        return _names_from_form(value)


def _parse_text(name: str, value: Any, dotted_paths: bool) -> str:
    if not isinstance(value, str):
        raise invalid_option(
            name, f"'{name}' must be a string, not {value!r}.", "Give e.g. 'h-lock:'."
        )
    return value


def _names_from_form(value: Any) -> list[str] | None:
    if value in (None, ""):
        return None
    value = value.strip().strip("[]")
    return [part.strip().strip("'\"") for part in value.split(",") if part.strip()]


def choice(*values: str) -> Kind:
    """A kind whose values are one of ``values``."""

    def parse(name: str, value: Any, dotted_paths: bool) -> str:
        if value not in values:
            raise invalid_option(
                name,
                f"'{name}' must be one of {', '.join(map(repr, values))}, not {value!r}.",
                f"Use one of: {', '.join(values)}.",
            )
        return value

    return Kind(
        parse,
        lambda: forms.ChoiceField(
            required=False, choices=[("", _("(inherit)")), *((v, v) for v in values)]
        ),
    )


BOOL = Kind(
    _parse_bool,
    lambda: forms.NullBooleanField(
        required=False,
        widget=forms.Select(
            choices=[("unknown", _("(inherit)")), ("true", _("Yes")), ("false", _("No"))]
        ),
    ),
    # The stored value shown as the choice it was made with (a plain Select does not
    # map True to "true"): saving the form unchanged keeps it.
    to_form=lambda raw: {True: "true", False: "false"}.get(raw, "unknown"),
)


def _number_from_form(value: Any) -> Any:
    """A number typed in the form; any other text goes to the parser as it is,
    so that its error is worded like the system check's."""
    if value in (None, ""):
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _number_field() -> forms.Field:
    return forms.CharField(
        required=False, max_length=32, widget=forms.TextInput(attrs={"inputmode": "decimal"})
    )


SECONDS = Kind(_parse_seconds, _number_field, from_form=_number_from_form)
KEY = Kind(_parse_key, lambda: forms.CharField(required=False, max_length=255))
NAMES = Kind(
    _parse_names,
    lambda: forms.CharField(required=False, max_length=1000),
    from_form=_names_from_form,
    # [] (the task name alone) must not show as the empty field, which inherits.
    to_form=lambda raw: None if raw is None else ", ".join(raw) or "[]",
)
RATE_LIMIT = Kind(
    _parse_rate_limit,
    lambda: forms.CharField(required=False, max_length=255),
    from_form=_rate_limit_from_form,
    to_form=lambda raw: ", ".join(map(str, raw)) if isinstance(raw, list) else raw,
)
COUNT = Kind(_parse_int, _number_field, from_form=_number_from_form)
TEXT = Kind(_parse_text, lambda: forms.CharField(required=False, max_length=255))
RESOURCES = Kind(
    _parse_resources,
    lambda: forms.CharField(required=False, max_length=1000),
    from_form=_resources_from_form,
    to_form=lambda raw: None if raw is None else json.dumps(raw),
)
