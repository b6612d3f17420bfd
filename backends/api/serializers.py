from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from gateway_admin.api.serializers import ConfigurationModelSerializer, StrictCharField
from gateway_admin.validators import validate_header_name, validate_http_url, validate_query_name
from named_values.references import referenced_names
from named_values.services import missing_named_values

from ..models import Backend

__all__ = ("BackendSerializer",)

MAX_CREDENTIALS = 32


def _credentials_field(help_text):
    return serializers.DictField(
        child=StrictCharField(max_length=2000, trim_whitespace=False),
        required=False,
        help_text=help_text,
    )


class BackendSerializer(ConfigurationModelSerializer):
    """An upstream service and the credentials the gateway adds when forwarding to it."""

    url = serializers.CharField(max_length=2000, validators=[validate_http_url])
    credentials_header = _credentials_field("Header name → value; values may hold {{named value}} references.")
    credentials_query = _credentials_field("Query parameter name → value; values may hold {{named value}} references.")

    class Meta:
        model = Backend
        fields = ("name", "url", "description", "credentials_header", "credentials_query", "created", "last_updated")
        read_only_fields = ("created", "last_updated")

    def validate_credentials_header(self, value):
        return self._validate_credentials(value, validate_header_name)

    def validate_credentials_query(self, value):
        return self._validate_credentials(value, validate_query_name)

    def _validate_credentials(self, value, validate_key):
        if len(value) > MAX_CREDENTIALS:
            raise serializers.ValidationError(f"At most {MAX_CREDENTIALS} entries.")
        errors = []
        for key in value:
            try:
                validate_key(key)
            except DjangoValidationError as exc:
                errors.extend(exc.messages)
        missing = missing_named_values(referenced_names(value.values()))
        if missing:
            errors.append(f"Unknown named value(s): {', '.join(missing)}.")
        if errors:
            raise serializers.ValidationError(errors)
        return value
