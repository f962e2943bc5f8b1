from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class HeimdallConfig(AppConfig):
    name = "django_heimdall"
    label = "heimdall"
    verbose_name = _("Heimdall")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .overrides import source
        from .policies import set_override_source

        set_override_source(source)
