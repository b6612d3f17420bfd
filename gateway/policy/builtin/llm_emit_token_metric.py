"""``llm-emit-token-metric`` (alias ``azure-openai-emit-token-metric``): prompt, completion and total tokens as
Prometheus counters labelled by the statement's dimensions.

APIM reference: https://learn.microsoft.com/azure/api-management/llm-emit-token-metric-policy

Metric names, built-in and custom dimensions and when the counters move: docs/usage-and-metrics.md.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from operator import call
from typing import TYPE_CHECKING, Any, Final

from gateway.llm_accounting import exchange_for
from gateway.metrics import DEFAULT_NAMESPACE, label_name, metric_prefix

from ..base import ALL_SCOPES, Attr, Policy, Section
from ..values import Value, parse_value
from ..xml import Element
from ._remembered import PerSubscription, same_per_subscription

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response
    from gateway.metrics import Metrics, TokenFamily

__all__ = ("BUILT_IN_DIMENSIONS", "MAX_CUSTOM_DIMENSIONS", "AzureOpenAiEmitTokenMetric", "LlmEmitTokenMetric")

MAX_CUSTOM_DIMENSIONS: Final = 5

ERR_NO_DIMENSION: Final = "<{tag}>: at least one <dimension> is required"
ERR_NOT_BUILT_IN: Final = (
    "<dimension>: {name!r} is not a built-in dimension, so it needs a 'value' (built-in: {built_in})"
)
ERR_DUPLICATE: Final = "<dimension>: {name!r} appears more than once"
ERR_SAME_LABEL: Final = "<dimension>: {name!r} and {other!r} both become the label {label!r}"
ERR_TOO_MANY: Final = "<{tag}>: at most {limit} custom dimensions (dimensions with a 'value'), got {count}"


def _api(ctx: RequestContext) -> str:
    return ctx.api.name


def _operation(ctx: RequestContext) -> str:
    return ctx.operation.name


def _product(ctx: RequestContext) -> str:
    return ctx.product.name if ctx.product is not None else ""


def _subscription(ctx: RequestContext) -> str:
    return ctx.subscription.name if ctx.subscription is not None else ""


def _user(ctx: RequestContext) -> str:
    return ""  # subscriptions have no owner yet


def _backend(ctx: RequestContext) -> str:
    backend = ctx.backend
    return backend.name or "" if backend is not None else ""


def _gateway(ctx: RequestContext) -> str:
    metrics = _metrics_of(ctx)
    return metrics.gateway_id if metrics is not None else ""


def _location(ctx: RequestContext) -> str:
    metrics = _metrics_of(ctx)
    return metrics.location if metrics is not None else ""


# The built-in dimensions and how each is resolved when the request ends (Backend ID after any set-backend-service).
BUILT_IN_DIMENSIONS: Final[dict[str, Callable[[RequestContext], str]]] = {
    "API ID": _api,
    "Operation ID": _operation,
    "Product ID": _product,
    "User ID": _user,
    "Subscription ID": _subscription,
    "Location": _location,
    "Gateway ID": _gateway,
    "Backend ID": _backend,
}


def _metrics_of(ctx: RequestContext) -> Metrics | None:
    return ctx.services.metrics


class _Dimension:
    """One ``<dimension>``: its label, and either a built-in resolver or a custom Value."""

    __slots__ = ("built_in", "label", "name", "value")

    def __init__(self, name: str, label: str, built_in: Callable[[RequestContext], str] | None, value: Value | None):
        self.name = name
        self.label = label
        self.built_in = built_in
        self.value = value


class LlmEmitTokenMetric(Policy):
    """``<llm-emit-token-metric namespace="…"><dimension name="…" [value="…"]/>…</llm-emit-token-metric>``."""

    name = "llm-emit-token-metric"
    sections = frozenset({Section.INBOUND})
    requires_json_body = True
    scopes = ALL_SCOPES
    attributes = {
        "namespace": Attr(default=DEFAULT_NAMESPACE, expressions=False),
        # Listed by the older azure-openai page (copied from emit-metric); accepted and ignored.
        "value": Attr(),
    }
    children = frozenset({"dimension"})
    __slots__ = (
        "built_ins",
        "custom",
        "dimensions",
        "emission",
        "label_names",
        "namespace",
        "prefix",
        "remembered",
        "remembered_for",
        "resolvers",
    )

    def __init__(self, namespace: str, prefix: str, dimensions: tuple[_Dimension, ...]) -> None:
        super().__init__()
        self.namespace = namespace
        self.prefix = prefix
        self.dimensions = dimensions
        # Labels in sorted order, so that statements listing the same dimensions in another order share one family.
        ordered = sorted(dimensions, key=lambda d: d.label)
        self.label_names = tuple(d.label for d in ordered)
        custom = [d for d in dimensions if d.value is not None]
        self.custom: tuple[Value, ...] = tuple(d.value for d in custom if d.value is not None)
        # For each label: the built-in resolver, or the index of its custom value in ``custom``.
        resolvers: list[int | Callable[[RequestContext], str]] = []
        for d in ordered:
            resolvers.append(d.built_in if d.built_in is not None else custom.index(d))
        self.resolvers = tuple(resolvers)
        # the same resolvers when every dimension is built in (``custom`` empty), typed as functions of the context
        self.built_ins = tuple(r for r in resolvers if callable(r)) if not custom else ()
        # the finish callback of a statement without custom dimensions, with the Metrics it was built for: the same
        # for every request (it holds no per-request value), so it is built once instead of per request
        self.emission: tuple[Metrics, _Emission] | None = None
        # the finish callback per subscription, when every custom value is a literal or depends on the subscription
        # alone (``._remembered``), with the Metrics it was built for; None otherwise
        per_subscription = bool(custom) and all(v.is_literal or same_per_subscription(v) for v in self.custom)
        self.remembered: PerSubscription[_Emission] | None = PerSubscription() if per_subscription else None
        self.remembered_for: Metrics | None = None

    @classmethod
    def from_element(cls, el: Element) -> LlmEmitTokenMetric:
        attrs = cls.check_element(el)
        namespace = attrs["namespace"].literal
        try:
            prefix = metric_prefix(namespace)
        except ValueError as exc:
            raise el.error(f"<{el.tag}>: {exc}") from None
        if not el.children:
            raise el.error(ERR_NO_DIMENSION.format(tag=el.tag))
        dimensions: list[_Dimension] = []
        by_label: dict[str, str] = {}
        for child in el.children:
            dimension = _dimension(child)
            if any(d.name == dimension.name for d in dimensions):
                raise child.error(ERR_DUPLICATE.format(name=dimension.name))
            other = by_label.get(dimension.label)
            if other is not None:
                raise child.error(ERR_SAME_LABEL.format(name=dimension.name, other=other, label=dimension.label))
            by_label[dimension.label] = dimension.name
            dimensions.append(dimension)
        custom = sum(1 for d in dimensions if d.value is not None)
        if custom > MAX_CUSTOM_DIMENSIONS:
            raise el.error(ERR_TOO_MANY.format(tag=el.tag, limit=MAX_CUSTOM_DIMENSIONS, count=custom))
        return cls(namespace, prefix, tuple(dimensions))

    async def apply(self, ctx: RequestContext) -> Response | None:
        metrics = _metrics_of(ctx)
        if metrics is None:
            return None
        exchange_for(ctx)  # usage accounting also for APIs that are not of the openai type
        if self.custom:
            remembered = self.remembered
            if remembered is not None:
                if metrics is not self.remembered_for:
                    remembered.clear()
                    self.remembered_for = metrics
                emission = remembered.get(ctx.subscription)
                if emission is not None:
                    ctx.on_finish.append(emission)
                    return None
            values = tuple(v.evaluate(ctx) for v in self.custom)
            emission = _Emission(self, metrics.token_family(self.prefix, self.label_names), values)
            if remembered is not None:
                remembered.put(ctx.subscription, emission)
            ctx.on_finish.append(emission)
            return None
        cached = self.emission
        if cached is None or cached[0] is not metrics:
            cached = self.emission = (metrics, _Emission(self, metrics.token_family(self.prefix, self.label_names), ()))
        ctx.on_finish.append(cached[1])
        return None

    def labels(self, ctx: RequestContext, custom_values: tuple[str, ...]) -> tuple[str, ...]:
        """The label values (in ``label_names`` order) for a request that is over."""
        if not self.custom:  # built-in dimensions only: every resolver is a function of the context
            return tuple(map(call, self.built_ins, repeat(ctx)))
        return tuple(r(ctx) if callable(r) else custom_values[r] for r in self.resolvers)

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        return {"namespace": self.namespace, "dimensions": [d.name for d in self.dimensions]}


class AzureOpenAiEmitTokenMetric(LlmEmitTokenMetric):
    """``azure-openai-emit-token-metric``: the same statement under its Azure OpenAI name."""

    name = "azure-openai-emit-token-metric"
    __slots__ = ()


def _dimension(el: Element) -> _Dimension:
    if el.children:
        raise el.children[0].error("<dimension> takes no child elements")
    if el.text.strip():
        raise el.error("<dimension> must not contain text")
    for attr in el.attrs:
        if attr not in ("name", "value", "id"):
            raise el.error(f"<dimension>: unknown attribute '{attr}' (allowed: name, value)")
    raw_name = el.attrs.get("name")
    if raw_name is None:
        raise el.error("<dimension>: missing required attribute 'name'")
    # The name becomes a Prometheus label name, fixed when the document loads: no expression.
    name = parse_value(
        raw_name, where="<dimension> attribute 'name'", locate=_locate(el, "name"), expressions=False
    ).literal.strip()
    try:
        label = label_name(name)
    except ValueError as exc:
        raise el.error(f"<dimension>: {exc}") from None
    raw_value = el.attrs.get("value")
    if raw_value is None:
        built_in = BUILT_IN_DIMENSIONS.get(name)
        if built_in is None:
            raise el.error(ERR_NOT_BUILT_IN.format(name=name, built_in=", ".join(BUILT_IN_DIMENSIONS)))
        return _Dimension(name, label, built_in, None)
    value = parse_value(raw_value, where="<dimension> attribute 'value'", locate=_locate(el, "value"))
    return _Dimension(name, label, None, value)


def _locate(el: Element, attr: str) -> Callable[[int], tuple[int | None, int | None]]:
    return lambda offset: el.value_position(attr, offset)


class _Emission:
    """The finish callback of one statement for one request (custom values captured at inbound time)."""

    __slots__ = ("family", "policy", "values")

    def __init__(self, policy: LlmEmitTokenMetric, family: TokenFamily, values: tuple[str, ...]) -> None:
        self.policy = policy
        self.family = family
        self.values = values

    def __call__(self, ctx: RequestContext, complete: bool) -> None:
        usage = ctx.usage
        if usage is None:
            return
        self.family.record(
            self.policy.labels(ctx, self.values),
            usage.prompt_tokens or 0,
            usage.completion_tokens or 0,
            usage.total_tokens or 0,
        )
