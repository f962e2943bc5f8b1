"""Beat's state in Redis: the leader lease, the claim of each occurrence, and the
latest occurrences sent or skipped (what the admin and the command show).

Each decision is one script call: taking or renewing the lease, giving it back,
claiming an occurrence (with the unique-lock check of its task).
"""

from __future__ import annotations

import datetime
import json
import time
from enum import IntEnum
from typing import Any, NamedTuple

from . import scripts
from .decisions import Slot, Store
from .live import _datetime

# Occurrences sent or skipped that are kept for the admin and the command.
HISTORY_LENGTH = 50
# An occurrence later than the Redis clock by more than this is refused: the beat
# host's clock is ahead, and its claims would hold back every other beat's.
CLOCK_TOLERANCE_MS = 2000


class Led(IntEnum):
    """Outcome of taking or renewing the leader lease."""

    TAKEN = 50
    RENEWED = 51
    STANDBY = 52  # another beat leads
    AHEAD = 72  # this host's clock is ahead of Redis's: it does not lead


class Claimed(IntEnum):
    """Outcome of claiming an occurrence."""

    SEND = 53
    CLAIMED = 54  # this occurrence, or a later one, was claimed already
    LOCKED = 55  # claimed, but its task's unique lock is held: not sent
    NOT_LEADER = 56
    AHEAD = 57  # the occurrence is ahead of the Redis clock
    BUSY = 58  # claimed, but a slot or ticket its task needs is taken (on_busy "skip")


class Resigned(IntEnum):
    RESIGNED = 70
    NOT_LEADER = 71


class Lead(NamedTuple):
    status: Led
    leader: str  # beat id of the leader
    lease_left: float  # seconds (AHEAD: how far this host's clock is ahead)


class Claim(NamedTuple):
    status: Claimed
    holder: str  # task id holding the lock (LOCKED), else ""


class BeatLeader(NamedTuple):
    """The beat process that holds the leader lease."""

    beat_id: str
    host: str
    pid: int
    since: datetime.datetime
    lease_left: float  # seconds


class BeatOccurrence(NamedTuple):
    """One occurrence the leader sent or skipped."""

    entry: str
    task: str
    scheduled: datetime.datetime  # the fire time it was claimed for
    at: datetime.datetime  # when it was claimed (Redis clock)
    outcome: str  # "sent" or "skipped"
    beat_id: str
    holder: str  # the lock's holder, when skipped


class BeatStore:
    """The lease and claims of every beat process sharing one store."""

    def __init__(self, store: Store):
        self.store = store
        self.keys = store.keys

    def lead(
        self, beat_id: str, lease_ms: int, host: str, pid: int, clock_ms: int | None = None
    ) -> Lead:
        """Take the lease if it is free, renew it if ``beat_id`` holds it; not when
        the caller's clock (``clock_ms``, default: this host's) is ahead of Redis's."""
        clock_ms = round(time.time() * 1000) if clock_ms is None else clock_ms
        status, leader, pttl = self.store.call(
            "beat_lead",
            [self.keys.beat_leader],
            [beat_id, lease_ms, host, pid, clock_ms, CLOCK_TOLERANCE_MS],
        )
        return Lead(Led(status), scripts.text(leader), max(0, pttl) / 1000)

    def resign(self, beat_id: str) -> bool:
        """Give the lease back if ``beat_id`` holds it."""
        status = self.store.call("beat_resign", [self.keys.beat_leader], [beat_id])
        return status == Resigned.RESIGNED

    def claim(
        self,
        beat_id: str,
        entry: str,
        occurrence_ms: int,
        task: str,
        lock: str | None = None,
        slots: tuple[Slot, ...] = (),
        *,
        keep_ms: int = 3_600_000,
        gap_ms: int = 0,
    ) -> Claim:
        """Claim occurrence ``occurrence_ms`` of ``entry`` for the leader ``beat_id``;
        ``lock`` (an identity) is the unique lock its call would take, ``slots`` the
        semaphores it would need (checked, not taken). The claim is kept ``keep_ms``;
        a later one needs ``gap_ms`` to have passed since (a fixed interval's)."""
        keys = [
            self.keys.beat_leader,
            self.keys.beat_claims,
            self.keys.beat_history,
            self.keys.beat_claim_ends,
        ]
        if lock is not None:
            keys.append(self.keys.lock(lock))
        for slot in slots:
            keys += self.keys.semaphore(slot.name)
        status, holder = self.store.call(
            "beat_claim",
            keys,
            [
                beat_id,
                entry,
                occurrence_ms,
                task,
                keep_ms,
                HISTORY_LENGTH,
                CLOCK_TOLERANCE_MS,
                "1" if lock is not None else "0",
                gap_ms,
                len(slots),
                *(v for slot in slots for v in (slot.name, slot.tickets, slot.capacity)),
            ],
        )
        return Claim(Claimed(status), scripts.text(holder) or "")


class BeatState:
    """What the admin and ``manage.py heimdall beat`` show about beat."""

    def __init__(self, store: Store):
        self.store = store
        self.keys = store.keys

    def _read(self, *commands: tuple[str, tuple[Any, ...]]) -> list[Any]:
        try:
            pipe = self.store.client.pipeline(transaction=False)
            for name, args in commands:
                getattr(pipe, name)(*args)
            return pipe.execute()
        except scripts.UNAVAILABLE_ERRORS as exc:
            raise scripts.unavailable(self.store.alias, exc) from exc

    def leader(self) -> BeatLeader | None:
        """The leading beat, if one holds the lease."""
        key = self.keys.beat_leader
        fields, pttl = self._read(
            ("hmget", (key, "owner", "host", "pid", "since")), ("pttl", (key,))
        )
        if fields[0] is None:
            return None
        beat_id, host, pid, since = (scripts.text(f) for f in fields)
        return BeatLeader(beat_id, host or "", int(pid or 0), _datetime(since), max(0, pttl) / 1000)

    def recent(self, limit: int = HISTORY_LENGTH) -> list[BeatOccurrence]:
        """The latest occurrences sent or skipped, newest first."""
        (items,) = self._read(("lrange", (self.keys.beat_history, 0, limit - 1)))
        occurrences = []
        for item in items:
            row = json.loads(scripts.text(item))
            occurrences.append(
                BeatOccurrence(
                    entry=row["entry"],
                    task=row["task"],
                    scheduled=_datetime(row["scheduled"]),
                    at=_datetime(row["at"]),
                    outcome=row["outcome"],
                    beat_id=row["by"],
                    holder=row.get("holder") or "",
                )
            )
        return occurrences
