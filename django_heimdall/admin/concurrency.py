"""The admin page of concurrency slots and resource tickets; release through a
confirmation page."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..services import HeimdallUnavailable, live, release_slots
from .live import PER_PAGE, LiveAdmin, page_number


class ConcurrencyAdmin(LiveAdmin):
    """Concurrency slots (per task key) and resource tickets, with their holders and
    the length of each FIFO line; a slot is released through the confirmation page."""

    change_permission_codename = "release_slot"

    def live_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        page = page_number(request.GET.get("p"))
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
