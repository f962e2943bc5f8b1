"""The admin page of held unique locks: listing by task, search by task id or
argument text, release through a confirmation page."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from ..services import HeimdallUnavailable, live, release_locks, revoke
from .live import PER_PAGE, LiveAdmin, page_number


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
        page = page_number(request.GET.get("p"))
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
            pairs = lock_pairs(request.POST.getlist("selected"))
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
            if count:  # like a single release: nothing released, nothing to log
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

        result = release_locks(lock_pairs(request.POST.getlist("selected")))
        revoked = " and revoked the task" if action == "release_revoke" else ""
        for lock in result.released:
            self.log(
                request,
                lock.identity,
                f"{lock.task} [{lock.owner}]",
                f"Released lock held by {lock.owner}{revoked}",
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


def lock_pairs(values: list[str]) -> list[tuple[str, str]]:
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
