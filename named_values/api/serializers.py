from rest_framework import serializers

from gateway_admin.api.serializers import ConfigurationModelSerializer

from ..models import NamedValue
from ..services import create_named_value, update_named_value

__all__ = ("NamedValueSerializer", "NamedValueValueSerializer")


class SecretAwareValueField(serializers.CharField):
    """The value as written; read back only for plain named values (`null` for secrets)."""

    def get_attribute(self, instance):
        return None if instance.secret else instance.plain_value


class NamedValueSerializer(ConfigurationModelSerializer):
    """A name/value pair referenced as {{name}}; secret values are write-only."""

    value = SecretAwareValueField(
        max_length=NamedValue.MAX_VALUE_LENGTH,
        trim_whitespace=False,
        allow_null=True,
        required=False,
        help_text="Required on create. Never returned for secrets (null); on update, omit or send null to keep it.",
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=64),
        max_length=32,
        required=False,
    )

    class Meta:
        model = NamedValue
        fields = ("name", "secret", "value", "tags", "created", "last_updated")
        read_only_fields = ("created", "last_updated")

    def validate_value(self, value):
        if value is not None and not value.strip():
            raise serializers.ValidationError("This field may not be blank.", code="blank")
        return value

    def validate(self, attrs):
        if self.instance is None and attrs.get("value") is None:
            raise serializers.ValidationError({"value": ["This field is required."]}, code="required")
        return attrs

    def create(self, validated_data):
        return create_named_value(
            name=validated_data["name"],
            value=validated_data["value"],
            secret=validated_data.get("secret", False),
            tags=validated_data.get("tags", ()),
        )

    def update(self, instance, validated_data):
        return update_named_value(
            instance,
            value=validated_data.get("value"),
            secret=validated_data.get("secret"),
            tags=validated_data.get("tags"),
        )


class NamedValueValueSerializer(serializers.Serializer):
    """The value of a named value (list-value)."""

    value = serializers.CharField()
