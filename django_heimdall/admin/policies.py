"""Admin of policy overrides, and the effective-policies page."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..models import PolicyOverride
from ..overrides import source
from ..policies import OPTION_NAMES
from ..services import display, effective_policies, registered_task_names


class TaskNameInput(forms.TextInput):
    """A text input that suggests the Celery app's registered task names."""

    template_name = "admin/heimdall/widgets/task_name.html"

    def get_context(self, name: str, value: Any, attrs: Any) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        context["widget"]["attrs"]["list"] = f"{context['widget']['attrs']['id']}_tasks"
        try:
            context["task_names"] = registered_task_names()
        except Exception:  # the Celery app could not be loaded: free text only
            context["task_names"] = []
        return context


class PolicyOverrideForm(forms.ModelForm):
    class Meta:
        model = PolicyOverride
        fields = [
            "task_name",
            "enabled",
            "note",
            "unique",
            "unique_timeout",
            "key",
            "unique_on",
            "unique_raises",
            "unique_wait_for_expiry",
            "rate_limit",
        ]
        widgets = {"task_name": TaskNameInput(attrs={"size": 60})}


class PolicyOverrideAdmin(admin.ModelAdmin):
    form = PolicyOverrideForm
    list_display = ("task_name", "enabled", "summary", "updated_by", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("task_name", "note")
    readonly_fields = ("updated_by", "updated_at")
    actions = ["enable", "disable"]
    change_list_template = "admin/heimdall/policyoverride/change_list.html"
    fieldsets = (
        (None, {"fields": ("task_name", "enabled", "note")}),
        (
            _("Uniqueness"),
            {
                "fields": (
                    "unique",
                    "unique_timeout",
                    "key",
                    "unique_on",
                    "unique_raises",
                    "unique_wait_for_expiry",
                )
            },
        ),
        (_("Rate limit"), {"fields": ("rate_limit",)}),
        (_("History"), {"fields": ("updated_by", "updated_at")}),
    )

    @admin.display(description=_("overrides"))
    def summary(self, obj: PolicyOverride) -> str:
        return ", ".join(f"{name}={display(value)}" for name, value in obj.raw_options().items())

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)
        self._warn_if_unpublished(request)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        super().delete_model(request, obj)
        self._warn_if_unpublished(request)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        super().delete_queryset(request, queryset)
        self._warn_if_unpublished(request)

    def _warn_if_unpublished(self, request: HttpRequest) -> None:
        def check() -> None:
            if source.pending:
                self.message_user(
                    request,
                    _(
                        "Saved, but Redis is unreachable: workers keep the previous policy "
                        "until the change can be published."
                    ),
                    messages.WARNING,
                )

        transaction.on_commit(check)

    def _set_enabled(self, request: HttpRequest, queryset: Any, enabled: bool) -> None:
        """A bulk enable/disable, audited like a save (who, when, log entry)."""
        changed = list(queryset.exclude(enabled=enabled))
        count = queryset.filter(pk__in=[o.pk for o in changed]).update(
            enabled=enabled, updated_by=request.user, updated_at=timezone.now()
        )
        for obj in changed:
            self.log_change(request, obj, [{"changed": {"fields": ["enabled"]}}])
        self._warn_if_unpublished(request)
        if enabled:
            message = ngettext("%(count)d override enabled.", "%(count)d overrides enabled.", count)
        else:
            message = ngettext(
                "%(count)d override disabled.", "%(count)d overrides disabled.", count
            )
        self.message_user(request, message % {"count": count}, messages.SUCCESS)

    @admin.action(description=_("Enable selected overrides"), permissions=["change"])
    def enable(self, request: HttpRequest, queryset: Any) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description=_("Disable selected overrides"), permissions=["change"])
    def disable(self, request: HttpRequest, queryset: Any) -> None:
        self._set_enabled(request, queryset, False)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "effective/",
                self.admin_site.admin_view(self.effective_view),
                name="heimdall_policyoverride_effective",
            ),
            *super().get_urls(),
        ]

    def effective_view(self, request: HttpRequest) -> HttpResponse:
        """Every task's effective options and where each comes from."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        overrides = dict(PolicyOverride.objects.values_list("task_name", "pk"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Effective task policies"),
            "policies": effective_policies(),
            "option_names": OPTION_NAMES,
            "overrides": overrides,
            "can_add": self.has_add_permission(request),
            "can_view_locks": request.user.has_perm("heimdall.view_lock"),
        }
        return TemplateResponse(request, "admin/heimdall/effective.html", context)
