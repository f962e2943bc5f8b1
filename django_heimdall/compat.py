"""celery-heimdall 1.0.1's helpers, so that migrating is an import change.

``task.heimdall_config`` returns a :class:`HeimdallConfig`; ``release_lock`` and
``unique_key_for_task`` work on django-heimdall's locks. See docs/migrating.md.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import keys
from .store import get_store


class HeimdallConfig(NamedTuple):
    """The values celery-heimdall's ``task.heimdall_config`` exposed, read from the
    task's effective policy (a snapshot: read it again after a change)."""

    unique_timeout: float
    lock_prefix: str
    unique_raises: bool
    #: django-heimdall never blocks at enqueue: a duplicate is answered at once.
    unique_lock_blocking: bool = False
    unique_lock_timeout: float = 0
    #: Rate-limit keys are not prefixed (they are the task name or the ``key``).
    rate_limit_prefix: str = ""


def config_of(task: Any) -> HeimdallConfig:
    """``task.heimdall_config``."""
    policy = task.heimdall_policy
    return HeimdallConfig(
        unique_timeout=policy.unique_timeout,
        lock_prefix=policy.lock_prefix,
        unique_raises=policy.unique_raises,
    )


def unique_key_for_task(task: Any, args: Any, kwargs: Any, *, prefix: str = "") -> str:
    """The unique key of a call of ``task``, after ``prefix``: with
    ``prefix=task.heimdall_config.lock_prefix`` it names the call's lock."""
    policy = task.heimdall_policy
    lock = keys.identity(task, policy, args, kwargs).lock
    return prefix + lock[len(policy.lock_prefix) :]


def release_lock(task: Any, key: str) -> bool:
    """Release the lock named ``key`` (as :func:`unique_key_for_task` gives it with
    the task's ``lock_prefix``), whoever holds it; False if nobody did."""
    store = get_store()
    holder = store.holder(key)
    return holder is not None and store.release(key, holder, task.name)
