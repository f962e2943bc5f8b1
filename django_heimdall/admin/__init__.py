"""Django admin for django-heimdall: policy overrides and effective policies
(``policies``); live state from Redis, on the pages of ``live``: held locks
(``locks``), rate-limit windows (``rates``), concurrency slots and resource
tickets (``concurrency``); the beat leader (``beat``)."""

from django.contrib import admin

from ..models import BeatLeader, ConcurrencySlot, Lock, PolicyOverride, RateLimitWindow
from .beat import BeatLeaderAdmin
from .concurrency import ConcurrencyAdmin
from .locks import LockAdmin
from .policies import PolicyOverrideAdmin
from .rates import RateLimitWindowAdmin

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
