"""Renewing leases from a background thread while a long body runs (the
``heartbeat`` option): the task's lock, slots and tickets, and ``@locked``'s ticket."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .exceptions import HeimdallUnavailable

logger = logging.getLogger("django_heimdall")


def keep_renewing(every: float, renew: Callable[[], bool], what: str) -> threading.Event:
    """Call ``renew`` every ``every`` seconds in a daemon thread until the returned
    event is set, or until ``renew`` returns ``False`` (the lease was lost: renewing
    further would not give it back). ``what`` names the holder in log lines."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                held = renew()
            except HeimdallUnavailable as exc:
                logger.warning("%s: heartbeat failed: %s", what, exc)
                continue
            if not held and not stop.is_set():
                logger.warning("%s: heartbeat: the lease is no longer this holder's", what)
                return

    threading.Thread(target=beat, name=f"heimdall-heartbeat-{what}", daemon=True).start()
    return stop
