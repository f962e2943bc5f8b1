"""The effective policy of one task: the option layers, resolved by precedence.

Precedence, highest first: admin override → ``HEIMDALL["TASKS"][name]`` → the
decorator's ``heimdall={...}`` → ``HEIMDALL["DEFAULTS"]`` → built-in defaults.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .conf import heimdall_settings, on_reload
from .options import CANONICAL, OPTIONS, OptionError, parse_options

SOURCE_BUILTIN = "built-in"
SOURCE_DEFAULTS = "settings default"
SOURCE_DECORATOR = "decorator"
SOURCE_SETTINGS = "settings"
SOURCE_ADMIN = "admin"
SOURCE_CALL = "call"


class Policy:
    """The effective options of one task (as attributes), and the layer each came from."""

    def __init__(
        self, task_name: str, values: Mapping[str, Any], sources: Mapping[str, str] | None = None
    ):
        attributes = vars(self)  # read-only: written here, around __setattr__
        attributes["task_name"] = task_name
        attributes["values"] = {**{name: o.default for name, o in CANONICAL.items()}, **values}
        attributes["sources"] = dict(sources or dict.fromkeys(CANONICAL, SOURCE_BUILTIN))
        for name, option in OPTIONS.items():
            if option.legacy_of is not None:
                self.sources[name] = self.sources[option.legacy_of]
        # Plain attributes: the enqueue hot path reads several options per call.
        attributes.update(self.values)

    def __setattr__(self, name: str, value: Any) -> None:
        # Policies are cached and shared by every call of a task.
        raise AttributeError(f"a Policy is read-only; use with_call_options() ({name})")

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not canonical options: legacy spellings.
        option = OPTIONS.get(name)
        if option is not None and option.from_canonical is not None:
            return option.from_canonical(self.values[option.legacy_of])
        raise AttributeError(name)

    def with_call_options(self, options: Mapping[str, Any]) -> Policy:
        """This policy with one call's (already parsed) options on top."""
        if not options:
            return self
        sources = {**self.sources, **dict.fromkeys(options, SOURCE_CALL)}
        return Policy(self.task_name, {**self.values, **options}, sources)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Policy)
            and self.task_name == other.task_name
            and self.values == other.values
        )

    def __hash__(self) -> int:
        return hash(self.task_name)

    def __repr__(self) -> str:
        return f"Policy({self.task_name!r}, {self.values!r})"

    @property
    def active(self) -> bool:
        return bool(
            self.unique
            or self.rate_limit is not None
            or self.concurrency_limit is not None
            or self.resources
        )

    @property
    def keep_until_expired(self) -> bool:
        return self.unique_until == "expired"

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


_disabled = 0


def disable(flag: bool) -> None:
    """Switch every policy off (``True``) or back on; nests (see ``heimdall_disabled``)."""
    global _disabled
    _disabled += 1 if flag else -1


def resolve(task_name: str, decorator_options: Mapping[str, Any] | None = None) -> Policy:
    """The effective policy of ``task_name``; cached until settings or overrides change."""
    if _disabled:
        return Policy(task_name, {})
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
    defaults = heimdall_settings.DEFAULTS
    if "unique_on" in defaults:
        raise ImproperlyConfigured(
            "[heimdall.E007] HEIMDALL['DEFAULTS'] may not set 'unique_on'; set it per task."
        )
    layers = [
        (SOURCE_DEFAULTS, _layer("HEIMDALL['DEFAULTS']", defaults, True, task_name)),
        (SOURCE_DECORATOR, _layer("heimdall={...}", decorator_options, False, task_name)),
        (
            SOURCE_SETTINGS,
            _layer("HEIMDALL['TASKS']", heimdall_settings.TASKS.get(task_name), True, task_name),
        ),
    ]
    if _override_source is not None:
        layers.append((SOURCE_ADMIN, dict(_override_source(task_name) or {})))
    values: dict[str, Any] = {}
    sources = dict.fromkeys(CANONICAL, SOURCE_BUILTIN)
    for label, options in layers:
        values.update(options)
        sources.update(dict.fromkeys(options, label))
    return Policy(task_name, values, sources)
