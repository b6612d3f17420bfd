"""Products (groups of APIs) and subscriptions (pairs of keys scoped to all APIs, one API or one product)."""

from django.db import models
from django.db.models import Q

from gateway_admin.models import ConfigurationModel
from gateway_admin.validators import validate_resource_name
from named_values import crypto

from .choices import ProductStateChoices, SubscriptionStateChoices

__all__ = ("Product", "Subscription")


class Product(ConfigurationModel):
    """A group of APIs offered together; subscriptions scoped to it unlock all of them."""

    name = models.CharField(
        verbose_name="name",
        max_length=80,
        validators=[validate_resource_name],
    )
    display_name = models.CharField(
        verbose_name="display name",
        max_length=300,
    )
    description = models.TextField(
        verbose_name="description",
        blank=True,
    )
    subscription_required = models.BooleanField(
        verbose_name="subscription required",
        default=True,
        help_text="When off the product is open: its APIs can be called without a key.",
    )
    approval_required = models.BooleanField(
        verbose_name="approval required",
        default=False,
    )
    subscriptions_limit = models.PositiveIntegerField(
        verbose_name="subscriptions limit",
        blank=True,
        null=True,
        help_text="Maximum number of subscriptions (active, suspended or submitted); empty for no limit.",
    )
    state = models.CharField(
        verbose_name="state",
        max_length=16,
        choices=ProductStateChoices,
        default=ProductStateChoices.NOT_PUBLISHED,
    )
    apis = models.ManyToManyField(
        to="apis.API",
        related_name="products",
        blank=True,
        verbose_name="APIs",
    )

    class Meta:
        ordering = ("name",)
        verbose_name = "product"
        verbose_name_plural = "products"
        constraints = [
            models.UniqueConstraint(fields=["name"], name="%(app_label)s_%(class)s_unique_name"),
        ]

    def __str__(self):
        return self.name


class Subscription(ConfigurationModel):
    """A named pair of keys. Scope: all APIs (no API, no product), one API, or one product.

    The keys are stored encrypted (SLUICE_SECRET_KEYS) next to their SHA-256 digests, which are what the gateway
    snapshot carries and what key uniqueness is checked against.
    """

    COUNTED_STATES = (
        SubscriptionStateChoices.ACTIVE,
        SubscriptionStateChoices.SUSPENDED,
        SubscriptionStateChoices.SUBMITTED,
    )

    name = models.CharField(
        verbose_name="name",
        max_length=80,
        validators=[validate_resource_name],
    )
    display_name = models.CharField(
        verbose_name="display name",
        max_length=100,
        blank=True,
    )
    api = models.ForeignKey(
        to="apis.API",
        on_delete=models.PROTECT,
        related_name="subscriptions",
        blank=True,
        null=True,
        verbose_name="API",
    )
    product = models.ForeignKey(
        to=Product,
        on_delete=models.PROTECT,
        related_name="subscriptions",
        blank=True,
        null=True,
        verbose_name="product",
    )
    state = models.CharField(
        verbose_name="state",
        max_length=16,
        choices=SubscriptionStateChoices,
        default=SubscriptionStateChoices.ACTIVE,
    )
    encrypted_primary_key = models.TextField(
        verbose_name="primary key (encrypted)",
    )
    encrypted_secondary_key = models.TextField(
        verbose_name="secondary key (encrypted)",
    )
    primary_key_hash = models.CharField(
        verbose_name="primary key SHA-256",
        max_length=64,
        db_index=True,
    )
    secondary_key_hash = models.CharField(
        verbose_name="secondary key SHA-256",
        max_length=64,
        db_index=True,
    )

    class Meta:
        ordering = ("name",)
        verbose_name = "subscription"
        verbose_name_plural = "subscriptions"
        permissions = [("reveal_subscription_keys", "Can reveal the keys of a subscription (list-secrets)")]
        constraints = [
            models.UniqueConstraint(fields=["name"], name="%(app_label)s_%(class)s_unique_name"),
            models.CheckConstraint(
                condition=Q(api=None) | Q(product=None),
                name="%(app_label)s_%(class)s_single_scope",
            ),
        ]

    def __str__(self):
        return self.name

    @property
    def scope(self) -> str:
        if self.api_id is not None:
            return f"/apis/{self.api.name}"
        if self.product_id is not None:
            return f"/products/{self.product.name}"
        return "/apis"

    @property
    def primary_key(self) -> str:
        return crypto.decrypt(self.encrypted_primary_key)

    @property
    def secondary_key(self) -> str:
        return crypto.decrypt(self.encrypted_secondary_key)
