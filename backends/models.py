"""Backends: reusable descriptions of upstream model services, routed to with `set-backend-service backend-id`."""

from django.db import models

from gateway_admin.models import ConfigurationModel
from gateway_admin.validators import validate_http_url, validate_resource_name

__all__ = ("Backend", "BackendType")


class BackendType(models.TextChoices):
    SINGLE = "Single", "Single"
    POOL = "Pool", "Pool"


class Backend(ConfigurationModel):
    """An upstream HTTP service and the credentials the gateway adds when it forwards to it, or (``type`` Pool) a
    load-balanced pool of such backends. Either may carry a circuit breaker rule (docs/backend-pools.md)."""

    name = models.CharField(
        verbose_name="name",
        max_length=80,
        validators=[validate_resource_name],
    )
    type = models.CharField(
        verbose_name="type",
        max_length=10,
        choices=BackendType.choices,
        default=BackendType.SINGLE,
    )
    url = models.CharField(
        verbose_name="URL",
        max_length=2000,
        blank=True,
        validators=[validate_http_url],
        help_text="Runtime URL; the operation path is appended to it. Empty for a pool.",
    )
    pool = models.JSONField(
        verbose_name="pool",
        null=True,
        blank=True,
        help_text='Pool members: {"services": [{"backend": "name", "priority": 1, "weight": 1}, ...]}.',
    )
    circuit_breaker = models.JSONField(
        verbose_name="circuit breaker",
        null=True,
        blank=True,
        help_text='APIM\'s circuitBreaker: {"rules": [{"name", "failureCondition", "tripDuration", '
        '"acceptRetryAfter"}]} (one rule).',
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
