"""Django admin for django-heimdall: policy overrides and effective policies
(``policies``), live locks and rate-limit windows from Redis (``live``)."""

from django.contrib import admin

from ..models import Lock, PolicyOverride, RateLimitWindow
from .live import LockAdmin, RateLimitWindowAdmin
from .policies import PolicyOverrideAdmin

admin.site.register(PolicyOverride, PolicyOverrideAdmin)
admin.site.register(Lock, LockAdmin)
admin.site.register(RateLimitWindow, RateLimitWindowAdmin)

__all__ = ["LockAdmin", "PolicyOverrideAdmin", "RateLimitWindowAdmin"]
