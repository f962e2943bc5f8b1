"""The service layer: what the admin and ``manage.py heimdall`` can see and do.

Both front ends import only this module; it reaches Redis through the store and
adds what they share: which tasks exist, effective policies with their sources,
and owner-checked releases.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from django.core.exceptions import ImproperlyConfigured

from . import policies
from .conf import heimdall_settings
from .exceptions import HeimdallUnavailable
from .options import POLICY_OPTIONS, display
from .overrides import publish_on_commit
from .store import LiveState, LockInfo, LockPage, RatePage, RateWindow, get_store
from .store.beat import BeatLeader, BeatOccurrence, BeatState

__all__ = [
    "BeatLeader",
    "BeatOccurrence",
    "HeimdallUnavailable",
    "LockInfo",
    "LockPage",
    "RatePage",
    "RateWindow",
    "beat",
    "effective_policies",
    "live",
    "publish_on_commit",
    "registered_task_names",
    "release_locks",
    "revoke",
]


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


def live() -> LiveState:
    """Listings and bulk changes of the live Redis state."""
    return LiveState(get_store())


def beat() -> BeatState:
    """The beat leader and the latest occurrences sent or skipped."""
    return BeatState(get_store())


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


def registered_task(name: str) -> Any:
    """The registered task called ``name``, or ``None``."""
    from celery import current_app

    current_app.loader.import_default_modules()
    return current_app.tasks.get(name)


def effective_policies() -> list[TaskPolicy]:
    """Every HeimdallTask and every task named in settings or an override, with each
    option's effective value and the layer it comes from."""
    from .models import PolicyOverride

    tasks = heimdall_tasks()
    names = set(tasks) | set(heimdall_settings.TASKS)
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
            for option in POLICY_OPTIONS
        ]
        result.append(TaskPolicy(name, task is not None, options))
    return result


def release_locks(expected: Iterable[tuple[str, str]]) -> ReleaseResult:
    """Release each ``(identity, owner)`` lock if that owner still holds it."""
    state = live()
    released, taken_over, gone = [], [], []
    for identity, owner in expected:
        current = state.lock_info(identity)
        if current is None:
            gone.append(identity)
        elif current.owner != owner:
            taken_over.append(current)
        elif state.release(identity, owner, current.task):
            released.append(current)
        else:
            gone.append(identity)
    return ReleaseResult(released, taken_over, gone)


def revoke(task_ids: list[str]) -> None:
    """Revoke tasks by id (workers discard them when they arrive)."""
    from celery import current_app

    if task_ids:
        current_app.control.revoke(task_ids)
