from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from gateway_admin.api.views import ConfigurationViewSet
from gateway_admin.models import RevealRecord
from policies.api.views import PolicyActionMixin
from policies.choices import PolicyScopeChoices

from ..filtersets import ProductFilterSet, SubscriptionFilterSet
from ..models import Product, Subscription
from ..services import PRIMARY, SECONDARY, regenerate_key
from .serializers import ProductSerializer, SubscriptionKeysSerializer, SubscriptionSerializer

__all__ = ("ProductViewSet", "SubscriptionViewSet")


#
# Products
#


class ProductViewSet(PolicyActionMixin, ConfigurationViewSet):
    queryset = Product.objects.prefetch_related("apis")
    serializer_class = ProductSerializer
    snapshot_kind = "product"
    filterset_class = ProductFilterSet
    policy_scope = PolicyScopeChoices.PRODUCT


#
# Subscriptions
#


class SubscriptionViewSet(ConfigurationViewSet):
    queryset = Subscription.objects.select_related("api", "product")
    serializer_class = SubscriptionSerializer
    snapshot_kind = "subscription"
    filterset_class = SubscriptionFilterSet
    required_permissions = {
        "list_secrets": ("subscriptions.reveal_subscription_keys",),
        "regenerate_primary_key": ("subscriptions.change_subscription",),
        "regenerate_secondary_key": ("subscriptions.change_subscription",),
    }

    @extend_schema(request=None, responses=SubscriptionKeysSerializer, summary="Reveal both keys")
    @action(detail=True, methods=["post"], url_path="list-secrets")
    def list_secrets(self, request, name=None):
        subscription = self.get_object()
        RevealRecord.record(request.user, "subscription", subscription.name, "rest")
        return Response({"primary_key": subscription.primary_key, "secondary_key": subscription.secondary_key})

    @extend_schema(request=None, responses={204: None}, summary="Replace the primary key with a new random one")
    @action(detail=True, methods=["post"], url_path="regenerate-primary-key")
    def regenerate_primary_key(self, request, name=None):
        regenerate_key(self.get_object(), PRIMARY)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={204: None}, summary="Replace the secondary key with a new random one")
    @action(detail=True, methods=["post"], url_path="regenerate-secondary-key")
    def regenerate_secondary_key(self, request, name=None):
        regenerate_key(self.get_object(), SECONDARY)
        return Response(status=status.HTTP_204_NO_CONTENT)
