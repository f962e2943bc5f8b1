"""Live state for the admin and ``manage.py heimdall``: listings and bulk changes.

Not on any task's hot path; a page may take a few round trips. Listings read the
indexes the decision scripts keep, never ``KEYS`` or ``SCAN``.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from typing import Any, NamedTuple

from . import scripts
from .decisions import Store
from .semaphores import RESOURCE_PREFIX, TASK_PREFIX, Sem, Semaphores


class LockInfo(NamedTuple):
    """A held lock, as the admin and the command show it."""

    identity: str
    owner: str
    task: str
    phase: str  # "queued" or "running"
    since: datetime.datetime
    args: str
    expires_in: float  # seconds


class LockPage(NamedTuple):
    total: int
    locks: list[LockInfo]


class LimitState(NamedTuple):
    """One limit of a rate-limit key and what its current window counted."""

    times: int
    per: float  # seconds
    starts: int  # admissions in the window that ends now


class RateWindow(NamedTuple):
    """The state of one rate-limit key on the Redis clock."""

    identity: str
    task: str
    times: int  # the first limit's (see ``limits`` for all of them)
    per: float  # seconds
    starts: int  # admissions counted in the first limit's window that ends now
    next_slot_in: float  # seconds until a start arriving now may run (0: now)
    limits: tuple[LimitState, ...] = ()
    waiting: int = 0  # tasks holding a reservation (waiting for their slot)


class RatePage(NamedTuple):
    total: int
    windows: list[RateWindow]


class SlotHolder(NamedTuple):
    """One holder of a semaphore's tickets: a task execution or an ad-hoc holder."""

    holder: str  # task id, or the id of a semaphore()/mutex() holder
    tickets: int
    since: datetime.datetime
    token: str  # the execution holding it (what a release is checked against)
    label: str  # task name, or where an ad-hoc holder runs
    expires_in: float  # seconds of lease left


class SemaphoreInfo(NamedTuple):
    """A semaphore in use: a task's concurrency slots, or a shared resource."""

    name: str
    kind: str  # "task" (concurrency_limit) or "resource"
    key: str  # the task key or resource name
    capacity: int
    used: int
    waiting: int  # places in the FIFO line
    mean_hold: float | None  # seconds, over recent releases
    holders: list[SlotHolder]


class SemaphorePage(NamedTuple):
    total: int
    semaphores: list[SemaphoreInfo]


def _datetime(ms: Any) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(ms or 0) / 1000, tz=datetime.timezone.utc)


class LiveState:
    """Reads and owner-checked bulk operations over one store."""

    def __init__(self, store: Store):
        self.store = store
        self.keys = store.keys

    @contextlib.contextmanager
    def _redis(self) -> Iterator[Any]:
        try:
            yield self.store.client
        except scripts.UNAVAILABLE_ERRORS as exc:
            raise scripts.unavailable(self.store.alias, exc) from exc

    def now_ms(self) -> int:
        """The Redis clock, in ms."""
        with self._redis() as client:
            sec, usec = client.time()
        return sec * 1000 + usec // 1000

    def task_names(self) -> list[str]:
        """Every task holding a live lock under this prefix."""
        now = self.now_ms()
        with self._redis() as client:
            names = client.zrangebyscore(self.keys.tasks, f"({now}", "+inf")
        return sorted(scripts.text(name) for name in names)

    def lock_counts(self, tasks: list[str]) -> dict[str, int]:
        """Live locks per task."""
        now = self.now_ms()
        with self._redis() as client:
            pipe = client.pipeline(transaction=False)
            for task in tasks:
                pipe.zcount(self.keys.index(task), f"({now}", "+inf")
            return dict(zip(tasks, pipe.execute(), strict=True))

    def locks_page(self, tasks: list[str], offset: int, limit: int) -> LockPage:
        """Live locks of ``tasks`` (in that order, then by lease end), one page."""
        if not tasks:
            return LockPage(0, [])
        keys = [self.keys.index(task) for task in tasks]
        _now, total, rows = self.store.call("locks_page", keys, [offset, limit])
        return LockPage(total, [self._lock_info(*row) for row in rows])

    def _lock_info(
        self, key: Any, owner: Any, task: Any, phase: Any, since: Any, args: Any, pttl: Any
    ) -> LockInfo:
        return LockInfo(
            identity=self.keys.identity_of(scripts.text(key)),
            owner=scripts.text(owner),
            task=scripts.text(task),
            phase=scripts.text(phase),
            since=_datetime(scripts.text(since)),
            args=scripts.text(args) or "",
            expires_in=max(0, int(pttl)) / 1000,
        )

    def lock_info(self, identity: str) -> LockInfo | None:
        """The lock of ``identity``, if it is held."""
        key = self.keys.lock(identity)
        with self._redis() as client:
            pipe = client.pipeline(transaction=False)
            pipe.hmget(key, "owner", "task", "phase", "since", "args")
            pipe.pttl(key)
            fields, pttl = pipe.execute()
        if fields[0] is None:
            return None
        return self._lock_info(key, *fields, pttl)

    def lock_by_owner(self, task_id: str) -> LockInfo | None:
        """The lock held by task ``task_id``, if any."""
        with self._redis() as client:
            key = client.get(self.keys.owner(task_id))
        if key is None:
            return None
        info = self.lock_info(self.keys.identity_of(scripts.text(key)))
        return info if info is not None and info.owner == task_id else None

    def release(self, identity: str, owner: str, task_name: str) -> bool:
        return self.store.release(identity, owner, task_name)

    def release_task(self, task_name: str, cutoff_ms: int, batch: int = 1000) -> int:
        """Release every lock of ``task_name`` taken at or before ``cutoff_ms`` (Redis
        clock), in batches so that Redis is never blocked for long."""
        released, rank = 0, 0
        while True:
            done, kept, seen = self.store.call(
                "release_task",
                [self.keys.index(task_name)],
                [cutoff_ms, rank, batch, self.keys.owner_prefix, task_name],
            )
            released += done
            rank += kept
            if seen < batch:
                return released

    def rate_windows(self, offset: int = 0, limit: int = 100) -> RatePage:
        """Rate-limit keys with an admission in their current window or a waiting
        task, one page."""
        now, total, rows = self.store.call(
            "rate_windows",
            [self.keys.rates, self.keys.rate_details],
            [offset, limit, self.keys.rate_prefix, self.keys.rate_queue_prefix],
        )
        now = int(now)
        windows = []
        for identity, details, starts, waiting, slot in rows:
            task, *numbers = scripts.text(details).split("\t")
            limits = tuple(
                LimitState(int(times), int(window) / 1e6, int(count))
                for times, window, count in zip(numbers[0::2], numbers[1::2], starts, strict=False)
            )
            first = limits[0] if limits else LimitState(0, 0.0, 0)
            windows.append(
                RateWindow(
                    scripts.text(identity),
                    task,
                    first.times,
                    first.per,
                    first.starts,
                    max(0, int(slot) - now) / 1e6,
                    limits,
                    int(waiting),
                )
            )
        return RatePage(int(total), windows)

    def reset_rate(self, identity: str) -> bool:
        """Forget the starts counted for ``identity``: its window is empty again (it
        stays listed, with 0 starts, until the window would have ended)."""
        with self._redis() as client:
            return bool(client.delete(self.keys.rate(identity)))

    def semaphores(self, offset: int = 0, limit: int = 100) -> SemaphorePage:
        """Semaphores with live holders or waiters, one page."""
        return self._semaphores(offset, limit)

    def semaphore(self, name: str) -> SemaphoreInfo | None:
        """Semaphore ``name``, if it has live holders or waiters."""
        found = self._semaphores(0, 1, name).semaphores
        return found[0] if found else None

    def _semaphores(self, offset: int, limit: int, name: str = "") -> SemaphorePage:
        _now, total, rows = self.store.call(
            "slots_page", [self.keys.semaphores], [self.keys.key_tag, offset, limit, name]
        )
        return SemaphorePage(int(total), [_semaphore_info(*row) for row in rows])

    def release_slot(self, name: str, holder: str, token: str) -> bool:
        """Give back ``holder``'s tickets of ``name`` if execution ``token`` still
        holds them (an operator freeing a stuck slot)."""
        result = Semaphores(self.store).release(name, holder, token, leave=False)
        return result.status == Sem.RELEASED


def _semaphore_info(
    name: Any, capacity: Any, used: Any, waiting: Any, mean: Any, holders: Any
) -> SemaphoreInfo:
    name = scripts.text(name)
    kind, key = "resource", name
    for prefix, label in ((TASK_PREFIX, "task"), (RESOURCE_PREFIX, "resource")):
        if name.startswith(prefix):
            kind, key = label, name[len(prefix) :]
    mean = scripts.text(mean)
    return SemaphoreInfo(
        name=name,
        kind=kind,
        key=key,
        capacity=int(capacity),
        used=int(used),
        waiting=int(waiting),
        mean_hold=int(mean) / 1000 if mean else None,
        holders=[
            SlotHolder(
                holder=scripts.text(holder),
                tickets=int(tickets),
                since=_datetime(scripts.text(since)),
                token=scripts.text(token),
                label=scripts.text(label),
                expires_in=max(0, int(pttl)) / 1000,
            )
            for holder, tickets, since, token, label, pttl in holders
        ],
    )
