from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save
from django.utils.translation import gettext_lazy as _


class HeimdallConfig(AppConfig):
    name = "django_heimdall"
    label = "heimdall"
    verbose_name = _("Heimdall")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from celery.signals import task_failure, task_revoked

        from . import checks  # noqa: F401  (registers the system checks)
        from .execution import release_lost, release_revoked
        from .models import PolicyOverride
        from .overrides import on_change, source
        from .policies import set_override_source
        from .signals import overrides_changed

        for signal in (post_save, post_delete, overrides_changed):
            signal.connect(on_change, sender=PolicyOverride, dispatch_uid=f"heimdall.{id(signal)}")
        set_override_source(source)
        # A worker gives back what a revoked task or a lost process held.
        task_revoked.connect(release_revoked, weak=False, dispatch_uid="heimdall.release_revoked")
        task_failure.connect(release_lost, weak=False, dispatch_uid="heimdall.release_lost")
