"""``HeimdallTask``: the Celery base class that applies a task's policy.

Enqueue (``apply_async``) takes the unique lock; the start (``__call__`` on the
worker) confirms or takes the lock and counts the start against the rate limits;
the end releases the lock. Each of these is one call into the store.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery import Task
from celery.exceptions import Ignore, Retry
from celery.signals import task_failure, task_revoked
from kombu.utils.uuid import uuid

from . import keys, policies, signals
from .conf import heimdall_settings
from .exceptions import (
    AlreadyQueuedError,
    DuplicateTaskSkipped,
    HeimdallUnavailable,
    RateLimitExceeded,
)
from .store import Acquired, Started, Store, get_store

logger = logging.getLogger("django_heimdall")

# Options that make a call part of a canvas (chain, group, chord, callbacks).
_CANVAS_OPTIONS = ("chain", "chord", "group_id")


class HeimdallTask(Task):
    """Celery task base class for unique and globally rate-limited tasks.

    Configure it on the decorator, ``@shared_task(base=HeimdallTask,
    heimdall={"unique": True})``, or in ``settings.HEIMDALL["TASKS"]``.
    """

    #: Options given on the decorator (the ``heimdall={...}`` dict).
    heimdall: dict[str, Any] | None = None
    #: A skipped duplicate is an expected outcome: log it without a traceback.
    throws = (DuplicateTaskSkipped,)

    @property
    def heimdall_policy(self) -> policies.Policy:
        """The effective policy of this task (settings, decorator, admin)."""
        return policies.resolve(self.name, self.heimdall)

    # -- enqueue -----------------------------------------------------------------

    def apply_async(
        self,
        args=None,
        kwargs=None,
        task_id=None,
        producer=None,
        link=None,
        link_error=None,
        shadow=None,
        **options,
    ):
        policy = self.heimdall_policy
        if not policy.unique:
            return super().apply_async(
                args, kwargs, task_id, producer, link, link_error, shadow, **options
            )
        task_id = task_id or uuid()

        def publish():
            return super(HeimdallTask, self).apply_async(
                args, kwargs, task_id, producer, link, link_error, shadow, **options
            )

        ident = keys.identity(self, policy, args, kwargs)
        store = get_store()
        try:
            taken = store.acquire(
                ident.lock,
                task_id,
                policy.unique_timeout_ms,
                self.name,
                ident.preview,
                renew=not policy.unique_wait_for_expiry,
            )
        except HeimdallUnavailable as exc:
            if not heimdall_settings.fail_open and task_id != self.request.id:
                logger.error("%s[%s] not published: %s (fail closed)", self.name, task_id, exc)
                raise
            # Fail open, or a retry re-sending itself: its start check decides later.
            reason = "fail open" if heimdall_settings.fail_open else "retry"
            logger.warning(
                "%s[%s] published without its lock: %s (%s)", self.name, task_id, exc, reason
            )
            return publish()

        if taken.status == Acquired.HELD:
            signals.duplicate_blocked.send(
                sender=self, task_id=task_id, holder=taken.holder, key=ident.lock, stage="enqueue"
            )
            if policy.unique_raises:
                raise AlreadyQueuedError(taken.holder, taken.expires_in)
            if not (link or link_error or any(options.get(o) for o in _CANVAS_OPTIONS)):
                logger.debug("%s: duplicate of %s not published", self.name, taken.holder)
                return self.AsyncResult(taken.holder)
            # Part of a canvas: returning another task's result would lose this
            # task's callbacks or leave its group waiting. Publish it; the start
            # check skips it (a failure the canvas sees) if the holder still runs.
            logger.info(
                "%s[%s]: duplicate of %s published as part of a canvas; "
                "it will be skipped if %s still holds the lock",
                self.name,
                task_id,
                taken.holder,
                taken.holder,
            )
        elif taken.status == Acquired.TAKEN:
            signals.lock_acquired.send(sender=self, task_id=task_id, key=ident.lock)

        try:
            return publish()
        except BaseException:
            if taken.status == Acquired.TAKEN:
                self._heimdall_release(store, ident.lock, task_id)
            raise

    # -- start and end -----------------------------------------------------------

    def __call__(self, *args, **kwargs):
        request = self.request
        if request.called_directly or getattr(request, "_heimdall_gated", False):
            # task(...) called directly (or from its own body): no lock, no limit.
            return super().__call__(*args, **kwargs)
        policy = self.heimdall_policy
        if not policy.active:
            return self.run(*args, **kwargs)
        request._heimdall_gated = True

        ident = keys.identity(self, policy, args, kwargs)
        lock = ident.lock if policy.unique else None
        rates = ()
        if policy.rate_limit is not None:
            rate = policy.rate_limit.resolve(key=ident.rate, task=self, args=args, kwargs=kwargs)
            rates = ((ident.rate, rate),)
        store = get_store()
        try:
            decision = store.start(
                request.id,
                task_name=self.name,
                lock=lock,
                lease_ms=policy.unique_timeout_ms,
                renew=not policy.unique_wait_for_expiry,
                preview=ident.preview,
                rates=rates,
            )
        except HeimdallUnavailable as exc:
            if heimdall_settings.fail_open:
                logger.warning("%s[%s] runs unchecked: %s (fail open)", self.name, request.id, exc)
                return self.run(*args, **kwargs)
            if request.is_eager:
                raise
            logger.error("%s[%s] start deferred: %s (fail closed)", self.name, request.id, exc)
            self._heimdall_defer(args, kwargs, heimdall_settings.UNAVAILABLE_COUNTDOWN, None)

        if decision.taken:
            signals.lock_acquired.send(sender=self, task_id=request.id, key=lock)
        if decision.status == Started.DUPLICATE:
            logger.warning(
                "%s[%s] skipped: %s holds its lock", self.name, request.id, decision.holder
            )
            signals.duplicate_blocked.send(
                sender=self, task_id=request.id, holder=decision.holder, key=lock, stage="start"
            )
            raise DuplicateTaskSkipped(decision.holder, lock)

        if decision.status == Started.THROTTLED:
            signals.throttled.send(
                sender=self, task_id=request.id, key=ident.rate, countdown=decision.wait
            )
            if request.is_eager:
                if lock is not None:
                    self._heimdall_release(store, lock, request.id)
                raise RateLimitExceeded(decision.wait, ident.rate)
            self._heimdall_defer(args, kwargs, decision.wait, lock)

        # When the start was admitted, on the Redis clock (µs since the epoch).
        request.heimdall_started_at = decision.now_us
        request.heimdall_lock = lock
        keep = lock is None or policy.unique_wait_for_expiry
        try:
            return self.run(*args, **kwargs)
        except Retry:
            keep = True  # the retry comes back with this task id and still owns the lock
            raise
        finally:
            if not keep:
                self._heimdall_release(store, lock, request.id)

    def heimdall_heartbeat(self) -> bool:
        """Renew the running task's lock for another ``unique_timeout``.

        Call it from a long task body so that the lease, and with it the time a
        crashed worker blocks the task, can be short. Returns ``False`` when the
        lock is no longer this task's (its lease ran out and another copy took it).
        If Redis is unreachable it raises ``HeimdallUnavailable`` (fail closed) or
        logs a warning and returns ``True`` (fail open).
        """
        request = self.request
        lock = getattr(request, "heimdall_lock", None)
        if lock is None:
            return False
        policy = self.heimdall_policy
        try:
            return get_store().renew(lock, request.id, policy.unique_timeout_ms, self.name)
        except HeimdallUnavailable as exc:
            if not heimdall_settings.fail_open:
                raise
            logger.warning("%s[%s] lease not renewed: %s (fail open)", self.name, request.id, exc)
            return True

    # -- helpers -----------------------------------------------------------------

    def _heimdall_defer(self, args: Any, kwargs: Any, wait: float, lock: str | None) -> None:
        """Re-send this very message (same id, same ``retries``) later, then end."""
        countdown = min(wait, _max_countdown(self.app))
        countdown += random.uniform(0, heimdall_settings.DEFER_JITTER)
        request = self.request
        again = self.signature_from_request(request, args, kwargs, countdown=countdown)
        try:
            # Straight to Celery: the lock (if any) stays ours and the start check
            # re-decides when the message comes back, so enqueue has nothing to add.
            super().apply_async(again.args, again.kwargs, **again.options)
        except BaseException:
            logger.exception("%s[%s] could not be deferred", self.name, request.id)
            if lock is not None:
                self._heimdall_release(get_store(), lock, request.id)
            raise
        logger.info("%s[%s] deferred by %.3fs (rate limit)", self.name, request.id, countdown)
        raise Ignore()

    def _heimdall_release(self, store: Store, lock: str, task_id: str) -> None:
        try:
            released = store.release(lock, task_id, self.name)
        except HeimdallUnavailable as exc:
            logger.warning(
                "%s[%s] lock not released, it expires with its lease: %s", self.name, task_id, exc
            )
            return
        if released:
            signals.lock_released.send(sender=self, task_id=task_id, key=lock)


def _max_countdown(app: Any) -> float:
    cap = float(heimdall_settings.DEFER_MAX_COUNTDOWN)
    timeout = (app.conf.broker_transport_options or {}).get("visibility_timeout")
    if timeout:
        cap = min(cap, float(timeout) / 2)
    return cap


def _release_discarded(task: Any, task_id: str, args: Any, kwargs: Any) -> None:
    policy = task.heimdall_policy
    if not policy.unique:
        return
    try:
        ident = keys.identity(task, policy, args, kwargs)
    except Exception:
        logger.exception("%s[%s] ended; its lock key could not be computed", task.name, task_id)
        return
    task._heimdall_release(get_store(), ident.lock, task_id)


@task_revoked.connect(weak=False)
def _release_revoked(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    """A task discarded by the worker (revoked, expired) gives its lock back."""
    if isinstance(sender, HeimdallTask) and request is not None:
        _release_discarded(sender, request.id, request.args, request.kwargs)


@task_failure.connect(weak=False)
def _release_lost(
    sender: Any = None,
    task_id: Any = None,
    exception: Any = None,
    args: Any = None,
    kwargs: Any = None,
    **extra: Any,
) -> None:
    """A task whose process died (killed, out of memory, hard time limit) and that
    will not be redelivered gives its lock back at once instead of after its lease."""
    if isinstance(sender, HeimdallTask) and isinstance(
        exception, (WorkerLostError, TimeLimitExceeded)
    ):
        _release_discarded(sender, task_id, args, kwargs)
