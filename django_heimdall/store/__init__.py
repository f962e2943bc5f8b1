"""The one place that talks to Redis.

``scripts`` loads and calls the Lua scripts, ``layout`` names the keys,
``decisions`` holds the hot-path decisions and ``live`` the listings for the
admin and the command. Everything else reaches Redis through :func:`get_store`.
"""

from __future__ import annotations

import threading

from ..conf import heimdall_settings, on_reload
from .decisions import Acquire, Acquired, Released, Renewed, Slot, Start, Started, Store
from .live import (
    LiveState,
    LockInfo,
    LockPage,
    RatePage,
    RateWindow,
    SemaphoreInfo,
    SemaphorePage,
    SlotHolder,
)
from .scripts import UNAVAILABLE_ERRORS
from .semaphores import (
    RESOURCE_PREFIX,
    TASK_PREFIX,
    Sem,
    SemAcquire,
    Semaphores,
    resource_semaphore,
    task_semaphore,
)

__all__ = [
    "RESOURCE_PREFIX",
    "TASK_PREFIX",
    "UNAVAILABLE_ERRORS",
    "Acquire",
    "Acquired",
    "LiveState",
    "LockInfo",
    "LockPage",
    "RatePage",
    "RateWindow",
    "Released",
    "Renewed",
    "Sem",
    "SemAcquire",
    "SemaphoreInfo",
    "SemaphorePage",
    "Semaphores",
    "Slot",
    "SlotHolder",
    "Start",
    "Started",
    "Store",
    "get_store",
    "resource_semaphore",
    "task_semaphore",
]

_store: Store | None = None
_store_lock = threading.Lock()


def get_store() -> Store:
    """The store of the configured cache alias and key prefix."""
    store = _store
    if store is None:
        with _store_lock:
            store = _store
            if store is None:
                store = _set(Store(heimdall_settings.CACHE, heimdall_settings.KEY_PREFIX))
    return store


def _set(store: Store | None) -> Store | None:
    global _store
    _store = store
    return store


@on_reload
def _forget_store() -> None:
    _set(None)
