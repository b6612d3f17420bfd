from django.apps import AppConfig
from django.db.backends.signals import connection_created


class GatewayAdminConfig(AppConfig):
    name = "gateway_admin"
    verbose_name = "Sluice"

    def ready(self):
        from . import signals  # noqa: F401  (connects the revision receivers)
        from .sqlite import on_connection_created

        connection_created.connect(on_connection_created, dispatch_uid="sluice_sqlite_wal")
