"""LLM accounting for one request (:class:`LlmExchange`): the JSON body parsed once, and its token usage.

The exchange asks a stream for its usage when the client did not (and hides that event from the client), asks for
an uncompressed response, reads the usage the backend reports (JSON or SSE) or estimates it, sets ``ctx.usage``
before the ``on_finish`` callbacks run, and runs the policies' ``response_hooks``. See docs/token-limits.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, overload

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
_CHOICE_FIELDS: Final = ("n", "best_of")
_INCLUDE_USAGE: Final = b'"stream_options":{"include_usage":true},'
_JSON_START: Final = frozenset(b"{ \t\r\n")
_ACCEPT_ENCODING: Final = b"accept-encoding"

ResponseHook = Callable[["RequestContext"], None]


def exchange_for(ctx: RequestContext) -> LlmExchange:
    """The request's exchange, opened on first use."""
    current = ctx.llm
    if current is not None:
        return current  # type: ignore[return-value]  # set below only: an LlmExchange (cast() is a Python call)
    exchange = LlmExchange(ctx)
    ctx.llm = exchange
    return exchange


def current_exchange(ctx: RequestContext) -> LlmExchange | None:
    """The request's exchange if one is open (``ctx.llm`` is only ever set by ``exchange_for``)."""
    return ctx.llm  # type: ignore[return-value]  # always an LlmExchange (see above); no cast() call per request


_T = TypeVar("_T")


class _FromBody(Generic[_T]):
    """An attribute of the exchange that derives from the request body: the first one read parses the body
    (``LlmExchange._parse`` fills the private slot behind each, ``body`` behind ``_body`` and so on)."""

    __slots__ = ("_slot",)

    def __set_name__(self, owner: type[LlmExchange], name: str) -> None:
        self._slot = getattr(owner, "_" + name)  # the member descriptor of the private slot

    @overload
    def __get__(self, exchange: None, owner: type[LlmExchange]) -> _FromBody[_T]: ...

    @overload
    def __get__(self, exchange: LlmExchange, owner: type[LlmExchange] | None = None) -> _T: ...

    def __get__(self, exchange: LlmExchange | None, owner: type[LlmExchange] | None = None) -> _FromBody[_T] | _T:
        if exchange is None:
            return self
        if not exchange._parsed:
            exchange._parse()
        return self._slot.__get__(exchange, owner)  # type: ignore[no-any-return]  # the slot holds a _T


class LlmExchange:
    """One request's LLM accounting state. ``body`` is None when the request has no JSON object body.

    The body is parsed when one of ``body``, ``model``, ``encoding``, ``stream`` or ``client_wants_usage`` is first
    read, or when the exchange opens if the gateway may have to ask a stream for its usage or the pipeline's body
    check parsed it already: a request whose response reports its usage and model is accounted without parsing the
    request. The exchange's own methods read the private slots once the body is parsed (``_parsed``): each read of
    a public one is a Python ``__get__`` call, about 1.2 k instructions.
    """

    __slots__ = (
        "_body",
        "_checked",
        "_client_wants_usage",
        "_encoding",
        "_model",
        "_parsed",
        "_prompt_estimate",
        "_stream",
        "_upstream",
        "admissions",
        "injected_usage",
        "kind",
        "raw",
        "response_hooks",
    )

    body: _FromBody[dict[str, Any] | None] = _FromBody()  # the JSON object body, None when the request has none
    model: _FromBody[str | None] = _FromBody()  # the model the body names
    encoding: _FromBody[str] = _FromBody()  # the model's BPE encoding
    stream: _FromBody[bool] = _FromBody()  # the body asks for a stream ("stream": true)
    client_wants_usage: _FromBody[bool] = _FromBody()  # the body asks for the stream's usage (include_usage)

    def __init__(self, ctx: RequestContext) -> None:
        self.raw = raw = ctx.request.body
        self.kind = kind = request_kind(ctx.forward_path)
        self.response_hooks: list[ResponseHook] = []
        self.admissions: list[Any] = []  # what token-limit policies decided (for traces)
        self._prompt_estimate: int | None = None
        self._upstream: bytes | None = None
        self._parsed = False
        checked = ctx.json_body  # the pipeline's body check parsed these bytes already: their object, not parsed again
        self._checked = checked[1] if checked is not None and checked[0] is raw else None
        if self._checked is not None:  # nothing left to parse: what derives from the body is set now
            self._parse()
        # Only a stream of a chat or completions request can need ``stream_options.include_usage``. A body without
        # the bytes '"stream"' and without a backslash (an escape could spell that key) has no "stream" member
        # (``find`` rather than ``in``: a byte string's ``in`` costs more, and a one-byte ``find`` is a memchr).
        injected = (
            ctx.api.api_type == OPENAI_API_TYPE
            and kind in _STREAM_OPTIONS_KINDS
            and (raw.find(b'"stream"') >= 0 or raw.find(b"\\") >= 0)
        )
        if injected:
            if not self._parsed:
                self._parse()
            injected = self._stream and not self._client_wants_usage
        self.injected_usage = injected
        # The usage is read from every response, whatever the request looked like: ask for it uncompressed.
        headers = ctx.request_headers
        for header in headers:
            if header[0] == _ACCEPT_ENCODING:
                headers[:] = [h for h in headers if h[0] != _ACCEPT_ENCODING]
                break

    def _parse(self) -> None:
        """Parse the body (unless the pipeline's body check did) and set what derives from it."""
        raw = self.raw
        body = self._checked
        if body is None and raw and raw[0] in _JSON_START:
            try:
                document = orjson.loads(raw)
            except orjson.JSONDecodeError:
                document = None
            if isinstance(document, dict):
                body = document
        self._body = body
        model = body.get("model") if body is not None else None
        self._model = model if isinstance(model, str) else None
        self._encoding = encoding_for_model(self._model)
        self._stream = body is not None and body.get("stream") is True
        options = body.get("stream_options") if body is not None else None
        self._client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        self._parsed = True

    # request side

    def upstream_body(self, current: bytes) -> bytes:
        """What to send upstream: ``current`` with ``stream_options.include_usage`` added when the gateway needs it
        (only while ``current`` is still the body the exchange parsed; a body a policy replaced is left alone)."""
        if not self.injected_usage or current is not self.raw:
            return current
        if self._upstream is None:
            body = self._body  # parsed: injected_usage is only set after a parse
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
            if not self._parsed:
                self._parse()
            body = self._body
            if body is None:
                self._prompt_estimate = 0
            else:
                self._prompt_estimate = estimate_prompt_tokens(body, self.kind, get_tokenizer(), self._encoding)
        return self._prompt_estimate

    def completion_cap(self) -> tuple[int | None, int]:
        """``(cap, choices)``: the request's completion-token cap (None when it sets none; 0 for embeddings) and
        how many completions it asks for (``n`` / ``best_of``): completion tokens are at most ``cap * choices``."""
        if not self._parsed:
            self._parse()
        body = self._body
        if body is None:
            return 0, 1
        if self.kind == RequestKind.EMBEDDINGS:
            return 0, 1
        # ``name in body`` before reading it: a test for a key costs less than a ``get`` call, and most are absent
        cap = None
        for name in _CAP_FIELDS:
            if name in body:
                value = body[name]
                if type(value) is int and value >= 0:
                    cap = value
                    break
        choices = 1
        for name in _CHOICE_FIELDS:
            if name in body:
                value = body[name]
                if type(value) is int and value > choices:
                    choices = value
        return cap, choices

    # response side

    def on_response(self, ctx: RequestContext) -> None:
        """Called by the forwarder once the backend's response head (and a buffered body) is in ``ctx.response``."""
        head = ctx.response
        if head is not None and 200 <= head.status < 300:  # even for a body it could not parse (issue #7)
            if head.upstream is None:  # a buffered body
                body: bytes | None = head.body
                encoding = find_header(head.headers, b"content-encoding")
                if encoding is not None:
                    body = decode_body(head.body, encoding)
                if body is not None:
                    usage, model, document = usage_from_body(body)
                    if usage is not None:
                        ctx.usage = usage_from_mapping(usage, model or self.model)
                    elif isinstance(document, dict) and self.body is not None:  # no model request (GET /models)
                        count = get_tokenizer().counter(self.encoding)
                        self.set_estimate(ctx, completion_text_tokens(document, count), model)
            else:
                content_type = find_header(head.headers, b"content-type") or b""
                if content_type.startswith(b"text/event-stream"):
                    count = get_tokenizer().counter(self._encoding if self._parsed else self.encoding)
                    meter = SseUsageMeter(count, _StreamDone(ctx, self), strip=self.injected_usage)
                    ctx.chunk_filters.insert(0, meter)
                elif find_header(head.headers, b"content-encoding") in (None, b"identity"):
                    ctx.chunk_filters.insert(0, TailUsageMeter(_TailDone(ctx, self)))
        for hook in self.response_hooks:
            hook(ctx)

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
