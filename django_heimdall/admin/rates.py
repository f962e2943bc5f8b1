"""The admin page of rate-limit windows and their waiting tasks; reset through a
confirmation page."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..services import HeimdallUnavailable, live
from .live import PER_PAGE, LiveAdmin, page_number


class RateLimitWindowAdmin(LiveAdmin):
    change_permission_codename = "reset_ratelimit"

    def live_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        groups: dict[str, list[Any]] = {}
        error, total = "", 0
        page = page_number(request.GET.get("p"))
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
