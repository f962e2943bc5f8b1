"""The worker side of ``HeimdallTask``: the start check, the body, the end.

The start confirms the lock the message carries (or takes one) for this
execution, takes its concurrency slots and resource tickets and counts the start
against the rate limits, in one store call; a start that must wait is re-sent
(``defer``) without using a retry; the end gives everything back through its owner.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import threading
import time
from typing import TYPE_CHECKING, Any

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from celery.worker.request import Request
from django.core.exceptions import ImproperlyConfigured
from kombu.utils.uuid import uuid

from . import keys, policies, signals
from .conf import heimdall_settings
from .exceptions import (
    DuplicateTaskSkipped,
    HeimdallError,
    HeimdallUnavailable,
    RateLimitExceeded,
    ResourceBusy,
)
from .heartbeat import keep_renewing
from .messages import CALL_HEADER, LOCK_HEADER, SLOT_HEADER, header, max_countdown, take_slot
from .options import OptionError, parse_call_options
from .store import (
    RESOURCE_PREFIX,
    Released,
    Renewed,
    Slot,
    Started,
    get_store,
    resource_semaphore,
    task_semaphore,
)

if TYPE_CHECKING:
    from .task import HeimdallTask

logger = logging.getLogger("django_heimdall")

#: A busy start whose turn should come within this many seconds (in all) waits for
#: it in the worker instead of being re-sent.
BUSY_WAIT_IN_PLACE = 0.5
#: The result state of a task waiting for its rate-limit slot, a concurrency slot or
#: a resource ticket (not ready: ``.get()`` waits).
THROTTLED = "THROTTLED"
#: A start this close to its slot is admitted at the slot and waits for it in the
#: process instead of being re-sent, seconds.
BRIEF_WAIT = 0.1


def start_policy(task: HeimdallTask) -> policies.Policy:
    """The policy of the call being executed: the task's, with the per-call options
    its message carries."""
    try:
        call = parse_call_options(header(task.request, CALL_HEADER) or {})
    except OptionError as exc:  # a header written by another version, or by hand
        raise HeimdallError(f"{task.name}: invalid per-call options: {exc}") from exc
    return task.heimdall_policy.with_call_options(call)


def _execution_token(request: Any) -> str:
    """Identifies this execution; eager retries run nested in one, so share it."""
    if request.is_eager:
        return f"eager:{os.getpid()}"
    return f"{request.hostname or os.uname().nodename}:{os.getpid()}:{uuid()[:8]}"


def run(task: HeimdallTask, args: tuple, kwargs: dict) -> Any:
    """Start ``task`` on a worker (or eagerly): confirm or take its lock, take its
    slots and tickets, count it against its rate limits, run the body, give back
    what it held. Each decision is one store call."""
    request = task.request
    carried = header(request, LOCK_HEADER)
    try:
        policy = start_policy(task)
        gated = policy.active or carried is not None
        if gated:
            lock, rate_key, rates, preview, slots = plan(task, policy, carried, args, kwargs)
    except (HeimdallError, ImproperlyConfigured):
        # The policy or a user callable failed: give back what the enqueue took
        # (this execution's only: a second delivery must not free the first's
        # lock), fail clearly.
        release(task, request.id, _execution_token(request), lock=carried)
        raise
    if not gated:
        return task.run(*args, **kwargs)
    request._heimdall_gated = True
    token = _execution_token(request)
    store = get_store()
    queue = policy.on_busy == "defer"
    start = functools.partial(
        store.start,
        request.id,
        task_name=task.name,
        lock=lock,
        lease_ms=policy.unique_timeout_ms,
        renew=not policy.keep_until_expired,
        preview=preview,
        rates=rates,
        token=token,
        until=policy.unique_until,
        slots=slots,
        queue=queue,
        # An eager call is never re-sent: it neither holds a slot nor waits.
        reserve=not request.is_eager,
        slot_us=take_slot(request),
        admit_within=0 if request.is_eager else BRIEF_WAIT,
    )
    try:
        decision = start()
        waited = 0.0
        while (
            decision.status == Started.BUSY
            and queue
            and not request.is_eager
            and waited + decision.wait <= BUSY_WAIT_IN_PLACE
        ):
            # A turn due within moments is waited for here: a trip through the
            # broker would bring the task back later, behind the queue.
            if not waited:
                _waiting(task, {"resource": decision.holder, "countdown": decision.wait})
            time.sleep(decision.wait)
            waited += decision.wait
            decision = start()
        if waited and decision.status == Started.ADMITTED and task.track_started:
            _store_state(task, "STARTED", {})
    except HeimdallUnavailable as exc:
        if heimdall_settings.fail_open:
            logger.warning("%s[%s] runs unchecked: %s (fail open)", task.name, request.id, exc)
            try:
                return task.run(*args, **kwargs)
            finally:
                # The lock taken at enqueue, if Redis is back (else its lease ends it).
                if lock is not None:
                    release(task, request.id, token, lock=lock)
        if request.is_eager:
            raise
        logger.error("%s[%s] start deferred: %s (fail closed)", task.name, request.id, exc)
        defer(task, args, kwargs, heimdall_settings.UNAVAILABLE_COUNTDOWN, jitter=True)

    if decision.taken:
        signals.lock_acquired.send(sender=task, task_id=request.id, key=lock)
    if decision.status == Started.TWIN:
        # The same message delivered again while its first execution runs: the
        # twin stores nothing (it shares the task id) and leaves the lock alone.
        logger.warning(
            "%s[%s] not run: a second delivery while the first execution runs",
            task.name,
            request.id,
        )
        raise Ignore()
    if decision.status == Started.REPLACED:
        logger.info(
            "%s[%s] not run: replaced by %s while queued",
            task.name,
            request.id,
            decision.holder,
        )
        if not request.is_eager:
            task.backend.mark_as_revoked(request.id, f"replaced by {decision.holder}", request)
        raise Ignore()
    if decision.status == Started.DUPLICATE:
        logger.warning("%s[%s] skipped: %s holds its lock", task.name, request.id, decision.holder)
        signals.duplicate_blocked.send(
            sender=task, task_id=request.id, holder=decision.holder, key=lock, stage="start"
        )
        raise DuplicateTaskSkipped(decision.holder, lock)

    if decision.status == Started.THROTTLED:
        signals.throttled.send(
            sender=task, task_id=request.id, key=rate_key, countdown=decision.wait
        )
        if request.is_eager:
            if lock is not None:
                release(task, request.id, token, lock=lock)
            raise RateLimitExceeded(decision.wait, rate_key)
        slot_us = decision.now_us + int(decision.wait * 1e6)
        defer(task, args, kwargs, decision.wait, slot_us=slot_us, key=rate_key)

    if decision.status == Started.BUSY:
        _busy(task, policy, decision, lock, token, args, kwargs)

    if decision.wait:
        # Admitted at its slot a moment from now (it came a little early, or the
        # task before it a little late): the body starts no earlier.
        time.sleep(decision.wait)
    # When the start was admitted, on the Redis clock (µs since the epoch).
    request.heimdall_started_at = decision.now_us
    request.heimdall_lock = lock
    request.heimdall_token = token
    give_back = (lock is not None and policy.unique_until != "started") or bool(slots)
    beating = _heartbeat(task, policy, token) if policy.heartbeat and give_back else None
    try:
        return task.run(*args, **kwargs)
    except Retry:
        give_back = False  # the re-send (same task id) finds the lock still its own
        if slots:
            release(task, request.id, token, slots_only=True)
        raise
    except Ignore:
        if getattr(request, "_heimdall_handed_over", False):
            # Deferred from its body (@locked), or replaced (Task.replace) by a call
            # of the same key: the message sent in its place keeps the lock.
            give_back = False
            if slots:
                release(task, request.id, token, slots_only=True)
        raise
    except Reject as exc:
        if exc.requeue:
            # The same message comes back: the lock stays, queued again for it.
            give_back = False
            _requeue(task, request.id, token)
        raise
    finally:
        if beating is not None:
            beating.set()
        if give_back:
            # By its key: a replacement (Task.replace) took the owner pointer.
            release(task, request.id, token, lock=lock)


def _heartbeat(task: HeimdallTask, policy: policies.Policy, token: str) -> threading.Event:
    """Renew the execution's lock, slots and tickets every lease/3 in a background
    thread until the returned event is set."""
    task_id, lease_ms = task.request.id, policy.unique_timeout_ms

    def renew() -> bool:
        return get_store().renew_execution(task_id, token, lease_ms) == Renewed.RENEWED

    return keep_renewing(policy.unique_timeout / 3, renew, f"{task.name}[{task_id}]")


def plan(
    task: HeimdallTask, policy: policies.Policy, carried: str | None, args: Any, kwargs: Any
) -> tuple[str | None, str, tuple[Any, ...], str, tuple[Slot, ...]]:
    """The lock, rate key, rates, argument preview and semaphores of this start.

    The lock is the one the message carries (taken at enqueue, whatever the
    policy says now), or the policy's when it came without one."""
    try:
        ident = keys.identity(task, policy, args, kwargs)
    except Exception as exc:
        raise HeimdallError(
            f"{task.name}: option 'key'/'unique_on' cannot build the key: {exc}"
        ) from exc
    lock = carried or (ident.lock if policy.unique else None)
    rates: tuple[Any, ...] = ()
    if policy.rate_limit is not None:
        try:
            limits = policy.rate_limit.rates(key=ident.rate, task=task, args=args, kwargs=kwargs)
        except Exception as exc:
            raise HeimdallError(
                f"{task.name}: option 'rate_limit' failed to give a rate: {exc}"
            ) from exc
        rates = tuple((ident.rate, rate) for rate in limits)
    slots = [
        Slot(resource_semaphore(name), tickets, heimdall_settings.RESOURCES[name])
        for name, tickets in (policy.resources or {}).items()
    ]
    if policy.concurrency_limit is not None:
        slots.append(Slot(task_semaphore(ident.rate), 1, policy.concurrency_limit))
    return lock, ident.rate, rates, ident.preview, tuple(slots)


def _busy(
    task: HeimdallTask,
    policy: policies.Policy,
    decision: Any,
    lock: str | None,
    token: str,
    args,
    kwargs,
) -> None:
    """A start that found a slot or ticket taken: wait in line (re-sent, without
    using a retry, when one should be free), or skip."""
    request = task.request
    action = "defer" if policy.on_busy == "defer" and not request.is_eager else "skip"
    signals.busy.send(
        sender=task,
        task_id=request.id,
        resource=decision.holder,
        countdown=decision.wait,
        action=action,
    )
    if action == "defer":
        _waiting(task, {"resource": decision.holder, "countdown": decision.wait})
        defer(task, args, kwargs, decision.wait)
    logger.info("%s[%s] skipped: %s is busy", task.name, request.id, decision.holder)
    if lock is not None:
        release(task, request.id, token, lock=lock)
    name = decision.holder or ""
    if name.startswith(RESOURCE_PREFIX):
        name = name[len(RESOURCE_PREFIX) :]
    raise ResourceBusy(name, decision.wait)


def _store_state(task: HeimdallTask, state: str, meta: dict[str, Any]) -> None:
    """Record the task's state in its result (a waiting task must not look
    STARTED); best effort: the backend being down does not stop the task."""
    request = task.request
    if request.ignore_result or task.ignore_result or request.is_eager:
        return
    try:
        task.update_state(state=state, meta=meta)
    except Exception as exc:  # the result backend is down: the state is cosmetic
        logger.warning("%s[%s] state %s not stored: %s", task.name, request.id, state, exc)


def _waiting(task: HeimdallTask, meta: dict[str, Any]) -> None:
    """Record that the task waits (``THROTTLED``, not STARTED), and for what."""
    meta = {
        key: round(value, 3) if isinstance(value, float) else value for key, value in meta.items()
    }
    _store_state(task, THROTTLED, meta)


def defer(
    task: Task,
    args: Any,
    kwargs: Any,
    wait: float,
    *,
    slot_us: int | None = None,
    key: str = "",
    jitter: bool = False,
) -> None:
    """Re-send this very message (same id, same ``retries``, same lock) later, then end.

    A task waiting for a rate-limit slot carries that slot (``slot_us``, Redis
    clock) and is stored as ``THROTTLED`` meanwhile. ``jitter`` spreads the waiters
    of a Redis outage (a busy start keeps its turn: it comes back when it is due).
    ``task`` may be a plain Celery task (``@locked``)."""
    from .task import HeimdallTask  # here: task.py imports this module

    countdown = min(wait, max_countdown(task.app))
    if jitter:
        countdown += random.uniform(0, float(heimdall_settings.DEFER_JITTER))
    request = task.request
    again = task.signature_from_request(request, args, kwargs, countdown=countdown)
    options = dict(again.options)
    headers = dict(options.get("headers") or {})
    lock = header(request, LOCK_HEADER)
    if lock is not None:
        headers[LOCK_HEADER] = lock
    if slot_us is not None:
        headers[SLOT_HEADER] = slot_us
        _waiting(task, {"key": key, "countdown": wait})
    options["headers"] = headers
    heimdall = isinstance(task, HeimdallTask)
    try:
        # Past HeimdallTask: the lock (if any) stays ours and covers the wait,
        # and the start check re-decides when the message comes back.
        publish = super(HeimdallTask, task).apply_async if heimdall else task.apply_async
        publish(again.args, again.kwargs, **options)
    except BaseException:
        logger.exception("%s[%s] could not be deferred", task.name, request.id)
        if heimdall:
            release(task, request.id, lock=lock)
        raise
    logger.info("%s[%s] deferred by %.3fs", task.name, request.id, countdown)
    request._heimdall_handed_over = True
    raise Ignore()


def _requeue(task: HeimdallTask, task_id: str, token: str) -> None:
    """Mark the lock queued again for the same message (``Reject(requeue=True)``)."""
    try:
        get_store().release_owned(task_id, token, requeue=True)
    except HeimdallUnavailable as exc:
        logger.warning("%s[%s] lock not marked queued: %s", task.name, task_id, exc)


def release(
    task: HeimdallTask,
    task_id: str,
    token: str = "",
    *,
    lock: str | None = None,
    slots_only: bool = False,
) -> None:
    """Give back the lock ``task_id`` holds (owner-checked; ``lock``, the one this
    execution took, or the one its owner pointer names), unless it is kept until its
    lease ends, and its slots and tickets (only those with ``slots_only``)."""
    try:
        released = get_store().release_owned(task_id, token, lock=lock, slots_only=slots_only)
    except HeimdallUnavailable as exc:
        logger.warning(
            "%s[%s] lock not released, it expires with its lease: %s", task.name, task_id, exc
        )
        return
    if released == Released.RELEASED:
        signals.lock_released.send(sender=task, task_id=task_id, key=lock)


def release_revoked(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    """Receiver of ``task_revoked``: a task discarded by the worker (revoked,
    expired) gives its lock back."""
    from .task import HeimdallTask

    if isinstance(sender, HeimdallTask) and request is not None:
        release(sender, request.id)


def release_lost(
    sender: Any = None, task_id: Any = None, exception: Any = None, **extra: Any
) -> None:
    """Receiver of ``task_failure``: a task whose process died (killed, out of
    memory, hard time limit) gives its lock, slots and tickets back at once instead
    of after their lease (a kept lock stays kept)."""
    from .task import HeimdallTask

    if isinstance(sender, HeimdallTask) and isinstance(
        exception, (WorkerLostError, TimeLimitExceeded)
    ):
        release(sender, task_id)


class HeimdallRequest(Request):
    """The worker's request of a ``HeimdallTask`` (``Task.Request``): when the
    process running it is lost, its lock is queued again for the same message
    before Celery requeues or retries it (``reject_on_worker_lost``,
    ``retry_on_worker_lost``), so the redelivery runs instead of meeting the dead
    execution's token; when Celery fails it instead, ``release_lost`` gives it back."""

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False):
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):  # as the pool reports it
            exc = exc.exc
        if isinstance(exc, WorkerLostError):
            _requeue(self.task, self.id, "")
        return super().on_failure(exc_info, send_failed_event, return_ok)
