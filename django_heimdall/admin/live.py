"""What the admin pages over live Redis state share (held locks in ``locks``,
rate-limit windows in ``rates``, concurrency slots and resource tickets in
``concurrency``).

The models are table-less; these admins replace the changelist with a view that
reads the store, and route every change through a confirmation page that is
re-checked on submit. No lock or window changes on GET; every view checks the model
permission itself (the admin wrapper only checks staff status).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse

from ..services import HeimdallUnavailable

PER_PAGE = 100


class LiveAdmin(admin.ModelAdmin):
    """Base of the admins of table-less models listed from Redis."""

    change_permission_codename = ""  # the custom permission that allows changes

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def can_change(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.{self.change_permission_codename}")

    def get_urls(self) -> list[Any]:
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("", self.admin_site.admin_view(self.live_view), name=f"{name}_changelist"),
            path(
                "confirm/",
                self.admin_site.admin_view(self.confirm_view),
                name=f"{name}_confirm",
            ),
        ]

    def url(self, name: str, *args: Any) -> str:
        """Reverse an admin URL on this admin's site (which may be a custom one)."""
        return reverse(f"admin:{name}", args=args, current_app=self.admin_site.name)

    def changelist_url(self, **params: Any) -> str:
        url = self.url(f"{self.opts.app_label}_{self.opts.model_name}_changelist")
        params = {k: v for k, v in params.items() if v}
        return f"{url}?{urlencode(params)}" if params else url

    def context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        request.current_app = self.admin_site.name
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "can_change": self.can_change(request),
            **extra,
        }

    def page_context(self, total: int, page: int) -> dict[str, Any]:
        """Pagination of a listing of ``total`` rows at ``PER_PAGE`` a page."""
        pages = max(1, -(-total // PER_PAGE))
        return {
            "total": total,
            "page": page,
            "pages": pages,
            "previous_url": self.changelist_url(p=page - 1) if page > 1 else "",
            "next_url": self.changelist_url(p=page + 1) if page < pages else "",
        }

    def log(self, request: HttpRequest, object_id: str, object_repr: str, message: str) -> None:
        """An admin log entry for a change that is not a model save."""
        LogEntry.objects.create(
            user_id=request.user.pk,
            content_type=ContentType.objects.get_for_model(self.model, for_concrete_model=False),
            object_id=object_id[:1000],
            object_repr=object_repr[:200],
            action_flag=DELETION,
            change_message=message,
        )

    def task_results(self, task_ids: list[str]) -> dict[str, tuple[str, str]]:
        """``task id -> (state, admin URL)`` of the TaskResults of ``task_ids``, when
        django-celery-results is installed and registered on this admin site."""
        if not task_ids or not apps.is_installed("django_celery_results"):
            return {}
        from django_celery_results.models import TaskResult

        if not self.admin_site.is_registered(TaskResult):
            return {}
        return {
            r.task_id: (r.status, self.url("django_celery_results_taskresult_change", r.pk))
            for r in TaskResult.objects.filter(task_id__in=task_ids)
        }

    def live_view(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError

    def confirm_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        # The confirmation page shows what would change: viewing it needs both.
        if not (self.has_view_permission(request) and self.can_change(request)):
            raise PermissionDenied
        try:
            if "confirm" in request.POST:
                return self.apply(request)
            return self.confirm(request)
        except HeimdallUnavailable as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(self.changelist_url())

    def confirm(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError

    def apply(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError


#: Beyond any listing (10⁸ rows), and small enough for the offsets Redis takes.
LAST_PAGE = 1_000_000


def page_number(value: Any) -> int:
    """The page a ``?p=`` parameter asks for (1 when missing or garbled)."""
    try:
        return min(max(1, int(value)), LAST_PAGE)
    except (TypeError, ValueError):
        return 1
