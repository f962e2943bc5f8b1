"""Exceptions raised by django-heimdall.

Constructors take their attributes positionally so that Celery can rebuild them
from a stored task result (it calls ``cls(*exc.args)``).
"""

from __future__ import annotations


class HeimdallError(Exception):
    """Base class of every django-heimdall error."""


class AlreadyQueuedError(HeimdallError):
    """A unique task is already queued or running (raised when ``unique_raises``)."""

    def __init__(self, likely_culprit: str | None = None, expires_in: float | None = None):
        super().__init__(likely_culprit, expires_in)
        #: Task id of the current lock holder.
        self.likely_culprit = likely_culprit
        #: Seconds until the holder's lock expires on its own.
        self.expires_in = expires_in

    def __str__(self) -> str:
        return (
            f"task is already queued or running as {self.likely_culprit} "
            f"(lock expires in {self.expires_in}s)"
        )


class DuplicateTaskSkipped(HeimdallError):
    """A task reached a worker while another copy held its lock, so it did not run.

    This is the stored outcome of a duplicate that bypassed ``apply_async``
    (``send_task``, celery beat, another app) or was published as part of a canvas.
    """

    def __init__(self, holder: str | None = None, key: str | None = None):
        super().__init__(holder, key)
        self.holder = holder
        self.key = key

    def __str__(self) -> str:
        return f"skipped: duplicate of running or queued task {self.holder} (lock {self.key})"


class RateLimitExceeded(HeimdallError):
    """An eagerly applied task is over its global rate limit.

    Only raised in eager mode; on a worker an over-limit task is deferred instead.
    """

    def __init__(self, retry_after: float | None = None, key: str | None = None):
        super().__init__(retry_after, key)
        self.retry_after = retry_after
        self.key = key

    def __str__(self) -> str:
        return f"rate limit {self.key} exceeded; next slot in {self.retry_after:.3f}s"


class ResourceBusy(HeimdallError):
    """No concurrency slot or resource ticket could be had.

    Raised by ``semaphore()``/``mutex()`` (and ``@locked(retry=False)``) when nothing
    could be had, and stored as the result of a task with ``on_busy="skip"`` that
    did not run, so that its ``AsyncResult.get()`` raises it.
    """

    def __init__(self, name: str | None = None, retry_after: float | None = None):
        super().__init__(name, retry_after)
        #: The busy semaphore: ``"task:<key>"`` for concurrency_limit, else a resource name.
        self.name = name
        #: Seconds until a ticket should be free (an estimate from recent hold times).
        self.retry_after = retry_after

    def __str__(self) -> str:
        wait = (
            "" if self.retry_after is None else f"; one should be free in ~{self.retry_after:.2f}s"
        )
        return f"{self.name} is busy: no slot or ticket is free{wait}"


class HeimdallUnavailable(HeimdallError):
    """Redis could not be reached and ``ON_REDIS_ERROR`` is ``"fail_closed"``."""
