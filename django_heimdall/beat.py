"""Beat schedulers that may run several times at once: one leads, the others stand by.

``CELERY_BEAT_SCHEDULER = "django_heimdall.beat:Scheduler"`` (Celery's default file
scheduler) or ``"django_heimdall.beat:DatabaseScheduler"`` (django-celery-beat's).
Every tick the leader renews its lease in Redis and standbys try to take it; before
sending, the leader claims the occurrence (entry, scheduled fire time), so that even
two beats that both believe they lead send it at most once. An occurrence whose task
is unique and whose lock is held, or whose concurrency slot or resource tickets are
taken while it would skip when busy, is not sent at all.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import socket
import uuid
from typing import Any

from celery import beat, schedules
from celery.utils.time import maybe_make_aware

from . import signals
from .conf import heimdall_settings
from .execution import plan
from .options import parse_call_options
from .store import get_store
from .store.beat import CLOCK_TOLERANCE_MS, BeatStore, Claimed, Led

logger = logging.getLogger("django_heimdall")

#: Message header naming the occurrence a message was sent for: ``"<entry>@<ms>"``.
OCCURRENCE_HEADER = "heimdall_beat_occurrence"


def _interval_ms(schedule: Any) -> int | None:
    """The period of a fixed-interval schedule, ms; ``None`` for other schedules."""
    if isinstance(schedule, schedules.schedule) and not isinstance(
        schedule, (schedules.crontab, schedules.solar)
    ):
        return max(1, round(schedule.run_every.total_seconds() * 1000))
    return None


def occurrence_ms(entry: Any) -> int:
    """The scheduled fire time of the occurrence of ``entry`` that is due now, in ms.

    Beats agree on it without talking: a fixed interval is aligned to the epoch
    (each process's ``last_run_at`` differs slightly), crontab, solar and clocked
    schedules name their own fire time (to the second).
    """
    schedule = entry.schedule
    last = maybe_make_aware(entry.last_run_at)
    every = _interval_ms(schedule)
    if every is not None:
        due = math.floor(last.timestamp() * 1000) + every
        return due // every * every
    due = maybe_make_aware(schedule.now()) + schedule.remaining_estimate(last)
    return round(due.timestamp()) * 1000


def claim_terms(entry: Any, occurrence: int, lease_ms: int) -> tuple[int, int]:
    """How long the claim of ``occurrence`` is kept (two periods of the entry and two
    leases: a deleted entry is forgotten after that), and the time that must pass
    before the next claim (a fixed interval, less a tolerance), ms."""
    every = _interval_ms(entry.schedule)
    if every is not None:
        return 2 * every + 2 * lease_ms, every - min(CLOCK_TOLERANCE_MS, every // 2)
    try:
        when = datetime.datetime.fromtimestamp(occurrence / 1000, datetime.timezone.utc)
        schedule = entry.schedule
        following = maybe_make_aware(schedule.now()) + schedule.remaining_estimate(when)
        period = max(0, round((following - when).total_seconds() * 1000))
    except Exception:  # a schedule that cannot say (a one-off): the leases cover it
        period = 0
    return 2 * period + 2 * lease_ms, 0


class Leadership:
    """This process's view of the leader lease."""

    def __init__(self) -> None:
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.beat_id = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.leading = False
        self._told: str | None = None  # the leader last logged, to log changes only

    @property
    def lease(self) -> float:
        return float(heimdall_settings.BEAT_LEASE)

    @property
    def poll(self) -> float:
        """Longest sleep between ticks: the lease is renewed (or looked at) three
        times per lease."""
        return self.lease / 3

    def store(self) -> BeatStore:
        return BeatStore(get_store())

    def refresh(self) -> bool:
        """Take or renew the lease; never raises (a beat must not crash on Redis)."""
        try:
            led = self.store().lead(self.beat_id, int(self.lease * 1000), self.host, self.pid)
        except Exception as exc:
            if self.leading and heimdall_settings.fail_open:
                logger.warning(
                    "beat %s: leader lease not renewed: %s (fail open: still sending)",
                    self.beat_id,
                    exc,
                )
                return True
            self.step_down(f"cannot reach the leader lease: {exc}")
            return False
        if led.status == Led.AHEAD:
            self.step_down("this host's clock is ahead of Redis's, fix its time sync; not leading")
            return False
        if led.status == Led.STANDBY:
            if self.leading:
                self.step_down(f"lost the leader lease to {led.leader}")
            elif self._told != led.leader:
                logger.info(
                    "beat %s: standing by, %s leads (lease left %.1fs)",
                    self.beat_id,
                    led.leader,
                    led.lease_left,
                )
            self._told = led.leader
            return False
        if not self.leading:
            logger.info("beat %s: leading (lease %gs)", self.beat_id, self.lease)
        self.leading, self._told = True, self.beat_id
        return True

    def step_down(self, why: str) -> None:
        if self.leading or self._told != why:
            logger.error("beat %s: %s; standing by", self.beat_id, why)
        self.leading, self._told = False, why

    def resign(self) -> None:
        if not self.leading:
            return
        self.leading = False
        try:
            self.store().resign(self.beat_id)
        except Exception as exc:
            logger.warning("beat %s: could not give the lease back: %s", self.beat_id, exc)
        else:
            logger.info("beat %s: gave the leader lease back", self.beat_id)


class LeaderMixin:
    """Lease, claims and lock checks around a Celery scheduler's tick."""

    app: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.leadership = Leadership()
        super().__init__(*args, **kwargs)
        # The lease is renewed every tick: never sleep through a third of it.
        self.max_interval = min(self.max_interval, self.leadership.poll)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        self.leadership.refresh()
        delay = super().tick(*args, **kwargs)  # type: ignore[misc]
        return min(delay, self.leadership.poll)

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        # A standby's schedule advances like the leader's (reserve() already ran),
        # so after a takeover it sends from the next occurrence, without a backlog.
        if not self.leadership.leading:
            logger.debug("beat: standing by, %s not sent", entry.name)
            return
        try:
            send = self._claim(entry)
        except Exception as exc:
            logger.error("beat: %s not sent: %s", entry.name, exc, exc_info=True)
            return
        if send is not None:
            super().apply_entry(send, producer=producer)  # type: ignore[misc]

    def _claim(self, entry: Any) -> Any:
        """The entry to send (with its occurrence header), or ``None`` if not sent."""
        leadership = self.leadership
        occurrence = occurrence_ms(entry)
        tag = f"{entry.name}@{occurrence}"
        task = self.app.tasks.get(entry.task)
        lock, slots = _policy_checks(task, entry)
        keep_ms, gap_ms = claim_terms(entry, occurrence, int(leadership.lease * 1000))
        try:
            claim = leadership.store().claim(
                leadership.beat_id,
                entry.name,
                occurrence,
                entry.task,
                lock,
                slots,
                keep_ms=keep_ms,
                gap_ms=gap_ms,
            )
        except Exception as exc:
            if leadership.leading and heimdall_settings.fail_open:
                logger.warning("beat: %s sent without a claim: %s (fail open)", tag, exc)
                return _tagged(entry, tag)
            leadership.step_down(f"cannot claim {entry.name}: {exc}")
            return None
        if claim.status == Claimed.SEND:
            return _tagged(entry, tag)
        if claim.status == Claimed.LOCKED:
            logger.info(
                "beat: %s (%s) not sent: %s still holds its unique lock",
                tag,
                entry.task,
                claim.holder,
            )
            signals.beat_skipped.send(
                sender=task, entry=entry.name, occurrence=occurrence, holder=claim.holder, key=lock
            )
        elif claim.status == Claimed.BUSY:
            logger.info(
                "beat: %s (%s) not sent: %s has no free ticket (on_busy='skip')",
                tag,
                entry.task,
                claim.holder,
            )
            signals.beat_skipped.send(
                sender=task, entry=entry.name, occurrence=occurrence, holder=None, key=claim.holder
            )
        elif claim.status == Claimed.NOT_LEADER:
            leadership.step_down(f"lost the leader lease before sending {tag}")
        elif claim.status == Claimed.AHEAD:
            logger.error(
                "beat: %s not sent: this host's clock is ahead of Redis's; fix its time sync",
                tag,
            )
        else:
            logger.info("beat: %s was claimed already, not sent again", tag)
        return None

    def close(self) -> None:
        self.leadership.resign()
        super().close()  # type: ignore[misc]

    @property
    def info(self) -> str:
        lease = f"    . heimdall -> leader lease {heimdall_settings.BEAT_LEASE}s"
        return "\n".join(filter(None, [super().info, lease]))  # type: ignore[misc]


def _tagged(entry: Any, tag: str) -> Any:
    """A copy of ``entry`` whose message names its occurrence (header)."""
    # A shallow copy (entries' own __reduce__ rebuilds them from their fields).
    send = object.__new__(type(entry))
    send.__dict__.update(entry.__dict__)
    options = dict(entry.options or {})
    options["headers"] = {**options.get("headers", {}), OCCURRENCE_HEADER: tag}
    send.options = options
    return send


def _policy_checks(task: Any, entry: Any) -> tuple[str | None, tuple[Any, ...]]:
    """What an occurrence of ``entry`` is checked against before it is sent: the
    unique lock its call would take (if its task is unique), and the concurrency
    slot and resource tickets it would need (if it would be skipped when busy)."""
    from .task import HeimdallTask

    if not isinstance(task, HeimdallTask):
        return None, ()
    # The entry's options go to apply_async: per-call options count as they would there.
    call = (entry.options or {}).get("heimdall")
    policy = task.heimdall_policy.with_call_options(parse_call_options(call) if call else {})
    skips = policy.on_busy == "skip" and (policy.concurrency_limit or policy.resources)
    if not policy.unique and not skips:
        return None, ()
    args = beat._evaluate_entry_args(entry.args)
    kwargs = beat._evaluate_entry_kwargs(entry.kwargs)
    lock, _rate_key, _rates, _preview, slots = plan(task, policy, None, args, kwargs)
    return lock, tuple(slots) if skips else ()


class Scheduler(LeaderMixin, beat.PersistentScheduler):
    """Celery's default (file) scheduler, safe to run in several processes."""


def _database_scheduler() -> type:
    # Imported on first use: django-celery-beat is optional, and its models need
    # Django's apps to be ready.
    try:
        from django_celery_beat.schedulers import DatabaseScheduler as Base
    except ImportError as exc:
        raise ImportError(
            "django_heimdall.beat:DatabaseScheduler needs django-celery-beat: "
            "pip install 'django-heimdall[beat]' and add 'django_celery_beat' to "
            f"INSTALLED_APPS ({exc})"
        ) from exc

    class DatabaseScheduler(LeaderMixin, Base):
        """django-celery-beat's scheduler, safe to run in several processes."""

        def reserve(self, entry: Any) -> Any:
            if self.leadership.leading:
                return super().reserve(entry)
            # A standby advances in memory only: the leader writes last_run_at.
            return next(entry)

    DatabaseScheduler.__module__ = __name__
    return DatabaseScheduler


def __getattr__(name: str) -> Any:
    if name == "DatabaseScheduler":
        scheduler = globals()[name] = _database_scheduler()
        return scheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
