from django.contrib import admin
from django.urls import path

from tests.admin_site import ops_site, policies_site

urlpatterns = [
    path("admin/", admin.site.urls),
    path("ops/", ops_site.urls),
    path("policies/", policies_site.urls),
]
