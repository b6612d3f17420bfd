"""``llm-semantic-cache-store`` (alias ``azure-openai-semantic-cache-store``): keep the answer for later lookups.

APIM reference: https://learn.microsoft.com/azure/api-management/llm-semantic-cache-store-policy

It stores what the model answered to a prompt that ``llm-semantic-cache-lookup`` missed, for ``duration`` seconds.
Only successful, complete answers are stored: a 200 (any 2xx when ``cache-response`` is true; nothing when it is
false), not an error, not a stream the client cancelled or that broke, not a response content safety cut. A streamed
answer is assembled while it passes to the client (nothing is held back) and stored once the request is over. A
store failure is counted and logged, never seen by the client. See docs/semantic-cache.md.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

import orjson

from gateway.http.headers import find_header
from gateway.semcache import CacheState, CacheStoreError
from gateway.semcache.messages import StreamAssembler, entry_from_json

from ..base import Attr, Policy, Section, check_boolean, truth
from ..values import ExpressionRuntimeError, Value
from ..xml import Element

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response
    from gateway.semcache import SemanticCache

__all__ = ("MAX_ENTRY_BYTES", "AzureOpenAiSemanticCacheStore", "LlmSemanticCacheStore")

MAX_ENTRY_BYTES: Final = 1 << 20  # answers longer than this are not stored
MAX_DURATION: Final = 366 * 86400
_EVENT_STREAM: Final = b"text/event-stream"

_pending: set[asyncio.Task[None]] = set()  # stores running after their response (kept referenced until done)


def _parse_duration(raw: str) -> int | None:
    raw = raw.strip()
    if not raw.isdigit():
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_DURATION else None


class LlmSemanticCacheStore(Policy):
    name = "llm-semantic-cache-store"
    sections = frozenset({Section.OUTBOUND})
    attributes = {"duration": Attr(required=True), "cache-response": Attr()}

    __slots__ = ("cache_response", "duration")

    def __init__(self, duration: Value, cache_response: Value | None) -> None:
        super().__init__()
        self.duration = duration
        self.cache_response = cache_response

    @classmethod
    def from_element(cls, el: Element) -> LlmSemanticCacheStore:
        attrs = cls.check_element(el)
        duration = attrs["duration"]
        if duration.is_literal and _parse_duration(duration.literal) is None:
            raise el.error(
                f"<{el.tag}>: attribute 'duration' must be a whole number of seconds from 1 to {MAX_DURATION}, "
                f"got {duration.literal!r}"
            )
        cache_response = attrs.get("cache-response")
        if cache_response is not None:
            check_boolean(cache_response, el, "cache-response")
        return cls(duration, cache_response)

    def _seconds(self, ctx: RequestContext) -> int:
        value = self.duration
        raw = value.literal if value.is_literal else value.evaluate(ctx)
        seconds = _parse_duration(raw)
        if seconds is None:
            raise ExpressionRuntimeError(f"'duration' must be a whole number of seconds from 1 to {MAX_DURATION}.")
        return seconds

    def _storable(self, ctx: RequestContext, status: int) -> bool:
        if self.cache_response is None:
            return status == 200
        return 200 <= status < 300 and truth(self.cache_response, ctx)

    async def apply(self, ctx: RequestContext) -> Response | None:
        state = ctx.semantic_cache
        cache = ctx.services.semantic_cache
        head = ctx.response
        if not isinstance(state, CacheState) or state.vector is None or cache is None or head is None:
            return None  # no lookup missed before this step (a hit never gets here)
        if not self._storable(ctx, head.status):
            _done(state, cache, ctx, "not_stored")
            return None
        ttl = self._seconds(ctx)
        if head.upstream is None:
            payload = entry_from_json(head.body, state.kind) if len(head.body) <= MAX_ENTRY_BYTES else None
            if payload is None:
                _done(state, cache, ctx, "not_stored")
                return None
            await _add(cache, ctx.api.name, ctx.operation.name, state, payload, ttl)
            return None
        content_type = find_header(head.headers, b"content-type") or b""
        if not content_type.startswith(_EVENT_STREAM):
            _done(state, cache, ctx, "not_stored")
            return None
        ctx.chunk_filters.append(_StreamStore(ctx, cache, state, ttl))
        return None

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        state = ctx.semantic_cache
        if not isinstance(state, CacheState) or state.vector is None:
            return None
        return {"stored": state.stored or "when the stream completes"}


def _done(state: CacheState, cache: SemanticCache, ctx: RequestContext, result: str) -> None:
    state.stored = result
    cache.record(ctx.api.name, ctx.operation.name, result)


async def _add(cache: SemanticCache, api: str, operation: str, state: CacheState, payload: bytes, ttl: int) -> None:
    assert state.vector is not None
    try:
        await cache.store.add(state.partition, state.vector, payload, ttl)
    except CacheStoreError as exc:
        state.stored = "store_error"
        cache.record(api, operation, "store_error")
        cache.failed("store", api, exc)
        return
    state.stored = "stored"
    cache.record(api, operation, "stored")


class _StreamStore:
    """A chunk filter: passes every chunk on unchanged and assembles the answer. The entry is written when the
    request is over (``ctx.on_finish``), not when the backend's stream ends: a later stage (content safety) may still
    cut what the client gets, and a cut response (``ctx.block_reason``) is never stored. The write runs in a task of
    its own, so the end of the response is not delayed."""

    __slots__ = ("api", "assembler", "cache", "operation", "state", "ttl")

    def __init__(self, ctx: RequestContext, cache: SemanticCache, state: CacheState, ttl: int) -> None:
        self.api = ctx.api.name
        self.operation = ctx.operation.name
        self.cache = cache
        self.state = state
        self.ttl = ttl
        self.assembler = StreamAssembler(state.kind, MAX_ENTRY_BYTES)
        ctx.on_finish.append(self.request_over)

    def feed(self, chunk: bytes) -> bytes:
        self.assembler.feed(chunk)
        return chunk

    def finish(self, complete: bool) -> bytes:
        return b""  # the decision waits for the end of the request (request_over)

    def request_over(self, ctx: RequestContext, complete: bool) -> None:
        document = None
        if complete and ctx.block_reason is None and 200 <= ctx.status < 300:
            usage = ctx.usage
            measured = None
            if usage is not None:
                measured = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                            "total_tokens": usage.total_tokens}  # fmt: skip
            document = self.assembler.document(measured)
        if document is None:
            self.state.stored = "not_stored"
            self.cache.record(self.api, self.operation, "not_stored")
            return
        payload = orjson.dumps(document)
        task = asyncio.get_running_loop().create_task(
            _add(self.cache, self.api, self.operation, self.state, payload, self.ttl)
        )
        _pending.add(task)
        task.add_done_callback(_pending.discard)


class AzureOpenAiSemanticCacheStore(LlmSemanticCacheStore):
    name = "azure-openai-semantic-cache-store"
    __slots__ = ()
