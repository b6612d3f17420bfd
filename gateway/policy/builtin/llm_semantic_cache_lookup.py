"""``llm-semantic-cache-lookup`` (alias ``azure-openai-semantic-cache-lookup``): answer a prompt from the cache.

APIM reference: https://learn.microsoft.com/azure/api-management/llm-semantic-cache-lookup-policy

The prompt is embedded by the embeddings backend (``embeddings-backend-id``, any OpenAI-compatible ``/embeddings``
endpoint with the backend's credentials) and compared with the answers stored in its partition (the ``<vary-by>``
values, the API, the operation kind and the model). The nearest one within ``score-threshold`` (a cosine distance:
smaller is stricter) answers the request: the backend is not called, and outbound goes on after
``llm-semantic-cache-store``. Any failure of the embeddings backend or of the store is a miss. Sluice's differences
from APIM (``embeddings-backend-auth``, ``sluice-embeddings-model``) are in docs/semantic-cache.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import orjson

from gateway.context import ResponseHead
from gateway.http.messages import Response
from gateway.llm_accounting import exchange_for
from gateway.semcache import CacheState, CacheStoreError
from gateway.semcache.embed import EmbeddingsError
from gateway.semcache.messages import (
    CHAT,
    COMPLETIONS,
    prompt_text,
    replay_id,
    replay_json,
    replay_sse,
    usage_of,
)
from gateway.tokens import RequestKind

from ..base import Attr, BindEnv, Policy, Section, check_boolean, text_value, truth
from ..errors import PolicyError
from ..values import Value
from ..xml import Element

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.model import BackendTarget

__all__ = (
    "CACHE_HEADER",
    "DEFAULT_EMBEDDINGS_MODEL",
    "LOOSE_SCORE_THRESHOLD",
    "STORE_NAMES",
    "AzureOpenAiSemanticCacheLookup",
    "LlmSemanticCacheLookup",
)

CACHE_HEADER: Final = b"x-semantic-cache"
DEFAULT_EMBEDDINGS_MODEL: Final = "text-embedding-3-small"
STORE_NAMES: Final = frozenset({"llm-semantic-cache-store", "azure-openai-semantic-cache-store"})
_KINDS: Final = {RequestKind.CHAT: CHAT, RequestKind.COMPLETIONS: COMPLETIONS}
_JSON: Final = (b"content-type", b"application/json")
_SSE: Final = ((b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"))
_SEPARATOR: Final = "\x1f"
# apim-spec §3.3: a distance, smaller is stricter; "> 0.2 risks wrong hits". Above it the gateway warns at load time.
LOOSE_SCORE_THRESHOLD: Final = 0.2
# From here on nearly any prompt hits: the closest unrelated pair measured 0.74 (docs/semantic-cache.md), and a value
# this high is most likely the older similarity reading (the AI-Gateway lab's 0.8).
_SIMILARITY_LIKE: Final = 0.5


class LlmSemanticCacheLookup(Policy):
    name = "llm-semantic-cache-lookup"
    sections = frozenset({Section.INBOUND})
    attributes = {
        "score-threshold": Attr(required=True, expressions=False),
        "embeddings-backend-id": Attr(required=True, expressions=False),
        "embeddings-backend-auth": Attr(required=True, choices=("system-assigned",), expressions=False),
        "ignore-system-messages": Attr(default="false"),
        "max-message-count": Attr(expressions=False),
        "sluice-embeddings-model": Attr(expressions=False),  # Sluice: the "model" sent to the embeddings backend
    }
    children = frozenset({"vary-by"})
    requires_request_body = True

    __slots__ = ("backend_id", "ignore_system", "max_messages", "model", "target", "threshold", "vary_by")

    def __init__(
        self,
        threshold: float,
        backend_id: str,
        ignore_system: Value,
        max_messages: int | None,
        vary_by: tuple[Value, ...],
        model: str,
    ) -> None:
        super().__init__()
        self.threshold = threshold
        self.backend_id = backend_id
        self.ignore_system = ignore_system
        self.max_messages = max_messages
        self.vary_by = vary_by
        self.model = model
        self.target: BackendTarget | None = None

    @classmethod
    def from_element(cls, el: Element) -> LlmSemanticCacheLookup:
        attrs = cls.check_element(el)
        raw = attrs["score-threshold"].literal.strip()
        try:
            threshold = float(raw)
        except ValueError:
            threshold = -1.0
        if not 0.0 <= threshold <= 1.0:
            raise el.error(f"<{el.tag}>: attribute 'score-threshold' must be a number from 0.0 to 1.0, got {raw!r}")
        backend_id = attrs["embeddings-backend-id"].literal.strip()
        if not backend_id:
            raise el.error(f"<{el.tag}>: attribute 'embeddings-backend-id' must name a backend")
        check_boolean(attrs["ignore-system-messages"], el, "ignore-system-messages")
        max_messages = None
        if "max-message-count" in attrs:
            raw = attrs["max-message-count"].literal.strip()
            if not raw.isdigit() or int(raw) < 1:
                raise el.error(f"<{el.tag}>: attribute 'max-message-count' must be a positive integer, got {raw!r}")
            max_messages = int(raw)
        model_value = attrs.get("sluice-embeddings-model")
        model = model_value.literal.strip() if model_value is not None else DEFAULT_EMBEDDINGS_MODEL
        vary_by = tuple(text_value(child) for child in el.children)
        return cls(threshold, backend_id, attrs["ignore-system-messages"], max_messages, vary_by, model)

    def load_warnings(self) -> tuple[str, ...]:
        threshold = self.threshold
        if threshold <= LOOSE_SCORE_THRESHOLD:
            return ()
        message = (
            f"score-threshold {threshold:g} is a cosine distance (smaller is stricter, as APIM documents it): above "
            f"{LOOSE_SCORE_THRESHOLD:g} answers to other questions are served as hits"
        )
        if threshold >= _SIMILARITY_LIKE:
            message += (
                f", and at {threshold:g} nearly any prompt hits. If it was written as a similarity (APIM's older "
                f"reading, the AI-Gateway lab's 0.8), the same cut-off is {1 - threshold:.2g} here"
            )
        return (message + "; see docs/semantic-cache.md",)

    def bind(self, env: BindEnv) -> None:
        try:
            target = env.backend(self.backend_id)
        except PolicyError:
            raise PolicyError(f"<{self.name}>: unknown embeddings backend '{self.backend_id}'") from None
        if target.origin is None:
            raise PolicyError(
                f"<{self.name}>: the embeddings backend '{self.backend_id}' is a pool; name one of its members"
            )
        self.target = target

    def partition(self, ctx: RequestContext, kind: str, model: str | None) -> str:
        """The API, the operation kind, the model and the ``<vary-by>`` values: entries never cross these."""
        parts = [ctx.api.name, kind, model or ""]
        parts.extend(value.literal if value.is_literal else value.evaluate(ctx) for value in self.vary_by)
        return _SEPARATOR.join(parts)

    async def apply(self, ctx: RequestContext) -> Response | None:
        cache = ctx.services.semantic_cache
        target = self.target
        if cache is None or target is None:  # not bound: validation only
            return None
        exchange = exchange_for(ctx)
        kind = _KINDS.get(exchange.kind)
        body = exchange.body
        api, operation = ctx.api.name, ctx.operation.name
        text = None
        if kind is not None and body is not None:
            text = prompt_text(body, kind, truth(self.ignore_system, ctx), self.max_messages)
        if kind is None or text is None:
            ctx.semantic_cache = CacheState("skipped")
            cache.record(api, operation, "skipped")
            return None
        state = CacheState("miss", self.partition(ctx, kind, exchange.model), kind)
        ctx.semantic_cache = state
        try:
            state.vector = await cache.embed(target, text, self.model)
            match = await cache.store.search(state.partition, state.vector, self.threshold)
        except (EmbeddingsError, CacheStoreError) as exc:
            state.result, state.vector = "lookup_error", None
            cache.record(api, operation, "lookup_error")
            cache.failed("lookup", api, exc)
            return None
        entry = _entry(match.payload) if match is not None else None
        if match is None or entry is None:
            cache.record(api, operation, "miss")
            ctx.response_headers.append((CACHE_HEADER, b"miss"))
            return None
        state.result, state.score = "hit", match.score
        state.prompt_tokens, state.completion_tokens = usage_of(entry)
        response_id = replay_id(kind, ctx.request_id)  # a fresh completion id for each replay
        if exchange.stream:
            headers = list(_SSE)
            payload = replay_sse(entry, kind, exchange.client_wants_usage, response_id)
        else:
            headers = [_JSON]
            payload = replay_json(entry, response_id)
        ctx.response = ResponseHead(200, headers, body=payload)
        ctx.resume_outbound_after = STORE_NAMES
        ctx.response_headers.append((CACHE_HEADER, b"hit; score=%.4f" % match.score))
        cache.record(api, operation, "hit")
        cache.saved(api, state.prompt_tokens + state.completion_tokens)
        return Response(200, list(headers), payload)

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        state = ctx.semantic_cache
        if not isinstance(state, CacheState):
            return None
        details: dict[str, Any] = {"result": state.result, "score-threshold": self.threshold}
        if state.score is not None:
            details["score"] = round(state.score, 4)
        return details


def _entry(payload: bytes) -> dict[str, Any] | None:
    try:
        entry = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) else None


class AzureOpenAiSemanticCacheLookup(LlmSemanticCacheLookup):
    name = "azure-openai-semantic-cache-lookup"
    __slots__ = ()
