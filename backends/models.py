"""Backends: reusable descriptions of upstream model services, routed to with `set-backend-service backend-id`."""

from django.db import models

from gateway_admin.models import ConfigurationModel
from gateway_admin.validators import validate_http_url, validate_resource_name

__all__ = ("Backend",)


class Backend(ConfigurationModel):
    """An upstream HTTP service and the credentials the gateway adds when it forwards to it."""

    name = models.CharField(
        verbose_name="name",
        max_length=80,
        validators=[validate_resource_name],
    )
    url = models.CharField(
        verbose_name="URL",
        max_length=2000,
        validators=[validate_http_url],
        help_text="Runtime URL; the operation path is appended to it.",
    )
    description = models.TextField(
        verbose_name="description",
        blank=True,
        max_length=2000,
    )
    credentials_header = models.JSONField(
        verbose_name="credential headers",
        default=dict,
        blank=True,
        help_text='Header name → value; values may reference named values, e.g. {"api-key": "{{openai-key}}"}.',
    )
    credentials_query = models.JSONField(
        verbose_name="credential query parameters",
        default=dict,
        blank=True,
        help_text="Query parameter name → value; values may reference named values.",
    )

    class Meta:
        ordering = ("name",)
        verbose_name = "backend"
        verbose_name_plural = "backends"
        constraints = [
            models.UniqueConstraint(fields=["name"], name="%(app_label)s_%(class)s_unique_name"),
        ]

    def __str__(self):
        return self.name
