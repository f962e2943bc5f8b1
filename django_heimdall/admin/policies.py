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

from ..models import Lock, PolicyOverride
from ..options import ADMIN, CANONICAL, OPTIONS, SECTIONS
from ..services import effective_policies, publish_on_commit, registered_task_names


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


def _option_field(option: Any) -> forms.Field:
    field = option.kind.form_field()
    field.label = option.name
    field.help_text = option.help
    return field


class _OverrideFormBase(forms.ModelForm):
    """The override form: one field per option of the table, left empty to inherit."""

    class Meta:
        model = PolicyOverride
        fields = ["task_name", "enabled", "note"]
        widgets = {"task_name": TaskNameInput(attrs={"size": 60})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.before = _audited(self.instance)
        for name, value in (self.instance.options or {}).items():
            if name in OPTIONS and name in self.fields:
                self.initial.setdefault(name, OPTIONS[name].kind.to_form(value))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        options = {}
        for option in OPTIONS.values():
            if option.name in self.fields:
                raw = option.kind.from_form(cleaned.get(option.name))
                if raw is not None:
                    options[option.name] = raw
        self.instance.options = options
        return cleaned


def _audited(override: PolicyOverride) -> dict[str, Any]:
    """What the audit compares: the override's fields and each of its options."""
    fields = {name: getattr(override, name) for name in _OverrideFormBase.Meta.fields}
    return {**fields, **(override.options or {})}


def change_message(before: dict[str, Any], after: dict[str, Any]) -> str:
    """``name: old → new`` for each field or option that changed (old or new may
    be "(inherit)", an option not set), for the admin log."""

    def shown(values: dict[str, Any], name: str) -> str:
        return repr(values[name]) if name in values else str(_("(inherit)"))

    changed = [
        f"{name}: {shown(before, name)} → {shown(after, name)}"
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    ]
    return _("Changed %(changes)s.") % {"changes": "; ".join(changed)} if changed else ""


PolicyOverrideForm = type(
    "PolicyOverrideForm",
    (_OverrideFormBase,),
    {name: _option_field(o) for name, o in OPTIONS.items() if ADMIN in o.scopes},
)


def _fieldsets() -> tuple[Any, ...]:
    sections: dict[str, list[str]] = {}
    for option in OPTIONS.values():
        if ADMIN in option.scopes:
            sections.setdefault(option.section, []).append(option.name)
    return (
        (None, {"fields": ("task_name", "enabled", "note")}),
        *((SECTIONS[name], {"fields": fields}) for name, fields in sections.items()),
        (_("History"), {"fields": ("updated_by", "updated_at")}),
    )


class PolicyOverrideAdmin(admin.ModelAdmin):
    form = PolicyOverrideForm
    list_display = ("task_name", "enabled", "summary", "updated_by", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("task_name", "note")
    readonly_fields = ("updated_by", "updated_at")
    actions = ["enable", "disable"]
    change_list_template = "admin/heimdall/policyoverride/change_list.html"
    fieldsets = _fieldsets()

    @admin.display(description=_("overrides"))
    def summary(self, obj: PolicyOverride) -> str:
        return ", ".join(f"{name}={value}" for name, value in obj.raw_options().items())

    def construct_change_message(
        self, request: HttpRequest, form: Any, formsets: Any, add: bool = False
    ) -> Any:
        """The admin log of a change says old → new of every field and option."""
        message = "" if add else change_message(form.before, _audited(form.instance))
        return message or super().construct_change_message(request, form, formsets, add)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)
        self._report_publication(request)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        super().delete_model(request, obj)
        self._report_publication(request)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        super().delete_queryset(request, queryset)
        self._report_publication(request)

    def _report_publication(self, request: HttpRequest) -> None:
        outcome = publish_on_commit()

        def report() -> None:
            if outcome.error:
                self.message_user(
                    request,
                    _(
                        "Saved, but Redis is unreachable: workers keep the previous policy "
                        "until the change can be published."
                    ),
                    messages.WARNING,
                )

        transaction.on_commit(report)

    def _set_enabled(self, request: HttpRequest, queryset: Any, enabled: bool) -> None:
        """A bulk enable/disable, audited like a save (who, when, log entry)."""
        changed = list(queryset.exclude(enabled=enabled))
        count = queryset.filter(pk__in=[o.pk for o in changed]).update(
            enabled=enabled, updated_by=request.user, updated_at=timezone.now()
        )
        for obj in changed:
            message = change_message({"enabled": obj.enabled}, {"enabled": enabled})
            self.log_change(request, obj, message)
        self._report_publication(request)
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
        request.current_app = self.admin_site.name
        overrides = dict(PolicyOverride.objects.values_list("task_name", "pk"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Effective task policies"),
            "policies": effective_policies(),
            "option_names": list(CANONICAL),
            "overrides": overrides,
            "can_add": self.has_add_permission(request),
            "can_view_locks": (
                self.admin_site.is_registered(Lock) and request.user.has_perm("heimdall.view_lock")
            ),
        }
        return TemplateResponse(request, "admin/heimdall/effective.html", context)
