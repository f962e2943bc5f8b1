"""Django admin for django-heimdall: policy overrides and effective policies
(``policies``), live locks and rate-limit windows from Redis (``live``), the beat
leader (``beat``)."""

from django.contrib import admin

from ..models import BeatLeader, Lock, PolicyOverride, RateLimitWindow
from .beat import BeatLeaderAdmin
from .live import LockAdmin, RateLimitWindowAdmin
from .policies import PolicyOverrideAdmin

admin.site.register(PolicyOverride, PolicyOverrideAdmin)
admin.site.register(Lock, LockAdmin)
admin.site.register(RateLimitWindow, RateLimitWindowAdmin)
admin.site.register(BeatLeader, BeatLeaderAdmin)

__all__ = ["BeatLeaderAdmin", "LockAdmin", "PolicyOverrideAdmin", "RateLimitWindowAdmin"]
