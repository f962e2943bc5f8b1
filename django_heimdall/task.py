"""``HeimdallTask``: the Celery base class that applies a task's policy.

Enqueue (``apply_async``) takes the unique lock and writes its key into the
message (header ``heimdall_lock``); the start (``__call__`` on the worker) confirms
that lock, or takes one, for this execution and counts the start against the rate
limits; the end gives the lock back through its owner. Each is one store call.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import time
from typing import Any

from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from celery.signals import task_failure, task_revoked
from kombu.utils.uuid import uuid

from . import keys, policies, signals
from .conf import heimdall_settings
from .exceptions import (
    AlreadyQueuedError,
    DuplicateTaskSkipped,
    HeimdallError,
    HeimdallUnavailable,
    RateLimitExceeded,
)
from .intervals import only_after
from .store import Acquired, Released, Started, get_store

logger = logging.getLogger("django_heimdall")

#: Message header carrying the lock key taken at enqueue.
LOCK_HEADER = "heimdall_lock"
#: Message header carrying a deferred task's rate-limit slot (µs, Redis clock).
SLOT_HEADER = "heimdall_slot"
#: State of a task waiting for its rate-limit slot (not ready: ``.get()`` waits).
THROTTLED = "THROTTLED"
#: A start this close to its slot is admitted at the slot and waits for it in the
#: process instead of being re-sent, seconds.
BRIEF_WAIT = 0.1


def _in_canvas(link: Any, link_error: Any, options: dict[str, Any]) -> bool:
    # Celery applies a chain's last step with chain=[]: present, though empty.
    return bool(
        link or link_error or "chain" in options or options.get("chord") or options.get("group_id")
    )


def _delay_ms(options: dict[str, Any]) -> int:
    """How long the message waits before it may start (countdown / eta)."""
    countdown = options.get("countdown")
    if countdown:
        return max(0, int(float(countdown) * 1000))
    eta = options.get("eta")
    if isinstance(eta, datetime.datetime):
        now = datetime.datetime.now(tz=eta.tzinfo or None)
        return max(0, int((eta - now).total_seconds() * 1000))
    return 0


class HeimdallTask(Task):
    """Celery task base class for unique and globally rate-limited tasks.

    Configure it on the decorator, ``@shared_task(base=HeimdallTask,
    heimdall={"unique": True})``, or in ``settings.HEIMDALL["TASKS"]``.
    """

    #: Options given on the decorator (the ``heimdall={...}`` dict).
    heimdall: dict[str, Any] | None = None
    #: A skipped duplicate is an expected outcome: log it without a traceback.
    throws = (DuplicateTaskSkipped,)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A user's throws=(...) on the decorator must not drop ours.
        if DuplicateTaskSkipped not in cls.throws:
            cls.throws = (*tuple(cls.throws), DuplicateTaskSkipped)

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
        request = self.request
        retrying = task_id is not None and task_id == request.id
        carried = getattr(request, LOCK_HEADER, None) if retrying else None
        if not policy.unique and carried is None:
            return super().apply_async(
                args, kwargs, task_id, producer, link, link_error, shadow, **options
            )
        generated = task_id is None
        task_id = task_id or uuid()
        try:
            ident = keys.identity(self, policy, args, kwargs)
        except Exception as exc:
            raise HeimdallError(f"{self.name}: the unique key cannot be computed: {exc}") from exc
        # A retry keeps the key it was enqueued with, whatever the policy says now.
        lock = carried or ident.lock
        options["headers"] = {**(options.get("headers") or {}), LOCK_HEADER: lock}

        def publish():
            return super(HeimdallTask, self).apply_async(
                args, kwargs, task_id, producer, link, link_error, shadow, **options
            )

        store = get_store()
        keep = policy.unique_wait_for_expiry
        try:
            taken = store.acquire(
                lock,
                task_id,
                policy.unique_timeout_ms + _delay_ms(options),
                self.name,
                ident.preview,
                renew=not keep,
                keep=keep,
            )
        except HeimdallUnavailable as exc:
            if not heimdall_settings.fail_open and not retrying:
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
                sender=self, task_id=task_id, holder=taken.holder, key=lock, stage="enqueue"
            )
            if policy.unique_raises and not retrying:
                raise AlreadyQueuedError(taken.holder, taken.expires_in)
            if generated and not _in_canvas(link, link_error, options):
                logger.debug("%s: duplicate of %s not published", self.name, taken.holder)
                return self.AsyncResult(taken.holder)
            # A canvas step, a retry or a caller's own task id: somebody waits for
            # this very id, so it is published and its start decides (it is skipped
            # with DuplicateTaskSkipped if the holder still runs). Never swallowed.
            logger.info(
                "%s[%s]: %s holds its lock; published, the start decides",
                self.name,
                task_id,
                taken.holder,
            )
        elif taken.status == Acquired.TAKEN:
            signals.lock_acquired.send(sender=self, task_id=task_id, key=lock)

        try:
            return publish()
        except BaseException:
            # The broker may have taken the message before failing (a timeout after
            # the write): its start then finds no lock and takes one, so releasing
            # here never loses the task, at worst lets a copy be enqueued meanwhile.
            if taken.status == Acquired.TAKEN:
                self._heimdall_release(task_id)
            raise

    # -- start and end -----------------------------------------------------------

    def __call__(self, *args, **kwargs):
        request = self.request
        if request.called_directly or getattr(request, "_heimdall_gated", False):
            # task(...) called directly (or from its own body): no lock, no limit.
            return super().__call__(*args, **kwargs)
        carried = getattr(request, LOCK_HEADER, None)
        policy = self.heimdall_policy
        if not policy.active and carried is None:
            return self.run(*args, **kwargs)
        request._heimdall_gated = True
        try:
            lock, rate_key, rates, preview = self._heimdall_plan(policy, carried, args, kwargs)
        except HeimdallError:
            # A user callable failed: give back what the enqueue took, fail clearly.
            self._heimdall_release(request.id)
            raise

        # Identifies this execution; eager retries run nested in one, so share it.
        token = (
            f"eager:{os.getpid()}"
            if request.is_eager
            else f"{request.hostname or os.uname().nodename}:{os.getpid()}:{uuid()[:8]}"
        )
        keep = policy.unique_wait_for_expiry
        store = get_store()
        try:
            decision = store.start(
                request.id,
                task_name=self.name,
                lock=lock,
                lease_ms=policy.unique_timeout_ms,
                renew=not keep,
                preview=preview,
                rates=rates,
                token=token,
                keep=keep,
                # An eager call is never re-sent: it neither holds a slot nor waits.
                reserve=not request.is_eager,
                slot_us=_carried_slot(request),
                admit_within=0 if request.is_eager else BRIEF_WAIT,
            )
        except HeimdallUnavailable as exc:
            if heimdall_settings.fail_open:
                logger.warning("%s[%s] runs unchecked: %s (fail open)", self.name, request.id, exc)
                return self.run(*args, **kwargs)
            if request.is_eager:
                raise
            logger.error("%s[%s] start deferred: %s (fail closed)", self.name, request.id, exc)
            self._heimdall_defer(args, kwargs, heimdall_settings.UNAVAILABLE_COUNTDOWN)

        if decision.taken:
            signals.lock_acquired.send(sender=self, task_id=request.id, key=lock)
        if decision.status == Started.TWIN:
            # The same message delivered again while its first execution runs: the
            # twin stores nothing (it shares the task id) and leaves the lock alone.
            logger.warning(
                "%s[%s] not run: a second delivery while the first execution runs",
                self.name,
                request.id,
            )
            raise Ignore()
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
                sender=self, task_id=request.id, key=rate_key, countdown=decision.wait
            )
            if request.is_eager:
                if lock is not None:
                    self._heimdall_release(request.id, token)
                raise RateLimitExceeded(decision.wait, rate_key)
            slot_us = decision.now_us + int(decision.wait * 1e6)
            self._heimdall_defer(args, kwargs, decision.wait, slot_us=slot_us, key=rate_key)

        if decision.wait:
            # Admitted at its slot a moment from now (it came a little early, or the
            # task before it a little late): the body starts no earlier.
            time.sleep(decision.wait)
        # When the start was admitted, on the Redis clock (µs since the epoch).
        request.heimdall_started_at = decision.now_us
        request.heimdall_lock = lock
        release = lock is not None
        try:
            return self.run(*args, **kwargs)
        except Retry:
            release = False  # the re-send (same task id) finds the lock still its own
            raise
        except Reject as exc:
            if exc.requeue:
                # The same message comes back: the lock stays, queued again for it.
                release = False
                self._heimdall_requeue(request.id, token)
            raise
        finally:
            if release:
                self._heimdall_release(request.id, token)

    def _heimdall_plan(
        self, policy: policies.Policy, carried: str | None, args: Any, kwargs: Any
    ) -> tuple[str | None, str, tuple[Any, ...], str]:
        """The lock, rate key, rates and argument preview of this start.

        The lock is the one the message carries (taken at enqueue, whatever the
        policy says now), or the policy's when it came without one."""
        try:
            ident = keys.identity(self, policy, args, kwargs)
        except Exception as exc:
            raise HeimdallError(
                f"{self.name}: option 'key'/'unique_on' cannot build the key: {exc}"
            ) from exc
        lock = carried or (ident.lock if policy.unique else None)
        rates: tuple[Any, ...] = ()
        if policy.rate_limit is not None:
            try:
                limits = policy.rate_limit.rates(
                    key=ident.rate, task=self, args=args, kwargs=kwargs
                )
            except Exception as exc:
                raise HeimdallError(
                    f"{self.name}: option 'rate_limit' failed to give a rate: {exc}"
                ) from exc
            rates = tuple((ident.rate, rate) for rate in limits)
        return lock, ident.rate, rates, ident.preview

    @property
    def heimdall_config(self) -> Any:
        """celery-heimdall's configuration object: ``lock_prefix``,
        ``unique_timeout``, ``unique_raises`` ... of the effective policy."""
        from .compat import config_of

        return config_of(self)

    def only_after(self, key: str, seconds: float) -> bool:
        """True at most once per ``seconds`` for ``key``, cluster-wide (Redis clock):
        guard a part of the body that must run less often than the task."""
        return only_after(key, seconds, owner=self.request.id or "")

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

    def _heimdall_defer(
        self, args: Any, kwargs: Any, wait: float, *, slot_us: int | None = None, key: str = ""
    ) -> None:
        """Re-send this very message (same id, same ``retries``, same lock) later, then end.

        A task waiting for a rate-limit slot carries that slot (``slot_us``, Redis
        clock) and is stored as ``THROTTLED`` meanwhile."""
        countdown = min(wait, _max_countdown(self.app))
        if slot_us is None:
            # Not a slot: spread the waiters (Redis was down for all of them).
            countdown += random.uniform(0, float(heimdall_settings.DEFER_JITTER))
        request = self.request
        again = self.signature_from_request(request, args, kwargs, countdown=countdown)
        options = dict(again.options)
        headers = dict(options.get("headers") or {})
        lock = getattr(request, LOCK_HEADER, None) or getattr(request, "heimdall_lock", None)
        if lock is not None:
            headers[LOCK_HEADER] = lock
        if slot_us is not None:
            headers[SLOT_HEADER] = slot_us
            self._heimdall_store_throttled(key, wait)
        options["headers"] = headers
        try:
            # Straight to Celery: the lock (if any) stays ours and covers the wait,
            # and the start check re-decides when the message comes back.
            super().apply_async(again.args, again.kwargs, **options)
        except BaseException:
            logger.exception("%s[%s] could not be deferred", self.name, request.id)
            self._heimdall_release(request.id)
            raise
        logger.info("%s[%s] deferred by %.3fs", self.name, request.id, countdown)
        raise Ignore()

    def _heimdall_store_throttled(self, key: str, wait: float) -> None:
        """Record the waiting task's state as ``THROTTLED`` (not STARTED)."""
        request = self.request
        if request.ignore_result or self.ignore_result:
            return
        try:
            self.update_state(state=THROTTLED, meta={"key": key, "countdown": round(wait, 3)})
        except Exception as exc:  # the result backend is down: the task still waits
            logger.warning("%s[%s] THROTTLED state not stored: %s", self.name, request.id, exc)

    def _heimdall_requeue(self, task_id: str, token: str) -> None:
        try:
            get_store().release_owned(task_id, token, requeue=True)
        except HeimdallUnavailable as exc:
            logger.warning("%s[%s] lock not marked queued: %s", self.name, task_id, exc)

    def _heimdall_release(self, task_id: str, token: str = "") -> None:
        """Give back the lock ``task_id`` holds (owner-checked, through its owner
        pointer), unless it is kept until its lease ends."""
        try:
            released = get_store().release_owned(task_id, token)
        except HeimdallUnavailable as exc:
            logger.warning(
                "%s[%s] lock not released, it expires with its lease: %s", self.name, task_id, exc
            )
            return
        if released == Released.RELEASED:
            signals.lock_released.send(sender=self, task_id=task_id, key=None)


def _carried_slot(request: Any) -> int | None:
    slot = getattr(request, SLOT_HEADER, None)
    try:
        return None if slot is None else int(slot)
    except (TypeError, ValueError):
        return None


def _max_countdown(app: Any) -> float:
    cap = float(heimdall_settings.DEFER_MAX_COUNTDOWN)
    timeout = (app.conf.broker_transport_options or {}).get("visibility_timeout")
    if timeout:
        cap = min(cap, float(timeout) / 2)
    return cap


@task_revoked.connect(weak=False)
def _release_revoked(sender: Any = None, request: Any = None, **kwargs: Any) -> None:
    """A task discarded by the worker (revoked, expired) gives its lock back."""
    if isinstance(sender, HeimdallTask) and request is not None:
        sender._heimdall_release(request.id)


@task_failure.connect(weak=False)
def _release_lost(
    sender: Any = None, task_id: Any = None, exception: Any = None, **extra: Any
) -> None:
    """A task whose process died (killed, out of memory, hard time limit) gives its
    lock back at once instead of after its lease (a kept lock stays kept)."""
    if isinstance(sender, HeimdallTask) and isinstance(
        exception, (WorkerLostError, TimeLimitExceeded)
    ):
        sender._heimdall_release(task_id)
