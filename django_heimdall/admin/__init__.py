"""Django admin for django-heimdall: policy overrides and effective policies
(``policies``), live locks, rate-limit windows and concurrency slots from Redis
(``live``), the beat
leader (``beat``)."""

from django.contrib import admin

from ..models import BeatLeader, ConcurrencySlot, Lock, PolicyOverride, RateLimitWindow
from .beat import BeatLeaderAdmin
from .live import ConcurrencyAdmin, LockAdmin, RateLimitWindowAdmin
from .policies import PolicyOverrideAdmin

admin.site.register(PolicyOverride, PolicyOverrideAdmin)
admin.site.register(Lock, LockAdmin)
admin.site.register(RateLimitWindow, RateLimitWindowAdmin)
admin.site.register(ConcurrencySlot, ConcurrencyAdmin)
admin.site.register(BeatLeader, BeatLeaderAdmin)

__all__ = [
    "BeatLeaderAdmin",
    "ConcurrencyAdmin",
    "LockAdmin",
    "PolicyOverrideAdmin",
    "RateLimitWindowAdmin",
]
