"""View base classes for the REST API and the gateway snapshot endpoint."""

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway_admin.models import ConfigRevision
from gateway_admin.snapshot import build_snapshot

from .authentication import GatewayTokenAuthentication, IsGateway
from .parsers import JSONParser

__all__ = ("ConfigurationViewSet", "GatewaySnapshotView")

# Names may hold dots (`region.eu`), which DRF's default lookup pattern refuses.
NAME_LOOKUP_REGEX = r"[^/\x00]+"


class ConfigurationViewSet(viewsets.ModelViewSet):
    """CRUD over one kind of named configuration object, addressed by its name."""

    lookup_field = "name"
    lookup_value_regex = NAME_LOOKUP_REGEX
    parser_classes = [JSONParser]
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]


@extend_schema(exclude=True)
class GatewaySnapshotView(APIView):
    """`GET /api/gateway/snapshot/`: the configuration snapshot a gateway polls (docs/architecture.md).

    The answer carries `ETag: "<revision>"`; a matching `If-None-Match` gets 304 without building anything.
    """

    authentication_classes = [GatewayTokenAuthentication]
    permission_classes = [IsGateway]
    renderer_classes = [JSONRenderer]

    def get(self, request):
        etag = f'"{ConfigRevision.current()}"'
        tags = _if_none_match(request)
        if etag in tags or "*" in tags:
            return Response(status=304, headers={"ETag": etag})
        snapshot = build_snapshot()
        return Response(snapshot, headers={"ETag": f'"{snapshot["revision"]}"', "Cache-Control": "no-cache"})


def _if_none_match(request) -> set[str]:
    header = request.headers.get("If-None-Match", "")
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


# build_snapshot() opens its own transaction (REPEATABLE READ on PostgreSQL), which must be the first statement
# of that transaction, so this view is kept out of ATOMIC_REQUESTS.
snapshot_view = transaction.non_atomic_requests(GatewaySnapshotView.as_view())
