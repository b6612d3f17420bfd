from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from gateway_admin.api.parsers import JSONParser
from gateway_admin.api.views import SnapshotSafeMixin

from ..choices import PolicyContentFormatChoices, PolicyScopeChoices
from ..services import DEFAULT_GLOBAL_POLICY, delete_policy, export_policy, get_policy, set_policy
from .serializers import PolicySerializer

__all__ = (
    "FORMAT_PARAMETER",
    "GlobalPolicyView",
    "PolicyActionMixin",
    "PolicyContentNegotiation",
    "policy_format",
    "policy_response",
)

ERR_NO_POLICY = "No policy document at this scope."
ERR_FORMAT = "Unknown policy format {!r} (expected xml or rawxml)."

FORMAT_PARAMETER = OpenApiParameter(
    "format",
    OpenApiTypes.STR,
    OpenApiParameter.QUERY,
    enum=PolicyContentFormatChoices.values,
    description="Export format of the document (default xml), as APIM's `?format=`.",
)


class PolicyContentNegotiation(DefaultContentNegotiation):
    """On policy endpoints `?format=` is the policy format (`xml` | `rawxml`, as in APIM), not a renderer: a request
    carrying it is answered in JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        if request.query_params.get(api_settings.URL_FORMAT_OVERRIDE) is not None:
            format_suffix = format_suffix or "json"
        return super().select_renderer(request, renderers, format_suffix)


def policy_format(request) -> str:
    """The `?format=` of a GET (default xml); 400 for anything else."""
    value = request.query_params.get(api_settings.URL_FORMAT_OVERRIDE, PolicyContentFormatChoices.XML)
    if value not in PolicyContentFormatChoices.values:
        raise ValidationError({"format": [ERR_FORMAT.format(value)]})
    return value


def policy_response(request, scope: str, owner=None) -> Response:
    """GET / PUT / DELETE of the policy document of one scope."""
    if request.method == "PUT":
        serializer = PolicySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        policy, created = set_policy(scope, owner, **serializer.validated_data)
        return Response(
            PolicySerializer(policy).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )
    if request.method == "DELETE":
        if not delete_policy(scope, owner):
            raise NotFound(ERR_NO_POLICY)
        return Response(status=status.HTTP_204_NO_CONTENT)
    format = policy_format(request)
    policy = get_policy(scope, owner)
    if policy is None:
        if scope == PolicyScopeChoices.GLOBAL:
            return Response({"format": format, "value": export_policy(DEFAULT_GLOBAL_POLICY, format)})
        raise NotFound(ERR_NO_POLICY)
    return Response({"format": format, "value": export_policy(policy.value, format)})


class PolicyActionMixin:
    """Adds `<detail>/policy/` (GET, PUT, DELETE) to a viewset whose objects own a policy scope."""

    policy_scope: str

    @extend_schema(
        methods=["GET"],
        request=None,
        parameters=[FORMAT_PARAMETER],
        responses=PolicySerializer,
        summary="Get the policy document",
    )
    @extend_schema(
        methods=["PUT"],
        request=PolicySerializer,
        responses={200: PolicySerializer, 201: PolicySerializer},
        summary="Create or replace the policy document",
    )
    @extend_schema(methods=["DELETE"], request=None, responses={204: None}, summary="Delete the policy document")
    @action(
        detail=True,
        methods=["get", "put", "delete"],
        url_path="policy",
        serializer_class=PolicySerializer,
        content_negotiation_class=PolicyContentNegotiation,
    )
    def policy(self, request, *args, **kwargs):
        return policy_response(request, self.policy_scope, self.get_object())


class GlobalPolicyView(SnapshotSafeMixin, APIView):
    """`policies/global/`: the document applied to every API (a default one until written)."""

    parser_classes = [JSONParser]
    serializer_class = PolicySerializer
    content_negotiation_class = PolicyContentNegotiation

    @extend_schema(parameters=[FORMAT_PARAMETER], responses=PolicySerializer, summary="Get the global policy document")
    def get(self, request):
        return policy_response(request, PolicyScopeChoices.GLOBAL)

    @extend_schema(
        request=PolicySerializer,
        responses={200: PolicySerializer, 201: PolicySerializer},
        summary="Create or replace the global policy document",
    )
    def put(self, request):
        return policy_response(request, PolicyScopeChoices.GLOBAL)
