"""Unique tasks and exact global rate limits for Celery on Redis, from Django."""

from .exceptions import (
    AlreadyQueuedError,
    DuplicateTaskSkipped,
    HeimdallError,
    HeimdallUnavailable,
    RateLimitExceeded,
)
from .intervals import only_after
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
    "only_after",
]
__version__ = "0.1.0.dev0"
