from django.apps import AppConfig


class NamedValuesConfig(AppConfig):
    name = "named_values"
