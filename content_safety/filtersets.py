import django_filters

from gateway_admin.filtersets import FilterSet

from .models import Blocklist

__all__ = ("BlocklistFilterSet",)


class BlocklistFilterSet(FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Blocklist
        fields = ("name",)
