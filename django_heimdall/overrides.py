"""Admin overrides, from the database to every process.

A change to ``PolicyOverride`` publishes all enabled overrides to Redis with a new
version number. Every process checks that version at most every
``OVERRIDES_REFRESH`` seconds (a monotonic-clock comparison on the hot path, one
GET when due) and re-reads the overrides when it changed, so a change made in the
admin reaches every worker within that bound, without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .conf import heimdall_settings, on_reload
from .exceptions import HeimdallUnavailable
from .policies import OptionError, parse_options
from .store import get_store

logger = logging.getLogger("django_heimdall")


def publish() -> str | None:
    """Publish the enabled overrides of the database; returns the new version, or
    None when Redis is unreachable (this process then retries at every refresh)."""
    from .models import PolicyOverride

    snapshot = {
        row.task_name: row.raw_options() for row in PolicyOverride.objects.filter(enabled=True)
    }
    try:
        version = get_store().publish_overrides(snapshot)
    except HeimdallUnavailable as exc:
        logger.error("policy overrides not published, will retry: %s", exc)
        source.pending = True
        return None
    source.pending = False
    return version


class OverrideSource:
    """The admin layer of policy resolution (see ``policies.set_override_source``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._no_database = False
        self.reset()

    def reset(self) -> None:
        self.pending = False  # a change of this process still waits to be published
        self._version: str | None = None
        self._options: dict[str, dict[str, Any]] = {}
        self._checked = float("-inf")

    def __call__(self, task_name: str) -> dict[str, Any]:
        return self._options.get(task_name, {})

    def refresh(self) -> bool:
        """Re-read the overrides if their version changed; True if they did."""
        now = time.monotonic()
        if now - self._checked < heimdall_settings.OVERRIDES_REFRESH:
            return False
        with self._lock:
            if now - self._checked < heimdall_settings.OVERRIDES_REFRESH:
                return False
            self._checked = now
            store = get_store()
            if self.pending:
                self._republish()
            try:
                version = store.overrides_version()
                if version is None:
                    # Lost with a Redis restart or flush: rebuild from the database.
                    version = self._republish()
                if version is None:  # nothing published and no database here
                    changed, self._options = bool(self._options), {}
                    return changed
                if version == self._version:
                    return False
                _, raw = store.read_overrides()
            except HeimdallUnavailable as exc:
                logger.warning("policy overrides not refreshed: %s", exc)
                return False
            self._options = self._parse(raw)
            self._version = version
            return True

    def _republish(self) -> str | None:
        if self._no_database:
            return None
        try:
            return publish()
        except Exception:  # no database in this process, or not migrated: stop trying
            self._no_database = True
            logger.warning(
                "policy overrides could not be read from the database; this process "
                "applies only overrides published by another one",
                exc_info=True,
            )
            return None

    @staticmethod
    def _parse(raw: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        parsed = {}
        for task_name, options in raw.items():
            try:
                parsed[task_name] = parse_options(options, dotted_paths=True)
            except OptionError as exc:
                logger.error("policy override of %s ignored: %s", task_name, exc)
        return parsed


source = OverrideSource()


@on_reload
def _forget() -> None:
    source.reset()
