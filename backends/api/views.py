from gateway_admin.api.views import ConfigurationViewSet

from ..filtersets import BackendFilterSet
from ..models import Backend
from ..services import delete_backend
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
