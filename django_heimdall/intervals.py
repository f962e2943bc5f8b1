"""``only_after``: run a piece of code at most once per interval, cluster-wide."""

from __future__ import annotations

import logging

from .conf import heimdall_settings
from .exceptions import HeimdallUnavailable
from .store import get_store

logger = logging.getLogger("django_heimdall")


def only_after(key: str, seconds: float, *, owner: str = "") -> bool:
    """True at most once per ``seconds`` for ``key``, across every process.

    The first call returns True and starts an interval on the Redis clock; calls
    until it ends return False. One round trip. ``owner`` (e.g. a task id) is
    recorded for inspection. If Redis is unreachable this raises
    ``HeimdallUnavailable`` (fail closed) or logs a warning and returns True
    (fail open).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"seconds must be a positive number, not {seconds!r}")
    try:
        return get_store().only_after(key, seconds, owner)
    except HeimdallUnavailable as exc:
        if not heimdall_settings.fail_open:
            raise
        logger.warning("only_after(%r) answered True unchecked: %s (fail open)", key, exc)
        return True
