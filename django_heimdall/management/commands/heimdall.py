"""``manage.py heimdall``: inspect and clear live locks, policies, rate limits and
concurrency slots, and show the beat leader.

The command parses and prints; the work is done by ``django_heimdall.services``
and the store, the same code the admin uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...exceptions import HeimdallUnavailable
from ...services import beat, effective_policies, live, release_locks, release_slots

PAGE = 1000  # rows read per call when listing every rate-limit key or semaphore


def _no_input(parser: CommandParser) -> None:
    parser.add_argument(
        "--noinput",
        "--no-input",
        action="store_false",
        dest="interactive",
        help="Do not ask for confirmation.",
    )


class Command(BaseCommand):
    help = "Inspect and clear django-heimdall's locks, policies and rate-limit windows."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        locks = sub.add_parser("locks", help="List held locks.")
        locks.add_argument("--task", help="Only the locks of this task.")
        locks.add_argument("--limit", type=int, default=100, help="At most this many (100).")
        locks.add_argument("--json", action="store_true", help="Print JSON.")

        release = sub.add_parser("release", help="Release held locks (owner-checked).")
        release.add_argument(
            "identities",
            nargs="*",
            metavar="KEY",
            help="Lock keys to release, as listed by 'locks'.",
        )
        release.add_argument("--task", help="Release every lock of this task.")
        release.add_argument("--all", action="store_true", help="Release every lock.")
        _no_input(release)

        policies = sub.add_parser("policies", help="Show effective policies and their sources.")
        policies.add_argument("--json", action="store_true", help="Print JSON.")

        rates = sub.add_parser("rates", help="List rate-limit windows.")
        rates.add_argument("--json", action="store_true", help="Print JSON.")

        reset = sub.add_parser("reset-rate", help="Reset the window of one rate-limit key.")
        reset.add_argument("identity", metavar="KEY", help="Rate-limit key, as listed by 'rates'.")
        _no_input(reset)

        slots = sub.add_parser(
            "slots", help="List concurrency slots and resource tickets with their holders."
        )
        slots.add_argument("--json", action="store_true", help="Print JSON.")

        release_slot = sub.add_parser(
            "release-slot", help="Release one holder's slot or ticket (owner-checked)."
        )
        release_slot.add_argument(
            "semaphore",
            metavar="NAME",
            help="Semaphore, as listed by 'slots' (task:… or resource:…).",
        )
        release_slot.add_argument("holder", metavar="HOLDER", help="Holder (task id), as listed.")
        _no_input(release_slot)

        beat_parser = sub.add_parser(
            "beat", help="Show the beat leader and the latest occurrences sent or skipped."
        )
        beat_parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        handler = getattr(self, "handle_" + options["action"].replace("-", "_"))
        try:
            handler(**options)
        except HeimdallUnavailable as exc:
            raise CommandError(str(exc)) from exc

    # -- subcommands ---------------------------------------------------------------

    def handle_locks(self, *, task: str | None, limit: int, json: bool, **options: Any) -> None:
        if limit < 1:
            raise CommandError("--limit must be at least 1.")
        state = live()
        tasks = [task] if task else state.task_names()
        page = state.locks_page(tasks, 0, limit)
        rows = [
            {
                "key": lock.identity,
                "task": lock.task,
                "holder": lock.owner,
                "phase": lock.phase,
                "since": lock.since.isoformat(),
                "expires_in": lock.expires_in,
                "args": lock.args,
            }
            for lock in page.locks
        ]
        if json:
            self._json({"total": page.total, "locks": rows})
            return
        for row in rows:
            self.stdout.write(
                f"{row['key']}  holder={row['holder']}  {row['phase']}  "
                f"expires in {row['expires_in']:.1f}s  args={row['args'][:60]}"
            )
        self.stdout.write(f"{page.total} lock(s) held" + (f" by {task}" if task else ""))

    def handle_release(
        self,
        *,
        identities: list[str],
        task: str | None,
        all: bool,
        interactive: bool,
        **options: Any,
    ) -> None:
        chosen = [bool(identities), bool(task), all]
        if sum(chosen) != 1:
            raise CommandError("Give lock KEYs, or --task NAME, or --all (exactly one of them).")
        state = live()
        if identities:
            found = {identity: state.lock_info(identity) for identity in identities}
            missing = [identity for identity, lock in found.items() if lock is None]
            if missing:
                raise CommandError(f"No lock is held for: {', '.join(missing)}")
            self._confirm(interactive, f"Release {len(found)} lock(s)?")
            result = release_locks((i, lock.owner) for i, lock in found.items() if lock)
            self.stdout.write(f"{len(result.released)} lock(s) released.")
            for lock in result.taken_over:
                self.stderr.write(f"{lock.identity}: re-taken by {lock.owner} meanwhile, kept.")
            return
        tasks = [task] if task else state.task_names()
        counts = state.lock_counts(tasks)
        total = sum(counts.values())
        cutoff = state.now_ms()
        self._confirm(interactive, f"Release {total} lock(s) of {len(tasks)} task(s)?")
        released = sum(state.release_task(name, cutoff) for name in tasks)
        self.stdout.write(f"{released} lock(s) released.")

    def handle_policies(self, *, json: bool, **options: Any) -> None:
        rows = effective_policies()
        if json:
            self._json(
                [
                    {
                        "task": row.name,
                        "registered": row.registered,
                        "error": row.error,
                        "options": {
                            o.name: {"value": o.value, "source": o.source} for o in row.options
                        },
                    }
                    for row in rows
                ]
            )
            return
        for row in rows:
            self.stdout.write(row.name + ("" if row.registered else "  (not registered)"))
            if row.error:
                self.stdout.write(f"  error: {row.error}")
            for option in row.options:
                self.stdout.write(f"  {option.name:<24} {option.value:<30} {option.source}")

    def handle_rates(self, *, json: bool, **options: Any) -> None:
        total, windows = _every(live().rate_windows, lambda page: page.windows)
        if json:
            self._json(
                [
                    {**window._asdict(), "limits": [limit._asdict() for limit in window.limits]}
                    for window in windows
                ]
            )
            return
        for w in windows:
            limits = ", ".join(f"{x.times}/{x.per:g}s ({x.starts} started)" for x in w.limits)
            self.stdout.write(
                f"{w.identity}  task={w.task}  limits={limits}  waiting={w.waiting}  "
                f"next slot in {w.next_slot_in:.2f}s"
            )
        self.stdout.write(f"{total} rate-limit key(s) in use")

    def handle_reset_rate(self, *, identity: str, interactive: bool, **options: Any) -> None:
        self._confirm(interactive, f"Reset the window of {identity}?")
        if not live().reset_rate(identity):
            raise CommandError(f"No rate-limit window is open for {identity!r}.")
        self.stdout.write(f"Window of {identity} reset.")

    def handle_slots(self, *, json: bool, **options: Any) -> None:
        total, semaphores = _every(live().semaphores, lambda page: page.semaphores)
        if json:
            self._json(
                [
                    {**info._asdict(), "holders": [h._asdict() for h in info.holders]}
                    for info in semaphores
                ]
            )
            return
        for info in semaphores:
            mean = "" if info.mean_hold is None else f"  mean hold {info.mean_hold:.3f}s"
            self.stdout.write(
                f"{info.name}  {info.used}/{info.capacity} in use  {info.waiting} waiting{mean}"
            )
            for h in info.holders:
                self.stdout.write(
                    f"  {h.holder}  tickets={h.tickets}  by {h.label or '-'}  "
                    f"since {h.since.isoformat()}  lease left {h.expires_in:.1f}s"
                )
        self.stdout.write(f"{total} semaphore(s) in use")

    def handle_release_slot(
        self, *, semaphore: str, holder: str, interactive: bool, **options: Any
    ) -> None:
        info = live().semaphore(semaphore)
        current = next((h for h in info.holders if h.holder == holder), None) if info else None
        if current is None:
            raise CommandError(f"{holder} holds no slot of {semaphore}.")
        self._confirm(interactive, f"Release the slot of {semaphore} held by {holder}?")
        result = release_slots([(semaphore, holder, current.token)])
        if not result.released:
            raise CommandError(f"{holder} no longer held its slot of {semaphore}; left alone.")
        self.stdout.write(f"Slot of {semaphore} held by {holder} released.")

    def handle_beat(self, *, json: bool, **options: Any) -> None:
        state = beat()
        leader, recent = state.leader(), state.recent()
        if json:
            self._json(
                {
                    "leader": leader._asdict() if leader else None,
                    "recent": [occurrence._asdict() for occurrence in recent],
                }
            )
            return
        if leader is None:
            self.stdout.write("No beat leads (none running, or the lease lapsed).")
        else:
            self.stdout.write(
                f"Leader: {leader.beat_id}  host={leader.host}  pid={leader.pid}  "
                f"since {leader.since.isoformat()}  lease left {leader.lease_left:.1f}s"
            )
        for o in recent:
            held = f"  held by {o.holder}" if o.holder else ""
            self.stdout.write(
                f"{o.scheduled.isoformat()}  {o.outcome:<7}  {o.entry} ({o.task})  "
                f"by {o.beat_id}{held}"
            )
        self.stdout.write(f"{len(recent)} recent occurrence(s)")

    # -- helpers -------------------------------------------------------------------

    def _confirm(self, interactive: bool, question: str) -> None:
        if not interactive:
            return
        try:
            answer = input(f"{question} [y/N] ")
        except (EOFError, KeyboardInterrupt):
            raise CommandError(
                "Cancelled: no answer (pass --noinput to skip the question)."
            ) from None
        if answer.strip().lower() not in ("y", "yes"):
            raise CommandError("Cancelled.")

    def _json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, indent=2, default=str))


def _every(read: Callable[[int, int], Any], rows: Callable[[Any], list]) -> tuple[int, list]:
    """The total of a paged listing and all its rows, read a page at a time."""
    found: list = []
    offset = 0
    while True:
        page = read(offset, PAGE)
        read_now = rows(page)
        found += read_now
        offset += PAGE
        if offset >= page.total or not read_now:
            return page.total, found
