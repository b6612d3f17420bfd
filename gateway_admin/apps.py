from django.apps import AppConfig


class GatewayAdminConfig(AppConfig):
    name = "gateway_admin"
    verbose_name = "Sluice"

    def ready(self):
        from . import signals  # noqa: F401  (connects the revision receivers)
