"""The whole public REST surface, registered in one place."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from apis.api.views import APIViewSet, OperationViewSet
from backends.api.views import BackendViewSet
from content_safety.api.views import BlocklistViewSet
from named_values.api.views import NamedValueViewSet
from policies.api.views import GlobalPolicyView
from subscriptions.api.views import ProductViewSet, SubscriptionViewSet
from usage.api.views import UsageView, gateway_usage_view

from .api.views import heartbeat_view, snapshot_view

app_name = "api"

router = DefaultRouter()
# Names may contain dots, so `.json`-style format suffixes would be ambiguous (use ?format=json).
router.include_format_suffixes = False
router.register("apis", APIViewSet)
router.register(r"apis/(?P<api_name>[^/\x00]+)/operations", OperationViewSet, basename="operation")
router.register("backends", BackendViewSet)
router.register("blocklists", BlocklistViewSet)
router.register("named-values", NamedValueViewSet)
router.register("products", ProductViewSet)
router.register("subscriptions", SubscriptionViewSet)

urlpatterns = [
    path("policies/global/", GlobalPolicyView.as_view(), name="global-policy"),
    path("gateway/snapshot/", snapshot_view, name="gateway-snapshot"),
    path("gateway/usage/", gateway_usage_view, name="gateway-usage"),
    path("gateway/heartbeat/", heartbeat_view, name="gateway-heartbeat"),
    path("usage/", UsageView.as_view(), name="usage"),
    *router.urls,
]
