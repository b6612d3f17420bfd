from django.apps import AppConfig


class ContentSafetyConfig(AppConfig):
    name = "content_safety"
    verbose_name = "content safety"
