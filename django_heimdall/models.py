"""Database models: admin policy overrides, and two table-less models that give
the live Redis pages their permissions, content types and admin log entries."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils.translation import gettext_lazy as _

from .policies import OPTION_NAMES, OptionError, parse_option


class PolicyOverrideQuerySet(models.QuerySet):
    """Bulk changes publish too: ``update()`` and ``delete()`` send no model signals."""

    def update(self, **kwargs: Any) -> int:
        count = super().update(**kwargs)
        _publish()
        return count

    def delete(self) -> tuple[int, dict[str, int]]:
        result = super().delete()
        _publish()
        return result


class PolicyOverride(models.Model):
    """An operator's live change to one task's policy: the top precedence layer.

    A field left empty (null, or "" for text) inherits the value from the layers below.
    """

    task_name = models.CharField(
        _("task"),
        max_length=255,
        unique=True,
        help_text=_("Registered Celery task name, e.g. reports.tasks.generate_report."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    unique = models.BooleanField(_("unique"), null=True, blank=True)
    unique_timeout = models.FloatField(
        _("unique timeout"), null=True, blank=True, help_text=_("Lock lease, in seconds.")
    )
    key = models.CharField(
        _("key function"),
        max_length=255,
        blank=True,
        help_text=_("Dotted path of a callable(args, kwargs) -> str."),
    )
    unique_on = models.JSONField(
        _("unique on"),
        null=True,
        blank=True,
        help_text=_('Argument names as a JSON list, e.g. ["customer_id"]; [] = task name only.'),
    )
    unique_raises = models.BooleanField(_("unique raises"), null=True, blank=True)
    unique_wait_for_expiry = models.BooleanField(_("unique wait for expiry"), null=True, blank=True)
    rate_limit = models.CharField(
        _("rate limit"),
        max_length=255,
        blank=True,
        help_text=_("A rate such as 10/m or 2/60s, or the dotted path of a callable."),
    )
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
        values = {name: getattr(self, name) for name in OPTION_NAMES}
        return {name: value for name, value in values.items() if value not in (None, "")}

    def clean(self) -> None:
        errors = {}
        for name, value in self.raw_options().items():
            try:
                parse_option(name, value, dotted_paths=True)
            except OptionError as exc:
                errors[name] = f"{exc.message} {exc.hint}"
        if errors:
            raise ValidationError(errors)


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


def _publish() -> None:
    from .overrides import publish

    # Only what was committed: a rolled-back change must not reach the workers.
    transaction.on_commit(publish)


def _on_change(sender: Any, **kwargs: Any) -> None:
    _publish()


models.signals.post_save.connect(_on_change, sender=PolicyOverride, dispatch_uid="heimdall.save")
models.signals.post_delete.connect(
    _on_change, sender=PolicyOverride, dispatch_uid="heimdall.delete"
)
