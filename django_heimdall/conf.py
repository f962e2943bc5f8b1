"""``settings.HEIMDALL``, read through one object with defaults.

Nothing is read at import time; values are cached and dropped whenever Django
reports a change of ``HEIMDALL`` or ``CACHES`` (``override_settings`` included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

FAIL_CLOSED = "fail_closed"
FAIL_OPEN = "fail_open"

#: Top-level keys of ``settings.HEIMDALL`` and their defaults.
DEFAULTS: dict[str, Any] = {
    # django-redis cache alias whose client holds every lock and limit.
    "CACHE": "default",
    # Prefix of every Redis key django-heimdall writes.
    "KEY_PREFIX": "heimdall",
    # What to do when Redis cannot be reached: "fail_closed" or "fail_open".
    "ON_REDIS_ERROR": FAIL_CLOSED,
    # Defaults for every task option (lowest layer above the built-ins).
    "DEFAULTS": {},
    # Per-task policies keyed by registered task name; callables as dotted paths.
    "TASKS": {},
    # Named semaphores shared by tasks (option 'resources'), semaphore() and @locked:
    # {"storage": {"capacity": 10}}. Read as {name: capacity}.
    "RESOURCES": {},
    # Longest countdown of one deferral hop, seconds. Keep it well below the
    # broker's visibility timeout; it is also capped at half of that timeout.
    "DEFER_MAX_COUNTDOWN": 60.0,
    # Largest random delay added to a start deferred while Redis was unreachable,
    # seconds, against a thundering herd (a rate-limit wait comes back at its slot).
    "DEFER_JITTER": 0.5,
    # Countdown of a start deferred because Redis was down (fail closed), seconds.
    "UNAVAILABLE_COUNTDOWN": 5.0,
    # How often each process looks for changed admin overrides, seconds: a change
    # made in the admin reaches every worker within this time.
    "OVERRIDES_REFRESH": 2.0,
    # Leader lease of django_heimdall.beat's schedulers, seconds: a standby takes over
    # within this time after the leader dies. Ticks are capped at a third of it.
    "BEAT_LEASE": 30.0,
}

_reload_hooks: list[Callable[[], None]] = []


def on_reload(func: Callable[[], None]) -> Callable[[], None]:
    """Register ``func`` to drop a cache derived from settings when they change."""
    _reload_hooks.append(func)
    return func


class HeimdallSettings:
    """Attribute access to ``settings.HEIMDALL`` with ``DEFAULTS`` filled in."""

    def __init__(self) -> None:
        self._values: dict[str, Any] | None = None

    @property
    def raw(self) -> Any:
        """The user's ``settings.HEIMDALL`` as given (may be invalid)."""
        return getattr(settings, "HEIMDALL", {})

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"invalid django-heimdall setting {name!r}")
        values = self._values
        if values is None:
            values = _normalised(self.raw)
            self._values = values
        return values[name]

    @property
    def fail_open(self) -> bool:
        return self.ON_REDIS_ERROR == FAIL_OPEN

    def reload(self) -> None:
        self._values = None
        for hook in _reload_hooks:
            hook()


def _normalised(raw: Any) -> dict[str, Any]:
    # Consumers rely on the shape; a malformed part is dropped here and reported
    # by the system checks.
    values = {**DEFAULTS, **(raw if isinstance(raw, dict) else {})}
    for name in ("DEFAULTS", "TASKS"):
        if not isinstance(values[name], dict):
            values[name] = {}
    values["TASKS"] = {
        task: options for task, options in values["TASKS"].items() if isinstance(options, dict)
    }
    values["RESOURCES"] = resource_capacities(values["RESOURCES"])
    return values


def resource_capacities(raw: Any) -> dict[str, int]:
    """``HEIMDALL["RESOURCES"]`` as ``{name: capacity}``, the valid entries only."""
    if not isinstance(raw, dict):
        return {}
    capacities = {}
    for name, spec in raw.items():
        capacity = spec.get("capacity") if isinstance(spec, dict) else None
        if isinstance(name, str) and name and _is_count(capacity):
            capacities[name] = capacity
    return capacities


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


heimdall_settings = HeimdallSettings()


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("HEIMDALL", "CACHES"):
        heimdall_settings.reload()


setting_changed.connect(_setting_changed, dispatch_uid="django_heimdall.conf")
