"""Task options: their parsers, and the resolution of one task's effective policy.

Precedence, highest first: admin override → ``HEIMDALL["TASKS"][name]`` → the
decorator's ``heimdall={...}`` → ``HEIMDALL["DEFAULTS"]`` → built-in defaults.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .conf import heimdall_settings, on_reload
from .ratelimits import RateLimit

#: Built-in default of every option (the bottom layer).
BUILTIN: dict[str, Any] = {
    "unique": False,
    "unique_timeout": 3600,
    "key": None,
    "unique_raises": False,
    "unique_wait_for_expiry": False,
    "rate_limit": None,
    "unique_on": None,
}
OPTION_NAMES = tuple(BUILTIN)

SOURCE_BUILTIN = "built-in"
SOURCE_DEFAULTS = "settings default"
SOURCE_DECORATOR = "decorator"
SOURCE_SETTINGS = "settings"
SOURCE_ADMIN = "admin"


class OptionError(ValueError):
    """An invalid option; carries the system-check id and a one-line hint."""

    def __init__(self, check_id: str, option: str, message: str, hint: str):
        super().__init__(message)
        self.check_id = check_id
        self.option = option
        self.message = message
        self.hint = hint


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(
            "heimdall.E007",
            name,
            f"'{name}' must be True or False, not {value!r}.",
            f"Set '{name}' to True or False.",
        )
    return value


def _timeout(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise OptionError(
            "heimdall.E007",
            name,
            f"'{name}' must be a positive number of seconds, not {value!r}.",
            "Give the lock lifetime in seconds, e.g. 3600.",
        )
    return value


def _import(name: str, path: str) -> Any:
    try:
        return import_string(path)
    except ImportError as exc:
        raise OptionError(
            "heimdall.E008",
            name,
            f"'{name}' names {path!r}, which cannot be imported: {exc}",
            "Give the dotted path of a module-level callable, e.g. 'myapp.keys.report_key'.",
        ) from None


def _key(name: str, value: Any, dotted_paths: bool) -> Any:
    if value is None:
        return None
    if dotted_paths:
        if not isinstance(value, str):
            raise OptionError(
                "heimdall.E007",
                name,
                f"'{name}' in settings must be a dotted path, not {value!r}.",
                "Give the dotted path of a callable(args, kwargs) -> str.",
            )
        value = _import(name, value)
    if callable(value) or (isinstance(value, str) and value):
        return value
    raise OptionError(
        "heimdall.E007",
        name,
        f"'{name}' must be a callable(args, kwargs) or a string, not {value!r}.",
        "Use e.g. lambda args, kwargs: f'report-{args[0]}'.",
    )


def _rate_limit(name: str, value: Any, dotted_paths: bool) -> RateLimit | None:
    if value is None or isinstance(value, RateLimit):
        return value
    # Rate strings start with a digit and hold a "/"; dotted paths do neither.
    if dotted_paths and isinstance(value, str) and "/" not in value and value[:1].isalpha():
        value = _import(name, value)
    try:
        return RateLimit(value)
    except (ValueError, TypeError) as exc:
        raise OptionError(
            "heimdall.E007",
            name,
            f"'{name}' is invalid: {exc}",
            "Use RateLimit((times, per_seconds)), a string like '10/m' or '2/60s', or a callable.",
        ) from None


def _unique_on(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, str) and v.isidentifier() for v in value
    ):
        return tuple(value)
    raise OptionError(
        "heimdall.E007",
        name,
        f"'{name}' must be a list of argument names, not {value!r}.",
        "List the task's parameter names, e.g. ['customer_id']; [] means the task name only.",
    )


def parse_option(name: str, value: Any, *, dotted_paths: bool = False) -> Any:
    """Validate one option and return its parsed value, or raise ``OptionError``.

    ``dotted_paths`` is set for values from settings or the database, where
    callables are given as import paths.
    """
    if name in ("unique", "unique_raises", "unique_wait_for_expiry"):
        return _bool(name, value)
    if name == "unique_timeout":
        return _timeout(name, value)
    if name == "key":
        return _key(name, value, dotted_paths)
    if name == "rate_limit":
        return _rate_limit(name, value, dotted_paths)
    if name == "unique_on":
        return _unique_on(name, value)
    raise OptionError(
        "heimdall.E006",
        name,
        f"'{name}' is not a django-heimdall option.",
        f"Valid options: {', '.join(OPTION_NAMES)}.",
    )


def parse_options(options: Any, *, dotted_paths: bool = False) -> dict[str, Any]:
    """Parse a whole option mapping; raise the first ``OptionError``."""
    if not isinstance(options, Mapping):
        raise OptionError(
            "heimdall.E007",
            "*",
            f"task options must be a dict, not {options!r}.",
            "Give a dict such as {'unique': True}.",
        )
    return {
        name: parse_option(name, value, dotted_paths=dotted_paths)
        for name, value in options.items()
    }


@dataclass(frozen=True)
class Policy:
    """The effective options of one task, and which layer each came from."""

    task_name: str
    unique: bool
    unique_timeout: float
    key: Callable[..., str] | str | None
    unique_raises: bool
    unique_wait_for_expiry: bool
    rate_limit: RateLimit | None
    unique_on: tuple[str, ...] | None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def active(self) -> bool:
        return self.unique or self.rate_limit is not None

    @property
    def unique_timeout_ms(self) -> int:
        return max(1, int(self.unique_timeout * 1000))


# The admin's override layer plugs in here: a callable(task_name) -> {option: value}
# of enabled overrides, values already parsed; if it has a ``refresh()`` method,
# that is called first and returns True when the overrides changed.
_override_source: Callable[[str], Mapping[str, Any]] | None = None
_cache: dict[str, tuple[Any, Policy]] = {}
_lock = threading.Lock()


def set_override_source(source: Callable[[str], Mapping[str, Any]] | None) -> None:
    """Install the top precedence layer (admin overrides) and drop cached policies."""
    global _override_source
    _override_source = source
    clear_cache()


@on_reload
def clear_cache() -> None:
    """Forget every resolved policy, e.g. after settings or overrides changed."""
    with _lock:
        _cache.clear()


def resolve(task_name: str, decorator_options: Mapping[str, Any] | None = None) -> Policy:
    """The effective policy of ``task_name``; cached until settings or overrides change."""
    refresh = getattr(_override_source, "refresh", None)
    if refresh is not None and refresh():
        clear_cache()
    cached = _cache.get(task_name)
    if cached is not None and cached[0] is decorator_options:
        return cached[1]
    policy = _build(task_name, decorator_options)
    with _lock:
        _cache[task_name] = (decorator_options, policy)
    return policy


def _layer(label: str, options: Any, dotted_paths: bool, task_name: str) -> dict[str, Any]:
    try:
        return parse_options(options or {}, dotted_paths=dotted_paths)
    except OptionError as exc:
        raise ImproperlyConfigured(
            f"[{exc.check_id}] task {task_name!r}, option {exc.option!r} ({label}): "
            f"{exc.message} {exc.hint}"
        ) from None


def _build(task_name: str, decorator_options: Mapping[str, Any] | None) -> Policy:
    tasks = heimdall_settings.TASKS
    defaults = heimdall_settings.DEFAULTS
    if isinstance(defaults, Mapping) and "unique_on" in defaults:
        raise ImproperlyConfigured(
            "[heimdall.E007] HEIMDALL['DEFAULTS'] may not set 'unique_on'; set it per task."
        )
    layers = [
        (SOURCE_DEFAULTS, _layer("HEIMDALL['DEFAULTS']", defaults, True, task_name)),
        (SOURCE_DECORATOR, _layer("heimdall={...}", decorator_options, False, task_name)),
        (
            SOURCE_SETTINGS,
            _layer(
                "HEIMDALL['TASKS']",
                tasks.get(task_name) if isinstance(tasks, Mapping) else None,
                True,
                task_name,
            ),
        ),
    ]
    if _override_source is not None:
        layers.append((SOURCE_ADMIN, dict(_override_source(task_name) or {})))
    values = dict(BUILTIN)
    sources = dict.fromkeys(BUILTIN, SOURCE_BUILTIN)
    for label, options in layers:
        values.update(options)
        sources.update(dict.fromkeys(options, label))
    return Policy(task_name=task_name, sources=sources, **values)
