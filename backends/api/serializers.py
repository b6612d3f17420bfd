from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from gateway_admin.api.serializers import ConfigurationModelSerializer, StrictCharField
from gateway_admin.validators import validate_header_name, validate_http_url, validate_query_name
from named_values.references import referenced_names
from named_values.services import missing_named_values

from ..models import Backend, BackendType
from ..services import duration_seconds, pools_containing

__all__ = ("BackendSerializer", "CircuitBreakerSerializer", "PoolSerializer")

MAX_CREDENTIALS = 32
MAX_POOL_MEMBERS = 30  # APIM: at most 30 backends per pool
MAX_RULES = 1  # APIM's schema takes 15 rules, its docs support one
MAX_RANGES = 10
MAX_REASONS = 10


class IsoDurationField(serializers.CharField):
    default_error_messages = {"invalid": 'Expected a positive ISO 8601 duration such as "PT1M".'}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        seconds = duration_seconds(data)
        if seconds is None or seconds <= 0:
            self.fail("invalid")
        return data


class PoolServiceSerializer(serializers.Serializer):
    backend = StrictCharField(max_length=80, help_text="Name of a Single backend.")
    priority = serializers.IntegerField(min_value=0, max_value=100, default=1, help_text="Lower goes first.")
    weight = serializers.IntegerField(min_value=0, max_value=100, default=1, help_text="Relative share.")


class PoolSerializer(serializers.Serializer):
    services = PoolServiceSerializer(many=True, allow_empty=False, max_length=MAX_POOL_MEMBERS)

    def validate_services(self, value):
        names = [entry["backend"] for entry in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise serializers.ValidationError(f"Listed more than once: {', '.join(duplicates)}.")
        return value


class StatusCodeRangeSerializer(serializers.Serializer):
    min = serializers.IntegerField(min_value=200, max_value=599)
    max = serializers.IntegerField(min_value=200, max_value=599)

    def validate(self, attrs):
        if attrs["min"] > attrs["max"]:
            raise serializers.ValidationError({"max": ["Must not be less than min."]})
        return attrs


class FailureConditionSerializer(serializers.Serializer):
    count = serializers.IntegerField(min_value=1, max_value=10000, required=False, allow_null=True)
    percentage = serializers.IntegerField(min_value=1, max_value=100, required=False, allow_null=True)
    interval = IsoDurationField(help_text="The window failures are counted in, e.g. PT1M.")
    statusCodeRanges = StatusCodeRangeSerializer(many=True, required=False, max_length=MAX_RANGES)
    errorReasons = serializers.ListField(child=StrictCharField(max_length=200), required=False, max_length=MAX_REASONS)

    def validate(self, attrs):
        if (attrs.get("count") is None) == (attrs.get("percentage") is None):
            raise serializers.ValidationError({"count": ["Exactly one of count or percentage is required."]})
        if not attrs.get("statusCodeRanges") and not attrs.get("errorReasons"):
            raise serializers.ValidationError(
                {"statusCodeRanges": ["Give statusCodeRanges or errorReasons: what counts as a failure."]}
            )
        return attrs


class BreakerRuleSerializer(serializers.Serializer):
    name = StrictCharField(max_length=80)
    failureCondition = FailureConditionSerializer()
    tripDuration = IsoDurationField(help_text="How long a tripped backend gets no traffic, e.g. PT1M.")
    acceptRetryAfter = serializers.BooleanField(default=False)


class CircuitBreakerSerializer(serializers.Serializer):
    rules = BreakerRuleSerializer(many=True, allow_empty=False, max_length=MAX_RULES)


def _nested(serializer_class, value):
    if value is None:
        return None
    serializer = serializer_class(data=value)
    if not serializer.is_valid():
        raise serializers.ValidationError(serializer.errors)
    return _plain(serializer.validated_data)


def _plain(value):
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _credentials_field(help_text):
    return serializers.DictField(
        child=StrictCharField(max_length=2000, trim_whitespace=False),
        required=False,
        help_text=help_text,
    )


class BackendSerializer(ConfigurationModelSerializer):
    """An upstream service and the credentials the gateway adds when forwarding to it."""

    type = serializers.ChoiceField(choices=BackendType.choices, default=BackendType.SINGLE)
    url = serializers.CharField(max_length=2000, validators=[validate_http_url], required=False, allow_blank=True)
    pool = serializers.JSONField(
        required=False, allow_null=True, help_text='Pool members: {"services": [{"backend", "priority", "weight"}]}.'
    )
    circuit_breaker = serializers.JSONField(
        required=False, allow_null=True, help_text="APIM's circuitBreaker object with one rule."
    )
    credentials_header = _credentials_field("Header name → value; values may hold {{named value}} references.")
    credentials_query = _credentials_field("Query parameter name → value; values may hold {{named value}} references.")

    class Meta:
        model = Backend
        fields = ("name", "type", "url", "pool", "circuit_breaker", "description", "credentials_header",
                  "credentials_query", "created", "last_updated")  # fmt: skip
        read_only_fields = ("created", "last_updated")

    def validate_pool(self, value):
        return _nested(PoolSerializer, value)

    def validate_circuit_breaker(self, value):
        return _nested(CircuitBreakerSerializer, value)

    def validate(self, attrs):
        def current(key, default=None):
            if key in attrs:
                return attrs[key]
            return getattr(self.instance, key) if self.instance is not None else default

        kind = current("type", BackendType.SINGLE)
        name = current("name")
        if kind == BackendType.SINGLE:
            if not current("url"):
                raise serializers.ValidationError({"url": ["A Single backend needs a URL."]})
            if current("pool"):
                raise serializers.ValidationError({"pool": ["Only a Pool backend has members."]})
            return attrs
        if current("url"):
            raise serializers.ValidationError({"url": ["A Pool backend has no URL of its own: its members do."]})
        if current("credentials_header") or current("credentials_query"):
            raise serializers.ValidationError(
                {"credentials_header": ["A Pool backend has no credentials of its own: its members do."]}
            )
        pool = current("pool")
        if not pool:
            raise serializers.ValidationError({"pool": ["A Pool backend needs pool.services."]})
        if self.instance is not None and pools_containing(self.instance.name):
            containing = ", ".join(pools_containing(self.instance.name))
            raise serializers.ValidationError({"type": [f"It is a member of {containing}: a pool cannot hold a pool."]})
        names = [entry["backend"] for entry in pool["services"]]
        found = dict(Backend.objects.filter(name__in=names).values_list("name", "type"))
        errors = {}
        for index, member in enumerate(names):
            if member == name or found.get(member) == BackendType.POOL:
                errors[str(index)] = {"backend": [f"'{member}' is a pool: a pool cannot hold a pool."]}
            elif member not in found:
                errors[str(index)] = {"backend": [f"No backend named '{member}'."]}
        if errors:
            raise serializers.ValidationError({"pool": {"services": errors}})
        return attrs

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
