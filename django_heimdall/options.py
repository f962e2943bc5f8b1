"""The task options: one declaration each, from which everything else derives.

``Policy``, the parsers, the system checks, the admin override form and its
fieldsets, the effective-policies page and the docs' option table all read
``OPTIONS``. Adding an option is one ``Option(...)`` line here plus its behaviour.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext_lazy as _

from .kinds import (
    BOOL,
    COUNT,
    KEY,
    NAMES,
    RATE_LIMIT,
    RESOURCES,
    SECONDS,
    TEXT,
    Kind,
    OptionError,
    choice,
    invalid_option,
)
from .ratelimits import RateLimit

# Where an option may be given.
DECORATOR = "decorator"
SETTINGS = "settings"  # HEIMDALL["TASKS"] and HEIMDALL["DEFAULTS"]
ADMIN = "admin"
CALL = "call"  # apply_async(..., heimdall={...})
EVERYWHERE = frozenset({DECORATOR, SETTINGS, ADMIN})


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
                "Renew the task's lock, slots and tickets in the background every lease/3 while "
                "its body runs, so that unique_timeout can be short."
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
    """An option name that is not in the table (check E006)."""
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
        raise invalid_option(
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
        raise invalid_option(
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
        raise invalid_option(
            given[0],
            "'times' and 'per' must be given together.",
            "Give both, e.g. {'times': 2, 'per': 60}, or rate_limit='2/60s'.",
        )
    if "rate_limit" in parsed:
        raise invalid_option(
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
