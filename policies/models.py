"""Policy documents: the `<policies>` XML attached to the global, product, API or operation scope."""

from django.db import models
from django.db.models import Q

from gateway_admin.models import ConfigurationModel

from .choices import PolicyFormatChoices, PolicyScopeChoices

__all__ = ("Policy",)


class Policy(ConfigurationModel):
    """The policy document of one scope; at most one per scope owner (and one global document)."""

    scope = models.CharField(
        verbose_name="scope",
        max_length=16,
        choices=PolicyScopeChoices,
    )
    product = models.ForeignKey(
        to="subscriptions.Product",
        on_delete=models.CASCADE,
        related_name="policies",
        blank=True,
        null=True,
        verbose_name="product",
    )
    api = models.ForeignKey(
        to="apis.API",
        on_delete=models.CASCADE,
        related_name="policies",
        blank=True,
        null=True,
        verbose_name="API",
    )
    operation = models.ForeignKey(
        to="apis.Operation",
        on_delete=models.CASCADE,
        related_name="policies",
        blank=True,
        null=True,
        verbose_name="operation",
    )
    format = models.CharField(
        verbose_name="format",
        max_length=16,
        choices=PolicyFormatChoices,
        default=PolicyFormatChoices.XML,
    )
    value = models.TextField(
        verbose_name="document",
    )

    class Meta:
        ordering = ("scope", "pk")
        verbose_name = "policy"
        verbose_name_plural = "policies"
        constraints = [
            # Exactly the owner that matches the scope is set.
            models.CheckConstraint(
                condition=(
                    Q(scope=PolicyScopeChoices.GLOBAL, product=None, api=None, operation=None)
                    | Q(scope=PolicyScopeChoices.PRODUCT, product__isnull=False, api=None, operation=None)
                    | Q(scope=PolicyScopeChoices.API, product=None, api__isnull=False, operation=None)
                    | Q(scope=PolicyScopeChoices.OPERATION, product=None, api=None, operation__isnull=False)
                ),
                name="%(app_label)s_%(class)s_scope_owner",
            ),
            models.UniqueConstraint(
                fields=["scope"],
                condition=Q(scope=PolicyScopeChoices.GLOBAL),
                name="%(app_label)s_%(class)s_unique_global",
            ),
            models.UniqueConstraint(fields=["product"], name="%(app_label)s_%(class)s_unique_product"),
            models.UniqueConstraint(fields=["api"], name="%(app_label)s_%(class)s_unique_api"),
            models.UniqueConstraint(fields=["operation"], name="%(app_label)s_%(class)s_unique_operation"),
        ]

    def __str__(self):
        if self.scope == PolicyScopeChoices.PRODUCT:
            return f"policy of product '{self.product.name}'"
        if self.scope == PolicyScopeChoices.API:
            return f"policy of API '{self.api.name}'"
        if self.scope == PolicyScopeChoices.OPERATION:
            return f"policy of operation '{self.operation.api.name}/{self.operation.name}'"
        return "global policy"
