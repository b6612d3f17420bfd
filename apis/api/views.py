from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from gateway_admin.api.views import ConfigurationViewSet
from policies.api.serializers import PolicySerializer
from policies.api.views import FORMAT_PARAMETER, PolicyActionMixin, PolicyContentNegotiation, policy_format
from policies.choices import PolicyScopeChoices
from policies.services import effective_policy, render_policy
from subscriptions.models import Product

from ..filtersets import APIFilterSet, OperationFilterSet
from ..models import API, Operation
from ..services import import_language_model
from .serializers import APISerializer, ImportLanguageModelSerializer, ImportResultSerializer, OperationSerializer

__all__ = ("APIViewSet", "OperationViewSet")


#
# APIs
#


class APIViewSet(PolicyActionMixin, ConfigurationViewSet):
    queryset = API.objects.prefetch_related("products")
    serializer_class = APISerializer
    snapshot_kind = "api"
    filterset_class = APIFilterSet
    policy_scope = PolicyScopeChoices.API

    @extend_schema(
        request=ImportLanguageModelSerializer,
        responses={201: ImportResultSerializer},
        summary="Import a language model API (OpenAI-compatible or passthrough)",
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="import-language-model",
        serializer_class=ImportLanguageModelSerializer,
        filterset_class=None,
    )
    def import_language_model(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = import_language_model(serializer.validated_data)
        return Response(ImportResultSerializer.render(result), status=status.HTTP_201_CREATED)


#
# Operations
#

API_NAME_PARAMETER = OpenApiParameter("api_name", OpenApiTypes.STR, OpenApiParameter.PATH, description="API name")
PRODUCT_PARAMETER = OpenApiParameter(
    "product",
    OpenApiTypes.STR,
    OpenApiParameter.QUERY,
    description="Product context (a product containing the API); without it, no product policy applies.",
)
ERR_PRODUCT = "Product {!r} does not exist or does not contain API {!r}."


@extend_schema_view(
    list=extend_schema(parameters=[API_NAME_PARAMETER]),
    create=extend_schema(parameters=[API_NAME_PARAMETER]),
    retrieve=extend_schema(parameters=[API_NAME_PARAMETER]),
    update=extend_schema(parameters=[API_NAME_PARAMETER]),
    partial_update=extend_schema(parameters=[API_NAME_PARAMETER]),
    destroy=extend_schema(parameters=[API_NAME_PARAMETER]),
    policy=extend_schema(parameters=[API_NAME_PARAMETER]),
    effective_policy=extend_schema(
        parameters=[API_NAME_PARAMETER, PRODUCT_PARAMETER, FORMAT_PARAMETER],
        responses=PolicySerializer,
        summary="Calculate the effective policy (all scopes, <base/> expanded)",
        description=(
            "The document that runs for this operation: the global, product (with `?product=`), API and operation "
            "documents merged, each `<base/>` replaced by the parent scope's section, as APIM's "
            '"Calculate effective policy" shows it. Read-only.'
        ),
    ),
)
class OperationViewSet(PolicyActionMixin, ConfigurationViewSet):
    """Operations of the API named in the URL: `apis/{api_name}/operations/`."""

    queryset = Operation.objects.none()
    serializer_class = OperationSerializer
    filterset_class = OperationFilterSet
    policy_scope = PolicyScopeChoices.OPERATION

    def get_api(self) -> API:
        if not hasattr(self, "_api"):
            self._api = get_object_or_404(API, name=self.kwargs["api_name"])
        return self._api

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Operation.objects.none()
        return Operation.objects.filter(api=self.get_api()).select_related("api")

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if not getattr(self, "swagger_fake_view", False) and "api_name" in self.kwargs:
            context["api"] = self.get_api()
        return context

    def perform_create(self, serializer):
        serializer.save(api=self.get_api())

    @action(
        detail=True,
        methods=["get"],
        url_path="effective-policy",
        serializer_class=PolicySerializer,
        filterset_class=None,
        content_negotiation_class=PolicyContentNegotiation,
    )
    def effective_policy(self, request, *args, **kwargs):
        operation = self.get_object()
        format = policy_format(request)
        product = None
        if name := request.query_params.get("product"):
            product = Product.objects.filter(name=name, apis=operation.api).first()
            if product is None:
                raise ValidationError({"product": [ERR_PRODUCT.format(name, operation.api.name)]})
        return Response({"format": format, "value": render_policy(effective_policy(operation, product), format)})
