"""The object kinds the web UI shows: one declaration per kind, read by the generic views in `webui.views`.

Each kind names the REST serializer that validates and writes it (so a page and the REST API follow one set of
rules, services included), the REST filter set its list page filters with, and how its objects are looked up.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from django import forms
from django.db import models

from apis.api.serializers import APISerializer, OperationSerializer
from apis.filtersets import APIFilterSet, OperationFilterSet
from apis.models import API, Operation
from backends.api.serializers import BackendSerializer
from backends.filtersets import BackendFilterSet
from backends.models import Backend
from backends.services import delete_backend
from content_safety.api.serializers import BlocklistSerializer
from content_safety.filtersets import BlocklistFilterSet
from content_safety.models import Blocklist
from named_values.api.serializers import NamedValueSerializer
from named_values.filtersets import NamedValueFilterSet
from named_values.models import NamedValue
from named_values.services import delete_named_value
from subscriptions.api.serializers import ProductSerializer, SubscriptionSerializer
from subscriptions.filtersets import ProductFilterSet, SubscriptionFilterSet
from subscriptions.models import Product, Subscription

from . import forms as ui_forms

__all__ = ("KINDS", "Kind", "kind_for")


@dataclass(frozen=True)
class Kind:
    """One kind of object with list, detail, edit and delete pages.

    Attributes:
        slug: URL segment (`/ui/<slug>/`) and the key of `KINDS`.
        snapshot_kind: the snapshot item kind, to put write-time check problems on the right field.
        columns: (attribute, heading) pairs of the list table; the first links to the detail page.
        detail_fields: (attribute, label) pairs of the detail page.
        search_fields: lookups the list's search box matches (icontains, any of them).
        lookup: URL kwargs -> queryset filter of one object.
        form_class: the edit form (widgets and labels); the serializer decides what is valid.
        create_form_class: the create form (the edit form plus the name); None: no create page (the wizard
            creates APIs, with their operations and backend).
        create_parent: the create form's cleaned data -> what a new object belongs to, given to the serializer as
            context and to `save()`, as REST's `perform_create` does (an operation's API).
        delete: the service that deletes (its refusals become messages); default `instance.delete()`.
        reveal: whether the detail page offers Reveal (and which kind the audit log names).
    """

    slug: str
    model: type[models.Model]
    serializer_class: type
    filterset_class: type
    snapshot_kind: str
    columns: tuple[tuple[str, str], ...]
    detail_fields: tuple[tuple[str, str], ...]
    search_fields: tuple[str, ...]
    form_class: type[forms.Form]
    queryset: Callable[[], models.QuerySet]
    lookup: Callable[[dict], dict] = lambda kwargs: {"name": kwargs["name"]}
    url_kwargs: Callable[[models.Model], dict] = lambda obj: {"name": obj.name}
    delete: Callable[[models.Model], None] | None = None
    reveal: str = ""
    create_form_class: type[forms.Form] | None = None
    serializer_context: Callable[[models.Model], dict] = field(default=lambda obj: {})
    create_parent: Callable[[dict], dict] = field(default=lambda cleaned: {})

    @property
    def label(self) -> str:
        return str(self.model._meta.verbose_name)

    @property
    def label_plural(self) -> str:
        return str(self.model._meta.verbose_name_plural)

    def perm(self, action: str) -> str:
        return f"{self.model._meta.app_label}.{action}_{self.model._meta.model_name}"


KINDS: dict[str, Kind] = {
    kind.slug: kind
    for kind in (
        Kind(
            slug="apis",
            model=API,
            serializer_class=APISerializer,
            filterset_class=APIFilterSet,
            snapshot_kind="api",
            columns=(("name", "Name"), ("display_name", "Display name"), ("path", "Path"), ("api_type", "Type")),
            detail_fields=(
                ("display_name", "Display name"),
                ("description", "Description"),
                ("path", "Path"),
                ("gateway_url", "Clients call"),
                ("service_url", "Web service URL"),
                ("get_api_type_display", "Type"),
                ("subscription_required", "Subscription required"),
                ("subscription_key_header", "Subscription key header"),
                ("subscription_key_query", "Subscription key query parameter"),
                ("product_names", "Products"),
            ),
            search_fields=("name", "display_name", "path"),
            form_class=ui_forms.APIForm,
            queryset=lambda: API.objects.prefetch_related("products"),
        ),
        Kind(
            slug="operations",
            model=Operation,
            serializer_class=OperationSerializer,
            filterset_class=OperationFilterSet,
            snapshot_kind="operation",
            columns=(("name", "Name"), ("api", "API"), ("method", "Method"), ("url_template", "URL template")),
            detail_fields=(
                ("api", "API"),
                ("display_name", "Display name"),
                ("method", "Method"),
                ("url_template", "URL template"),
                ("description", "Description"),
            ),
            search_fields=("name", "display_name", "url_template", "api__name"),
            form_class=ui_forms.OperationForm,
            create_form_class=ui_forms.OperationCreateForm,
            create_parent=lambda cleaned: {"api": cleaned["api"]},
            queryset=lambda: Operation.objects.select_related("api"),
            lookup=lambda kwargs: {"api__name": kwargs["api"], "name": kwargs["name"]},
            url_kwargs=lambda obj: {"api": obj.api.name, "name": obj.name},
            serializer_context=lambda obj: {"api": obj.api},
        ),
        Kind(
            slug="backends",
            model=Backend,
            serializer_class=BackendSerializer,
            filterset_class=BackendFilterSet,
            snapshot_kind="backend",
            columns=(("name", "Name"), ("type", "Type"), ("url", "URL")),
            detail_fields=(
                ("type", "Type"),
                ("url", "URL"),
                ("pool", "Pool"),
                ("circuit_breaker", "Circuit breaker"),
                ("description", "Description"),
                ("credentials_header", "Credential headers"),
                ("credentials_query", "Credential query parameters"),
            ),
            search_fields=("name", "url", "description"),
            form_class=ui_forms.BackendForm,
            create_form_class=ui_forms.BackendCreateForm,
            queryset=Backend.objects.all,
            delete=delete_backend,
        ),
        Kind(
            slug="blocklists",
            model=Blocklist,
            serializer_class=BlocklistSerializer,
            filterset_class=BlocklistFilterSet,
            snapshot_kind="blocklist",
            columns=(("name", "Name"), ("description", "Description"), ("item_count", "Items")),
            detail_fields=(
                ("description", "Description"),
                ("term_list", "Terms"),
                ("regex_list", "Regular expressions"),
            ),
            search_fields=("name", "description"),
            form_class=ui_forms.BlocklistForm,
            create_form_class=ui_forms.BlocklistCreateForm,
            queryset=Blocklist.objects.all,
        ),
        Kind(
            slug="named-values",
            model=NamedValue,
            serializer_class=NamedValueSerializer,
            filterset_class=NamedValueFilterSet,
            snapshot_kind="named_value",
            columns=(("name", "Name"), ("secret", "Secret"), ("shown_value", "Value")),
            detail_fields=(("secret", "Secret"), ("shown_value", "Value"), ("tag_list", "Tags")),
            search_fields=("name",),
            form_class=ui_forms.NamedValueForm,
            create_form_class=ui_forms.NamedValueCreateForm,
            queryset=NamedValue.objects.all,
            delete=delete_named_value,
            reveal="named_value",
        ),
        Kind(
            slug="products",
            model=Product,
            serializer_class=ProductSerializer,
            filterset_class=ProductFilterSet,
            snapshot_kind="product",
            columns=(("name", "Name"), ("display_name", "Display name"), ("state", "State")),
            detail_fields=(
                ("display_name", "Display name"),
                ("description", "Description"),
                ("subscription_required", "Subscription required"),
                ("approval_required", "Approval required"),
                ("subscriptions_limit", "Subscriptions limit"),
                ("state", "State"),
                ("api_names", "APIs"),
            ),
            search_fields=("name", "display_name"),
            form_class=ui_forms.ProductForm,
            create_form_class=ui_forms.ProductCreateForm,
            queryset=lambda: Product.objects.prefetch_related("apis"),
        ),
        Kind(
            slug="subscriptions",
            model=Subscription,
            serializer_class=SubscriptionSerializer,
            filterset_class=SubscriptionFilterSet,
            snapshot_kind="subscription",
            columns=(("name", "Name"), ("display_name", "Display name"), ("scope", "Scope"), ("state", "State")),
            detail_fields=(
                ("display_name", "Display name"),
                ("scope", "Scope"),
                ("state", "State"),
                ("masked_primary_key", "Primary key"),
                ("masked_secondary_key", "Secondary key"),
            ),
            search_fields=("name", "display_name"),
            form_class=ui_forms.SubscriptionForm,
            create_form_class=ui_forms.SubscriptionCreateForm,
            queryset=lambda: Subscription.objects.select_related("api", "product"),
            reveal="subscription",
        ),
    )
}


def kind_for(slug: str) -> Kind:
    return KINDS[slug]
