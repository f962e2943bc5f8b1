"""Named semaphores: concurrency slots of tasks, shared resources, ad-hoc holders.

A task's slots are taken and given back by the start and end scripts (see
``decisions``); this module names the semaphores and takes, renews and gives back
tickets for holders outside a task start (``semaphore()``, ``mutex()``, ``@locked``).
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from .decisions import Store

#: Semaphore names: one namespace per kind, so a task key never meets a resource.
TASK_PREFIX = "task:"
RESOURCE_PREFIX = "resource:"


def task_semaphore(identity: str) -> str:
    """The semaphore of ``concurrency_limit`` for a task (or a task's key)."""
    return f"{TASK_PREFIX}{identity}"


def resource_semaphore(name: str) -> str:
    """The semaphore of resource ``name`` (``HEIMDALL["RESOURCES"]``, ``semaphore()``)."""
    return f"{RESOURCE_PREFIX}{name}"


class Sem(IntEnum):
    """Outcomes of the ad-hoc semaphore scripts."""

    ACQUIRED = 60
    BUSY = 61
    RELEASED = 62
    NOT_HOLDER = 63
    RENEWED = 64
    LOST = 65
    TWIN = 66  # held by another execution of the same holder


class SemAcquire(NamedTuple):
    status: Sem
    wait: float  # seconds until tickets should be free (BUSY)
    now_us: int  # the Redis clock when it was decided


class SemRelease(NamedTuple):
    status: Sem
    now_us: int


class Semaphores:
    """Ticket operations on the semaphores of one store, one script call each."""

    def __init__(self, store: Store):
        self.store = store
        self.keys = store.keys

    def acquire(
        self,
        name: str,
        holder: str,
        *,
        tickets: int,
        capacity: int,
        lease_ms: int,
        label: str = "",
        queue: bool = False,
        token: str = "",
    ) -> SemAcquire:
        """Take ``tickets`` of ``name`` for execution ``token`` of ``holder`` (the
        holder id itself when empty); when busy and ``queue``, keep a place in the
        FIFO line."""
        keys = self.keys
        status, wait_ms, now_us = self.store.call(
            "sem_acquire",
            [
                *keys.semaphore(name),
                keys.semaphores,
                keys.semaphore_sequence,
                keys.slots(holder),
            ],
            [name, holder, tickets, capacity, lease_ms, label, "1" if queue else "0", token],
        )
        return SemAcquire(Sem(status), max(0, int(wait_ms)) / 1000, int(now_us))

    def release(self, name: str, holder: str, token: str = "", *, leave: bool = True) -> SemRelease:
        """Give back ``holder``'s tickets of ``name`` if ``token`` (the holder id
        itself when empty) still holds them; ``leave`` also drops its place in line."""
        keys = self.keys
        status, now_us = self.store.call(
            "sem_release",
            [*keys.semaphore(name), keys.slots(holder)],
            [holder, token, "1" if leave else "0"],
        )
        return SemRelease(Sem(status), int(now_us))

    def renew(self, name: str, holder: str, lease_ms: int, token: str = "") -> bool:
        """Extend the lease of execution ``token`` of ``holder`` (the holder id itself
        when empty) on ``name`` to ``lease_ms`` from now; False if it ran out."""
        status = self.store.call(
            "sem_renew",
            [*self.keys.semaphore(name), self.keys.semaphores],
            [name, holder, lease_ms, token],
        )
        return status == Sem.RENEWED
