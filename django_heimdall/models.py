"""Database models: admin policy overrides, and table-less models that give the
live Redis pages their permissions, content types and admin log entries."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from . import signals
from .options import OptionError, parse_option, signature_errors


class PolicyOverrideQuerySet(models.QuerySet):
    """Bulk changes publish too: ``update()`` and ``delete()`` send no model signals."""

    def update(self, **kwargs: Any) -> int:
        count = super().update(**kwargs)
        signals.overrides_changed.send(sender=PolicyOverride)
        return count

    def delete(self) -> tuple[int, dict[str, int]]:
        result = super().delete()
        signals.overrides_changed.send(sender=PolicyOverride)
        return result


class PolicyOverride(models.Model):
    """An operator's live change to one task's policy: the top precedence layer.

    ``options`` holds only the options it sets, as raw values (callables as
    dotted paths); every other option inherits from the layers below.
    """

    task_name = models.CharField(
        _("task"),
        max_length=255,
        unique=True,
        help_text=_("Registered Celery task name, e.g. reports.tasks.generate_report."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    options = models.JSONField(_("options"), default=dict, blank=True)
    note = models.TextField(_("note"), blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("last changed by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        editable=False,
        related_name="+",
    )
    updated_at = models.DateTimeField(_("last changed"), auto_now=True)

    objects = PolicyOverrideQuerySet.as_manager()

    class Meta:
        verbose_name = _("policy override")
        verbose_name_plural = _("policy overrides")
        ordering = ["task_name"]

    def __str__(self) -> str:
        return self.task_name

    def raw_options(self) -> dict[str, Any]:
        """The options this override sets, as stored (dotted paths unresolved)."""
        return {k: v for k, v in (self.options or {}).items() if v not in (None, "")}

    def clean(self) -> None:
        errors: dict[str, str] = {}
        raw = self.raw_options()
        for name, value in raw.items():
            try:
                parse_option(name, value, dotted_paths=True)
            except OptionError as exc:
                # One sentence for an admin user: the hints speak of Python values.
                errors[name] = exc.message
        from .services import registered_task

        task = registered_task(self.task_name)
        if task is not None:
            for exc in signature_errors(task, raw):
                errors.setdefault(exc.option, f"{exc.message} {exc.hint}")
        if errors:
            raise ValidationError(errors)


class OverrideRevision(models.Model):
    """One row counting publications, so that two near-simultaneous saves publish
    in the order their snapshots were read (a stale snapshot never wins)."""

    number = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = _("override revision")
        default_permissions = ()

    def __str__(self) -> str:
        return str(self.number)


class Lock(models.Model):
    """A unique lock held in Redis (no table: the admin lists it from Redis)."""

    class Meta:
        managed = False
        default_permissions = ("view",)
        permissions = [("clear_lock", _("Can clear held locks"))]
        verbose_name = _("held lock")
        verbose_name_plural = _("held locks")

    def __str__(self) -> str:
        return str(self._meta.verbose_name)


class RateLimitWindow(models.Model):
    """A global rate-limit window kept in Redis (no table)."""

    class Meta:
        managed = False
        default_permissions = ("view",)
        permissions = [("reset_ratelimit", _("Can reset rate-limit windows"))]
        verbose_name = _("rate-limit window")
        verbose_name_plural = _("rate-limit windows")

    def __str__(self) -> str:
        return str(self._meta.verbose_name)


class ConcurrencySlot(models.Model):
    """Concurrency slots and resource tickets held in Redis (no table)."""

    class Meta:
        managed = False
        default_permissions = ("view",)
        permissions = [("release_slot", _("Can release concurrency slots and resource tickets"))]
        verbose_name = _("concurrency slot")
        verbose_name_plural = _("concurrency")

    def __str__(self) -> str:
        return str(self._meta.verbose_name)


class BeatLeader(models.Model):
    """The beat process leading under the lease in Redis (no table)."""

    class Meta:
        managed = False
        default_permissions = ("view",)
        verbose_name = _("beat leader")
        verbose_name_plural = _("beat leader")

    def __str__(self) -> str:
        return str(self._meta.verbose_name)
