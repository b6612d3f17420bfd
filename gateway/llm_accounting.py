"""LLM accounting for one request (:class:`LlmExchange`): the JSON body parsed once, and its token usage.

The exchange asks a stream for its usage when the client did not (and hides that event from the client), asks for
an uncompressed response, reads the usage the backend reports (JSON or SSE) or estimates it, sets ``ctx.usage``
before the ``on_finish`` callbacks run, and runs the policies' ``response_hooks``. See docs/token-limits.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

import orjson

from gateway.http.headers import find_header
from gateway.tokens import (
    RequestKind,
    SseUsageMeter,
    TailUsageMeter,
    TokenUsage,
    completion_text_tokens,
    decode_body,
    encoding_for_model,
    estimate_prompt_tokens,
    get_tokenizer,
    request_kind,
    usage_from_body,
    usage_from_mapping,
)

if TYPE_CHECKING:
    from gateway.context import RequestContext

__all__ = ("OPENAI_API_TYPE", "LlmExchange", "current_exchange", "exchange_for")

OPENAI_API_TYPE: Final = "openai"
_STREAM_OPTIONS_KINDS: Final = frozenset({RequestKind.CHAT, RequestKind.COMPLETIONS})
_CAP_FIELDS: Final = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_INCLUDE_USAGE: Final = b'"stream_options":{"include_usage":true},'
_JSON_START: Final = frozenset(b"{ \t\r\n")
_ACCEPT_ENCODING: Final = b"accept-encoding"

ResponseHook = Callable[["RequestContext"], None]


def exchange_for(ctx: RequestContext) -> LlmExchange:
    """The request's exchange, opened (and the body parsed) on first use."""
    exchange = current_exchange(ctx)
    if exchange is None:
        exchange = LlmExchange.open(ctx)
        ctx.llm = exchange
    return exchange


def current_exchange(ctx: RequestContext) -> LlmExchange | None:
    """The request's exchange if one is open (``ctx.llm`` is only ever set by ``exchange_for``)."""
    return cast("LlmExchange | None", ctx.llm)


class LlmExchange:
    """One request's LLM accounting state. ``body`` is None when the request has no JSON object body."""

    __slots__ = (
        "_prompt_estimate",
        "_upstream",
        "admissions",
        "body",
        "client_wants_usage",
        "encoding",
        "injected_usage",
        "kind",
        "model",
        "raw",
        "response_hooks",
        "stream",
    )

    def __init__(self, body: dict[str, Any] | None, raw: bytes, kind: str, *, rewrite: bool) -> None:
        self.body = body
        self.raw = raw
        self.kind = kind
        self.response_hooks: list[ResponseHook] = []
        self.admissions: list[Any] = []  # what token-limit policies decided (for traces)
        self._prompt_estimate: int | None = None
        self._upstream: bytes | None = None
        model = body.get("model") if body is not None else None
        self.model: str | None = model if isinstance(model, str) else None
        self.encoding = encoding_for_model(self.model)
        self.stream = body is not None and body.get("stream") is True
        options = body.get("stream_options") if body is not None else None
        self.client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.injected_usage = rewrite and self.stream and not self.client_wants_usage and kind in _STREAM_OPTIONS_KINDS

    @classmethod
    def open(cls, ctx: RequestContext) -> LlmExchange:
        request = ctx.request
        raw = request.body
        body = None
        if raw and raw[0] in _JSON_START:
            try:
                document = orjson.loads(raw)
            except orjson.JSONDecodeError:
                document = None
            if isinstance(document, dict):
                body = document
        exchange = cls(body, raw, request_kind(ctx.forward_path), rewrite=ctx.api.api_type == OPENAI_API_TYPE)
        # The usage is read from every response, whatever the request looked like: ask for it uncompressed.
        headers = ctx.request_headers
        for name, _ in headers:
            if name == _ACCEPT_ENCODING:
                headers[:] = [h for h in headers if h[0] != _ACCEPT_ENCODING]
                break
        return exchange

    # request side

    def upstream_body(self, current: bytes) -> bytes:
        """What to send upstream: ``current`` with ``stream_options.include_usage`` added when the gateway needs it
        (only while ``current`` is still the body the exchange parsed; a body a policy replaced is left alone)."""
        if not self.injected_usage or current is not self.raw:
            return current
        if self._upstream is None:
            body = self.body
            assert body is not None
            options = body.get("stream_options")
            if "stream_options" not in body:  # insert after "{": no re-serialisation, the client's bytes are kept
                start = current.index(b"{") + 1  # the object has a "stream" member, so a comma may follow
                self._upstream = current[:start] + _INCLUDE_USAGE + current[start:]
            else:
                merged = {**body, "stream_options": {**(options if isinstance(options, dict) else {})}}
                merged["stream_options"]["include_usage"] = True
                self._upstream = orjson.dumps(merged)
        return self._upstream

    def prompt_estimate(self) -> int:
        """Estimated prompt tokens of the request (computed once)."""
        if self._prompt_estimate is None:
            if self.body is None:
                self._prompt_estimate = 0
            else:
                self._prompt_estimate = estimate_prompt_tokens(self.body, self.kind, get_tokenizer(), self.encoding)
        return self._prompt_estimate

    def completion_cap(self) -> tuple[int | None, int]:
        """``(cap, choices)``: the request's completion-token cap (None when it sets none; 0 for embeddings) and
        how many completions it asks for (``n`` / ``best_of``): completion tokens are at most ``cap * choices``."""
        body = self.body
        if body is None:
            return 0, 1
        if self.kind == RequestKind.EMBEDDINGS:
            return 0, 1
        cap = None
        for name in _CAP_FIELDS:
            value = body.get(name)
            if type(value) is int and value >= 0:
                cap = value
                break
        choices = 1
        for name in ("n", "best_of"):
            value = body.get(name)
            if type(value) is int and value > choices:
                choices = value
        return cap, choices

    # response side

    def on_response(self, ctx: RequestContext) -> None:
        """Called by the forwarder once the backend's response head (and a buffered body) is in ``ctx.response``."""
        head = ctx.response
        if head is not None and 200 <= head.status < 300:  # even for a body it could not parse (issue #7)
            if head.upstream is None:
                self._read_buffered(ctx, head.body, find_header(head.headers, b"content-encoding"))
            else:
                content_type = find_header(head.headers, b"content-type") or b""
                if content_type.startswith(b"text/event-stream"):
                    count = get_tokenizer().counter(self.encoding)
                    meter = SseUsageMeter(count, _StreamDone(ctx, self), strip=self.injected_usage)
                    ctx.chunk_filters.insert(0, meter)
                elif find_header(head.headers, b"content-encoding") in (None, b"identity"):
                    ctx.chunk_filters.insert(0, TailUsageMeter(_TailDone(ctx, self)))
        for hook in self.response_hooks:
            hook(ctx)

    def _read_buffered(self, ctx: RequestContext, body: bytes, encoding: bytes | None) -> None:
        decoded = decode_body(body, encoding)
        if decoded is None:
            return
        usage, model, document = usage_from_body(decoded)
        model = model or self.model
        if usage is not None:
            ctx.usage = usage_from_mapping(usage, model)
        elif isinstance(document, dict) and self.body is not None:  # no model request, no estimate (GET /models)
            count = get_tokenizer().counter(self.encoding)
            self.set_estimate(ctx, completion_text_tokens(document, count), model)

    def set_estimate(self, ctx: RequestContext, completion: int, model: str | None) -> None:
        prompt = self.prompt_estimate()
        ctx.usage = TokenUsage(prompt, completion, prompt + completion, model or self.model, True)


class _StreamDone:
    """Sets ``ctx.usage`` when an SSE stream ends (reported usage, else the counted deltas)."""

    __slots__ = ("ctx", "exchange")

    def __init__(self, ctx: RequestContext, exchange: LlmExchange) -> None:
        self.ctx = ctx
        self.exchange = exchange

    def __call__(self, meter: SseUsageMeter, complete: bool) -> None:
        ctx, exchange = self.ctx, self.exchange
        self.ctx = self.exchange = None  # type: ignore[assignment]  # break the ctx -> filter -> ctx cycle
        model = meter.model or exchange.model
        if meter.usage is not None:
            ctx.usage = usage_from_mapping(meter.usage, model)
        else:
            exchange.set_estimate(ctx, meter.completion_tokens, model)


class _TailDone:
    __slots__ = ("ctx", "exchange")

    def __init__(self, ctx: RequestContext, exchange: LlmExchange) -> None:
        self.ctx = ctx
        self.exchange = exchange

    def __call__(self, usage: dict[str, Any] | None, model: str | None, complete: bool) -> None:
        ctx, exchange = self.ctx, self.exchange
        self.ctx = self.exchange = None  # type: ignore[assignment]  # cleared after the single call so both can be freed; never read again
        if usage is not None:
            ctx.usage = usage_from_mapping(usage, model or exchange.model)
        elif complete and exchange.body is not None:
            exchange.set_estimate(ctx, 0, model)
