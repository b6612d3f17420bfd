from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.response import Response

from gateway_admin.api.views import ConfigurationViewSet

from ..filtersets import BackendFilterSet
from ..models import Backend
from ..services import backend_state, delete_backend
from .serializers import BackendSerializer

__all__ = ("BackendViewSet",)


#
# Backends
#


class BackendViewSet(ConfigurationViewSet):
    queryset = Backend.objects.all()
    serializer_class = BackendSerializer
    snapshot_kind = "backend"
    filterset_class = BackendFilterSet

    def perform_destroy(self, instance):
        delete_backend(instance)

    @extend_schema(
        responses={200: OpenApiTypes.OBJECT},
        description="The circuit breaker state of the backend (and of a pool's members), as the gateways reported "
        "it in their last heartbeats: closed, open, half-open, or unknown when no live gateway reported it.",
    )
    @action(detail=True, methods=["get"], url_path="state")
    def state(self, request, name=None):
        return Response(backend_state(self.get_object()))
