from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.response import Response

from gateway_admin.api.views import ConfigurationViewSet

from ..filtersets import NamedValueFilterSet
from ..models import NamedValue
from ..services import delete_named_value
from .serializers import NamedValueSerializer, NamedValueValueSerializer

__all__ = ("NamedValueViewSet",)


#
# Named values
#


class NamedValueViewSet(ConfigurationViewSet):
    queryset = NamedValue.objects.all()
    serializer_class = NamedValueSerializer
    snapshot_kind = "named_value"
    filterset_class = NamedValueFilterSet

    def perform_destroy(self, instance):
        delete_named_value(instance)

    @extend_schema(request=None, responses=NamedValueValueSerializer, summary="Reveal the value (also of a secret)")
    @action(detail=True, methods=["post"], url_path="list-value")
    def list_value(self, request, name=None):
        return Response({"value": self.get_object().value})
