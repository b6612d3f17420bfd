from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from gateway_admin.api.authentication import GatewayTokenAuthentication, IsGateway

from ..services import ingest_records, purge_seen_if_due, usage_report
from .parsers import UsageBatchParser, UsageRecords
from .serializers import UsageBatchSerializer, UsageQuerySerializer, UsageReportSerializer

__all__ = ("GatewayUsageView", "UsageView", "gateway_usage_view")


#
# Usage report
#


class UsageView(APIView):
    """`GET /api/usage/`: requests and tokens per period, grouped by API, subscription, product or operation."""

    required_permissions = {"GET": ("usage.view_usagerollup",)}

    @extend_schema(
        parameters=[UsageQuerySerializer],
        responses=UsageReportSerializer,
        summary="Usage totals per period, grouped by API, subscription, product or operation",
    )
    def get(self, request):
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        report = {**query.validated_data, "results": usage_report(**query.validated_data)}
        return Response(UsageReportSerializer(report).data)


#
# Gateway ingestion
#


@extend_schema(exclude=True)
class GatewayUsageView(APIView):
    """`POST /api/gateway/usage/`: usage records from a gateway that has no Redis (the embedded default).

    Answers 202 once the records are committed; sending the same records again counts them once.
    """

    authentication_classes = [GatewayTokenAuthentication]
    permission_classes = [IsGateway]
    parser_classes = [UsageBatchParser]
    renderer_classes = [JSONRenderer]

    def post(self, request):
        records = request.data
        if not isinstance(records, UsageRecords):  # not all as a gateway writes them: read, or refused, field by field
            serializer = UsageBatchSerializer(data=records)
            serializer.is_valid(raise_exception=True)
            records = serializer.validated_data["records"]
        result = ingest_records(records, canonical_ids=True)
        purge_seen_if_due()
        return Response(result.as_dict(), status=status.HTTP_202_ACCEPTED)


# ingest_records() commits its own transaction (and retries it when it loses a race), so the answer is only
# sent once the records are stored; keep the view out of ATOMIC_REQUESTS.
gateway_usage_view = transaction.non_atomic_requests(GatewayUsageView.as_view())
