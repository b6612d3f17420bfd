from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway_admin.api.parsers import JSONParser

from ..choices import PolicyFormatChoices, PolicyScopeChoices
from ..services import DEFAULT_GLOBAL_POLICY, delete_policy, get_policy, set_policy
from .serializers import PolicySerializer

__all__ = ("GlobalPolicyView", "PolicyActionMixin", "policy_response")

ERR_NO_POLICY = "No policy document at this scope."


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
    policy = get_policy(scope, owner)
    if policy is None:
        if scope == PolicyScopeChoices.GLOBAL:
            return Response({"format": PolicyFormatChoices.XML, "value": DEFAULT_GLOBAL_POLICY})
        raise NotFound(ERR_NO_POLICY)
    return Response(PolicySerializer(policy).data)


class PolicyActionMixin:
    """Adds `<detail>/policy/` (GET, PUT, DELETE) to a viewset whose objects own a policy scope."""

    policy_scope: str

    @extend_schema(methods=["GET"], request=None, responses=PolicySerializer, summary="Get the policy document")
    @extend_schema(
        methods=["PUT"],
        request=PolicySerializer,
        responses={200: PolicySerializer, 201: PolicySerializer},
        summary="Create or replace the policy document",
    )
    @extend_schema(methods=["DELETE"], request=None, responses={204: None}, summary="Delete the policy document")
    @action(detail=True, methods=["get", "put", "delete"], url_path="policy", serializer_class=PolicySerializer)
    def policy(self, request, *args, **kwargs):
        return policy_response(request, self.policy_scope, self.get_object())


class GlobalPolicyView(APIView):
    """`policies/global/`: the document applied to every API (a default one until written)."""

    parser_classes = [JSONParser]
    serializer_class = PolicySerializer

    @extend_schema(responses=PolicySerializer, summary="Get the global policy document")
    def get(self, request):
        return policy_response(request, PolicyScopeChoices.GLOBAL)

    @extend_schema(
        request=PolicySerializer,
        responses={200: PolicySerializer, 201: PolicySerializer},
        summary="Create or replace the global policy document",
    )
    def put(self, request):
        return policy_response(request, PolicyScopeChoices.GLOBAL)
