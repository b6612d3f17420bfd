"""The import wizard (apim-spec §1.1) on django-formtools: one form per step, kept in the session by formtools, and
at the end the same service as `POST /api/apis/import-language-model/` (`apis.services.import_language_model`), with
its write-time snapshot check. Every step is validated by the REST serializers, so a step shows the errors the REST
endpoint would answer with; errors the service raises at the end send the wizard back to the step of their field."""

from django import forms
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin, PermissionRequiredMixin
from django.shortcuts import redirect
from django.urls import reverse
from formtools.wizard.views import SessionWizardView
from rest_framework.exceptions import ValidationError

from apis.api.serializers import WIZARD_TYPE_CHOICES, ImportLanguageModelSerializer
from apis.api.views import APIViewSet
from apis.choices import APITypeChoices
from apis.services import import_context, import_language_model
from apis.wizard import (
    OPTIONAL_OPENAI_OPERATIONS,
    TokenLimitSerializer,
    TokenMetricsSerializer,
    build_api_policy,
    operation_specs,
)
from gateway.contract import BUILT_IN_DIMENSIONS, PERIODS
from named_values import crypto
from subscriptions.models import Product

from .errors import REFUSALS, add_errors, refusal_errors
from .forms import names_field
from .probe import probe_url

__all__ = ("ImportWizardView",)

MASK = "••••••••"
# service / serializer field -> the wizard's form field
CONFIGURE_ALIASES = {
    "access_key.header_name": "access_key_header",
    "access_key.value": "access_key_value",
    "access_key": "access_key_value",
    "detail": None,
}


def _serializer_errors(serializer_class, data: dict) -> dict[str, list[str]]:
    serializer = serializer_class(data=data)
    if serializer.is_valid():
        return {}
    return refusal_errors(ValidationError(serializer.errors))


class ConfigureForm(forms.Form):
    display_name = forms.CharField(label="Display name", max_length=300)
    name = forms.CharField(
        label="Name", required=False, help_text="The API's id in URLs; defaults to a slug of the display name."
    )
    description = forms.CharField(label="Description", required=False, widget=forms.Textarea(attrs={"rows": 2}))
    url = forms.CharField(label="URL", help_text="Base URL of the model, e.g. https://api.openai.com/v1.")
    products = names_field("Products", Product)
    path = forms.CharField(label="Path", help_text="Where the gateway publishes the API, e.g. gemini/v1.")
    type = forms.ChoiceField(
        label="Type", choices=WIZARD_TYPE_CHOICES, initial=APITypeChoices.OPENAI, widget=forms.RadioSelect
    )
    operations = forms.MultipleChoiceField(
        label="Extra operations (OpenAI-compatible only)",
        choices=[(key, key) for key in OPTIONAL_OPENAI_OPERATIONS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    access_key_header = forms.CharField(
        label="Access key header name",
        required=False,
        initial="Authorization",
        help_text="e.g. Authorization, api-key.",
    )
    access_key_value = forms.CharField(
        label="Access key",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=True),
        help_text='Stored encrypted as a secret named value, e.g. "Bearer sk-…".',
    )

    def service_data(self) -> dict:
        cleaned = self.cleaned_data
        data = {
            key: cleaned[key]
            for key in ("display_name", "description", "url", "path", "type", "operations")
            if cleaned.get(key) not in (None, "")
        }
        if cleaned.get("name"):
            data["name"] = cleaned["name"]
        data["products"] = [product.name for product in cleaned.get("products") or ()]
        if cleaned.get("access_key_value"):
            data["access_key"] = {
                "header_name": cleaned.get("access_key_header", ""),
                "value": cleaned["access_key_value"],
            }
        return data

    def clean(self):
        cleaned = super().clean()
        if not self.errors:
            add_errors(self, _serializer_errors(ImportLanguageModelSerializer, self.service_data()), CONFIGURE_ALIASES)
        return cleaned


BLOCK_SERIALIZERS = (("token_limit", TokenLimitSerializer), ("token_metrics", TokenMetricsSerializer))


class TokensForm(forms.Form):
    """Manage token consumption: `llm-token-limit` and `llm-emit-token-metric` (the REST blocks token_limit and
    token_metrics)."""

    limit_tokens = forms.BooleanField(label="Limit tokens", required=False)
    counter_key = forms.ChoiceField(
        label="Limit by",
        choices=[("subscription", "Subscription"), ("ip", "IP address")],
        initial="subscription",
        required=False,
    )
    tokens_per_minute = forms.IntegerField(label="Tokens per minute", required=False)
    token_quota = forms.IntegerField(label="Token quota", required=False)
    token_quota_period = forms.ChoiceField(
        label="Quota period", choices=[("", "—"), *((p, p) for p in PERIODS)], required=False
    )
    estimate_prompt_tokens = forms.BooleanField(label="Estimate prompt tokens", required=False, initial=True)
    track_tokens = forms.BooleanField(label="Track token usage (metrics)", required=False)
    namespace = forms.CharField(label="Metric namespace", required=False)
    dimensions = forms.MultipleChoiceField(
        label="Dimensions",
        choices=[(d, d) for d in BUILT_IN_DIMENSIONS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )

    def blocks(self) -> dict:
        cleaned = self.cleaned_data
        blocks = {}
        if cleaned.get("limit_tokens"):
            block = {
                "counter_key": cleaned["counter_key"] or "subscription",
                "estimate_prompt_tokens": cleaned["estimate_prompt_tokens"],
            }
            for key in ("tokens_per_minute", "token_quota", "token_quota_period"):
                if cleaned.get(key) not in (None, ""):
                    block[key] = cleaned[key]
            blocks["token_limit"] = block
        if cleaned.get("track_tokens"):
            block = {"dimensions": cleaned.get("dimensions") or []}
            if cleaned.get("namespace"):
                block["namespace"] = cleaned["namespace"]
            blocks["token_metrics"] = block
        return blocks

    def clean(self):
        cleaned = super().clean()
        if not self.errors:
            blocks = self.blocks()
            for key, serializer_class in (
                ("token_limit", TokenLimitSerializer),
                ("token_metrics", TokenMetricsSerializer),
            ):
                if key in blocks:
                    add_errors(self, _serializer_errors(serializer_class, blocks[key]))
        return cleaned


class ComingSoonForm(forms.Form):
    """A step whose policy is not built yet: nothing to fill in."""


class ReviewForm(forms.Form):
    """The last step shows what will be created; submitting it creates everything."""


STEPS = (
    ("configure", "Configure API", ConfigureForm),
    ("tokens", "Manage token consumption", TokensForm),
    ("caching", "Apply semantic caching", ComingSoonForm),
    ("safety", "AI content safety", ComingSoonForm),
    ("review", "Review", ReviewForm),
)
COMING_SOON = {"caching", "safety"}


class ImportWizardView(LoginRequiredMixin, PermissionRequiredMixin, SessionWizardView):
    form_list = [(name, form) for name, _, form in STEPS]
    template_name = "webui/wizard.html"
    # what POST /api/apis/import-language-model/ needs, and reading APIs
    permission_required = (*APIViewSet.required_permissions["import_language_model"], "apis.view_api")

    def import_data(self) -> dict:
        """The service input from the steps validated so far."""
        configure = self._form("configure")
        data = configure.service_data() if configure else {}
        tokens = self._form("tokens")
        if tokens is not None:
            data.update(tokens.blocks())
        return data

    # The access key never rests in the session in plaintext: formtools keeps each step's data there (in the
    # database with the default session engine) until the wizard ends, so it is stored encrypted at rest.
    def get_form_step_data(self, form):
        data = form.data.copy()
        field = form.add_prefix("access_key_value")
        if data.get(field):
            data[field] = crypto.encrypt(data[field])
        return data

    def get_form(self, step=None, data=None, files=None):
        step = step or self.steps.current
        field = f"{step}-access_key_value"
        if data is not None and data is not self.request.POST and data.get(field):
            data = data.copy()
            data[field] = crypto.decrypt(data[field])
        return super().get_form(step=step, data=data, files=files)

    def _form(self, step: str) -> forms.Form | None:
        form = self.get_form(step=step, data=self.storage.get_step_data(step), files=self.storage.get_step_files(step))
        return form if form.is_valid() else None

    def get_context_data(self, form, **kwargs):
        context = super().get_context_data(form=form, **kwargs)
        current = self.steps.current
        context["steps"] = [
            {"name": name, "title": title, "number": index, "current": name == current}
            for index, (name, title, _) in enumerate(STEPS, start=1)
        ]
        context["step_title"] = dict((name, title) for name, title, _ in STEPS)[current]
        context["coming_soon"] = current in COMING_SOON
        if current == "review":
            context["preview"] = self.preview(self.import_data())
        return context

    def preview(self, data: dict) -> dict:
        context = import_context(data)
        access_key = data.get("access_key")
        return {
            "name": context.api_name,
            "data": data,
            "operations": operation_specs(data["type"], data.get("operations") or ()),
            "backend": context.backend_name,
            "credentials": (
                f"{access_key['header_name']}: {{{{{context.named_value_name}}}}}" if access_key else "none"
            ),
            "named_value": context.named_value_name,
            "masked": MASK,
            "policy": build_api_policy(data, context),
        }

    def post(self, *args, **kwargs):
        if self.steps.current == "configure" and "test_connection" in self.request.POST:
            form = self.get_form(data=self.request.POST, files=self.request.FILES)
            value = self.request.POST.get
            result = probe_url(
                value(form.add_prefix("url"), "").strip(),
                value(form.add_prefix("type"), APITypeChoices.OPENAI),
                value(form.add_prefix("access_key_header"), "").strip(),
                value(form.add_prefix("access_key_value"), ""),
            )
            return self.render(form, probe=result)
        return super().post(*args, **kwargs)

    def done(self, form_list, form_dict, **kwargs):
        data = self.import_data()
        try:
            result = import_language_model(data)
        except REFUSALS as exc:
            return self.back_to_field(refusal_errors(exc))
        messages.success(self.request, f"Created API '{result.api.name}' with {len(result.operations)} operation(s).")
        return redirect(reverse("webui:object-detail", kwargs={"kind": "apis", "name": result.api.name}))

    def back_to_field(self, errors: dict[str, list[str]]):
        """Show the service's errors on the step that holds their field (the first step otherwise)."""
        tokens_fields = set(TokensForm.base_fields)
        step = "configure"
        if any(field.partition(".")[0] in ("token_limit", "token_metrics") for field in errors):
            step = "tokens"
        form = self.get_form(step=step, data=self.storage.get_step_data(step), files=self.storage.get_step_files(step))
        form.is_valid()
        if step == "tokens":
            errors = {field.partition(".")[2] or "detail": msgs for field, msgs in errors.items()}
            add_errors(form, {k: v for k, v in errors.items() if k in tokens_fields or k == "detail"})
        else:
            add_errors(form, errors, CONFIGURE_ALIASES)
        self.storage.current_step = step
        return self.render(form)
