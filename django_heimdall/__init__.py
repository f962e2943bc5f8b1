"""Unique tasks, exact global rate limits and cluster-wide concurrency limits for
Celery on Redis, from Django."""

from .exceptions import (
    AlreadyQueuedError,
    DuplicateTaskSkipped,
    HeimdallError,
    HeimdallUnavailable,
    RateLimitExceeded,
    ResourceBusy,
)
from .intervals import only_after
from .locks import Semaphore, locked, mutex, semaphore
from .policies import Policy
from .ratelimits import Rate, RateLimit
from .task import HeimdallTask

__all__ = [
    "AlreadyQueuedError",
    "DuplicateTaskSkipped",
    "HeimdallError",
    "HeimdallTask",
    "HeimdallUnavailable",
    "Policy",
    "Rate",
    "RateLimit",
    "RateLimitExceeded",
    "ResourceBusy",
    "Semaphore",
    "locked",
    "mutex",
    "only_after",
    "semaphore",
]
__version__ = "0.1.0.dev0"
