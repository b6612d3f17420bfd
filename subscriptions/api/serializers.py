from rest_framework import serializers

from apis.models import API
from gateway_admin.api.serializers import ConfigurationModelSerializer

from ..models import Product, Subscription
from ..services import (
    MAX_KEY_LENGTH,
    MIN_KEY_LENGTH,
    check_open_product_apis,
    create_subscription,
    parse_scope,
    update_subscription,
    validate_key,
)

__all__ = ("ProductSerializer", "SubscriptionKeysSerializer", "SubscriptionSerializer")

KEY_FIELD_KWARGS = {
    "write_only": True,
    "required": False,
    "min_length": MIN_KEY_LENGTH,
    "max_length": MAX_KEY_LENGTH,
    "trim_whitespace": False,
    "help_text": (
        f"Optional on write (generated when omitted): {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} visible ASCII characters. "
        "Never returned, use list-secrets."
    ),
}


class ProductSerializer(ConfigurationModelSerializer):
    """A group of APIs offered together."""

    apis = serializers.SlugRelatedField(many=True, slug_field="name", queryset=API.objects.all(), required=False)

    class Meta:
        model = Product
        fields = (
            "name",
            "display_name",
            "description",
            "subscription_required",
            "approval_required",
            "subscriptions_limit",
            "state",
            "apis",
            "created",
            "last_updated",
        )
        read_only_fields = ("created", "last_updated")

    def validate(self, attrs):
        default = self.instance.subscription_required if self.instance else True
        apis = attrs.get("apis", self.instance.apis.all() if self.instance else [])
        check_open_product_apis(self.instance, attrs.get("subscription_required", default), apis)
        return attrs


class SubscriptionSerializer(ConfigurationModelSerializer):
    """A named pair of keys valid for all APIs, one API or one product; keys are write-only."""

    scope = serializers.CharField(max_length=600, help_text="/apis, /apis/{api name} or /products/{product name}")
    primary_key = serializers.CharField(validators=[validate_key], **KEY_FIELD_KWARGS)
    secondary_key = serializers.CharField(validators=[validate_key], **KEY_FIELD_KWARGS)

    class Meta:
        model = Subscription
        fields = ("name", "display_name", "scope", "state", "primary_key", "secondary_key", "created", "last_updated")
        read_only_fields = ("created", "last_updated")
        extra_kwargs = {"state": {"help_text": "Defaults to active on create (the portal's behaviour)."}}

    def validate_scope(self, value):
        return parse_scope(value)

    def create(self, validated_data):
        return create_subscription(**validated_data)

    def update(self, instance, validated_data):
        validated_data.pop("name", None)
        return update_subscription(instance, **validated_data)


class SubscriptionKeysSerializer(serializers.Serializer):
    """Both keys of a subscription (list-secrets)."""

    primary_key = serializers.CharField()
    secondary_key = serializers.CharField()
