from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.response import Response

from gateway_admin.api.views import ConfigurationViewSet
from gateway_admin.models import RevealRecord

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
    # Also for a plain value: the action exists to read secrets, and one permission is simpler to reason about.
    required_permissions = {"list_value": ("named_values.reveal_namedvalue",)}

    def perform_destroy(self, instance):
        delete_named_value(instance)

    @extend_schema(request=None, responses=NamedValueValueSerializer, summary="Reveal the value (also of a secret)")
    @action(detail=True, methods=["post"], url_path="list-value")
    def list_value(self, request, name=None):
        named_value = self.get_object()
        RevealRecord.record(request.user, "named_value", named_value.name, "rest")
        return Response({"value": named_value.value})
