import django_filters

from gateway_admin.filtersets import FilterSet

from .models import Backend

__all__ = ("BackendFilterSet",)


class BackendFilterSet(FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    url = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Backend
        fields = ("name", "url")
