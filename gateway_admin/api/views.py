"""View base classes for the REST API and the gateway snapshot endpoint."""

from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway_admin.models import ConfigRevision, GatewayHeartbeat
from gateway_admin.safety import ConfigRejected, field_errors, validated_write
from gateway_admin.snapshot import build_snapshot

from .authentication import GatewayTokenAuthentication, IsGateway
from .parsers import JSONParser

__all__ = ("ConfigurationViewSet", "GatewayHeartbeatView", "GatewaySnapshotView", "SnapshotSafeMixin", "heartbeat_view")

# Names may hold dots (`region.eu`), which DRF's default lookup pattern refuses.
NAME_LOOKUP_REGEX = r"[^/\x00]+"


class SnapshotSafeMixin:
    """Every unsafe request (whatever its action) commits only if gateways can load the resulting snapshot
    (gateway_admin.safety): otherwise 400 naming the field (409 for a DELETE) and nothing is saved."""

    #: the snapshot item kind of the view's objects ("backend", "api", ...), to name fields of the written item
    snapshot_kind: str | None = None

    def dispatch(self, request, *args, **kwargs):
        if request.method in permissions.SAFE_METHODS:
            return super().dispatch(request, *args, **kwargs)
        try:
            with validated_write() as guard:
                response = super().dispatch(request, *args, **kwargs)
                guard.skip = response.status_code >= 400  # refused already: nothing to check
        except ConfigRejected as exc:
            return self._rejected(request, exc, args, kwargs)
        return response

    def _rejected(self, request, exc: ConfigRejected, args, kwargs):
        name = getattr(self, "_written_name", None) or kwargs.get(getattr(self, "lookup_field", "name"))
        code = status.HTTP_409_CONFLICT if request.method == "DELETE" else status.HTTP_400_BAD_REQUEST
        data = getattr(self.request, "data", None)
        data = data if isinstance(data, dict) else {}
        # a problem of another item (a reference this write broke) is put on the field most likely to blame
        fallback = next((key for key in ("value", "name") if key in data), "detail")
        if getattr(self, "action", None) == "policy":
            fallback = "value"
        errors = field_errors(exc, kind=self.snapshot_kind, name=name, fallback=fallback)
        if getattr(self, "action", None) == "policy" and "policy" in errors:
            errors.setdefault("value", []).extend(errors.pop("policy"))
        if code == status.HTTP_409_CONFLICT:
            errors = {"detail": " ".join(message for messages in errors.values() for message in messages)}
        response = Response(errors, status=code)
        return self.finalize_response(self.request, response, *args, **kwargs)

    def perform_create(self, serializer):
        self._written_name = serializer.validated_data.get("name")
        super().perform_create(serializer)

    def perform_update(self, serializer):
        self._written_name = serializer.validated_data.get("name")
        super().perform_update(serializer)


class ConfigurationViewSet(SnapshotSafeMixin, viewsets.ModelViewSet):
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


class HeartbeatSerializer(serializers.Serializer):
    """What a gateway reports (gateway.sync.SnapshotSync.heartbeat): its health document plus region and interval."""

    gateway_id = serializers.CharField(max_length=200)
    region = serializers.CharField(max_length=100, allow_blank=True, required=False, default="")
    revision = serializers.IntegerField(allow_null=True, min_value=0)
    status = serializers.ChoiceField(choices=["ok", "starting", "degraded"])
    rejected = serializers.DictField(allow_null=True, required=False, default=None)
    quarantined = serializers.ListField(child=serializers.DictField(), required=False, default=list)
    backends = serializers.DictField(child=serializers.DictField(), required=False, default=dict)
    interval = serializers.FloatField(min_value=0.05, max_value=86400, required=False, default=15.0)


@extend_schema(exclude=True)
class GatewayHeartbeatView(APIView):
    """`POST /api/gateway/heartbeat/`: a gateway says what it serves and how it is (the home page shows it)."""

    authentication_classes = [GatewayTokenAuthentication]
    permission_classes = [IsGateway]
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer]

    def post(self, request):
        serializer = HeartbeatSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        problems = {key: data[key] for key in ("rejected", "quarantined") if data[key]}
        GatewayHeartbeat.objects.update_or_create(
            gateway_id=data["gateway_id"],
            defaults={
                "region": data["region"],
                "revision": data["revision"],
                "status": data["status"],
                "problems": problems,
                "backends": data["backends"],
                "interval": data["interval"],
                "last_seen": timezone.now(),
            },
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


heartbeat_view = GatewayHeartbeatView.as_view()
