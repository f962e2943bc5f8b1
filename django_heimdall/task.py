"""``HeimdallTask``: the Celery base class that applies a task's policy.

Enqueue (``apply_async``) takes the unique lock and writes its key into the
message (header ``heimdall_lock``); the start (``__call__`` on the worker, see
``execution``) confirms that lock, or takes one, for this execution, takes its
concurrency slots and resource tickets and counts the start against the rate
limits; the end gives the lock, slots and tickets back through its owner. Each is
one store call.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

from celery import Task, states
from celery.exceptions import Ignore
from celery.result import EagerResult
from kombu.utils.uuid import uuid

from . import execution, keys, policies, signals
from .conf import heimdall_settings
from .exceptions import (
    AlreadyQueuedError,
    DuplicateTaskSkipped,
    HeimdallError,
    HeimdallUnavailable,
    ResourceBusy,
)
from .intervals import only_after
from .messages import CALL_HEADER, LOCK_HEADER, delay_ms, header, in_canvas
from .options import OPTIONS, parse_call_options
from .store import Acquired, Renewed, get_store

logger = logging.getLogger("django_heimdall")

#: Results of the latest unique tasks applied eagerly in this process: Celery stores
#: none, and a duplicate's ``.get()`` must not wait for ever.
_EAGER_RESULTS: OrderedDict[str, EagerResult] = OrderedDict()
_EAGER_KEPT = 1000
_eager_lock = threading.Lock()


def _remember_eager(result: Any) -> Any:
    if isinstance(result, EagerResult):
        with _eager_lock:
            _EAGER_RESULTS[result.id] = result
            while len(_EAGER_RESULTS) > _EAGER_KEPT:
                _EAGER_RESULTS.popitem(last=False)
    return result


def _replaced_request(app: Any, task_id: str | None) -> Any:
    """The request of the running task that a message with ``task_id`` replaces
    (``Task.replace`` publishes the replacement under the same id), or ``None``."""
    if task_id is None:  # a plain delay(): no stack to look at on the enqueue path
        return None
    request = getattr(app.current_worker_task, "request", None)
    replacing = getattr(request, "_heimdall_replacing", False)
    return request if replacing and request.id == task_id else None


class HeimdallTask(Task):
    """Celery task base class for unique, globally rate-limited and
    concurrency-limited tasks.

    Configure it on the decorator, ``@shared_task(base=HeimdallTask,
    heimdall={"unique": True})``, as a ``heimdall`` class attribute of a subclass,
    or in ``settings.HEIMDALL["TASKS"]``.
    """

    #: Options given on the decorator (the ``heimdall={...}`` dict), on top of
    #: those of the ``HeimdallTask`` subclasses it derives from.
    heimdall: dict[str, Any] | None = None
    #: A skipped duplicate or busy start is an expected outcome: logged without a traceback.
    throws = (DuplicateTaskSkipped, ResourceBusy)
    #: A lost worker process gives the message's lock back to its redelivery.
    Request = "django_heimdall.execution:HeimdallRequest"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The decorator's heimdall={...} (a class attribute of the class Celery makes)
        # adds to a base class's options instead of hiding them.
        own, inherited = cls.__dict__.get("heimdall"), super(cls, cls).heimdall
        if isinstance(own, dict) and isinstance(inherited, dict) and inherited:
            # An option given here in either spelling replaces the base's.
            given = set(own) | {OPTIONS[n].legacy_of for n in own if n in OPTIONS}
            cls.heimdall = {**{k: v for k, v in inherited.items() if k not in given}, **own}
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
        replaced = _replaced_request(self.app, task_id)
        # A replacement (Task.replace) of this very task is a new call, not a retry.
        retrying = request is not None and task_id == request.id and replaced is None
        # Per-call options travel in the message, so that the worker applies the same
        # policy; a retry keeps those of the call it retries.
        call_raw = options.pop("heimdall", None)
        if call_raw is None and retrying:
            call_raw = header(request, CALL_HEADER)
        policy = self.heimdall_policy.with_call_options(
            parse_call_options(call_raw) if call_raw else {}
        )
        if call_raw:
            options["headers"] = {**(options.get("headers") or {}), CALL_HEADER: dict(call_raw)}
        carried = header(request, LOCK_HEADER) if retrying else None
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
            return _remember_eager(
                super(HeimdallTask, self).apply_async(
                    args, kwargs, task_id, producer, link, link_error, shadow, **options
                )
            )

        store = get_store()
        keep = policy.keep_until_expired
        try:
            taken = store.acquire(
                lock,
                task_id,
                policy.unique_timeout_ms + delay_ms(options),
                self.name,
                ident.preview,
                renew=not keep,
                keep=keep,
                replace=policy.on_duplicate == "replace" and not retrying,
                retry=retrying or replaced is not None,
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
            if generated and not in_canvas(link, link_error, options):
                logger.debug("%s: duplicate of %s not published", self.name, taken.holder)
                return self._holder_result(taken.holder)
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
        elif replaced is not None and lock == getattr(replaced, "heimdall_lock", None):
            # Replaced by a call of the same key: the lock is queued for it (above),
            # and the replaced execution leaves it alone.
            replaced._heimdall_handed_over = True
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
                execution.release(self, task_id, lock=lock)
            raise

    def _holder_result(self, holder: str) -> Any:
        """The result a duplicate returns: the holder's."""
        if not self.app.conf.task_always_eager:
            return self.AsyncResult(holder)
        with _eager_lock:
            ran = _EAGER_RESULTS.get(holder)
        # Still running (a task applying itself), or applied in another process.
        return ran or EagerResult(holder, None, states.PENDING)

    # -- start and end -----------------------------------------------------------

    def on_replace(self, sig: Any) -> Any:
        request = self.request
        token = getattr(request, "heimdall_token", None)
        if token is not None:
            # The replacement has this task id: its start must not find this
            # execution's concurrency slots and tickets still held (a "twin").
            execution.release(self, request.id, token, slots_only=True)
        # While set, the replacement's enqueue (same task id) takes a lock of its own
        # instead of re-sending this one as a retry would.
        request._heimdall_replacing = True
        try:
            return super().on_replace(sig)
        finally:
            request._heimdall_replacing = False

    def __call__(self, *args, **kwargs):
        request = self.request
        if request.called_directly or getattr(request, "_heimdall_gated", False):
            # task(...) called directly (or from its own body): no lock, no limit.
            return super().__call__(*args, **kwargs)
        try:
            return execution.run(self, args, kwargs)
        except Ignore as exc:
            # Celery copies the code positions of every frame an Ignore passed
            # through into two ExceptionInfos it never shows (about 1 ms a deferral
            # with the engine's frames in it): end its traceback here.
            raise exc.with_traceback(None) from None

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
        policy = execution.start_policy(self)  # with this call's own options
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
