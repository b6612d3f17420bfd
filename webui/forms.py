"""Edit forms of the object pages. They give each field its widget and label only: what is valid, and what is
written, is decided by the kind's REST serializer and the services behind it (see `webui.views.ObjectEditView`)."""

from django import forms
from django.db import models

from apis.choices import APITypeChoices, HttpMethodChoices
from apis.models import API
from backends.models import BackendType
from content_safety.api.serializers import BlocklistItemSerializer
from subscriptions.choices import ProductStateChoices, SubscriptionStateChoices
from subscriptions.models import Product

ALL_APIS = "/apis"

__all__ = (
    "APIForm",
    "BackendCreateForm",
    "BackendForm",
    "BlocklistCreateForm",
    "BlocklistForm",
    "CheckList",
    "JSONBox",
    "NamedValueCreateForm",
    "NamedValueForm",
    "OperationCreateForm",
    "OperationForm",
    "OptionList",
    "ProductCreateForm",
    "ProductForm",
    "SubscriptionCreateForm",
    "SubscriptionForm",
    "SubscriptionScopeSelect",
    "UIForm",
    "names_field",
)


class UIForm(forms.Form):
    """Base of the edit forms: `to_data()` turns the cleaned values into the serializer's input."""

    def to_data(self) -> dict:
        data = {}
        for name, value in self.cleaned_data.items():
            if isinstance(value, models.Model):
                value = value.name
            elif isinstance(value, models.QuerySet | list | tuple) and value and isinstance(value[0], models.Model):
                value = [item.name for item in value]
            elif isinstance(value, models.QuerySet):
                value = []
            data[name] = value
        return data


class CheckList(forms.CheckboxSelectMultiple):
    """Checkboxes rendered by one template (`webui/templates/webui/widgets/checklist.html`, where the form renderer
    looks: the apps' folders): a thousand of them in tens of ms."""

    template_name = "webui/widgets/checklist.html"


class OptionList(forms.Select):
    """A menu rendered by one template (`webui/templates/webui/widgets/select.html`): Django's includes a template per
    option, and a menu of every API has a thousand of them."""

    template_name = "webui/widgets/select.html"


class SubscriptionScopeSelect(OptionList):
    """The scopes a subscription can have, as a menu: All APIs, then each API and each product (loaded when the menu
    is drawn, two queries). The value stays text: the service (`parse_scope`) decides whether it names anything, and a
    value the menu does not list (a link's, or one just refused) is kept as an option of its own rather than silently
    becoming another scope."""

    def get_context(self, name, value, attrs):
        apis = API.objects.order_by("name").values_list("name", "display_name")
        products = Product.objects.order_by("name").values_list("name", "display_name")
        groups = [
            ("APIs", [(f"/apis/{api}", _option_label(api, shown)) for api, shown in apis]),
            ("Products", [(f"/products/{product}", _option_label(product, shown)) for product, shown in products]),
        ]
        listed = {ALL_APIS} | {scope for _, options in groups for scope, _ in options}
        unlisted = [(value, value)] if value and value not in listed else []
        self.choices = [("", "Choose a scope"), *unlisted, (ALL_APIS, "All APIs"), *(g for g in groups if g[1])]
        return super().get_context(name, value, attrs)


def _option_label(name: str, display_name: str) -> str:
    return f"{name} ({display_name})" if display_name and display_name != name else name


def names_field(label: str, model) -> forms.ModelMultipleChoiceField:
    """Pick any of a model's objects by name (checkboxes); the value is sent to the serializer as names."""
    return forms.ModelMultipleChoiceField(
        label=label,
        queryset=model.objects.order_by("name").only("pk", "name"),
        to_field_name="name",
        required=False,
        widget=CheckList,
    )


def _text(label: str, required: bool = True, **kwargs) -> forms.CharField:
    return forms.CharField(label=label, required=required, **kwargs)


def _area(label: str) -> forms.CharField:
    return forms.CharField(label=label, required=False, widget=forms.Textarea(attrs={"rows": 3}))


class APIForm(UIForm):
    display_name = _text("Display name")
    description = _area("Description")
    path = _text("API URL suffix (path)")
    service_url = _text("Web service URL", required=False)
    api_type = forms.ChoiceField(label="Type", choices=APITypeChoices.choices, widget=forms.RadioSelect)
    subscription_required = forms.BooleanField(label="Subscription required", required=False)
    subscription_key_header = _text("Subscription key header name")
    subscription_key_query = _text("Subscription key query parameter name")
    products = names_field("Products", Product)


class OperationForm(UIForm):
    display_name = _text("Display name")
    method = forms.ChoiceField(label="Method", choices=HttpMethodChoices.choices)
    url_template = _text(
        "URL template",
        help_text="After the API's path: /chat/completions, /deployments/{deployment-id}/chat/completions, or /* "
        "for anything below.",
    )
    description = _area("Description")


class JSONBox(forms.JSONField):
    """A JSON text box that shows nothing, rather than `null` or `{}`, when there is nothing (sent back as empty)."""

    def __init__(self, label: str, **kwargs):
        super().__init__(label=label, required=False, widget=forms.Textarea(attrs={"rows": 3}), **kwargs)

    def prepare_value(self, value):
        return "" if value is None or value == {} else super().prepare_value(value)


class BackendForm(UIForm):
    type = forms.ChoiceField(label="Type", choices=BackendType.choices, initial=BackendType.SINGLE, required=False)
    url = _text("URL", required=False, help_text="Single: where requests go (the operation path is appended).")
    pool = JSONBox(
        "Pool (JSON, type Pool)",
        help_text='Pool: its Single backends, for example {"services": [{"backend": "ptu", "priority": 1, '
        '"weight": 1}]}.',
    )
    circuit_breaker = JSONBox(
        "Circuit breaker (JSON)",
        help_text='For example {"rules": [{"name": "trip-on-429", "failureCondition": {"count": 1, "interval": '
        '"PT1M", "statusCodeRanges": [{"min": 429, "max": 429}]}, "tripDuration": "PT1M", "acceptRetryAfter": true}]}.',
    )
    description = _area("Description")
    credentials_header = JSONBox(
        "Credential headers (JSON object)",
        help_text='Header name → value; a value may name a named value, for example {"api-key": "{{openai-key}}"}: '
        "the gateway puts in its value (a secret stays encrypted until then).",
    )
    credentials_query = JSONBox(
        "Credential query parameters (JSON object)",
        help_text='Query parameter name → value, named values as above, for example {"code": "{{function-key}}"}.',
    )

    def to_data(self) -> dict:
        data = super().to_data()
        for name in ("credentials_header", "credentials_query"):
            if data[name] is None:
                data[name] = {}
        if not data.get("type"):  # not given: the backend keeps its type (Single for a new one)
            data.pop("type", None)
        return data


class BlocklistForm(UIForm):
    """Items as two boxes, one per line; each line is checked by the REST item serializer (RE2 syntax and all), so
    its message can name the box and the line."""

    description = _area("Description")
    terms = forms.CharField(
        label="Terms (one per line)",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="Whole words, matched after Unicode normalization and case folding.",
    )
    regexes = forms.CharField(
        label="Regular expressions (one per line, RE2 syntax)",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="Linear-time RE2 syntax: no backreferences or lookaround.",
    )
    BOXES = (("terms", "term"), ("regexes", "regex"))

    def __init__(self, *args, initial=None, **kwargs):
        if initial is not None and "items" in initial:
            items = initial.get("items") or ()
            initial = {
                **initial,
                **{box: "\n".join(i["value"] for i in items if i["kind"] == kind) for box, kind in self.BOXES},
            }
        super().__init__(*args, initial=initial, **kwargs)

    def items(self, box: str, kind: str) -> list[tuple[int, dict]]:
        lines = (self.cleaned_data.get(box) or "").splitlines()
        return [(n, {"kind": kind, "value": line}) for n, line in enumerate(lines, start=1) if line.strip()]

    def clean(self):
        cleaned = super().clean()
        for box, kind in self.BOXES:
            for number, item in self.items(box, kind):
                serializer = BlocklistItemSerializer(data=item)
                if not serializer.is_valid():
                    for messages in serializer.errors.values():
                        for message in messages:
                            self.add_error(box, f"Line {number}: {message}")
        return cleaned

    def to_data(self) -> dict:
        data = {key: value for key, value in super().to_data().items() if key not in ("terms", "regexes")}
        data["items"] = [item for box, kind in self.BOXES for _, item in self.items(box, kind)]
        return data


class NamedValueForm(UIForm):
    secret = forms.BooleanField(label="Secret", required=False)
    value = forms.CharField(
        label="Value",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current value.",
    )
    tags = _text("Tags (comma separated)", required=False)

    def __init__(self, *args, initial=None, **kwargs):
        if initial is not None:
            tags = initial.get("tags") or ()
            # the value is never put back in the page (a secret shows only through the audited Reveal)
            initial = {**initial, "tags": tags if isinstance(tags, str) else ", ".join(tags), "value": ""}
        super().__init__(*args, initial=initial, **kwargs)

    def to_data(self) -> dict:
        data = super().to_data()
        data["value"] = data["value"] or None
        data["tags"] = [tag.strip() for tag in data["tags"].split(",") if tag.strip()]
        return data


class ProductForm(UIForm):
    display_name = _text("Display name")
    description = _area("Description")
    subscription_required = forms.BooleanField(label="Subscription required", required=False)
    approval_required = forms.BooleanField(label="Approval required", required=False)
    subscriptions_limit = forms.IntegerField(label="Subscriptions limit", required=False)
    state = forms.ChoiceField(label="State", choices=ProductStateChoices.choices)
    apis = names_field("APIs", API)


class SubscriptionForm(UIForm):
    display_name = _text("Display name", required=False)
    scope = _text(
        "Scope",
        widget=SubscriptionScopeSelect,
        help_text="What the keys open: every API, one API or the APIs of one product.",
    )
    state = forms.ChoiceField(label="State", choices=SubscriptionStateChoices.choices)


#
# Create forms: the edit form plus the name (the object's id, fixed once created)
#


def _name_field() -> forms.CharField:
    return forms.CharField(
        label="Name",
        help_text="The id in URLs and references: letters, digits, '-', '.' and '_'. It cannot be changed later.",
    )


class ProductCreateForm(ProductForm):
    field_order = ("name",)
    name = _name_field()


class SubscriptionCreateForm(SubscriptionForm):
    """The keys are generated by the service (`create_subscription`); Reveal shows them once created."""

    field_order = ("name",)
    name = _name_field()


class NamedValueCreateForm(NamedValueForm):
    field_order = ("name",)
    name = _name_field()
    secret = forms.BooleanField(
        label="Secret", required=False, initial=True, help_text="Stored encrypted, shown only through Reveal."
    )
    value = forms.CharField(
        label="Value",
        required=False,  # the serializer says when it is missing, as the REST API does
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Not shown again once typed: if the form comes back with an error, type it again.",
    )


class BlocklistCreateForm(BlocklistForm):
    field_order = ("name",)
    name = _name_field()


class BackendCreateForm(BackendForm):
    """A Single backend (URL and credentials) or a Pool of existing Single backends, as `POST /api/backends/`."""

    field_order = ("name",)
    name = _name_field()


class OperationCreateForm(OperationForm):
    """An operation of the API picked (`?api=<name>` from the API's page), as `POST /api/apis/{api}/operations/`."""

    field_order = ("api", "name")
    api = forms.ModelChoiceField(
        label="API",
        queryset=API.objects.order_by("name").only("pk", "name"),
        to_field_name="name",
        empty_label="Choose an API",
        widget=OptionList,
    )
    name = _name_field()
