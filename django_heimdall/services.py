"""Operations on live state, shared by the admin and ``manage.py heimdall``.

Everything that touches Redis goes through the store; this module adds what the
two front ends have in common: which tasks exist, effective policies with their
sources, and owner-checked bulk releases.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from django.core.exceptions import ImproperlyConfigured

from . import policies
from .conf import heimdall_settings
from .ratelimits import RateLimit
from .store import LockInfo, get_store


class OptionState(NamedTuple):
    name: str
    value: str
    source: str


class TaskPolicy(NamedTuple):
    """One task's effective options (or the error that prevents resolving them)."""

    name: str
    registered: bool
    options: list[OptionState]
    error: str = ""


class ReleaseResult(NamedTuple):
    released: list[LockInfo]
    taken_over: list[LockInfo]  # re-taken by another task since: left alone
    gone: list[str]  # identities no longer locked (expired or released meanwhile)


def heimdall_tasks() -> dict[str, Any]:
    """Registered tasks whose base is ``HeimdallTask``, by name."""
    from celery import current_app

    from .task import HeimdallTask

    current_app.loader.import_default_modules()
    return {
        name: task for name, task in current_app.tasks.items() if isinstance(task, HeimdallTask)
    }


def registered_task_names() -> list[str]:
    """Every task name the Celery app registers (for the override form)."""
    from celery import current_app

    current_app.loader.import_default_modules()
    return sorted(name for name in current_app.tasks if not name.startswith("celery."))


def display(value: Any) -> str:
    """A short, human form of an option value."""
    if value is None:
        return "—"
    if isinstance(value, RateLimit):
        return str(value)
    if callable(value):
        module = getattr(value, "__module__", "")
        return f"{module}.{getattr(value, '__qualname__', value)}"
    if isinstance(value, tuple):
        return repr(list(value))
    return str(value)


def effective_policies() -> list[TaskPolicy]:
    """Every HeimdallTask and every task named in settings or an override, with each
    option's effective value and the layer it comes from."""
    from .models import PolicyOverride

    tasks = heimdall_tasks()
    configured = heimdall_settings.TASKS if isinstance(heimdall_settings.TASKS, dict) else {}
    names = set(tasks) | set(configured)
    names |= set(PolicyOverride.objects.values_list("task_name", flat=True))
    result = []
    for name in sorted(names):
        task = tasks.get(name)
        try:
            policy = policies.resolve(name, task.heimdall if task is not None else None)
        except ImproperlyConfigured as exc:
            result.append(TaskPolicy(name, task is not None, [], str(exc)))
            continue
        options = [
            OptionState(option, display(getattr(policy, option)), policy.sources[option])
            for option in policies.OPTION_NAMES
        ]
        result.append(TaskPolicy(name, task is not None, options))
    return result


def release_locks(expected: Iterable[tuple[str, str]]) -> ReleaseResult:
    """Release each ``(identity, owner)`` lock if that owner still holds it."""
    store = get_store()
    released, taken_over, gone = [], [], []
    for identity, owner in expected:
        current = store.lock_info(identity)
        if current is None:
            gone.append(identity)
        elif current.owner != owner:
            taken_over.append(current)
        elif store.release(identity, owner, current.task):
            released.append(current)
        else:
            gone.append(identity)
    return ReleaseResult(released, taken_over, gone)


def release_task_locks(task_name: str, cutoff_ms: int) -> int:
    """Release the locks of ``task_name`` taken at or before ``cutoff_ms`` (Redis
    clock): the time the operator was shown what would be released."""
    return get_store().release_task(task_name, cutoff_ms)


def revoke(task_ids: list[str]) -> None:
    """Revoke tasks by id (workers discard them when they arrive)."""
    from celery import current_app

    if task_ids:
        current_app.control.revoke(task_ids)
