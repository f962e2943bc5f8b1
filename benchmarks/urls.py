"""URLs of the admin section of the benchmarks (``benchmarks.admin_pages``)."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
