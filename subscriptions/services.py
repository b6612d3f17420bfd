"""Subscription behaviour: scopes, key generation and storage, the products' subscription limits."""

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction
from rest_framework.exceptions import ValidationError

from apis.models import API
from gateway.contract import hash_key
from gateway_admin.exceptions import Conflict
from named_values import crypto

from .choices import SubscriptionStateChoices
from .models import Product, Subscription

__all__ = (
    "KEY_BYTES",
    "MAX_KEY_LENGTH",
    "MIN_KEY_LENGTH",
    "PRIMARY",
    "SECONDARY",
    "Scope",
    "check_open_product_apis",
    "check_open_products",
    "create_subscription",
    "generate_key",
    "parse_scope",
    "regenerate_key",
    "update_subscription",
    "validate_key",
)

KEY_BYTES = 32
PRIMARY, SECONDARY = "primary", "secondary"
ERR_SCOPE_FORMAT = "Use '/apis', '/apis/{api name}' or '/products/{product name}'."
# A custom key must be as hard to guess as a generated one: the gateways keep unsalted SHA-256 digests of the keys
# (in their snapshot and on-disk cache), which a short key would not survive.
MIN_KEY_LENGTH, MAX_KEY_LENGTH = 32, 256
ERR_KEY_LENGTH = f"Keys are {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} characters long."
ERR_KEY_CHARACTERS = "Keys are made of visible ASCII characters (no spaces)."


@dataclass(frozen=True)
class Scope:
    """Where a subscription's keys are valid: every API (neither set), one API, or the APIs of one product."""

    api: API | None = None
    product: Product | None = None

    def __str__(self):
        if self.api is not None:
            return f"/apis/{self.api.name}"
        if self.product is not None:
            return f"/products/{self.product.name}"
        return "/apis"


def generate_key() -> str:
    """64 hex characters (32 random bytes)."""
    return secrets.token_hex(KEY_BYTES)


def parse_scope(text: str) -> Scope:
    """`/apis` | `/apis/{api}` | `/products/{product}`; a missing API or product is a 400 naming `scope`."""
    parts = text.split("/")
    if text == "/apis":
        return Scope()
    if len(parts) == 3 and parts[0] == "" and parts[2]:
        if parts[1] == "apis":
            api = API.objects.filter(name=parts[2]).first()
            if api is None:
                raise ValidationError({"scope": [f"API '{parts[2]}' does not exist."]})
            return Scope(api=api)
        if parts[1] == "products":
            product = Product.objects.filter(name=parts[2]).first()
            if product is None:
                raise ValidationError({"scope": [f"Product '{parts[2]}' does not exist."]})
            return Scope(product=product)
    raise ValidationError({"scope": [f"Invalid scope '{text}'. {ERR_SCOPE_FORMAT}"]})


@transaction.atomic
def create_subscription(
    *,
    name: str,
    scope: Scope,
    display_name: str = "",
    state: str = SubscriptionStateChoices.ACTIVE,
    primary_key: str | None = None,
    secondary_key: str | None = None,
) -> Subscription:
    """Create a subscription; keys are generated unless given. Without `state` it is active, as the portal does
    (ARM would create it `submitted`)."""
    if scope.product is not None:
        _check_limit(scope.product)
    subscription = Subscription(name=name, display_name=display_name, api=scope.api, product=scope.product, state=state)
    _set_key(subscription, PRIMARY, primary_key or generate_key())
    _set_key(subscription, SECONDARY, secondary_key or generate_key())
    subscription.save()
    return subscription


@transaction.atomic
def update_subscription(
    subscription: Subscription,
    *,
    display_name: str | None = None,
    scope: Scope | None = None,
    state: str | None = None,
    primary_key: str | None = None,
    secondary_key: str | None = None,
) -> Subscription:
    if scope is not None:
        if scope.product is not None and scope.product.pk != subscription.product_id:
            _check_limit(scope.product)
        subscription.api, subscription.product = scope.api, scope.product
    if display_name is not None:
        subscription.display_name = display_name
    if state is not None:
        subscription.state = state
    if primary_key is not None:
        _set_key(subscription, PRIMARY, primary_key)
    if secondary_key is not None:
        _set_key(subscription, SECONDARY, secondary_key)
    subscription.save()
    return subscription


@transaction.atomic
def regenerate_key(subscription: Subscription, which: str) -> None:
    """Replace the primary or secondary key with a new random one; the other key keeps working (rotation)."""
    _set_key(subscription, which, generate_key())
    subscription.save()


def validate_key(key: str) -> None:
    """A custom key: 32 to 256 visible ASCII characters. Raises a plain ValidationError (a list of messages)."""
    if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH:
        raise ValidationError([ERR_KEY_LENGTH])
    if any(not 0x21 <= ord(ch) <= 0x7E for ch in key):
        raise ValidationError([ERR_KEY_CHARACTERS])


def _set_key(subscription: Subscription, which: str, key: str) -> None:
    try:
        validate_key(key)
    except ValidationError as error:
        raise ValidationError({f"{which}_key": error.detail}) from None
    digest = hash_key(key)
    # Digests, not keys, are compared here: equality on a SHA-256 digest leaks nothing usable about the key.
    others = Subscription.objects.exclude(pk=subscription.pk) if subscription.pk else Subscription.objects.all()
    if others.filter(primary_key_hash=digest).exists() or others.filter(secondary_key_hash=digest).exists():
        raise Conflict({f"{which}_key": ["This key is already used by another subscription."]})
    setattr(subscription, f"encrypted_{which}_key", crypto.encrypt(key))
    setattr(subscription, f"{which}_key_hash", digest)


def _check_limit(product: Product) -> None:
    product = Product.objects.select_for_update().get(pk=product.pk)
    if product.subscriptions_limit is None:
        return
    used = product.subscriptions.filter(state__in=Subscription.COUNTED_STATES).count()
    if used >= product.subscriptions_limit:
        raise Conflict(
            {"scope": [f"Product '{product.name}' allows at most {product.subscriptions_limit} subscription(s)."]}
        )


def check_open_products(products: Iterable[Product]) -> None:
    """APIM rule, API side: an API belongs to at most one open product (one that needs no subscription)."""
    open_products = sorted(p.name for p in products if not p.subscription_required)
    if len(open_products) > 1:
        raise ValidationError(
            {"products": [f"An API can be in at most one open product; got {', '.join(open_products)}."]}
        )


def check_open_product_apis(product: Product | None, subscription_required: bool, apis: Iterable[API]) -> None:
    """APIM rule, product side: an open product may not take an API that is already in another open product."""
    if subscription_required:
        return
    errors = []
    for api in apis:
        others = api.products.filter(subscription_required=False)
        if product is not None and product.pk:
            others = others.exclude(pk=product.pk)
        other = others.first()
        if other is not None:
            errors.append(f"API '{api.name}' is already in the open product '{other.name}'.")
    if errors:
        raise ValidationError({"apis": errors})
