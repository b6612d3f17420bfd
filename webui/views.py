"""Object pages: list, detail, edit and delete for every kind in `webui.objects.KINDS`, the Reveal action (with its
audit record) and the subscription key regeneration. Writes go through the kind's REST serializer and services,
inside the write-time snapshot check (`gateway_admin.safety.validated_write`), like the REST API's."""

from django import forms
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin, PermissionRequiredMixin
from django.core.exceptions import FieldDoesNotExist
from django.core.paginator import Paginator
from django.db.models import Model, Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import urlencode
from django.views.decorators.cache import never_cache
from django.views.generic import TemplateView

from backends.services import backend_state
from gateway_admin.filtersets import StrictBooleanField
from gateway_admin.models import RevealRecord
from gateway_admin.safety import validated_write
from subscriptions.services import PRIMARY, SECONDARY, regenerate_key

from .errors import REFUSALS, add_errors, refusal_errors
from .home import home_overview
from .objects import KINDS, Kind

__all__ = (
    "IndexView",
    "ObjectCreateView",
    "ObjectDeleteView",
    "ObjectDetailView",
    "ObjectEditView",
    "ObjectListView",
    "RegenerateKeyView",
    "RevealView",
)

PAGE_SIZE = 25
BOOLEAN_CHOICES = [("", "Any"), ("true", "Yes"), ("false", "No")]
MASK = "••••••••"
SUBSCRIBABLE = ("apis", "products")  # kinds a subscription can be scoped to
# text fields a link may fill in on a create page (never a secret's value; a box's "false" would read as ticked)
PREFILLABLE = ("name", "display_name", "scope", "description", "api")
POLICY_SCOPES = {"apis": "api", "operations": "operation", "products": "product"}
# those of the test console (webui.console.PERMISSIONS: it sends with a subscription's key)
CONSOLE_PERMISSIONS = ("apis.view_api", "subscriptions.view_subscription", "subscriptions.reveal_subscription_keys")
REVEAL_PERMISSIONS = {
    "named_value": "named_values.reveal_namedvalue",
    "subscription": "subscriptions.reveal_subscription_keys",
}


class UIView(LoginRequiredMixin, PermissionRequiredMixin, TemplateView):
    """Base of every page: login required (anonymous users go to the login page), then the declared permissions
    (a logged-in user without them gets 403)."""

    permission_required: tuple[str, ...] = ()

    def get_permission_required(self):
        return self.permission_required


class IndexView(UIView):
    """The home page: the gateways seen (from their heartbeats), recent errors and a first-run checklist."""

    template_name = "webui/index.html"

    def get_context_data(self, **kwargs):
        user = self.request.user
        kinds = [kind for kind in KINDS.values() if user.has_perm(kind.perm("view"))]
        return super().get_context_data(kinds=kinds, **home_overview(user), **kwargs)


#
# Showing values
#


def display(obj: Model, attr: str) -> str:
    """The text of one attribute on a page; secrets are never in it."""
    special = DISPLAY.get(attr)
    if special is not None:
        return special(obj)
    value = getattr(obj, attr)
    if callable(value):
        value = value()
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "—"
    if value in (None, ""):
        return "—"
    return str(value)


DISPLAY = {
    # relations come prefetched by the kind's queryset: .all() here costs no query
    "product_names": lambda api: ", ".join(sorted(p.name for p in api.products.all())) or "—",
    "api_names": lambda product: ", ".join(sorted(a.name for a in product.apis.all())) or "—",
    "shown_value": lambda nv: MASK if nv.secret else (nv.plain_value or "—"),
    "tag_list": lambda nv: ", ".join(nv.tags) or "—",
    "pool": lambda backend: pool_members(backend.pool),
    "circuit_breaker": lambda backend: breaker_rule(backend.circuit_breaker),
    "masked_primary_key": lambda sub: MASK,
    "masked_secondary_key": lambda sub: MASK,
}


def pool_members(pool: dict | None) -> str:
    """A pool's members as "name (priority p, weight w)"."""
    services = (pool or {}).get("services") or []
    return (
        ", ".join(
            f"{s.get('backend')} (priority {s.get('priority', 1)}, weight {s.get('weight', 1)})" for s in services
        )
        or "—"
    )


def breaker_rule(breaker: dict | None) -> str:
    """A circuit-breaker rule in words: what trips it and for how long."""
    rules = (breaker or {}).get("rules") or []
    if not rules:
        return "—"
    rule = rules[0]
    condition = rule.get("failureCondition") or {}
    trips = []
    if condition.get("count") is not None:
        trips.append(f"{condition['count']} failures")
    if condition.get("percentage") is not None:
        trips.append(f"{condition['percentage']}% failures")
    ranges = ", ".join(
        str(r.get("min")) if r.get("min") == r.get("max") else f"{r.get('min')}-{r.get('max')}"
        for r in condition.get("statusCodeRanges") or []
    )
    text = f"{rule.get('name', 'rule')}: trips on {' or '.join(trips) or 'failures'}"
    if ranges:
        text += f" (status {ranges})"
    if condition.get("interval"):
        text += f" within {condition['interval']}"
    text += f", open for {rule.get('tripDuration', '?')}"
    if rule.get("acceptRetryAfter"):
        text += " (or Retry-After)"
    return text


def policy_editor_url(scope: str, owner=None) -> str:
    """The policy editor of a scope (webui.policy_editor): global without an owner."""
    if owner is None:
        return reverse("webui:policy-global")
    if scope == "operation":
        return reverse("webui:policy-operation", kwargs={"api": owner.api.name, "name": owner.name})
    return reverse("webui:policy", kwargs={"scope": scope, "name": owner.name})


class KindMixin:
    """Resolves `kind` (URL kwarg) to its declaration and, for object pages, the object."""

    action = "view"

    def dispatch(self, request, *args, **kwargs):
        try:
            self.kind: Kind = KINDS[kwargs["kind"]]
        except KeyError:
            raise Http404("No such page.") from None
        return super().dispatch(request, *args, **kwargs)

    def get_permission_required(self):
        return (
            (self.kind.perm("view"), self.kind.perm(self.action))
            if self.action != "view"
            else (self.kind.perm("view"),)
        )

    def get_object(self) -> Model:
        return get_object_or_404(self.kind.queryset(), **self.kind.lookup(self.kwargs))

    def object_url(self, obj: Model, page: str = "detail") -> str:
        return reverse(f"webui:object-{page}", kwargs={"kind": self.kind.slug, **self.kind.url_kwargs(obj)})

    def get_context_data(self, **kwargs):
        kwargs["kind"] = self.kind  # the URL's `kind` (a slug) arrives in kwargs too
        return super().get_context_data(**kwargs)


#
# List
#


class ObjectListView(KindMixin, UIView):
    template_name = "webui/object_list.html"

    def get_context_data(self, **kwargs):
        kind = self.kind
        params = self.request.GET
        # an empty box in the filter form means "no filter" (the REST filter sets refuse empty parameters)
        data = {key: value for key, value in params.items() if value and key not in ("q", "page")}
        filterset = kind.filterset_class(data, queryset=kind.queryset())
        for form_field in filterset.form.fields.values():
            if isinstance(form_field, StrictBooleanField):  # "true" / "false" as REST takes them, as a menu
                form_field.widget = forms.Select(choices=BOOLEAN_CHOICES)
        queryset = filterset.qs if filterset.is_valid() else kind.queryset().none()
        query = params.get("q", "").strip()
        if query:
            match = Q()
            for lookup in kind.search_fields:
                match |= Q(**{f"{lookup}__icontains": query})
            queryset = queryset.filter(match)
        queryset = queryset.order_by(*kind.model._meta.ordering or ("pk",), "pk")
        page = Paginator(queryset, PAGE_SIZE).get_page(params.get("page"))
        rows = [(self.object_url(obj), [display(obj, attr) for attr, _ in kind.columns]) for obj in page.object_list]
        kept = params.copy()
        kept.pop("page", None)
        return super().get_context_data(
            filterset=filterset,
            query=query,
            page=page,
            rows=rows,
            headings=[heading for _, heading in kind.columns],
            kept_query=kept.urlencode(),
            create_url=(
                reverse("webui:object-create", kwargs={"kind": kind.slug})
                if kind.create_form_class is not None and self.request.user.has_perm(kind.perm("add"))
                else None
            ),
            **kwargs,
        )


#
# Detail
#


class ObjectDetailView(KindMixin, UIView):
    template_name = "webui/object_detail.html"

    def get_context_data(self, **kwargs):
        obj = self.get_object()
        user = self.request.user
        context = {
            "object": obj,
            "fields": [(label, display(obj, attr)) for attr, label in self.kind.detail_fields],
            "edit_url": self.object_url(obj, "edit") if user.has_perm(self.kind.perm("change")) else None,
            "delete_url": self.object_url(obj, "delete") if user.has_perm(self.kind.perm("delete")) else None,
            "reveal_url": (
                self.object_url(obj, "reveal")
                if self.kind.reveal and user.has_perm(REVEAL_PERMISSIONS[self.kind.reveal])
                else None
            ),
            "can_regenerate": self.kind.slug == "subscriptions" and user.has_perm(self.kind.perm("change")),
        }
        if self.kind.slug in POLICY_SCOPES and user.has_perm("policies.view_policy"):
            context["policy_url"] = policy_editor_url(POLICY_SCOPES[self.kind.slug], obj)
        if self.kind.slug in SUBSCRIBABLE and user.has_perm("subscriptions.add_subscription"):
            scope = f"/{self.kind.slug}/{obj.name}"  # /apis/<name> or /products/<name>
            context["subscribe_url"] = f"{reverse('webui:object-create', kwargs={'kind': 'subscriptions'})}?" + (
                urlencode({"scope": scope})
            )
        if self.kind.slug == "backends":
            # the same report as GET /api/backends/{name}/state/
            context["breaker_state"] = backend_state(obj)
        if self.kind.slug == "apis":
            if user.has_perm("apis.add_operation"):
                new_operation = reverse("webui:object-create", kwargs={"kind": "operations"})
                context["new_operation_url"] = f"{new_operation}?{urlencode({'api': obj.name})}"
            context["operations"] = [
                (reverse("webui:object-detail", kwargs={"kind": "operations", "api": obj.name, "name": op.name}), op)
                for op in obj.operations.order_by("name")
            ]
            if user.has_perms(CONSOLE_PERMISSIONS):
                context["console_url"] = reverse("webui:console", kwargs={"name": obj.name})
        return super().get_context_data(**context, **kwargs)


#
# Create, edit and delete
#


def model_defaults(model: type[Model], names) -> dict:
    """The model's field defaults for those form fields (a new product requires subscriptions, as REST's)."""
    defaults = {}
    for name in names:
        try:
            model_field = model._meta.get_field(name)
        except FieldDoesNotExist:
            continue
        if model_field.has_default():
            defaults[name] = model_field.get_default()
    return defaults


class ObjectCreateView(KindMixin, UIView):
    """A new object of a kind that declares a create form: its data goes to the kind's REST serializer (and the
    service behind `create`), inside the write-time snapshot check; refusals are shown on their fields."""

    template_name = "webui/object_form.html"
    action = "add"

    def dispatch(self, request, *args, **kwargs):
        kind = KINDS.get(kwargs.get("kind", ""))
        if kind is None or kind.create_form_class is None:
            raise Http404("No such page.")
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        kwargs.setdefault("form", self.kind.create_form_class(initial=self.initial()))
        cancel_url = reverse("webui:object-list", kwargs={"kind": self.kind.slug})
        api = self.initial().get("api")
        if self.kind.slug == "operations" and api and "/" not in api:  # from the API's page: Cancel goes back
            cancel_url = reverse("webui:object-detail", kwargs={"kind": "apis", "name": api})
        return super().get_context_data(creating=True, cancel_url=cancel_url, **kwargs)

    def initial(self) -> dict:
        """The form's or else the model's defaults, then what the link asked for (`?scope=/apis/chat` from an API's
        page)."""
        fields = self.kind.create_form_class.base_fields
        initial = model_defaults(self.kind.model, [name for name, field in fields.items() if field.initial is None])
        initial.update({key: value for key, value in self.request.GET.items() if key in fields and key in PREFILLABLE})
        return initial

    def post(self, request, *args, **kwargs):
        form = self.kind.create_form_class(request.POST, initial=self.initial())
        if form.is_valid():
            data = form.to_data()
            parent = self.kind.create_parent(form.cleaned_data)
            serializer = self.kind.serializer_class(data=data, context=parent)
            try:
                with validated_write():
                    serializer.is_valid(raise_exception=True)
                    obj = serializer.save(**parent)
            except REFUSALS as exc:
                add_errors(form, refusal_errors(exc, kind=self.kind.snapshot_kind, name=data.get("name")))
            else:
                hint = " Reveal its keys to copy them." if self.kind.slug == "subscriptions" else ""
                messages.success(request, f"Created {self.kind.label} '{obj.name}'.{hint}")
                return redirect(self.object_url(obj))
        return self.render_to_response(self.get_context_data(form=form), status=400)


class ObjectEditView(KindMixin, UIView):
    template_name = "webui/object_form.html"
    action = "change"

    def get_context_data(self, **kwargs):
        kwargs.setdefault("form", self.kind.form_class(initial=self.initial()))
        return super().get_context_data(object=self.object, cancel_url=self.object_url(self.object), **kwargs)

    def initial(self) -> dict:
        return dict(self.kind.serializer_class(self.object, context=self.kind.serializer_context(self.object)).data)

    def get(self, request, *args, **kwargs):
        self.object = self.get_object()
        return super().get(request, *args, **kwargs)

    def post(self, request, *args, **kwargs):
        self.object = obj = self.get_object()
        form = self.kind.form_class(request.POST, initial=self.initial())
        if form.is_valid():
            serializer = self.kind.serializer_class(
                obj, data=form.to_data(), partial=True, context=self.kind.serializer_context(obj)
            )
            try:
                with validated_write():
                    serializer.is_valid(raise_exception=True)
                    serializer.save()
            except REFUSALS as exc:
                add_errors(form, refusal_errors(exc, kind=self.kind.snapshot_kind, name=obj.name))
            else:
                messages.success(request, f"Saved {self.kind.label} '{obj.name}'.")
                return redirect(self.object_url(obj))
        return self.render_to_response(self.get_context_data(form=form), status=400)


class ObjectDeleteView(KindMixin, UIView):
    template_name = "webui/object_confirm_delete.html"
    action = "delete"

    def get_context_data(self, **kwargs):
        obj = self.get_object()
        return super().get_context_data(object=obj, cancel_url=self.object_url(obj), **kwargs)

    def post(self, request, *args, **kwargs):
        obj = self.get_object()
        delete = self.kind.delete or (lambda instance: instance.delete())
        try:
            with validated_write():
                delete(obj)
        except REFUSALS as exc:
            errors = refusal_errors(exc, kind=self.kind.snapshot_kind, name=obj.name)
            for text in (m for msgs in errors.values() for m in msgs):
                messages.error(request, text)
            return redirect(self.object_url(obj))
        messages.success(request, f"Deleted {self.kind.label} '{obj.name}'.")
        return redirect(reverse("webui:object-list", kwargs={"kind": self.kind.slug}))


#
# Secrets
#


@method_decorator(never_cache, name="dispatch")
class RevealView(KindMixin, UIView):
    """GET asks for confirmation; POST shows the secret once and writes the audit record."""

    template_name = "webui/reveal.html"

    def get_permission_required(self):
        if not self.kind.reveal:
            raise Http404("Nothing to reveal here.")
        return (self.kind.perm("view"), REVEAL_PERMISSIONS[self.kind.reveal])

    def get_context_data(self, **kwargs):
        obj = self.get_object()
        return super().get_context_data(object=obj, cancel_url=self.object_url(obj), **kwargs)

    def post(self, request, *args, **kwargs):
        obj = self.get_object()
        RevealRecord.record(request.user, self.kind.reveal, obj.name, "ui")
        if self.kind.reveal == "subscription":
            secrets = [("Primary key", obj.primary_key), ("Secondary key", obj.secondary_key)]
        else:
            secrets = [("Value", obj.value)]
        return self.render_to_response(self.get_context_data(secrets=secrets))


class RegenerateKeyView(KindMixin, UIView):
    """POST only: replace a subscription's primary or secondary key (the other keeps working)."""

    action = "change"
    http_method_names = ["post"]

    def post(self, request, *args, **kwargs):
        if self.kind.slug != "subscriptions" or kwargs["which"] not in (PRIMARY, SECONDARY):
            raise Http404("No such key.")
        obj = self.get_object()
        try:
            with validated_write():
                regenerate_key(obj, kwargs["which"])
        except REFUSALS as exc:
            for text in (m for msgs in refusal_errors(exc).values() for m in msgs):
                messages.error(request, text)
        else:
            messages.success(request, f"Regenerated the {kwargs['which']} key of '{obj.name}'. Reveal it to copy it.")
        return redirect(self.object_url(obj))
