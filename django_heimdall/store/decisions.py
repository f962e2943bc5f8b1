"""The hot-path decisions: take, confirm, renew and give back locks, count starts,
take and give back concurrency slots and resource tickets.

Each method is one script call (one round trip) that reads the Redis clock,
decides and writes atomically.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Any, NamedTuple

from ..ratelimits import Rate
from . import scripts
from .layout import Layout


class Acquired(IntEnum):
    """Outcome of taking a lock at enqueue."""

    TAKEN = 10
    OWNED = 11  # already this owner's (a retry re-sending itself)
    HELD = 12  # another task holds it
    REPLACED = 13  # taken from a holder that was still queued


class Started(IntEnum):
    """Outcome of the start check."""

    ADMITTED = 20
    DUPLICATE = 21
    THROTTLED = 22
    TWIN = 23  # a second delivery of a message whose execution still runs
    BUSY = 25  # a concurrency slot or resource ticket is not free
    REPLACED = 29  # replaced by a newer call while it was queued (holder: the new one)


class Released(IntEnum):
    RELEASED = 30
    NOT_OWNER = 31
    KEPT = 32  # kept until its lease ends (unique_until "expired")
    REQUEUED = 33  # kept for the same message, queued again


class Renewed(IntEnum):
    RENEWED = 40
    LOST = 41
    NOTHING = 42  # the execution holds nothing (renew_execution)


class Slot(NamedTuple):
    """A semaphore a task start asks for: ``tickets`` of ``name``, which has ``capacity``."""

    name: str
    tickets: int
    capacity: int


class Acquire(NamedTuple):
    status: Acquired
    holder: str
    expires_in: float  # seconds left of the holder's lease


class Start(NamedTuple):
    status: Started
    holder: str | None  # the lock's holder, or the busy semaphore's name (BUSY)
    # seconds: until the holder's lease ends (DUPLICATE), until the slot (THROTTLED), or
    # until the admitted instant when it lies a moment ahead (ADMITTED)
    wait: float
    now_us: int  # the Redis clock when the decision was taken; ADMITTED: the admitted µs
    taken: bool = False  # the lock was free and this start took it


class Store:
    """Locks and rate-limit windows of one cache alias under one key prefix."""

    def __init__(self, alias: str, prefix: str):
        self.alias = alias
        self.keys = Layout(prefix)
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The writable redis-py client of the cache alias (its pool is shared)."""
        if self._client is None:
            from django.core.exceptions import ImproperlyConfigured
            from django_redis import get_redis_connection

            try:
                self._client = get_redis_connection(self.alias, write=True)
            except (NotImplementedError, AttributeError) as exc:
                raise ImproperlyConfigured(
                    f"[heimdall.E004] django-heimdall needs a django-redis cache, but "
                    f"HEIMDALL['CACHE'] names {self.alias!r}, which is not one "
                    "(run 'manage.py check'). Set its BACKEND to "
                    "'django_redis.cache.RedisCache'."
                ) from exc
        return self._client

    def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return scripts.call(self.client, self.alias, name, keys, args)

    def acquire(
        self,
        identity: str,
        owner: str,
        lease_ms: int,
        task_name: str,
        preview: str = "",
        renew: bool = True,
        keep: bool = False,
        replace: bool = False,
        retry: bool = False,
    ) -> Acquire:
        """Take the lock of ``identity`` for ``owner``, or report its holder.

        ``keep``: the lock outlives the task, until its lease ends. ``replace``: a
        holder that is still queued loses the lock to ``owner``. ``retry``: the
        running execution of ``owner`` re-sends itself (its lock is queued again)."""
        keys = self.keys
        status, holder, pttl = self.call(
            "acquire",
            keys.lock_keys(identity, task_name, owner),
            [
                owner,
                lease_ms,
                _flag(renew),
                task_name,
                preview,
                _flag(keep),
                _flag(replace),
                keys.owner_prefix,
                _flag(retry),
            ],
        )
        return Acquire(Acquired(status), scripts.text(holder), max(0, pttl) / 1000)

    def start(
        self,
        owner: str,
        *,
        task_name: str,
        lock: str | None = None,
        lease_ms: int = 0,
        renew: bool = True,
        preview: str = "",
        rates: tuple[tuple[str, Rate], ...] = (),
        token: str = "",
        until: str = "finished",
        slots: tuple[Slot, ...] = (),
        queue: bool = True,
        reserve: bool = True,
        slot_us: int | None = None,
        admit_within: float = 0.0,
    ) -> Start:
        """Decide whether ``owner`` may start: lock ``lock`` (an identity, if unique)
        for the execution ``token``, take every semaphore of ``slots`` (all or
        nothing; when busy, wait in line if ``queue``) and admit one start under every
        ``(identity, rate)`` in ``rates`` (one identity, several limits that all hold).

        Over a limit, ``owner`` reserves the earliest slot that keeps every limit,
        after the key's other waiters (not with ``reserve=False``); ``slot_us`` is
        the slot a re-sent message carries, so that it keeps its place even if its
        reservation was forgotten. A slot at most ``admit_within`` seconds away is
        admitted at once, logged at that slot: ``now_us`` is the slot and ``wait``
        the time left until it, which the caller waits before starting."""
        keys: list[str] = []
        if lock is not None:
            keys += self.keys.lock_keys(lock, task_name, owner)
        if slots:
            keys += [self.keys.semaphores, self.keys.semaphore_sequence, self.keys.slots(owner)]
            for slot in slots:
                keys += self.keys.semaphore(slot.name)
        identities = {identity for identity, _rate in rates}
        if len(identities) > 1:
            raise ValueError(f"the limits of one start share one key, not {sorted(identities)}")
        rate_key = identities.pop() if identities else ""
        if rates:
            keys += [
                self.keys.rates,
                self.keys.rate_details,
                self.keys.rate(rate_key),
                self.keys.rate_queue(rate_key),
                self.keys.reserved(owner),
            ]
        args: list[Any] = [
            _flag(lock is not None),
            owner,
            lease_ms,
            _flag(renew),
            task_name,
            preview,
            token,
            until,
            len(slots),
            _flag(queue),
            rate_key,
            _flag(reserve),
            "" if slot_us is None else int(slot_us),
            int(admit_within * 1_000_000),
        ]
        for slot in slots:
            args += [slot.name, slot.tickets, slot.capacity]
        for _identity, rate in rates:
            args += [rate.times, int(rate.per * 1_000_000)]
        status, holder, wait_ms, now_us, taken = self.call("start", keys, args)
        return Start(
            Started(status), scripts.text(holder), max(0, wait_ms) / 1000, int(now_us), bool(taken)
        )

    def only_after(self, key: str, seconds: float, owner: str = "") -> bool:
        """True if no call for ``key`` returned True in the last ``seconds`` (Redis
        clock); a True starts a new interval."""
        ms = max(1, math.ceil(seconds * 1000))  # never shorter than asked
        return bool(self.call("only_after", [self.keys.after(key)], [ms, owner]))

    def release(self, identity: str, owner: str, task_name: str) -> bool:
        """Delete the lock of ``identity`` if ``owner`` still holds it."""
        keys = self.keys
        status = self.call(
            "release", [keys.lock(identity), keys.index(task_name), keys.owner(owner)], [owner]
        )
        return status == Released.RELEASED

    def release_owned(
        self,
        owner: str,
        token: str = "",
        *,
        lock: str | None = None,
        requeue: bool = False,
        slots_only: bool = False,
    ) -> Released:
        """Give back the lock and the semaphores ``owner`` holds, found through its
        pointers (or the lock ``lock``, the key the execution took); only the
        execution ``token`` may (any execution when ``token`` is empty). With
        ``requeue`` the lock stays, queued again for the same message; with
        ``slots_only`` it stays as it is (a retry). Semaphores are always given back:
        a task holds them only while it runs."""
        keys = self.keys
        mode = "slots" if slots_only else "requeue" if requeue else ""
        status, _semaphores = self.call(
            "release_owned",
            [keys.owner(owner), keys.slots(owner), keys.reserved(owner)],
            [owner, token, keys.index_prefix, mode, keys.key_tag, keys.lock(lock) if lock else ""],
        )
        return Released(status)

    def renew_execution(self, owner: str, token: str, lease_ms: int) -> Renewed:
        """Extend, to ``lease_ms`` from now, the lease of everything the execution
        ``token`` of task ``owner`` holds: its lock, slots and tickets."""
        keys = self.keys
        status = self.call(
            "renew_execution",
            [keys.owner(owner), keys.slots(owner), keys.tasks, keys.semaphores],
            [owner, token, lease_ms, keys.index_prefix, keys.key_tag],
        )
        return Renewed(status)

    def holder(self, identity: str) -> str | None:
        """Task id holding the lock of ``identity``, if any."""
        try:
            return scripts.text(self.client.hget(self.keys.lock(identity), "owner"))
        except scripts.UNAVAILABLE_ERRORS as exc:
            raise scripts.unavailable(self.alias, exc) from exc


def _flag(value: bool) -> str:
    return "1" if value else "0"
