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
    CONTENT_SAFETY_BUILTIN,
    CONTENT_SAFETY_CATEGORIES,
    LOCAL_EMBEDDINGS,
    OPTIONAL_OPENAI_OPERATIONS,
    ContentSafetySerializer,
    SemanticCacheSerializer,
    TokenLimitSerializer,
    TokenMetricsSerializer,
    build_api_policy,
    operation_specs,
)
from backends.models import Backend
from content_safety.models import Blocklist
from embeddings import DEFAULT_SCORE_THRESHOLD
from gateway.contract import BUILT_IN_DIMENSIONS, PERIODS
from named_values import crypto
from subscriptions.models import Product

from .errors import REFUSALS, add_errors, refusal_errors
from .forms import CheckList, names_field
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
    url = forms.CharField(
        label="URL",
        help_text="Base URL of the model, e.g. https://api.openai.com/v1 or, for Gemini, "
        'https://generativelanguage.googleapis.com/v1beta/openai (make run\'s mock model: its "Demo model" line).',
    )
    products = names_field("Products", Product)
    products.help_text = (
        "Optional: subscriptions to a product reach its APIs; the built-in all-access subscription reaches them all."
    )
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


def _backend_choices(special: str, label: str) -> list[tuple[str, str]]:
    """The backends by name, after a built-in choice (read when the form is made, so new backends show)."""
    return [
        (special, label),
        *((name, name) for name in Backend.objects.order_by("name").values_list("name", flat=True)),
    ]


class CachingForm(forms.Form):
    """Apply semantic caching: `llm-semantic-cache-lookup` and `-store` (the REST block semantic_cache)."""

    enable = forms.BooleanField(label="Enable semantic caching", required=False)
    embeddings_backend = forms.ChoiceField(
        label="Embeddings backend",
        required=False,
        help_text="A backend serving OpenAI-compatible /embeddings, or the built-in embeddings server.",
    )
    score_threshold = forms.FloatField(
        label="Score threshold",
        required=False,
        initial=DEFAULT_SCORE_THRESHOLD,
        help_text="Cosine distance 0 to 1: smaller is stricter.",
    )
    duration = forms.IntegerField(label="Duration (seconds)", required=False, initial=3600)
    vary_by_subscription = forms.BooleanField(
        label="Keep a separate cache per subscription", required=False, initial=True
    )
    ignore_system_messages = forms.BooleanField(label="Ignore system messages", required=False, initial=True)
    max_message_count = forms.IntegerField(
        label="Max message count", required=False, help_text="Skip the cache for longer conversations; empty: no limit."
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["embeddings_backend"].choices = _backend_choices(LOCAL_EMBEDDINGS, "Built-in (local)")

    def blocks(self) -> dict:
        cleaned = self.cleaned_data
        if not cleaned.get("enable"):
            return {}
        block = {
            "embeddings_backend": cleaned.get("embeddings_backend") or LOCAL_EMBEDDINGS,
            "vary_by": ["subscription"] if cleaned.get("vary_by_subscription") else [],
            "ignore_system_messages": bool(cleaned.get("ignore_system_messages")),
        }
        for key in ("score_threshold", "duration", "max_message_count"):
            if cleaned.get(key) is not None:
                block[key] = cleaned[key]
        return {"semantic_cache": block}

    def clean(self):
        cleaned = super().clean()
        if not self.errors:
            for block in self.blocks().values():
                errors = _serializer_errors(SemanticCacheSerializer, block)
                add_errors(self, errors, {"vary_by": "vary_by_subscription"})
        return cleaned


# a threshold's message is named categories.<Category>
CATEGORY_ALIASES = {f"categories.{category}": f"category_{category}" for category in CONTENT_SAFETY_CATEGORIES}


class SafetyForm(forms.Form):
    """AI content safety: `llm-content-safety` (the REST block content_safety)."""

    enable = forms.BooleanField(label="Enable content safety", required=False)
    backend = forms.ChoiceField(
        label="Engine",
        required=False,
        help_text="Azure AI Content Safety or an OpenAI-compatible moderation backend, or the built-in blocklist "
        "engine.",
    )
    shield_prompt = forms.BooleanField(label="Shield prompt (detect prompt attacks)", required=False)
    blocklists = forms.ModelMultipleChoiceField(
        label="Blocklists",
        queryset=Blocklist.objects.order_by("name").only("pk", "name"),
        to_field_name="name",
        required=False,
        widget=CheckList,
    )
    enforce_on_completions = forms.BooleanField(label="Check completions too", required=False, initial=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["backend"].choices = _backend_choices(CONTENT_SAFETY_BUILTIN, "Built-in (blocklists only)")
        for category in CONTENT_SAFETY_CATEGORIES:
            self.fields[f"category_{category}"] = forms.IntegerField(
                label=f"{category} threshold",
                required=False,
                min_value=0,
                max_value=7,
                help_text="0 to 7 (EightSeverityLevels); empty: not checked.",
            )

    def blocks(self) -> dict:
        cleaned = self.cleaned_data
        if not cleaned.get("enable"):
            return {}
        block: dict = {
            "backend": cleaned.get("backend") or CONTENT_SAFETY_BUILTIN,
            "shield_prompt": bool(cleaned.get("shield_prompt")),
            "enforce_on_completions": bool(cleaned.get("enforce_on_completions")),
        }
        categories = {
            category: cleaned[f"category_{category}"]
            for category in CONTENT_SAFETY_CATEGORIES
            if cleaned.get(f"category_{category}") is not None
        }
        if categories:
            block["categories"] = categories
        names = [blocklist.name for blocklist in cleaned.get("blocklists") or ()]
        if names:
            block["blocklists"] = names
        return {"content_safety": block}

    def clean(self):
        cleaned = super().clean()
        if not self.errors:
            for block in self.blocks().values():
                errors = _serializer_errors(ContentSafetySerializer, block)
                # a message on all the categories goes on the first one filled in
                first = next(iter(block.get("categories") or CONTENT_SAFETY_CATEGORIES))
                add_errors(self, errors, {**CATEGORY_ALIASES, "categories": f"category_{first}"})
        return cleaned


class ReviewForm(forms.Form):
    """The last step shows what will be created; submitting it creates everything."""


STEPS = (
    ("configure", "Configure API", ConfigureForm),
    ("tokens", "Manage token consumption", TokensForm),
    ("caching", "Apply semantic caching", CachingForm),
    ("safety", "AI content safety", SafetyForm),
    ("review", "Review", ReviewForm),
)
# step -> the REST blocks its form builds
BLOCK_STEPS = {
    "tokens": ("token_limit", "token_metrics"),
    "caching": ("semantic_cache",),
    "safety": ("content_safety",),
}
# a policy a whole-write error names -> the step that adds it
POLICY_STEPS = {
    "llm-token-limit": "tokens",
    "llm-emit-token-metric": "tokens",
    "llm-semantic-cache": "caching",
    "llm-content-safety": "safety",
}


class _BackToStep(Exception):
    """Not an error: the page to show instead of the created API (a refused import)."""

    def __init__(self, response):
        super().__init__()
        self.response = response


class ImportWizardView(LoginRequiredMixin, PermissionRequiredMixin, SessionWizardView):
    form_list = [(name, form) for name, _, form in STEPS]
    template_name = "webui/wizard.html"
    # what POST /api/apis/import-language-model/ needs, and reading APIs
    permission_required = (*APIViewSet.required_permissions["import_language_model"], "apis.view_api")

    def import_data(self) -> dict:
        """The service input from the steps validated so far."""
        configure = self._form("configure")
        data = configure.service_data() if configure else {}
        for step in BLOCK_STEPS:
            form = self._form(step)
            if form is not None:
                data.update(form.blocks())
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

    def render_done(self, form, **kwargs):
        # formtools resets the wizard's storage after `done`; a refused import keeps it, to correct one step
        try:
            return super().render_done(form, **kwargs)
        except _BackToStep as back:
            return back.response

    def done(self, form_list, form_dict, **kwargs):
        data = self.import_data()
        try:
            result = import_language_model(data)
        except REFUSALS as exc:
            raise _BackToStep(self.back_to_field(refusal_errors(exc))) from exc
        messages.success(self.request, f"Created API '{result.api.name}' with {len(result.operations)} operation(s).")
        return redirect(reverse("webui:object-detail", kwargs={"kind": "apis", "name": result.api.name}))

    def back_to_field(self, errors: dict[str, list[str]]):
        """Show the service's errors on the step that holds their field, or whose policy a whole-write error (the
        write-time check's) names; the first step otherwise."""
        step = "configure"
        for name, keys in BLOCK_STEPS.items():
            if any(field.partition(".")[0] in keys for field in errors):
                step = name
                break
        else:
            text = " ".join(message for messages in errors.values() for message in messages)
            step = next((name for policy, name in POLICY_STEPS.items() if policy in text), step)
        form = self.get_form(step=step, data=self.storage.get_step_data(step), files=self.storage.get_step_files(step))
        form.is_valid()
        if step != "configure":
            keys = BLOCK_STEPS[step]
            errors = {
                (field.partition(".")[2] or "detail") if field.partition(".")[0] in keys else "detail": msgs
                for field, msgs in errors.items()
            }
            add_errors(form, errors, CATEGORY_ALIASES)
        else:
            add_errors(form, errors, CONFIGURE_ALIASES)
        self.storage.current_step = step
        return self.render(form)
