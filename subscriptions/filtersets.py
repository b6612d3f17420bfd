import django_filters

from gateway_admin.filtersets import FilterSet

from .choices import ProductStateChoices, SubscriptionStateChoices
from .models import Product, Subscription

__all__ = ("ProductFilterSet", "SubscriptionFilterSet")


class ProductFilterSet(FilterSet):
    state = django_filters.ChoiceFilter(choices=ProductStateChoices.choices)
    api = django_filters.CharFilter(field_name="apis__name", label="API name")

    class Meta:
        model = Product
        fields = ("state", "subscription_required", "api")


class SubscriptionFilterSet(FilterSet):
    state = django_filters.ChoiceFilter(choices=SubscriptionStateChoices.choices)
    api = django_filters.CharFilter(field_name="api__name", label="API name (API-scoped subscriptions)")
    product = django_filters.CharFilter(field_name="product__name", label="Product name")
    scope = django_filters.CharFilter(method="filter_scope", label="Exact scope, e.g. /products/starter")

    class Meta:
        model = Subscription
        fields = ("state", "api", "product", "scope")

    def filter_scope(self, queryset, name, value):
        kind, _, target = value.strip("/").partition("/")
        if kind == "apis" and not target:
            return queryset.filter(api=None, product=None)
        if kind == "apis":
            return queryset.filter(api__name=target)
        if kind == "products":
            return queryset.filter(product__name=target)
        return queryset.none()
