import django_filters

from gateway_admin.filtersets import FilterSet

from .models import NamedValue

__all__ = ("NamedValueFilterSet",)


class NamedValueFilterSet(FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    tag = django_filters.CharFilter(method="filter_tag", label="Tag")

    class Meta:
        model = NamedValue
        fields = ("name", "secret", "tag")

    def filter_tag(self, queryset, name, value):
        # JSONField `contains` is not available on SQLite; the table is small, so filter in Python.
        return queryset.filter(pk__in=[nv.pk for nv in queryset if value in nv.tags])
