"""Custom AdminSites: one with django-heimdall's admins and without TaskResult's,
one with the policy overrides only."""

from django.contrib.admin import AdminSite

from django_heimdall.admin import (
    ConcurrencyAdmin,
    LockAdmin,
    PolicyOverrideAdmin,
    RateLimitWindowAdmin,
)
from django_heimdall.models import ConcurrencySlot, Lock, PolicyOverride, RateLimitWindow

ops_site = AdminSite(name="ops")
ops_site.register(PolicyOverride, PolicyOverrideAdmin)
ops_site.register(Lock, LockAdmin)
ops_site.register(RateLimitWindow, RateLimitWindowAdmin)
ops_site.register(ConcurrencySlot, ConcurrencyAdmin)

policies_site = AdminSite(name="policies")
policies_site.register(PolicyOverride, PolicyOverrideAdmin)
