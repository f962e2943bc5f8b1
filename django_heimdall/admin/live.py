"""Admin pages over live Redis state: held locks, rate-limit windows, concurrency
slots and resource tickets.

The models are table-less; these admins replace the changelist with a view that
reads the store, and route every change through a confirmation page that is
re-checked on submit. No lock or window changes on GET; every view checks the model
permission itself (the admin wrapper only checks staff status).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from ..services import HeimdallUnavailable, live, release_locks, release_slots, revoke

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
        if not self.can_change(request):
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


def _page_number(value: Any) -> int:
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 1


def _pairs(values: list[str]) -> list[tuple[str, str]]:
    """Decode the (identity, owner) pairs that a form carried."""
    pairs = []
    for value in values:
        try:
            identity, owner = json.loads(value)
        except (TypeError, ValueError):
            continue
        if isinstance(identity, str) and isinstance(owner, str):
            pairs.append((identity, owner))
    return pairs


class LockAdmin(LiveAdmin):
    change_permission_codename = "clear_lock"
    actions_list = (
        ("release", gettext_lazy("Release selected locks")),
        ("release_revoke", gettext_lazy("Release selected locks and revoke their tasks")),
    )

    def live_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        task = request.GET.get("task", "")
        search = request.GET.get("q", "").strip()
        page = _page_number(request.GET.get("p"))
        counts: dict[str, int] = {}
        locks: list[Any] = []
        total, error = 0, ""
        try:
            state = live()
            counts = state.lock_counts(state.task_names())
            if search:
                found = state.lock_by_owner(search)
                locks = [found] if found is not None else []
                total = len(locks)
            else:
                result = state.locks_page(
                    [task] if task else sorted(counts), (page - 1) * PER_PAGE, PER_PAGE
                )
                locks, total = result.locks, result.total
        except HeimdallUnavailable as exc:
            error = str(exc)
        pages = max(1, -(-total // PER_PAGE))
        context = self.context(
            request,
            _("Held locks"),
            rows=self._rows(locks),
            total=total,
            counts=counts,
            task=task,
            search=search,
            page=page,
            pages=pages,
            previous_url=self.changelist_url(task=task, p=page - 1) if page > 1 else "",
            next_url=self.changelist_url(task=task, p=page + 1) if page < pages else "",
            actions=self.actions_list,
            redis_error=error,
        )
        return TemplateResponse(request, "admin/heimdall/lock/change_list.html", context)

    def _rows(self, locks: list[Any]) -> list[dict[str, Any]]:
        results = self.task_results([lock.owner for lock in locks])
        return [
            {
                "lock": lock,
                "value": json.dumps([lock.identity, lock.owner]),
                "state": results.get(lock.owner, ("", ""))[0],
                "result_url": results.get(lock.owner, ("", ""))[1],
            }
            for lock in locks
        ]

    def confirm(self, request: HttpRequest) -> HttpResponse:
        action = request.POST.get("action", "")
        task = request.POST.get("task", "")
        state = live()
        if action == "release_task" and task:
            cutoff = state.now_ms()
            count = state.lock_counts([task])[task]
            preview = state.locks_page([task], 0, 20).locks
            summary = ngettext(
                "Release the %(count)d lock of task %(task)s?",
                "Release all %(count)d locks of task %(task)s?",
                count,
            ) % {"count": count, "task": task}
            hidden = [("task", task), ("cutoff", str(cutoff))]
        elif action in dict(self.actions_list):
            pairs = _pairs(request.POST.getlist("selected"))
            if not pairs:
                self.message_user(request, _("No lock was selected."), messages.WARNING)
                return HttpResponseRedirect(self.changelist_url(task=task))
            preview = [lock for lock in (state.lock_info(i) for i, _owner in pairs) if lock]
            count = len(pairs)
            summary = ngettext("Release %(count)d lock?", "Release %(count)d locks?", count) % {
                "count": count
            }
            if action == "release_revoke":
                summary += " " + ngettext(
                    "Its task will be revoked.", "Their tasks will be revoked.", count
                )
            hidden = [("selected", json.dumps(pair)) for pair in pairs] + [("task", task)]
        else:
            self.message_user(request, _("Unknown action."), messages.ERROR)
            return HttpResponseRedirect(self.changelist_url(task=task))
        context = self.context(
            request,
            _("Are you sure?"),
            summary=summary,
            preview=preview,
            action=action,
            hidden=hidden,
            cancel_url=self.changelist_url(task=task),
            confirm_url=self.url("heimdall_lock_confirm"),
        )
        return TemplateResponse(request, "admin/heimdall/confirm.html", context)

    def apply(self, request: HttpRequest) -> HttpResponse:
        action = request.POST.get("action", "")
        task = request.POST.get("task", "")
        if action == "release_task":
            try:
                cutoff = int(request.POST.get("cutoff", ""))
            except ValueError:
                self.message_user(request, _("The confirmation was incomplete."), messages.ERROR)
                return HttpResponseRedirect(self.changelist_url(task=task))
            count = live().release_task(task, cutoff)
            self.log(request, task, task, f"Released {count} locks of task {task}")
            self.message_user(
                request,
                ngettext(
                    "%(count)d lock of %(task)s released.",
                    "%(count)d locks of %(task)s released.",
                    count,
                )
                % {"count": count, "task": task},
                messages.SUCCESS,
            )
            return HttpResponseRedirect(self.changelist_url(task=task))

        result = release_locks(_pairs(request.POST.getlist("selected")))
        for lock in result.released:
            self.log(
                request,
                lock.identity,
                f"{lock.task} [{lock.owner}]",
                f"Released lock held by {lock.owner}",
            )
        if action == "release_revoke":
            revoke([lock.owner for lock in result.released])
        if result.released:
            message = ngettext(
                "%(count)d lock released.", "%(count)d locks released.", len(result.released)
            ) % {"count": len(result.released)}
            if action == "release_revoke":
                message += " " + ngettext(
                    "Its task was revoked.", "Their tasks were revoked.", len(result.released)
                )
            self.message_user(request, message, messages.SUCCESS)
        if result.taken_over:
            self.message_user(
                request,
                ngettext(
                    "%(count)d lock was taken by another task in the meantime and was kept.",
                    "%(count)d locks were taken by other tasks in the meantime and were kept.",
                    len(result.taken_over),
                )
                % {"count": len(result.taken_over)},
                messages.WARNING,
            )
        if result.gone:
            self.message_user(
                request,
                ngettext(
                    "%(count)d lock was already gone (expired or released).",
                    "%(count)d locks were already gone (expired or released).",
                    len(result.gone),
                )
                % {"count": len(result.gone)},
                messages.INFO,
            )
        return HttpResponseRedirect(self.changelist_url(task=task))


class RateLimitWindowAdmin(LiveAdmin):
    change_permission_codename = "reset_ratelimit"

    def live_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        groups: dict[str, list[Any]] = {}
        error, total = "", 0
        page = _page_number(request.GET.get("p"))
        try:
            result = live().rate_windows((page - 1) * PER_PAGE, PER_PAGE)
            total = result.total
            for window in result.windows:
                groups.setdefault(window.task, []).append(window)
        except HeimdallUnavailable as exc:
            error = str(exc)
        context = self.context(
            request,
            _("Rate-limit windows"),
            groups=sorted(groups.items()),
            redis_error=error,
            **self.page_context(total, page),
        )
        return TemplateResponse(request, "admin/heimdall/ratelimitwindow/change_list.html", context)

    def confirm(self, request: HttpRequest) -> HttpResponse:
        identities = [i for i in request.POST.getlist("selected") if i]
        if not identities:
            self.message_user(request, _("No rate limit was selected."), messages.WARNING)
            return HttpResponseRedirect(self.changelist_url())
        count = len(identities)
        context = self.context(
            request,
            _("Are you sure?"),
            summary=ngettext(
                "Reset the window of %(count)d rate limit? Its counted starts are forgotten.",
                "Reset the windows of %(count)d rate limits? Their counted starts are forgotten.",
                count,
            )
            % {"count": count},
            preview=[],
            names=identities,
            action="reset",
            hidden=[("selected", identity) for identity in identities],
            cancel_url=self.changelist_url(),
            confirm_url=self.url("heimdall_ratelimitwindow_confirm"),
        )
        return TemplateResponse(request, "admin/heimdall/confirm.html", context)

    def apply(self, request: HttpRequest) -> HttpResponse:
        state = live()
        reset = [i for i in request.POST.getlist("selected") if i and state.reset_rate(i)]
        for identity in reset:
            self.log(request, identity, identity, "Reset rate-limit window")
        self.message_user(
            request,
            ngettext(
                "%(count)d rate-limit window reset.",
                "%(count)d rate-limit windows reset.",
                len(reset),
            )
            % {"count": len(reset)},
            messages.SUCCESS,
        )
        return HttpResponseRedirect(self.changelist_url())


class ConcurrencyAdmin(LiveAdmin):
    """Concurrency slots (per task key) and resource tickets, with their holders and
    the length of each FIFO line; a slot is released through the confirmation page."""

    change_permission_codename = "release_slot"

    def live_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        page = _page_number(request.GET.get("p"))
        semaphores: list[Any] = []
        error, total = "", 0
        try:
            result = live().semaphores((page - 1) * PER_PAGE, PER_PAGE)
            semaphores, total = result.semaphores, result.total
        except HeimdallUnavailable as exc:
            error = str(exc)
        results = self.task_results([h.holder for s in semaphores for h in s.holders])
        groups = []
        for kind, title in (("task", _("Tasks")), ("resource", _("Resources"))):
            rows = [
                {
                    "semaphore": semaphore,
                    "holders": [
                        {
                            "holder": holder,
                            "value": json.dumps([semaphore.name, holder.holder, holder.token]),
                            "state": results.get(holder.holder, ("", ""))[0],
                            "result_url": results.get(holder.holder, ("", ""))[1],
                        }
                        for holder in semaphore.holders
                    ],
                }
                for semaphore in semaphores
                if semaphore.kind == kind
            ]
            if rows:
                groups.append((title, rows))
        context = self.context(
            request,
            _("Concurrency"),
            groups=groups,
            redis_error=error,
            **self.page_context(total, page),
        )
        return TemplateResponse(request, "admin/heimdall/concurrencyslot/change_list.html", context)

    def confirm(self, request: HttpRequest) -> HttpResponse:
        slots = _slots(request.POST.getlist("selected"))
        if not slots:
            self.message_user(request, _("No slot was selected."), messages.WARNING)
            return HttpResponseRedirect(self.changelist_url())
        count = len(slots)
        context = self.context(
            request,
            _("Are you sure?"),
            summary=ngettext(
                "Release %(count)d slot? Its holder keeps running, and another task may start.",
                "Release %(count)d slots? Their holders keep running, and other tasks may start.",
                count,
            )
            % {"count": count},
            preview=[],
            names=[f"{name} — {holder}" for name, holder, _token in slots],
            note=_("A slot released or re-taken before you confirm is left alone."),
            action="release",
            hidden=[("selected", json.dumps(slot)) for slot in slots],
            cancel_url=self.changelist_url(),
            confirm_url=self.url("heimdall_concurrencyslot_confirm"),
        )
        return TemplateResponse(request, "admin/heimdall/confirm.html", context)

    def apply(self, request: HttpRequest) -> HttpResponse:
        result = release_slots(_slots(request.POST.getlist("selected")))
        for name, holder in result.released:
            self.log(
                request,
                f"{name} {holder.holder}",
                f"{name} [{holder.holder}]",
                f"Released slot of {name} held by {holder.holder} ({holder.label})",
            )
        if result.released:
            self.message_user(
                request,
                ngettext(
                    "%(count)d slot released.", "%(count)d slots released.", len(result.released)
                )
                % {"count": len(result.released)},
                messages.SUCCESS,
            )
        if result.gone:
            self.message_user(
                request,
                ngettext(
                    "%(count)d slot was no longer held by that execution and was left alone.",
                    "%(count)d slots were no longer held by those executions and were left alone.",
                    len(result.gone),
                )
                % {"count": len(result.gone)},
                messages.INFO,
            )
        return HttpResponseRedirect(self.changelist_url())


def _slots(values: list[str]) -> list[tuple[str, str, str]]:
    """Decode the (semaphore, holder, token) triples that a form carried."""
    slots = []
    for value in values:
        try:
            name, holder, token = json.loads(value)
        except (TypeError, ValueError):
            continue
        if all(isinstance(part, str) for part in (name, holder, token)):
            slots.append((name, holder, token))
    return slots
