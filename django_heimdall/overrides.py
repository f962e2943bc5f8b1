"""Admin overrides, from the database to every process.

A committed change to ``PolicyOverride`` publishes a snapshot of the enabled
overrides to Redis under the next revision number (counted in the database, so a
stale snapshot never replaces a newer one). Every process checks the revision at
most every ``OVERRIDES_REFRESH`` seconds (a monotonic-clock comparison on the hot
path, one GET when due) and re-reads the overrides when it changed, so a change
made in the admin reaches every worker within that bound, without a restart.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from .conf import heimdall_settings, on_reload
from .exceptions import HeimdallUnavailable
from .options import OptionError, parse_options, signature_errors
from .store import Store, get_store
from .store.scripts import UNAVAILABLE_ERRORS, text, unavailable

logger = logging.getLogger("django_heimdall")


class OverrideStorage:
    """The published overrides in Redis."""

    def __init__(self, store: Store):
        self.store = store
        self.keys = [store.keys.overrides, store.keys.overrides_version]

    def publish(self, revision: int, snapshot: dict[str, dict[str, Any]]) -> bool:
        pairs = [v for task, opts in snapshot.items() for v in (task, json.dumps(opts))]
        return bool(self.store.call("publish_overrides", self.keys, [revision, *pairs]))

    def revision(self) -> int | None:
        try:
            value = self.store.client.get(self.keys[1])
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(self.store.alias, exc) from exc
        return None if value is None else int(value)

    def read(self) -> tuple[int | None, dict[str, dict[str, Any]]]:
        try:
            pipe = self.store.client.pipeline(transaction=True)
            pipe.get(self.keys[1])
            pipe.hgetall(self.keys[0])
            revision, raw = pipe.execute()
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(self.store.alias, exc) from exc
        options = {text(task): json.loads(opts) for task, opts in raw.items()}
        return (None if revision is None else int(revision)), options


@dataclass
class Publication:
    """The outcome of one publication, filled in when it has run."""

    revision: int | None = None
    error: str = ""


def publish() -> Publication:
    """Publish the enabled overrides of the database under the next revision."""
    from .models import OverrideRevision, PolicyOverride

    outcome = Publication()
    with transaction.atomic():
        counter, _ = OverrideRevision.objects.select_for_update().get_or_create(pk=1)
        counter.number += 1
        counter.save(update_fields=["number"])
        snapshot = {
            row.task_name: row.raw_options() for row in PolicyOverride.objects.filter(enabled=True)
        }
    try:
        OverrideStorage(get_store()).publish(counter.number, snapshot)
    except HeimdallUnavailable as exc:
        logger.error("policy overrides not published, will retry: %s", exc)
        source.publish_failed()
        outcome.error = str(exc)
    else:
        outcome.revision = counter.number
    return outcome


def publish_on_commit() -> Publication:
    """Publish once the current transaction commits (a rolled-back change must not
    reach the workers); the returned object holds the outcome after that."""
    outcome = Publication()

    def run() -> None:
        result = publish()
        outcome.revision, outcome.error = result.revision, result.error

    transaction.on_commit(run)
    return outcome


def on_change(sender: Any = None, **kwargs: Any) -> None:
    """Receiver of every change to ``PolicyOverride`` (connected in ``ready()``)."""
    publish_on_commit()


class OverrideSource:
    """The admin layer of policy resolution (see ``policies.set_override_source``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self._republish = False  # this process failed to publish a change: retry
        self._revision: int | None = None
        self._options: dict[str, dict[str, Any]] = {}
        self._checked = float("-inf")
        self._database_warned = False

    def publish_failed(self) -> None:
        self._republish = True

    def __call__(self, task_name: str) -> dict[str, Any]:
        return self._options.get(task_name, {})

    def refresh(self) -> bool:
        """Re-read the overrides if their revision changed; True if they did."""
        now = time.monotonic()
        if now - self._checked < heimdall_settings.OVERRIDES_REFRESH:
            return False
        with self._lock:
            if now - self._checked < heimdall_settings.OVERRIDES_REFRESH:
                return False
            self._checked = now
            storage = OverrideStorage(get_store())
            try:
                revision = storage.revision()
                if self._republish or revision is None:
                    # A change of ours is unpublished, or Redis lost them (a restart
                    # or flush): rebuild from the database, if this process has one.
                    self._publish_from_database()
                    revision = storage.revision()
                if revision is None:
                    changed, self._options = bool(self._options), {}
                    return changed
                if revision == self._revision:
                    return False
                revision, raw = storage.read()
            except HeimdallUnavailable as exc:
                logger.warning("policy overrides not refreshed: %s", exc)
                return False
            self._options = self._parse(raw)
            self._revision = revision
            return True

    def _publish_from_database(self) -> None:
        self._republish = False
        try:
            publish()
        except Exception:  # no database here, not migrated, or down: retry next time
            if not self._database_warned:
                self._database_warned = True
                logger.warning(
                    "policy overrides could not be read from the database (run "
                    "'manage.py migrate'?); this process applies the overrides published "
                    "by other processes",
                    exc_info=True,
                )

    @staticmethod
    def _parse(raw: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Parse published overrides; one that cannot apply (invalid, or naming
        arguments the task does not take) falls back to the layers below, with one
        ERROR line per process and revision."""
        from celery import current_app

        parsed = {}
        for task_name, options in raw.items():
            try:
                parsed[task_name] = parse_options(options, dotted_paths=True)
            except OptionError as exc:
                logger.error("policy override of %s ignored: %s", task_name, exc)
                continue
            task = current_app.tasks.get(task_name)
            for exc in signature_errors(task, options) if task is not None else ():
                logger.error("policy override of %s, %s ignored: %s", task_name, exc.option, exc)
                parsed[task_name].pop(exc.option, None)
        return parsed


source = OverrideSource()


@on_reload
def _forget() -> None:
    source.reset()
