"""URLs of the admin benchmark (``python -m benchmarks.admin_listing``)."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
