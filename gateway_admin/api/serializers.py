"""Serializer building blocks shared by every app's REST API."""

from rest_framework import serializers

__all__ = ("ConfigurationModelSerializer", "StrictCharField", "StrictFieldsMixin", "WholeValueMixin")


# Docstrings of these bases are kept as comments: drf-spectacular would copy an inherited docstring into the
# description of every schema component.


class StrictFieldsMixin:
    # Rejects keys that are not fields of the serializer, naming them (`{"colour": ["Unknown field."]}`).
    # Read-only fields are known fields, so a body copied from a GET can be sent back unchanged.

    # Each JSON value must already have its field's type: DRF alone turns 0 into "0" and "1" into 1 or True, so a
    # body the schema calls invalid (`{"name": 0}`) would be stored (the REST fuzz's negative cases found it).

    def to_internal_value(self, data):
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, dict) else []
        errors = _type_errors(self.fields, data) if isinstance(data, dict) else {}
        value = None
        try:
            if not errors:
                value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not isinstance(exc.detail, dict):
                raise
            errors.update(exc.detail)
        errors.update({key: [serializers.ErrorDetail("Unknown field.", code="unknown_field")] for key in unknown})
        if errors:
            raise serializers.ValidationError(errors)
        return value


# The JSON types a field of each kind takes; bool is an int in Python, so it is refused where a number is expected.
_JSON_TYPES: tuple[tuple[type[serializers.Field], tuple[type, ...], str], ...] = (
    (serializers.CharField, (str,), "Not a valid string."),
    (serializers.BooleanField, (bool,), "Must be a boolean (true or false)."),
    (serializers.IntegerField, (int,), "A valid integer is required."),
    (serializers.FloatField, (int, float), "A valid number is required."),
)


def _type_error(field: serializers.Field, value: object) -> str | None:
    if value is None:
        return None  # the field's own allow_null answers
    if isinstance(field, serializers.ListField) and isinstance(value, list):
        for item in value:
            problem = _type_error(field.child, item)
            if problem is not None:
                return problem
        return None
    for kind, types, message in _JSON_TYPES:
        if isinstance(field, kind):
            wrong_bool = isinstance(value, bool) and bool not in types
            return message if wrong_bool or not isinstance(value, types) else None
    return None


def _type_errors(fields, data: dict) -> dict:
    errors = {}
    for name, field in fields.items():
        if name in data and not field.read_only:
            problem = _type_error(field, data[name])
            if problem is not None:
                errors[name] = [serializers.ErrorDetail(problem, code="invalid")]
    return errors


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
