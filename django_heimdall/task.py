"""``HeimdallTask``: the Celery base class that applies a task's policy.

Enqueue (``apply_async``) takes the unique lock and writes its key into the
message (header ``heimdall_lock``); the start (``__call__`` on the worker) confirms
that lock, or takes one, for this execution, takes its concurrency slots and
resource tickets and counts the start against the rate limits; the end gives the
lock, slots and tickets back through its owner. Each is one store call.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import random
import threading
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
    ResourceBusy,
)
from .intervals import only_after
from .options import OptionError, parse_call_options
from .store import (
    RESOURCE_PREFIX,
    Acquired,
    Released,
    Renewed,
    Slot,
    Started,
    get_store,
    resource_semaphore,
    task_semaphore,
)

logger = logging.getLogger("django_heimdall")

#: Message header carrying the lock key taken at enqueue.
LOCK_HEADER = "heimdall_lock"
#: Message header carrying the per-call options (``apply_async(heimdall={...})``).
CALL_HEADER = "heimdall_call"
#: A busy start whose turn should come within this many seconds (in all) waits for
#: it in the worker instead of being re-sent.
BUSY_WAIT_IN_PLACE = 0.5
#: The result state of a task waiting for its rate-limit slot, a concurrency slot or
#: a resource ticket (not ready: ``.get()`` waits).
THROTTLED = "THROTTLED"
#: Message header carrying a deferred task's rate-limit slot (µs, Redis clock).
SLOT_HEADER = "heimdall_slot"
#: A start this close to its slot is admitted at the slot and waits for it in the
#: process instead of being re-sent, seconds.
BRIEF_WAIT = 0.1


def _header(request: Any, name: str) -> Any:
    """A message header of ours: a request attribute on a worker, or in
    ``request.headers`` when applied eagerly."""
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    return value


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
    """Celery task base class for unique, globally rate-limited and
    concurrency-limited tasks.

    Configure it on the decorator, ``@shared_task(base=HeimdallTask,
    heimdall={"unique": True})``, as a ``heimdall`` class attribute of a subclass,
    or in ``settings.HEIMDALL["TASKS"]``.
    """

    #: Options given on the decorator (the ``heimdall={...}`` dict).
    heimdall: dict[str, Any] | None = None
    #: A skipped duplicate or busy start is an expected outcome: logged without a traceback.
    throws = (DuplicateTaskSkipped, ResourceBusy)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A user's throws=(...) on the decorator must not drop ours.
        for exc in (DuplicateTaskSkipped, ResourceBusy):
            if exc not in cls.throws:
                cls.throws = (*tuple(cls.throws), exc)

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
        request = self.request if task_id is not None else None
        retrying = request is not None and task_id == request.id
        # Per-call options travel in the message, so that the worker applies the same
        # policy; a retry keeps those of the call it retries.
        call_raw = options.pop("heimdall", None)
        if call_raw is None and retrying:
            call_raw = _header(request, CALL_HEADER)
        policy = self.heimdall_policy.with_call_options(
            parse_call_options(call_raw) if call_raw else {}
        )
        if call_raw:
            options["headers"] = {**(options.get("headers") or {}), CALL_HEADER: dict(call_raw)}
        carried = _header(request, LOCK_HEADER) if retrying else None
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
        keep = policy.keep_until_expired
        try:
            taken = store.acquire(
                lock,
                task_id,
                policy.unique_timeout_ms + _delay_ms(options),
                self.name,
                ident.preview,
                renew=not keep,
                keep=keep,
                replace=policy.on_duplicate == "replace" and not retrying,
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
            if policy.on_duplicate == "raise" and not retrying:
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
        elif taken.status in (Acquired.TAKEN, Acquired.REPLACED):
            signals.lock_acquired.send(sender=self, task_id=task_id, key=lock)
        if taken.status == Acquired.REPLACED:
            # The queued holder lost its lock to this call: it is revoked, and if its
            # message is still delivered its start sees it was replaced.
            logger.info("%s[%s] replaces queued %s", self.name, task_id, taken.holder)
            self.app.control.revoke(taken.holder)

        try:
            return publish()
        except BaseException:
            # The broker may have taken the message before failing (a timeout after
            # the write): its start then finds no lock and takes one, so releasing
            # here never loses the task, at worst lets a copy be enqueued meanwhile.
            if taken.status in (Acquired.TAKEN, Acquired.REPLACED):
                self._heimdall_release(task_id)
            raise

    # -- start and end -----------------------------------------------------------

    def __call__(self, *args, **kwargs):
        request = self.request
        if request.called_directly or getattr(request, "_heimdall_gated", False):
            # task(...) called directly (or from its own body): no lock, no limit.
            return super().__call__(*args, **kwargs)
        carried = _header(request, LOCK_HEADER)
        try:
            policy = self.heimdall_policy.with_call_options(
                parse_call_options(_header(request, CALL_HEADER) or {})
            )
        except OptionError as exc:  # a header written by another version, or by hand
            raise HeimdallError(f"{self.name}: invalid per-call options: {exc}") from exc
        if not policy.active and carried is None:
            return self.run(*args, **kwargs)
        request._heimdall_gated = True
        try:
            lock, rate_key, rates, preview, slots = self._heimdall_plan(
                policy, carried, args, kwargs
            )
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
        store = get_store()
        queue = policy.on_busy == "defer"
        start = functools.partial(
            store.start,
            request.id,
            task_name=self.name,
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
            slot_us=_carried_slot(request),
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
                    self._heimdall_waiting(
                        {"resource": decision.holder, "countdown": decision.wait}
                    )
                time.sleep(decision.wait)
                waited += decision.wait
                decision = start()
            if waited and decision.status == Started.ADMITTED and self.track_started:
                self._heimdall_store_state("STARTED", {})
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
        if decision.status == Started.REPLACED:
            logger.info(
                "%s[%s] not run: replaced by %s while queued",
                self.name,
                request.id,
                decision.holder,
            )
            if not request.is_eager:
                self.backend.mark_as_revoked(request.id, f"replaced by {decision.holder}", request)
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

        if decision.status == Started.BUSY:
            self._heimdall_busy(policy, decision, lock, token, args, kwargs)

        if decision.wait:
            # Admitted at its slot a moment from now (it came a little early, or the
            # task before it a little late): the body starts no earlier.
            time.sleep(decision.wait)
        # When the start was admitted, on the Redis clock (µs since the epoch).
        request.heimdall_started_at = decision.now_us
        request.heimdall_lock = lock
        request.heimdall_token = token
        release = (lock is not None and policy.unique_until != "started") or bool(slots)
        beating = self._heimdall_beat(policy, token) if policy.heartbeat and release else None
        try:
            return self.run(*args, **kwargs)
        except Retry:
            release = False  # the re-send (same task id) finds the lock still its own
            if slots:
                self._heimdall_release(request.id, token, slots_only=True)
            raise
        except Ignore:
            if getattr(request, "_heimdall_deferred", False):
                # Deferred from its body (@locked): the re-sent message keeps the lock.
                release = False
                if slots:
                    self._heimdall_release(request.id, token, slots_only=True)
            raise
        except Reject as exc:
            if exc.requeue:
                # The same message comes back: the lock stays, queued again for it.
                release = False
                self._heimdall_requeue(request.id, token)
            raise
        finally:
            if beating is not None:
                beating.set()
            if release:
                self._heimdall_release(request.id, token)

    def _heimdall_beat(self, policy: policies.Policy, token: str) -> threading.Event:
        """Renew the execution's lock, slots and tickets every lease/3 in a background
        thread until the returned event is set."""
        stop = threading.Event()
        task_id, lease_ms = self.request.id, policy.unique_timeout_ms

        def beat() -> None:
            while not stop.wait(policy.unique_timeout / 3):
                try:
                    held = get_store().renew_execution(task_id, token, lease_ms)
                except HeimdallUnavailable as exc:
                    logger.warning("%s[%s] heartbeat failed: %s", self.name, task_id, exc)
                    continue
                if held != Renewed.RENEWED:
                    logger.warning(
                        "%s[%s] heartbeat: the lock is no longer this task's", self.name, task_id
                    )
                    return

        threading.Thread(target=beat, name=f"heimdall-heartbeat-{task_id}", daemon=True).start()
        return stop

    def _heimdall_plan(
        self, policy: policies.Policy, carried: str | None, args: Any, kwargs: Any
    ) -> tuple[str | None, str, tuple[Any, ...], str, tuple[Slot, ...]]:
        """The lock, rate key, rates, argument preview and semaphores of this start.

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
        slots = [
            Slot(resource_semaphore(name), tickets, heimdall_settings.RESOURCES[name])
            for name, tickets in (policy.resources or {}).items()
        ]
        if policy.concurrency_limit is not None:
            slots.append(Slot(task_semaphore(ident.rate), 1, policy.concurrency_limit))
        return lock, ident.rate, rates, ident.preview, tuple(slots)

    def _heimdall_busy(
        self, policy: policies.Policy, decision: Any, lock: str | None, token: str, args, kwargs
    ) -> None:
        """A start that found a slot or ticket taken: wait in line (re-sent, without
        using a retry, when one should be free), or skip."""
        request = self.request
        action = "defer" if policy.on_busy == "defer" and not request.is_eager else "skip"
        signals.busy.send(
            sender=self,
            task_id=request.id,
            resource=decision.holder,
            countdown=decision.wait,
            action=action,
        )
        if action == "defer":
            self._heimdall_waiting({"resource": decision.holder, "countdown": decision.wait})
            self._heimdall_defer(args, kwargs, decision.wait)
        logger.info("%s[%s] skipped: %s is busy", self.name, request.id, decision.holder)
        if lock is not None:
            self._heimdall_release(request.id, token)
        name = decision.holder or ""
        if name.startswith(RESOURCE_PREFIX):
            name = name[len(RESOURCE_PREFIX) :]
        raise ResourceBusy(name, decision.wait)

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
        """Renew the running task's lock, concurrency slots and resource tickets for
        another ``unique_timeout``, in one round trip.

        Call it from a long task body so that the lease, and with it the time a
        crashed worker blocks the task, can be short. Returns ``False`` when the task
        holds nothing or lost some of it (its lease ran out and another copy took the
        lock, or an operator released a slot).
        If Redis is unreachable it raises ``HeimdallUnavailable`` (fail closed) or
        logs a warning and returns ``True`` (fail open).
        """
        request = self.request
        token = getattr(request, "heimdall_token", None)
        if token is None and getattr(request, "heimdall_lock", None) is None:
            return False
        policy = self.heimdall_policy
        try:
            renewed = get_store().renew_execution(request.id, token or "", policy.unique_timeout_ms)
            return renewed == Renewed.RENEWED
        except HeimdallUnavailable as exc:
            if not heimdall_settings.fail_open:
                raise
            logger.warning("%s[%s] lease not renewed: %s (fail open)", self.name, request.id, exc)
            return True

    def heimdall_key(self, *args: Any, **kwargs: Any) -> str:
        """The lock key a call with these arguments takes (under the current policy)."""
        return keys.identity(self, self.heimdall_policy, args, kwargs).lock

    def heimdall_holder(self, *args: Any, **kwargs: Any) -> str | None:
        """The task id holding the lock of a call with these arguments, or ``None``."""
        return get_store().holder(self.heimdall_key(*args, **kwargs))

    def heimdall_release(self, *args: Any, **kwargs: Any) -> bool:
        """Release the lock of a call with these arguments, whoever holds it (an
        operator's tool: logged at WARNING). Returns whether a lock was released."""
        lock = self.heimdall_key(*args, **kwargs)
        store = get_store()
        holder = store.holder(lock)
        if holder is None or not store.release(lock, holder, self.name):
            return False
        logger.warning("%s: lock %s of %s released by heimdall_release()", self.name, lock, holder)
        signals.lock_released.send(sender=self, task_id=holder, key=lock)
        return True

    # -- helpers -----------------------------------------------------------------

    def _heimdall_store_state(self, state: str, meta: dict[str, Any]) -> None:
        """Record the task's state in its result (a waiting task must not look
        STARTED); best effort: the backend being down does not stop the task."""
        request = self.request
        if request.ignore_result or self.ignore_result or request.is_eager:
            return
        try:
            self.update_state(state=state, meta=meta)
        except Exception as exc:  # the result backend is down: the state is cosmetic
            logger.warning("%s[%s] state %s not stored: %s", self.name, request.id, state, exc)

    def _heimdall_waiting(self, meta: dict[str, Any]) -> None:
        """Record that the task waits (``THROTTLED``, not STARTED), and for what."""
        meta = {
            key: round(value, 3) if isinstance(value, float) else value
            for key, value in meta.items()
        }
        self._heimdall_store_state(THROTTLED, meta)

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
        lock = _header(request, LOCK_HEADER)
        if lock is not None:
            headers[LOCK_HEADER] = lock
        if slot_us is not None:
            headers[SLOT_HEADER] = slot_us
            self._heimdall_waiting({"key": key, "countdown": wait})
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
        request._heimdall_deferred = True
        raise Ignore()

    def _heimdall_requeue(self, task_id: str, token: str) -> None:
        try:
            get_store().release_owned(task_id, token, requeue=True)
        except HeimdallUnavailable as exc:
            logger.warning("%s[%s] lock not marked queued: %s", self.name, task_id, exc)

    def _heimdall_release(self, task_id: str, token: str = "", *, slots_only: bool = False) -> None:
        """Give back the lock ``task_id`` holds (owner-checked, through its owner
        pointer), unless it is kept until its lease ends, and its slots and tickets
        (only those with ``slots_only``)."""
        try:
            released = get_store().release_owned(task_id, token, slots_only=slots_only)
        except HeimdallUnavailable as exc:
            logger.warning(
                "%s[%s] lock not released, it expires with its lease: %s", self.name, task_id, exc
            )
            return
        if released == Released.RELEASED:
            signals.lock_released.send(sender=self, task_id=task_id, key=None)


def _carried_slot(request: Any) -> int | None:
    slot = _header(request, SLOT_HEADER)
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
    lock, slots and tickets back at once instead of after their lease (a kept lock
    stays kept)."""
    if isinstance(sender, HeimdallTask) and isinstance(
        exception, (WorkerLostError, TimeLimitExceeded)
    ):
        sender._heimdall_release(task_id)
