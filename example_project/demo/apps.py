from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "example_project.demo"
    label = "demo"
    verbose_name = "django-heimdall demo"

    def ready(self) -> None:
        from django_heimdall import signals

        from . import timeline

        # The timeline shows when a throttled task will be tried again.
        signals.throttled.connect(timeline.record_throttle, dispatch_uid="demo-timeline")
