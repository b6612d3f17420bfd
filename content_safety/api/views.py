from gateway_admin.api.views import ConfigurationViewSet

from ..models import Blocklist
from .serializers import BlocklistSerializer

__all__ = ("BlocklistViewSet",)


class BlocklistViewSet(ConfigurationViewSet):
    """Content-safety blocklists; deleting one a policy names is refused (409), as the gateways could not load it."""

    queryset = Blocklist.objects.all()
    serializer_class = BlocklistSerializer
    snapshot_kind = "blocklist"
