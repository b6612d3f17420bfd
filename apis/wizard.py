"""The Language Model API import wizard: the operation sets and the API policy document it generates.

The API policy is assembled from `POLICY_CONTRIBUTORS`, a list in the spirit of Kong's filter lists: each contributor
turns one optional block of the wizard input (`token_limit`, `token_metrics`, `semantic_cache`, …) into `inbound` and
`outbound` elements, after creating what they refer to (`prepare`). Adding a wizard tab is adding a contributor (with
a `serializer_class` for its block).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from django.conf import settings
from rest_framework import serializers

from backends.models import Backend
from content_safety.models import Blocklist
from embeddings import DEFAULT_SCORE_THRESHOLD
from gateway.contract import (
    BUILT_IN_DIMENSIONS,
    CONTENT_SAFETY_BUILTIN,
    CONTENT_SAFETY_CATEGORIES,
    MAX_TOKENS,
    PERIODS,
    PolicyError,
    is_expression,
    metric_prefix,
    parse_value,
)
from gateway_admin.api.serializers import StrictFieldsMixin

from .choices import APITypeChoices, HttpMethodChoices

__all__ = (
    "CHAT_COMPLETIONS",
    "OPTIONAL_OPENAI_OPERATIONS",
    "POLICY_CONTRIBUTORS",
    "ContentSafety",
    "ContentSafetySerializer",
    "Element",
    "EmitTokenMetric",
    "ImportContext",
    "OperationSpec",
    "PolicyContributor",
    "SemanticCache",
    "SemanticCacheSerializer",
    "TokenLimit",
    "TokenLimitSerializer",
    "TokenMetricsSerializer",
    "build_api_policy",
    "operation_specs",
)


#
# Operations
#


@dataclass(frozen=True)
class OperationSpec:
    name: str
    display_name: str
    method: str
    url_template: str


CHAT_COMPLETIONS = OperationSpec(
    "chat-completions", "Creates a model response for the given chat conversation", "POST", "/chat/completions"
)
# The extra OpenAI operations the wizard may add, keyed as the input names them.
OPTIONAL_OPENAI_OPERATIONS = {
    "POST /completions": OperationSpec(
        "completions", "Creates a completion for the provided prompt and parameters", "POST", "/completions"
    ),
    "POST /embeddings": OperationSpec(
        "embeddings", "Creates an embedding vector representing the input text", "POST", "/embeddings"
    ),
    "GET /models": OperationSpec("list-models", "Lists the currently available models", "GET", "/models"),
    "POST /responses": OperationSpec("responses", "Creates a model response", "POST", "/responses"),
}


def operation_specs(api_type: str, extra: list[str] | tuple[str, ...] = ()) -> list[OperationSpec]:
    """`openai`: chat completions plus the chosen extras; `passthrough`: one `/*` wildcard per HTTP method."""
    if api_type == APITypeChoices.PASSTHROUGH:
        return [OperationSpec(method.lower(), method, method, "/*") for method in HttpMethodChoices.values]
    return [CHAT_COMPLETIONS, *(OPTIONAL_OPENAI_OPERATIONS[key] for key in dict.fromkeys(extra))]


#
# Policy document
#


@dataclass
class Element:
    """A minimal XML element that renders compactly (`<base/>`), the way the documents are shown and stored."""

    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list["Element"] = field(default_factory=list)
    text: str = ""

    def render(self) -> str:
        attrs = "".join(f" {name}={quoteattr(value)}" for name, value in self.attrs.items())
        if not self.children and not self.text:
            return f"<{self.tag}{attrs}/>"
        inner = escape(self.text) + "".join(child.render() for child in self.children)
        return f"<{self.tag}{attrs}>{inner}</{self.tag}>"


@dataclass(frozen=True)
class ImportContext:
    """What contributors may need to know about the objects the wizard creates."""

    api_name: str
    api_type: str
    backend_name: str
    named_value_name: str | None = None
    pool_size: int = 0  # members of the pool the import creates (0: a single backend)


class PolicyContributor:
    """Turns one optional block of the wizard input into policy elements.

    Attributes:
        key: name of the optional block in the wizard input; empty for a contributor that always applies.
        serializer_class: validates the block (`ImportLanguageModelSerializer` adds it as an optional field).
    """

    key: str = ""
    serializer_class = None

    def prepare(self, block: Mapping[str, Any], context: ImportContext) -> None:
        """Create what the elements refer to (called inside the import's transaction, before they are built)."""

    def inbound(self, block: Mapping[str, Any], context: ImportContext) -> list[Element]:
        return []

    def outbound(self, block: Mapping[str, Any], context: ImportContext) -> list[Element]:
        return []


class SetBackendService(PolicyContributor):
    """Routes the API to the backend the wizard created."""

    def inbound(self, block, context):
        return [Element("set-backend-service", {"backend-id": context.backend_name})]


POLICY_CONTRIBUTORS: list[PolicyContributor] = [SetBackendService()]


#
# Token metrics (llm-emit-token-metric)
#


class TokenMetricsSerializer(StrictFieldsMixin, serializers.Serializer):
    """`token_metrics`: count tokens in Prometheus counters labelled by built-in dimensions (apim-spec §3.2)."""

    namespace = serializers.CharField(
        max_length=200, required=False, help_text='Metric namespace (default "API Management"); no expressions.'
    )
    dimensions = serializers.ListField(
        child=serializers.ChoiceField(choices=list(BUILT_IN_DIMENSIONS)),
        min_length=1,
        help_text="Built-in dimensions, each a label of the token counters.",
    )

    def validate_namespace(self, value):
        if is_expression(value):
            raise serializers.ValidationError("Policy expressions are not allowed in the namespace.")
        try:
            metric_prefix(value)
        except ValueError:
            raise serializers.ValidationError("The namespace needs at least one letter or digit.") from None
        return value

    def validate_dimensions(self, value):
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise serializers.ValidationError(f"Dimensions must not repeat: {', '.join(repeated)}.")
        return value


class EmitTokenMetric(PolicyContributor):
    """Adds `<llm-emit-token-metric>` with the chosen namespace and built-in dimensions."""

    key = "token_metrics"
    serializer_class = TokenMetricsSerializer

    def inbound(self, block, context):
        attrs = {"namespace": block["namespace"]} if block.get("namespace") else {}
        dimensions = [Element("dimension", {"name": name}) for name in block["dimensions"]]
        return [Element("llm-emit-token-metric", attrs, dimensions)]


POLICY_CONTRIBUTORS.append(EmitTokenMetric())


#
# Token limit (llm-token-limit)
#

COUNTER_KEYS = {
    # APIM's usual keys; the subscription one falls back to a shared "anonymous" counter on open APIs
    "subscription": '@(context.Subscription?.Id ?? "anonymous")',
    "ip": "@(context.Request.IpAddress)",
}


class TokenLimitSerializer(StrictFieldsMixin, serializers.Serializer):
    """`token_limit`: tokens per minute and/or a token quota per period, per counter key (apim-spec §3.1)."""

    counter_key = serializers.CharField(
        max_length=1000,
        default="subscription",
        help_text='"subscription", "ip", or a policy expression such as @(context.Request.Headers.GetValueOrDefault'
        '("x-team", "none")).',
    )
    tokens_per_minute = serializers.IntegerField(min_value=1, max_value=MAX_TOKENS, required=False)
    token_quota = serializers.IntegerField(min_value=1, max_value=MAX_TOKENS, required=False)
    token_quota_period = serializers.ChoiceField(choices=list(PERIODS), required=False)
    estimate_prompt_tokens = serializers.BooleanField(default=True)

    def validate_counter_key(self, value):
        key = COUNTER_KEYS.get(value, value)
        try:
            parse_value(key, where="counter_key")
        except PolicyError as exc:
            raise serializers.ValidationError(exc.message) from None
        return value

    def validate(self, attrs):
        quota, period = attrs.get("token_quota"), attrs.get("token_quota_period")
        if (quota is None) != (period is None):
            missing = "token_quota" if quota is None else "token_quota_period"
            raise serializers.ValidationError({missing: ["Give token_quota and token_quota_period together."]})
        if attrs.get("tokens_per_minute") is None and quota is None:
            raise serializers.ValidationError(
                {"tokens_per_minute": ["Give tokens_per_minute, or token_quota with token_quota_period, or both."]}
            )
        return attrs


class TokenLimit(PolicyContributor):
    """Adds `<llm-token-limit>` (attributes in the documented order)."""

    key = "token_limit"
    serializer_class = TokenLimitSerializer

    def inbound(self, block, context):
        counter = block.get("counter_key", "subscription")
        attrs = {"counter-key": COUNTER_KEYS.get(counter, counter)}
        if block.get("tokens_per_minute") is not None:
            attrs["tokens-per-minute"] = str(block["tokens_per_minute"])
        if block.get("token_quota") is not None:
            attrs["token-quota"] = str(block["token_quota"])
            attrs["token-quota-period"] = block["token_quota_period"]
        attrs["estimate-prompt-tokens"] = "true" if block.get("estimate_prompt_tokens", True) else "false"
        return [Element("llm-token-limit", attrs)]


POLICY_CONTRIBUTORS.insert(1, TokenLimit())  # right after the backend: limit before anything else is done


#
# AI content safety (llm-content-safety)
#


class ContentSafetySerializer(StrictFieldsMixin, serializers.Serializer):
    """`content_safety`: check prompts (and completions) with a content-safety engine (apim-spec §3.4,
    docs/content-safety.md)."""

    backend = serializers.CharField(
        max_length=80,
        help_text='"builtin" (the blocklists of this management plane, no service) or the name of a backend: Azure AI '
        "Content Safety, or an OpenAI-compatible moderation endpoint (URL ending in /v1 or /moderations).",
    )
    shield_prompt = serializers.BooleanField(default=False, help_text="Also detect prompt attacks (Prompt Shields).")
    categories = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=7),
        required=False,
        help_text='Category → threshold 0..7: {"Hate": 4, "Violence": 4, "SelfHarm": 4, "Sexual": 4}.',
    )
    blocklists = serializers.ListField(
        child=serializers.CharField(max_length=80), required=False, max_length=100, help_text="Blocklist names."
    )
    enforce_on_completions = serializers.BooleanField(default=True, help_text="Check the completions too.")
    fail_open = serializers.BooleanField(default=False, help_text="Let requests through when the engine is down.")

    def validate_backend(self, value):
        if value != CONTENT_SAFETY_BUILTIN and not Backend.objects.filter(name=value).exists():
            raise serializers.ValidationError(f"Unknown backend '{value}' (or \"{CONTENT_SAFETY_BUILTIN}\").")
        return value

    def validate_categories(self, value):
        unknown = sorted(set(value) - set(CONTENT_SAFETY_CATEGORIES))
        if unknown:
            allowed = ", ".join(CONTENT_SAFETY_CATEGORIES)
            raise serializers.ValidationError(f"Unknown categories: {', '.join(unknown)} (allowed: {allowed}).")
        return value

    def validate_blocklists(self, value):
        if len(set(value)) != len(value):
            raise serializers.ValidationError("Blocklists must not repeat.")
        return value

    def validate(self, attrs):
        if attrs["backend"] != CONTENT_SAFETY_BUILTIN:
            return attrs
        if attrs.get("categories"):
            raise serializers.ValidationError({"categories": ["The built-in engine has no harm categories."]})
        if attrs.get("shield_prompt"):
            raise serializers.ValidationError({"shield_prompt": ["The built-in engine has no prompt shields."]})
        names = attrs.get("blocklists") or []
        if not names:
            raise serializers.ValidationError({"blocklists": ["The built-in engine needs at least one blocklist."]})
        missing = sorted(set(names) - set(Blocklist.objects.filter(name__in=names).values_list("name", flat=True)))
        if missing:
            raise serializers.ValidationError({"blocklists": [f"Unknown blocklists: {', '.join(missing)}."]})
        return attrs


class ContentSafety(PolicyContributor):
    """Adds `<llm-content-safety>` in inbound (with `enforce-on-completions` it checks the completions too)."""

    key = "content_safety"
    serializer_class = ContentSafetySerializer

    def inbound(self, block, context):
        attrs = {
            "backend-id": block["backend"],
            "shield-prompt": "true" if block.get("shield_prompt") else "false",
            "enforce-on-completions": "true" if block.get("enforce_on_completions", True) else "false",
        }
        if block.get("fail_open"):
            attrs["fail-open"] = "true"
        children = []
        if block.get("categories"):
            categories = [
                Element("category", {"name": name, "threshold": str(threshold)})
                for name, threshold in block["categories"].items()
            ]
            children.append(Element("categories", {"output-type": "EightSeverityLevels"}, categories))
        if block.get("blocklists"):
            children.append(Element("blocklists", children=[Element("id", text=name) for name in block["blocklists"]]))
        return [Element("llm-content-safety", attrs, children)]


POLICY_CONTRIBUTORS.append(ContentSafety())


#
# Semantic cache (llm-semantic-cache-lookup / llm-semantic-cache-store)
#

LOCAL_EMBEDDINGS = "local"
LOCAL_EMBEDDINGS_BACKEND = "local-embeddings"
VARY_BY = {
    "subscription": '@(context.Subscription?.Id ?? "anonymous")',
    "ip": "@(context.Request.IpAddress)",
}
MAX_CACHE_DURATION = 366 * 86400  # the store policy's bound


class SemanticCacheSerializer(StrictFieldsMixin, serializers.Serializer):
    """`semantic_cache`: answer prompts close to an earlier one from the cache (apim-spec §3.3)."""

    embeddings_backend = serializers.CharField(
        max_length=80,
        help_text=f'The name of a backend serving OpenAI-compatible /embeddings, or "{LOCAL_EMBEDDINGS}" for the '
        "built-in embeddings server (the backend local-embeddings is created for it).",
    )
    score_threshold = serializers.FloatField(
        min_value=0.0, max_value=1.0, default=DEFAULT_SCORE_THRESHOLD, help_text="Cosine distance: smaller is stricter."
    )
    duration = serializers.IntegerField(min_value=1, max_value=MAX_CACHE_DURATION, default=3600)
    vary_by = serializers.ListField(
        child=serializers.CharField(max_length=1000),
        default=["subscription"],
        help_text='Partitions of the cache: "subscription", "ip", or policy expressions; concatenated.',
    )
    ignore_system_messages = serializers.BooleanField(default=True)
    max_message_count = serializers.IntegerField(min_value=1, max_value=10_000, required=False)
    embeddings_model = serializers.CharField(
        max_length=200, required=False, help_text='The "model" sent to the embeddings backend.'
    )

    def validate_embeddings_backend(self, value):
        if value != LOCAL_EMBEDDINGS and not Backend.objects.filter(name=value).exists():
            raise serializers.ValidationError(f"No backend is named '{value}' (or give \"{LOCAL_EMBEDDINGS}\").")
        return value

    def validate_vary_by(self, value):
        for item in value:
            try:
                parse_value(VARY_BY.get(item, item), where="vary_by")
            except PolicyError as exc:
                raise serializers.ValidationError(exc.message) from None
            if item not in VARY_BY and not is_expression(item):
                names = ", ".join(f'"{name}"' for name in VARY_BY)
                raise serializers.ValidationError(f"{item!r} is neither {names} nor a policy expression @(...).")
        return value

    def validate_embeddings_model(self, value):
        if is_expression(value):
            raise serializers.ValidationError("Policy expressions are not allowed in the embeddings model.")
        return value


class SemanticCache(PolicyContributor):
    """Adds `<llm-semantic-cache-lookup>` (inbound) and `<llm-semantic-cache-store>` (outbound)."""

    key = "semantic_cache"
    serializer_class = SemanticCacheSerializer

    def prepare(self, block, context):
        if block["embeddings_backend"] == LOCAL_EMBEDDINGS:
            Backend.objects.get_or_create(
                name=LOCAL_EMBEDDINGS_BACKEND,
                defaults={
                    "url": settings.SLUICE["LOCAL_EMBEDDINGS_URL"],
                    "description": "The built-in embeddings server (all-MiniLM-L6-v2), for the semantic cache.",
                },
            )

    def inbound(self, block, context):
        backend = block["embeddings_backend"]
        attrs = {
            "score-threshold": f"{block.get('score_threshold', DEFAULT_SCORE_THRESHOLD):g}",
            "embeddings-backend-id": LOCAL_EMBEDDINGS_BACKEND if backend == LOCAL_EMBEDDINGS else backend,
            "embeddings-backend-auth": "system-assigned",
            "ignore-system-messages": "true" if block.get("ignore_system_messages", True) else "false",
        }
        if block.get("max_message_count") is not None:
            attrs["max-message-count"] = str(block["max_message_count"])
        if block.get("embeddings_model"):
            attrs["sluice-embeddings-model"] = block["embeddings_model"]
        vary = [Element("vary-by", text=VARY_BY.get(item, item)) for item in block.get("vary_by", ["subscription"])]
        return [Element("llm-semantic-cache-lookup", attrs, vary)]

    def outbound(self, block, context):
        return [Element("llm-semantic-cache-store", {"duration": str(block.get("duration", 3600))})]


POLICY_CONTRIBUTORS.append(SemanticCache())


def build_api_policy(data: Mapping[str, Any], context: ImportContext, *, prepare: bool = False) -> str:
    """The API's policy document; ``prepare``: first create what it refers to (the import does, a preview not)."""
    inbound, outbound = [Element("base")], [Element("base")]
    for contributor in POLICY_CONTRIBUTORS:
        block = data.get(contributor.key) if contributor.key else {}
        if block is None:
            continue
        if prepare:
            contributor.prepare(block, context)
        inbound += contributor.inbound(block, context)
        outbound += contributor.outbound(block, context)
    document = Element(
        "policies",
        children=[
            Element("inbound", children=inbound),
            Element("backend", children=_backend_section(context)),
            Element("outbound", children=outbound),
            Element("on-error", children=[Element("base")]),
        ],
    )
    return document.render()


def _backend_section(context: ImportContext) -> list[Element]:
    """``<base/>``; for a pool, a retry that sends a 429 or 503 answer to the next member (its breaker has tripped
    the one that answered), as APIM's backend pool labs do."""
    if context.pool_size < 2:
        return [Element("base")]
    condition = "@(context.Response.StatusCode == 429 || context.Response.StatusCode == 503)"
    retry = Element(
        "retry",
        {"condition": condition, "count": str(context.pool_size - 1), "interval": "0", "first-fast-retry": "true"},
        children=[Element("forward-request", {"buffer-request-body": "true"})],
    )
    return [retry]
