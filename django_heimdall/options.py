"""The task options: one declaration each, from which everything else derives.

``Policy``, the parsers, the system checks, the admin override form and its
fieldsets, the effective-policies page and the docs' option table all read
``OPTIONS``. Adding an option is one ``Option(...)`` line here plus its behaviour.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django import forms
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _

from .ratelimits import RateLimit, is_single_rate

# Where an option may be given.
DECORATOR = "decorator"
SETTINGS = "settings"  # HEIMDALL["TASKS"] and HEIMDALL["DEFAULTS"]
ADMIN = "admin"
CALL = "call"  # apply_async(..., heimdall={...})
EVERYWHERE = frozenset({DECORATOR, SETTINGS, ADMIN})


class OptionError(ValueError):
    """An invalid option; carries the system-check id and a one-line hint."""

    def __init__(self, check_id: str, option: str, message: str, hint: str):
        super().__init__(f"{message} {hint}")
        self.check_id = check_id
        self.option = option
        self.message = message
        self.hint = hint


def _invalid(name: str, message: str, hint: str) -> OptionError:
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


# -- kinds: how a value is parsed, edited in the admin and shown ----------------------


@dataclass(frozen=True)
class Kind:
    """How values of one type are parsed, edited and shown."""

    parse: Callable[[str, Any, bool], Any]  # (name, value, dotted_paths) -> parsed
    form_field: Callable[[], forms.Field]
    from_form: Callable[[Any], Any] = lambda value: None if value in (None, "") else value
    to_form: Callable[[Any], Any] = lambda raw: raw


def _parse_bool(name: str, value: Any, dotted_paths: bool) -> bool:
    if not isinstance(value, bool):
        raise _invalid(
            name, f"'{name}' must be True or False, not {value!r}.", "Use True or False."
        )
    return value


def _parse_seconds(name: str, value: Any, dotted_paths: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _invalid(
            name,
            f"'{name}' must be a positive number of seconds, not {value!r}.",
            "Give a number of seconds, e.g. 3600.",
        )
    return value


def _parse_key(name: str, value: Any, dotted_paths: bool) -> Any:
    if dotted_paths:
        if not isinstance(value, str) or not value:
            raise _invalid(
                name,
                f"'{name}' must be a dotted path, not {value!r}.",
                "Give the dotted path of a callable(args, kwargs) -> str.",
            )
        return import_callable(name, value)
    if callable(value) or (isinstance(value, str) and value):
        return value
    raise _invalid(
        name,
        f"'{name}' must be a callable(args, kwargs) or a string, not {value!r}.",
        "Use e.g. lambda args, kwargs: f'report-{args[0]}'.",
    )


def _parse_names(name: str, value: Any, dotted_paths: bool) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, str) and v.isidentifier() for v in value
    ):
        return tuple(value)
    raise _invalid(
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
        raise _invalid(
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
        raise _invalid(
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
        raise _invalid(
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
        raise _invalid(name, f"'{name}' must be a string, not {value!r}.", "Give e.g. 'h-lock:'.")
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
            raise _invalid(
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
)
SECONDS = Kind(_parse_seconds, lambda: forms.FloatField(required=False, min_value=0))
KEY = Kind(_parse_key, lambda: forms.CharField(required=False, max_length=255))
NAMES = Kind(
    _parse_names,
    lambda: forms.CharField(required=False, max_length=1000),
    from_form=_names_from_form,
    to_form=lambda raw: None if raw is None else ", ".join(raw),
)
RATE_LIMIT = Kind(
    _parse_rate_limit,
    lambda: forms.CharField(required=False, max_length=255),
    from_form=_rate_limit_from_form,
    to_form=lambda raw: ", ".join(map(str, raw)) if isinstance(raw, list) else raw,
)
COUNT = Kind(_parse_int, lambda: forms.IntegerField(required=False, min_value=1))
TEXT = Kind(_parse_text, lambda: forms.CharField(required=False, max_length=255))
RESOURCES = Kind(
    _parse_resources,
    lambda: forms.CharField(required=False, max_length=1000),
    from_form=_resources_from_form,
    to_form=lambda raw: None if raw is None else json.dumps(raw),
)


# -- the table -----------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One task option: its name, how it is parsed, where it may be given, its help."""

    name: str
    kind: Kind
    default: Any
    help: str
    section: str = "unique"
    scopes: frozenset[str] = EVERYWHERE
    #: Argument names that must exist in the task's signature (checked by E009).
    names_arguments: bool = False
    #: Another spelling of option ``legacy_of`` (celery-heimdall's names): its value
    #: becomes ``to_canonical(value)`` there, and reads back as ``from_canonical``.
    legacy_of: str | None = None
    to_canonical: Callable[[Any], Any] | None = None
    from_canonical: Callable[[Any], Any] | None = None
    #: Several legacy options that together stand for ``legacy_of`` and have no
    #: ``to_canonical`` (celery-heimdall's ``times`` and ``per``) are folded into it
    #: by ``_fold_pairs``.

    def parse(self, value: Any, *, dotted_paths: bool = False) -> Any:
        if value is None and self.default is None:
            return None
        return self.kind.parse(self.name, value, dotted_paths)


SECTIONS = {
    "unique": _("Uniqueness"),
    "rate": _("Rate limit"),
    "concurrency": _("Concurrency and resources"),
}

OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        Option(
            "unique",
            BOOL,
            False,
            _("One queued-or-running copy per key."),
            scopes=EVERYWHERE | {CALL},
        ),
        Option(
            "unique_timeout",
            SECONDS,
            3600,
            _(
                "Lease of the unique lock, concurrency slots and resource tickets, in seconds; "
                "a crashed holder blocks at most this long."
            ),
            scopes=EVERYWHERE | {CALL},
        ),
        Option(
            "unique_until",
            choice("finished", "started", "expired"),
            "finished",
            _(
                "When the lock ends: finished (the task ended), started (a copy may queue while "
                "one runs) or expired (unique_timeout passed: at most once per interval)."
            ),
            scopes=EVERYWHERE | {CALL},
        ),
        Option(
            "on_duplicate",
            choice("existing", "raise", "replace"),
            "existing",
            _(
                "A duplicate enqueue returns the holder's result (existing), raises "
                "AlreadyQueuedError (raise), or replaces a still-queued holder (replace)."
            ),
            scopes=EVERYWHERE | {CALL},
        ),
        Option(
            "key",
            KEY,
            None,
            _(
                "A callable returning the key — taking (args, kwargs), or the task's arguments "
                "by name — or a literal string; replaces task name and arguments; makes rate "
                "and concurrency limits per key. In settings and the admin: a dotted path."
            ),
        ),
        Option(
            "unique_on",
            NAMES,
            None,
            _("Argument names that make the key, e.g. customer_id, account_id; [] = task only."),
            names_arguments=True,
        ),
        Option(
            "unique_raises",
            BOOL,
            False,
            _("celery-heimdall's name: True is on_duplicate='raise'."),
            scopes=frozenset({DECORATOR, SETTINGS}),
            legacy_of="on_duplicate",
            to_canonical=lambda value: "raise" if value else "existing",
            from_canonical=lambda value: value == "raise",
        ),
        Option(
            "unique_wait_for_expiry",
            BOOL,
            False,
            _("celery-heimdall's name: True is unique_until='expired'."),
            scopes=frozenset({DECORATOR, SETTINGS}),
            legacy_of="unique_until",
            to_canonical=lambda value: "expired" if value else "finished",
            from_canonical=lambda value: value == "expired",
        ),
        Option(
            "heartbeat",
            BOOL,
            False,
            _(
                "Renew the task's lock in the background every lease/3 while its body runs, so "
                "that unique_timeout can be short."
            ),
        ),
        Option(
            "rate_limit",
            RATE_LIMIT,
            None,
            _(
                "Global limit such as 10/m or 2/60s, RateLimit((times, per)), a callable "
                "returning one (a dotted path in settings and the admin), or a list of those "
                "that all hold (comma-separated in the admin: 10/s, 1000/d)."
            ),
            section="rate",
        ),
        Option(
            "concurrency_limit",
            COUNT,
            None,
            _(
                "At most this many copies running at once, cluster-wide (per key when 'key' is "
                "given); 1 = never overlap, but queue freely."
            ),
            section="concurrency",
        ),
        Option(
            "resources",
            RESOURCES,
            None,
            _(
                "Shared resources of HEIMDALL['RESOURCES'] the task holds a ticket of while it "
                "runs: a list of names, or {name: tickets}; all or nothing."
            ),
            section="concurrency",
        ),
        Option(
            "on_busy",
            choice("defer", "skip"),
            "defer",
            _(
                "When no slot or ticket is free at start: 'defer' (wait in line, FIFO, re-sent "
                "when one should be free; no retries used) or 'skip' (does not run; its result "
                "raises ResourceBusy)."
            ),
            section="concurrency",
        ),
        Option(
            "lock_prefix",
            TEXT,
            "",
            _("Prepended to the unique key (celery-heimdall's lock_prefix)."),
        ),
        Option(
            "times",
            COUNT,
            None,
            _("celery-heimdall's name: with per, the same as rate_limit=(times, per)."),
            section="rate",
            scopes=frozenset({DECORATOR, SETTINGS}),
            legacy_of="rate_limit",
        ),
        Option(
            "per",
            SECONDS,
            None,
            _("celery-heimdall's name: with times, the same as rate_limit=(times, per)."),
            section="rate",
            scopes=frozenset({DECORATOR, SETTINGS}),
            legacy_of="rate_limit",
        ),
    )
}
OPTION_NAMES = tuple(OPTIONS)
#: The options a policy holds; the others are legacy spellings of these.
CANONICAL = {name: o for name, o in OPTIONS.items() if o.legacy_of is None}


def unknown_option(name: str) -> OptionError:
    return OptionError(
        "heimdall.E006",
        name,
        f"'{name}' is not a django-heimdall option.",
        f"Valid options: {', '.join(OPTION_NAMES)}.",
    )


def parse_option(name: str, value: Any, *, dotted_paths: bool = False) -> Any:
    """Validate one option and return its parsed value, or raise ``OptionError``.

    ``dotted_paths`` is set for values from settings or the database, where
    callables are given as import paths.
    """
    option = OPTIONS.get(name)
    if option is None:
        raise unknown_option(name)
    return option.parse(value, dotted_paths=dotted_paths)


def parse_options(options: Any, *, dotted_paths: bool = False) -> dict[str, Any]:
    """Parse a whole option mapping into canonical options; raise the first
    ``OptionError``. A legacy spelling gives way to its canonical option when both
    are set; ``times`` and ``per`` are folded into ``rate_limit``."""
    if not isinstance(options, Mapping):
        raise _invalid(
            "*",
            f"task options must be a dict, not {options!r}.",
            "Give a dict like {'unique': True}.",
        )
    parsed = {
        name: parse_option(name, value, dotted_paths=dotted_paths)
        for name, value in options.items()
    }
    parsed = _fold_pairs(parsed)
    for name in list(parsed):
        option = OPTIONS[name]
        if option.legacy_of is not None:
            value = parsed.pop(name)
            if option.legacy_of not in options and option.to_canonical is not None:
                parsed[option.legacy_of] = option.to_canonical(value)
    return parsed


def parse_call_options(options: Any) -> dict[str, Any]:
    """Validate per-call options (``apply_async(..., heimdall={...})``)."""
    if not isinstance(options, Mapping):
        raise _invalid(
            "heimdall",
            f"heimdall= must be a dict of options, not {options!r}.",
            "Give a dict like {'on_duplicate': 'raise'}.",
        )
    per_call = sorted(name for name, o in CANONICAL.items() if CALL in o.scopes)
    for name in options:
        if name not in OPTIONS or CALL not in OPTIONS[name].scopes:
            raise OptionError(
                "heimdall.E006",
                name,
                f"'{name}' cannot be given per call.",
                f"Options of one call: {', '.join(per_call)}.",
            )
    return parse_options(options)


def _fold_pairs(parsed: dict[str, Any]) -> dict[str, Any]:
    given = [
        name
        for name in parsed
        if OPTIONS[name].legacy_of is not None and OPTIONS[name].to_canonical is None
    ]
    if not given:
        return parsed
    if {"times", "per"} - set(given):
        raise _invalid(
            given[0],
            "'times' and 'per' must be given together.",
            "Give both, e.g. {'times': 2, 'per': 60}, or rate_limit='2/60s'.",
        )
    if "rate_limit" in parsed:
        raise _invalid(
            "rate_limit",
            "'rate_limit' and 'times'/'per' set the same limit.",
            "Give one of them.",
        )
    folded = {name: value for name, value in parsed.items() if name not in given}
    folded["rate_limit"] = RateLimit((parsed["times"], parsed["per"]))
    return folded


def signature_errors(task: Any, options: Mapping[str, Any]) -> list[OptionError]:
    """Options naming arguments that ``task`` does not take (check E009)."""
    try:
        params = inspect.signature(task.run).parameters
    except (TypeError, ValueError):
        return []
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    errors = []
    for name, value in options.items():
        option = OPTIONS.get(name)
        if option is None or not option.names_arguments or not isinstance(value, (list, tuple)):
            continue
        missing = ", ".join(repr(arg) for arg in value if arg not in params)
        if missing:
            errors.append(
                OptionError(
                    "heimdall.E009",
                    name,
                    f"'{name}' names {missing}, which the task does not take.",
                    f"Use some of: {', '.join(params) or '(none)'}.",
                )
            )
    return errors


def display(value: Any) -> str:
    """A short, human form of an option value."""
    if value is None:
        return "—"
    if isinstance(value, RateLimit):
        return str(value)
    if isinstance(value, str):
        return value or '""'
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value)}"
    if isinstance(value, tuple):
        return repr(list(value))
    if isinstance(value, dict):
        return ", ".join(name if n == 1 else f"{name}: {n}" for name, n in value.items())
    return str(value)


def markdown_table() -> str:
    """The option table of ``docs/options.md`` (a test keeps the two in step)."""
    rows = ["| option | default | where | meaning |", "|---|---|---|---|"]
    for option in OPTIONS.values():
        if option.legacy_of is not None:
            continue
        scopes = ", ".join(sorted(option.scopes))
        rows.append(f"| `{option.name}` | `{option.default!r}` | {scopes} | {option.help} |")
    return "\n".join(rows)
