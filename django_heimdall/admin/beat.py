"""Admin page of beat: the leading process and the latest occurrences it sent or
skipped, read from Redis (a table-less model, view permission only)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext as _

from ..services import HeimdallUnavailable, beat
from .live import LiveAdmin


class BeatLeaderAdmin(LiveAdmin):
    def get_urls(self) -> list[Any]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        return [path("", self.admin_site.admin_view(self.live_view), name=name)]

    def live_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        leader, recent, error = None, [], ""
        try:
            state = beat()
            leader, recent = state.leader(), state.recent()
        except HeimdallUnavailable as exc:
            error = str(exc)
        context = self.context(
            request, _("Beat leader"), leader=leader, recent=recent, redis_error=error
        )
        return TemplateResponse(request, "admin/heimdall/beatleader/change_list.html", context)
