"""APIs and their operations: what the gateway exposes under /<path>/ and forwards to the service URL."""

from django.conf import settings
from django.db import models

from gateway_admin.models import ConfigurationModel
from gateway_admin.validators import (
    validate_header_name,
    validate_http_url,
    validate_query_name,
    validate_resource_name,
)

from .choices import APITypeChoices, HttpMethodChoices
from .validators import validate_api_name, validate_api_path, validate_url_template

__all__ = ("API", "Operation")

DEFAULT_SUBSCRIPTION_KEY_HEADER = "Ocp-Apim-Subscription-Key"
DEFAULT_SUBSCRIPTION_KEY_QUERY = "subscription-key"


class API(ConfigurationModel):
    """A language-model (or any HTTP) API published by the gateway at `/<path>`."""

    name = models.CharField(
        verbose_name="name",
        max_length=80,
        validators=[validate_resource_name, validate_api_name],
    )
    display_name = models.CharField(
        verbose_name="display name",
        max_length=300,
    )
    description = models.TextField(
        verbose_name="description",
        blank=True,
    )
    path = models.CharField(
        verbose_name="path",
        max_length=400,
        validators=[validate_api_path],
        help_text="URL suffix on the gateway: clients call https://<gateway>/<path>/<operation>.",
    )
    service_url = models.CharField(
        verbose_name="service URL",
        max_length=2000,
        blank=True,
        validators=[validate_http_url],
        help_text="Backend base URL used when no set-backend-service policy applies.",
    )
    api_type = models.CharField(
        verbose_name="type",
        max_length=16,
        choices=APITypeChoices,
        default=APITypeChoices.PASSTHROUGH,
    )
    subscription_required = models.BooleanField(
        verbose_name="subscription required",
        default=True,
    )
    subscription_key_header = models.CharField(
        verbose_name="subscription key header",
        max_length=100,
        default=DEFAULT_SUBSCRIPTION_KEY_HEADER,
        validators=[validate_header_name],
    )
    subscription_key_query = models.CharField(
        verbose_name="subscription key query parameter",
        max_length=100,
        default=DEFAULT_SUBSCRIPTION_KEY_QUERY,
        validators=[validate_query_name],
    )

    class Meta:
        ordering = ("name",)
        verbose_name = "API"
        verbose_name_plural = "APIs"
        constraints = [
            models.UniqueConstraint(fields=["name"], name="%(app_label)s_%(class)s_unique_name"),
            models.UniqueConstraint(fields=["path"], name="%(app_label)s_%(class)s_unique_path"),
        ]

    def __str__(self):
        return self.name

    @property
    def gateway_url(self) -> str:
        """Where clients call this API: the gateway's URL (``SLUICE["GATEWAY_URL"]``) and the API's path."""
        return f"{settings.SLUICE['GATEWAY_URL'].rstrip('/')}/{self.path}"


class Operation(ConfigurationModel):
    """One method + URL template of an API; `/*` as the last segment matches any remaining path."""

    api = models.ForeignKey(
        to=API,
        on_delete=models.CASCADE,
        related_name="operations",
        verbose_name="API",
    )
    name = models.CharField(
        verbose_name="name",
        max_length=80,
        validators=[validate_resource_name],
    )
    display_name = models.CharField(
        verbose_name="display name",
        max_length=300,
    )
    method = models.CharField(
        verbose_name="method",
        max_length=10,
        choices=HttpMethodChoices,
    )
    url_template = models.CharField(
        verbose_name="URL template",
        max_length=1000,
        validators=[validate_url_template],
    )
    description = models.TextField(
        verbose_name="description",
        blank=True,
    )

    class Meta:
        ordering = ("api", "name")
        verbose_name = "operation"
        verbose_name_plural = "operations"
        constraints = [
            models.UniqueConstraint(fields=["api", "name"], name="%(app_label)s_%(class)s_unique_api_name"),
            models.UniqueConstraint(
                fields=["api", "method", "url_template"], name="%(app_label)s_%(class)s_unique_api_method_template"
            ),
        ]

    def __str__(self):
        return f"{self.api.name}/{self.name}"
