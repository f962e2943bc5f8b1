"""Named semaphores and mutexes for any code: ``semaphore()``, ``mutex()``, ``@locked``.

They share the semaphores of ``HEIMDALL["RESOURCES"]`` (the ``resources`` task
option): ``semaphore("storage")`` and a task with ``resources=["storage"]`` count
against one capacity. Tickets are held under a lease, so a crashed holder frees
its ticket when the lease runs out; ``renew()`` keeps a long holder's ticket.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery.exceptions import Ignore
from kombu.utils.uuid import uuid

from .conf import heimdall_settings
from .exceptions import HeimdallUnavailable, ResourceBusy
from .execution import defer
from .heartbeat import keep_renewing
from .store import Sem, Semaphores, get_store, resource_semaphore

logger = logging.getLogger("django_heimdall")

F = TypeVar("F", bound=Callable[..., Any])

#: Lease of a ticket when none is given, seconds.
DEFAULT_LEASE = 60.0
#: Longest pause between two attempts of a blocking acquire, seconds.
MAX_PAUSE = 1.0


class SecondDelivery(Exception):
    """The ticket is held by another execution of the same holder: a second
    delivery of a task's message while the first one runs."""


def _capacity(name: str, capacity: int | None) -> int:
    if capacity is None:
        capacity = heimdall_settings.RESOURCES.get(name)
        if capacity is None:
            raise ValueError(
                f"semaphore {name!r} has no capacity: pass one, or declare it in "
                f"HEIMDALL['RESOURCES'] = {{{name!r}: {{'capacity': N}}}}"
            )
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(
            f"the capacity of semaphore {name!r} must be an int >= 1, not {capacity!r}"
        )
    return capacity


class Semaphore:
    """One holder of a ticket of a named semaphore; a context manager.

    ``acquired_at`` and ``released_at`` are the Redis clock (µs since the epoch) at
    which the store took and gave back the ticket.
    """

    def __init__(
        self,
        name: str,
        capacity: int | None = None,
        *,
        lease: float = DEFAULT_LEASE,
        blocking: bool = False,
        timeout: float | None = None,
        holder: str | None = None,
        token: str = "",
    ):
        if not lease > 0:
            raise ValueError(f"lease must be a positive number of seconds, not {lease!r}")
        self.name = name
        self.capacity = _capacity(name, capacity)
        self.lease = lease
        self.blocking = blocking
        self.timeout = timeout
        self.holder = holder or uuid()
        self.token = token  # the execution holding it ("": the holder itself)
        self.acquired_at: int | None = None
        self.released_at: int | None = None
        self.held = False
        self._semaphore = resource_semaphore(name)

    def __repr__(self) -> str:
        return f"<Semaphore {self.name!r} capacity={self.capacity} held={self.held}>"

    @property
    def _lease_ms(self) -> int:
        return max(1, int(self.lease * 1000))

    def _ops(self) -> Semaphores:
        return Semaphores(get_store())

    def acquire(self, *, queue: bool | None = None) -> None:
        """Take a ticket, or raise ``ResourceBusy``. Blocking, it waits in line
        (FIFO) with growing pauses, until ``timeout`` seconds have passed if given.
        ``queue`` keeps a place in line even when not blocking (the caller comes back)."""
        queue = self.blocking if queue is None else queue
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        pause = 0.05
        label = f"{socket.gethostname()}:{os.getpid()}"
        while True:
            try:
                result = self._ops().acquire(
                    self._semaphore,
                    self.holder,
                    tickets=1,
                    capacity=self.capacity,
                    lease_ms=self._lease_ms,
                    label=label,
                    queue=queue,
                    token=self.token,
                )
            except HeimdallUnavailable as exc:
                if not heimdall_settings.fail_open:
                    logger.error("semaphore %s not entered: %s (fail closed)", self.name, exc)
                    raise
                logger.warning(
                    "semaphore %s entered without a ticket: %s (fail open)", self.name, exc
                )
                return
            if result.status == Sem.ACQUIRED:
                self.acquired_at, self.held = result.now_us, True
                return
            if result.status == Sem.TWIN:
                raise SecondDelivery(f"{self.holder} holds {self.name} in another execution")
            left = None if deadline is None else deadline - time.monotonic()
            if not self.blocking or (left is not None and left <= 0):
                if self.blocking:
                    self._leave()
                raise ResourceBusy(self.name, result.wait)
            delay = max(0.005, min(result.wait, pause))
            time.sleep(delay if left is None else min(delay, left))
            pause = min(pause * 2, MAX_PAUSE)

    def _leave(self) -> None:
        # Unreachable Redis: its place in line lapses on its own.
        with contextlib.suppress(HeimdallUnavailable):
            self._ops().release(self._semaphore, self.holder, self.token)

    def renew(self, lease: float | None = None) -> bool:
        """Extend the lease to ``lease`` (default: the one given) seconds from now;
        ``False`` if the ticket was lost (its lease ran out, or an operator released it)."""
        if lease is not None:
            self.lease = lease
        if not self.held:
            return False
        return self._ops().renew(self._semaphore, self.holder, self._lease_ms, self.token)

    def release(self) -> bool:
        """Give the ticket back (owner-checked); ``False`` if it was no longer held."""
        if not self.held:
            return False
        self.held = False
        try:
            result = self._ops().release(self._semaphore, self.holder, self.token)
        except HeimdallUnavailable as exc:
            logger.warning("semaphore %s not released, its lease ends it: %s", self.name, exc)
            return False
        self.released_at = result.now_us
        if result.status != Sem.RELEASED:
            logger.warning(
                "semaphore %s: the ticket of %s was gone at release (lease ran out?)",
                self.name,
                self.holder,
            )
        return result.status == Sem.RELEASED

    def __enter__(self) -> Semaphore:
        self.acquire()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def semaphore(
    name: str,
    capacity: int | None = None,
    *,
    lease: float = DEFAULT_LEASE,
    blocking: bool = False,
    timeout: float | None = None,
) -> Semaphore:
    """A ticket of the named semaphore of ``capacity`` (default: its capacity in
    ``HEIMDALL["RESOURCES"]``), held under ``lease`` seconds, for a ``with`` block.

    Raises ``ResourceBusy`` on entry when no ticket is free (``blocking=False``) or
    none came free within ``timeout`` seconds (``blocking=True``)."""
    return Semaphore(name, capacity, lease=lease, blocking=blocking, timeout=timeout)


def mutex(
    name: str, *, lease: float = DEFAULT_LEASE, blocking: bool = False, timeout: float | None = None
) -> Semaphore:
    """A semaphore of capacity 1: at most one holder at a time, cluster-wide."""
    return Semaphore(name, 1, lease=lease, blocking=blocking, timeout=timeout)


def locked(
    name: str,
    capacity: int | None = 1,
    *,
    retry: bool = True,
    lease: float | None = None,
    countdown: float | None = None,
) -> Callable[[F], F]:
    """Run a bound task's body only while holding a ticket of semaphore ``name``.

    Place it under ``@shared_task(bind=True)``. With no ticket free and ``retry``,
    the task goes back to the queue in line (FIFO): the same message is re-sent,
    without using a retry. With ``retry=False`` it raises ``ResourceBusy``.
    ``lease``: seconds (default: a HeimdallTask's ``unique_timeout``, else one hour).
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(task: Any, *args: Any, **kwargs: Any) -> Any:
            from .task import HeimdallTask

            request = task.request
            heimdall = isinstance(task, HeimdallTask)
            hold = lease or (task.heimdall_policy.unique_timeout if heimdall else 3600.0)
            # The task id names the holder, so a re-sent task keeps its place in line;
            # a token per execution, so a second delivery neither runs beside the
            # first nor gives back its ticket.
            holder = f"locked:{request.id}" if request.id else None
            ticket = Semaphore(name, capacity, lease=hold, holder=holder, token=uuid())
            runs_later = retry and not request.is_eager and not request.called_directly
            try:
                ticket.acquire(queue=runs_later)
            except SecondDelivery:
                logger.warning(
                    "%s[%s] not run: another delivery of it holds %s", task.name, request.id, name
                )
                raise Ignore() from None
            except ResourceBusy as busy:
                if not runs_later:
                    raise
                wait = countdown if countdown is not None else max(0.5, busy.retry_after or 0)
                defer(task, args, kwargs, wait)
            except HeimdallUnavailable:  # fail closed (logged): like a gated start
                if not runs_later:
                    raise
                defer(task, args, kwargs, heimdall_settings.UNAVAILABLE_COUNTDOWN, jitter=True)
            # With the task's heartbeat on, the ticket is renewed like its lock.
            beating = None
            if heimdall and task.heimdall_policy.heartbeat:
                what = f"{task.name}[{request.id}] ticket of {name}"
                beating = keep_renewing(hold / 3, ticket.renew, what)
            try:
                return func(task, *args, **kwargs)
            finally:
                if beating is not None:
                    beating.set()
                ticket.release()

        return wrapper  # type: ignore[return-value]

    return decorate
