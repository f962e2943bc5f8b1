from django.contrib import admin
from django.urls import path

from example_project.demo import views

urlpatterns = [
    path("", views.index, name="demo-index"),
    path("fire/<slug:feature>/", views.fire, name="demo-fire"),
    path("api/sites/<int:site_id>/rebuild/", views.rebuild_index, name="demo-rebuild"),
    path("timeline/", views.timeline_data, name="demo-timeline"),
    path("admin/", admin.site.urls),
]
