"""Serializer building blocks shared by every app's REST API."""

from rest_framework import serializers

__all__ = ("ConfigurationModelSerializer", "StrictCharField", "StrictFieldsMixin", "WholeValueMixin")


# Docstrings of these bases are kept as comments: drf-spectacular would copy an inherited docstring into the
# description of every schema component.


class StrictFieldsMixin:
    # Rejects keys that are not fields of the serializer, naming them (`{"colour": ["Unknown field."]}`).
    # Read-only fields are known fields, so a body copied from a GET can be sent back unchanged.

    def to_internal_value(self, data):
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, dict) else []
        errors = {}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not isinstance(exc.detail, dict):
                raise
            errors.update(exc.detail)
            value = None
        errors.update({key: [serializers.ErrorDetail("Unknown field.", code="unknown_field")] for key in unknown})
        if errors:
            raise serializers.ValidationError(errors)
        return value


class WholeValueMixin:
    # For a serializer nested in another whose value is always sent whole (an item of a list field). DRF passes a
    # PATCH's partial=True down to nested fields, which would make this one's required fields optional: a PATCH
    # with `"items": [{"value": "x"}]` would reach validate() without `kind`. Missing fields are named instead.

    def to_internal_value(self, data):
        if isinstance(data, dict) and getattr(self.root, "partial", False):
            missing = [name for name, field in self.fields.items() if field.required and name not in data]
            if missing:
                required = serializers.ErrorDetail("This field is required.", code="required")
                raise serializers.ValidationError({name: [required] for name in missing})
        return super().to_internal_value(data)


class ConfigurationModelSerializer(StrictFieldsMixin, serializers.ModelSerializer):
    # Base serializer of a named configuration object. `name` is the object's id in URLs and in references
    # (`{{name}}`, `backend-id="name"`, subscription scopes), so like an ARM resource id it cannot change.

    def validate_name(self, value):
        if self.instance is not None and value != self.instance.name:
            raise serializers.ValidationError("The name is the object's id and cannot be changed.")
        return value


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into strings."""

    default_error_messages = {"invalid": "Not a valid string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
