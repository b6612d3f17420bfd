import django_filters

from gateway_admin.filtersets import FilterSet

from .choices import APITypeChoices, HttpMethodChoices
from .models import API, Operation

__all__ = ("APIFilterSet", "OperationFilterSet")


class APIFilterSet(FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    api_type = django_filters.ChoiceFilter(choices=APITypeChoices.choices)
    product = django_filters.CharFilter(field_name="products__name", label="Product name")

    class Meta:
        model = API
        fields = ("name", "path", "api_type", "subscription_required", "product")


class OperationFilterSet(FilterSet):
    method = django_filters.ChoiceFilter(choices=HttpMethodChoices.choices)

    class Meta:
        model = Operation
        fields = ("method", "url_template")
