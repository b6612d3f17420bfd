from django.apps import AppConfig


class GatewayAdminConfig(AppConfig):
    name = "gateway_admin"
    verbose_name = "Sluice"
