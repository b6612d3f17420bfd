from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from backends.api.serializers import MAX_POOL_MEMBERS, BackendSerializer
from gateway_admin.api.serializers import ConfigurationModelSerializer, StrictFieldsMixin
from gateway_admin.validators import validate_header_name, validate_http_url, validate_resource_name
from named_values.api.serializers import NamedValueSerializer
from named_values.models import NamedValue
from policies.api.serializers import PolicySerializer
from subscriptions.models import Product
from subscriptions.services import check_open_products

from ..choices import APITypeChoices
from ..models import API, Operation
from ..services import MAX_IMPORT_NAME_LENGTH, derive_api_name
from ..validators import validate_api_name, validate_api_path
from ..wizard import OPTIONAL_OPENAI_OPERATIONS, POLICY_CONTRIBUTORS

__all__ = (
    "APISerializer",
    "ImportLanguageModelSerializer",
    "ImportResultSerializer",
    "OperationSerializer",
)


#
# APIs and operations
#


class APISerializer(ConfigurationModelSerializer):
    """An API published by the gateway at /<path>."""

    service_url = serializers.CharField(
        max_length=2000, required=False, allow_blank=True, validators=[validate_http_url]
    )
    products = serializers.SlugRelatedField(
        many=True, slug_field="name", queryset=Product.objects.all(), required=False
    )

    class Meta:
        model = API
        fields = (
            "name",
            "display_name",
            "description",
            "path",
            "service_url",
            "api_type",
            "subscription_required",
            "subscription_key_header",
            "subscription_key_query",
            "products",
            "created",
            "last_updated",
        )
        read_only_fields = ("created", "last_updated")

    def validate_products(self, value):
        check_open_products(value)
        return value


class OperationSerializer(ConfigurationModelSerializer):
    """An operation of the API named in the URL (`apis/{api_name}/operations/`)."""

    api = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = Operation
        fields = ("name", "api", "display_name", "method", "url_template", "description", "created", "last_updated")
        read_only_fields = ("created", "last_updated")

    def validate(self, attrs):
        api = self.context["api"]
        current = self.instance
        name = attrs.get("name", getattr(current, "name", None))
        method = attrs.get("method", getattr(current, "method", None))
        template = attrs.get("url_template", getattr(current, "url_template", None))
        others = api.operations.exclude(pk=current.pk) if current else api.operations.all()
        if others.filter(name=name).exists():
            raise serializers.ValidationError(
                {"name": [f"API '{api.name}' already has an operation named '{name}'."]}, code="unique"
            )
        if others.filter(method=method, url_template=template).exists():
            raise serializers.ValidationError(
                {"url_template": [f"API '{api.name}' already has an operation for {method} {template}."]},
                code="unique",
            )
        return attrs


#
# Import wizard
#


class AccessKeySerializer(StrictFieldsMixin, serializers.Serializer):
    """The credential header the backend needs (stored as a secret named value)."""

    header_name = serializers.CharField(max_length=100, validators=[validate_header_name])
    value = serializers.CharField(max_length=NamedValue.MAX_VALUE_LENGTH, trim_whitespace=False)

    def validate_value(self, value):
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.", code="blank")
        return value


class WizardBackendSerializer(StrictFieldsMixin, serializers.Serializer):
    """One deployment of the model behind a pool the wizard creates."""

    url = serializers.CharField(max_length=2000, validators=[validate_http_url], help_text="Base URL of the model.")
    priority = serializers.IntegerField(min_value=0, max_value=100, default=1, help_text="Lower goes first.")
    weight = serializers.IntegerField(min_value=0, max_value=100, default=1, help_text="Relative share.")
    access_key = AccessKeySerializer(
        required=False, allow_null=True, help_text="Stored as the secret named value <name>-key-<n>."
    )


# The API types as the portal's wizard labels them (distinct labels also give the schema its own enum).
WIZARD_TYPE_CHOICES = [
    (APITypeChoices.OPENAI.value, "Create OpenAI API"),
    (APITypeChoices.PASSTHROUGH.value, "Create a passthrough API"),
]


class ImportLanguageModelSerializer(StrictFieldsMixin, serializers.Serializer):
    """Input of `POST apis/import-language-model/` (the portal's Language Model API wizard)."""

    name = serializers.CharField(
        max_length=MAX_IMPORT_NAME_LENGTH,
        required=False,
        validators=[validate_resource_name, validate_api_name],
        help_text="Defaults to the slug of display_name.",
    )
    display_name = serializers.CharField(max_length=300)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    url = serializers.CharField(
        max_length=2000,
        validators=[validate_http_url],
        required=False,
        help_text="Base URL of the model (or give `backends`).",
    )
    backends = WizardBackendSerializer(
        many=True,
        required=False,
        allow_empty=False,
        max_length=MAX_POOL_MEMBERS,
        help_text="Several deployments of the model instead of `url`: one backend each, put in a pool with a "
        "circuit breaker that trips on 429 (accepting Retry-After), and a retry on 429/503 to the next member.",
    )
    path = serializers.CharField(max_length=400, validators=[validate_api_path])
    type = serializers.ChoiceField(choices=WIZARD_TYPE_CHOICES)
    products = serializers.SlugRelatedField(
        many=True, slug_field="name", queryset=Product.objects.all(), required=False
    )
    access_key = AccessKeySerializer(
        required=False, allow_null=True, help_text="Stored as the secret named value <name>-key."
    )
    subscription_required = serializers.BooleanField(default=True)
    operations = serializers.ListField(
        child=serializers.ChoiceField(choices=list(OPTIONAL_OPENAI_OPERATIONS)),
        required=False,
        help_text="Extra OpenAI operations (openai type only).",
    )

    def get_fields(self):
        fields = super().get_fields()
        for contributor in POLICY_CONTRIBUTORS:
            if contributor.key and contributor.serializer_class is not None:
                fields[contributor.key] = contributor.serializer_class(required=False, allow_null=True)
        return fields

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            # name a missing url with the other missing fields (rather than only once they are fixed)
            if isinstance(exc.detail, dict) and isinstance(data, dict) and "url" not in data and "backends" not in data:
                exc.detail.setdefault("url", [ErrorDetail("This field is required (or give backends).", "required")])
            raise

    def validate(self, attrs):
        if ("url" in attrs) == ("backends" in attrs):
            raise serializers.ValidationError({"url": ["Give either url or backends (a pool), not both."]})
        if "backends" in attrs and attrs.get("access_key"):
            raise serializers.ValidationError({"access_key": ["With backends, give each backend its access_key."]})
        if attrs.get("operations") and attrs["type"] != APITypeChoices.OPENAI:
            raise serializers.ValidationError({"operations": ["Extra operations apply to the openai type only."]})
        if not attrs.get("name"):
            attrs["name"] = derive_api_name(attrs["display_name"])
            validate_api_name(attrs["name"])
        return attrs


class ImportResultSerializer(serializers.Serializer):
    """What the wizard created (documentation of the 201 answer)."""

    api = APISerializer()
    operations = OperationSerializer(many=True)
    backend = BackendSerializer()
    pool_members = BackendSerializer(many=True, help_text="The pool's backends (with `backends`), else empty.")
    named_value = NamedValueSerializer(allow_null=True)
    policy = PolicySerializer()

    @classmethod
    def render(cls, result) -> dict:
        return {
            "api": APISerializer(result.api).data,
            "operations": OperationSerializer(result.operations, many=True).data,
            "backend": BackendSerializer(result.backend).data,
            "pool_members": BackendSerializer(result.members, many=True).data,
            "named_value": NamedValueSerializer(result.named_value).data if result.named_value else None,
            "policy": PolicySerializer(result.policy).data,
        }
