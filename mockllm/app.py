"""The mock OpenAI-compatible model server: an aiohttp application with deterministic answers.

Endpoints: ``POST /chat/completions`` (JSON, or SSE with ``"stream": true``), ``POST /completions``,
``POST /embeddings``, ``GET /models``, ``GET /models/{id}``, ``POST /responses``, ``GET /health``, ``ANY /echo/…``
(Azure OpenAI style, too: ``POST /openai/deployments/{deployment}/chat/completions``, ``…/completions`` and
``…/embeddings``, which answer 400 without an ``api-version`` query parameter, as Azure does)
(answers with what it received), ``GET /mock/stats`` and ``POST /mock/reset``. Every endpoint but the ``/mock/``
ones is served under ``/v1`` and at the root, so ``http://host:port/v1`` and ``http://host:port`` are both valid
base URLs. ``--require-key`` guards everything except ``/health`` and ``/mock/…``.

Per-request knobs (request headers, for tests that share one mock):

``X-Mock-Status: 429``      answer with that status and an OpenAI-shaped error body
``X-Mock-Delay-Ms: 50``     delay before the response (before the first SSE byte when streaming)
``X-Mock-Chunk-Delay-Ms: 5`` delay between SSE events
``X-Mock-Tokens: 4``        completion length for this request

Failure modes (process-wide, for pools and circuit breaker tests): ``POST /mock/fail`` with a JSON object
``{"mode": …, "count": N}`` makes the next N model requests (all of them when ``count`` is absent or null) fail:

``{"mode": "status", "status": 429, "retry_after": "7"}``  answer that status (and ``Retry-After`` when given)
``{"mode": "reset"}``                  close the connection with a TCP reset before answering
``{"mode": "hang"}``                   never answer (until the client gives up)
``{"mode": "slow", "delay_ms": 500}``  wait that long before the answer's first byte, then answer normally
``{"mode": "cut", "after": 2}``        stream only the first ``after`` SSE events, then reset the connection
``{"mode": "none"}``                   answer normally again (so does ``POST /mock/reset``)

``/mock/stats`` counts the failures it served in ``failures`` (by mode).
"""

import asyncio
import itertools
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from . import content

__all__ = ("MockConfig", "MockStats", "create_app")

ERR_BAD_JSON = "We could not parse the JSON body of your request. ({detail})"
ERR_NOT_OBJECT = "The JSON body of your request must be an object."
ERR_BAD_PAYLOAD = "We could not read the body of your request. ({detail})"
ERR_REQUIRED = "'{param}' is a required property"
ERR_BAD_KEY = "Incorrect API key provided."
ERR_NO_ROUTE = "Invalid URL ({method} {path})"
ERR_NO_API_VERSION = "Missing required query parameter: api-version."

ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class MockConfig:
    """Process-wide behaviour of the mock (the command-line options)."""

    delay_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    tokens: int = 16
    embed_dim: int = 8
    require_key: str | None = None
    models: tuple[str, ...] = ("mock", "gpt-4o-mini", "text-embedding-3-small")


FAIL_MODES = ("none", "status", "reset", "hang", "slow", "cut")


@dataclass(slots=True)
class FailurePlan:
    """What ``POST /mock/fail`` asked for: a failure mode and how many more requests get it (None: all)."""

    mode: str = "none"
    remaining: int | None = None
    status: int = 500
    retry_after: str | None = None
    delay_ms: float = 0.0
    after: int = 1

    def take(self) -> str:
        """The mode for the next model request (consumes one of ``remaining``)."""
        if self.mode == "none" or self.remaining == 0:
            return "none"
        if self.remaining is not None:
            self.remaining -= 1
        return self.mode


@dataclass(slots=True)
class MockStats:
    """Counters served by ``GET /mock/stats``; tests compare them before and after a call."""

    requests: Counter[str] = field(default_factory=Counter)
    streams_in_flight: int = 0
    streams_completed: int = 0
    streams_cancelled: int = 0
    last_request: web.Request | None = None
    failures: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        last = None
        if self.last_request is not None:
            req = self.last_request
            last = {"method": req.method, "path": req.path, "query": req.query_string, "headers": _headers(req)}
        return {
            "requests": dict(self.requests),
            "total": sum(self.requests.values()),
            "streams_in_flight": self.streams_in_flight,
            "streams_completed": self.streams_completed,
            "streams_cancelled": self.streams_cancelled,
            "failures": dict(self.failures),
            "last_request": last,
        }


CONFIG = web.AppKey("config", MockConfig)
STATS = web.AppKey("stats", MockStats)
FAILURE = web.AppKey("failure", FailurePlan)
CUT_AFTER = "mock_cut_after"
_ids = itertools.count(1)


#
# Helpers
#


def _headers(request: web.Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in request.headers.items():
        name = str(key)  # aiohttp's istr is a str subclass, which orjson refuses as a key
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None) -> web.Response:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return _json({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def _new_id(prefix: str) -> str:
    """``chatcmpl-mock…`` style ids; the prefix carries its own separator, as OpenAI's do (``resp_``)."""
    return f"{prefix}mock{next(_ids):012x}"


def _float_header(request: web.Request, name: str, default: float) -> float:
    value = request.headers.get(name)
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP reset (SO_LINGER 0), as a crashing server or a middlebox would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.close()


async def _fail(request: web.Request) -> web.StreamResponse | None:
    """Apply the failure plan to a model request: an early answer, a reset or a hang; None to answer normally."""
    plan = request.app[FAILURE]
    mode = plan.take()
    if mode == "none":
        return None
    request.app[STATS].failures[mode] += 1
    if mode == "status":
        response = error_response(plan.status, f"Mock failure {plan.status} requested by /mock/fail.", code="mock")
        if plan.retry_after is not None:
            response.headers["Retry-After"] = plan.retry_after
        return response
    if mode == "reset":
        _reset(request)
        return web.Response(status=500)  # never reaches the client: the connection is gone
    if mode == "hang":
        await asyncio.sleep(3600)
    if mode == "slow":
        await asyncio.sleep(plan.delay_ms / 1000)
    if mode == "cut":
        request[CUT_AFTER] = plan.after
    return None


def _failing(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        early = await _fail(request)
        if early is not None:
            return early
        return await handler(request)

    return guarded


async def set_failure(request: web.Request) -> web.StreamResponse:
    body, problem = await _read_object(request)
    if body is None:
        return problem  # type: ignore[return-value]
    mode = body.get("mode")
    if mode not in FAIL_MODES:
        return error_response(400, f"'mode' must be one of {', '.join(FAIL_MODES)}.", param="mode")
    count = body.get("count")
    if count is not None and (not isinstance(count, int) or count < 0):
        return error_response(400, "'count' must be a non-negative integer or null.", param="count")
    retry_after = body.get("retry_after")
    request.app[FAILURE] = FailurePlan(
        mode=mode,
        remaining=count,
        status=int(body.get("status", 500)),
        retry_after=None if retry_after is None else str(retry_after),
        delay_ms=float(body.get("delay_ms", 0)),
        after=int(body.get("after", 1)),
    )
    return _json({"mode": mode, "count": count})


def _begin(request: web.Request, name: str, *, check_key: bool = True) -> web.Response | None:
    """Count the call; answer early for a wrong API key or a forced ``X-Mock-Status``."""
    config = request.app[CONFIG]
    stats = request.app[STATS]
    stats.requests[name] += 1
    stats.last_request = request
    if (
        check_key
        and config.require_key is not None
        and request.headers.get("Authorization") != f"Bearer {config.require_key}"
    ):
        return error_response(401, ERR_BAD_KEY, code="invalid_api_key")
    forced = request.headers.get("X-Mock-Status")
    if forced is not None and forced.isdigit() and 400 <= int(forced) <= 599:
        return error_response(int(forced), f"Mock error {forced} requested by X-Mock-Status.", code="mock_error")
    return None


async def _read_object(request: web.Request) -> tuple[dict[str, Any] | None, web.Response | None]:
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, error_response(400, ERR_BAD_JSON.format(detail=exc))
    if not isinstance(body, dict):
        return None, error_response(400, ERR_NOT_OBJECT)
    return body, None


def _model(body: dict[str, Any], default: str = "mock") -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else default


def _completion_size(request: web.Request, body: dict[str, Any], *caps: str) -> tuple[int, str]:
    """Number of completion tokens and the finish reason (``length`` when a cap cut the answer short)."""
    n = int(_float_header(request, "X-Mock-Tokens", request.app[CONFIG].tokens))
    for cap in caps:
        value = body.get(cap)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < n:
            return value, "length"
    return n, "stop"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _sse(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


async def _delay(request: web.Request) -> None:
    delay = _float_header(request, "X-Mock-Delay-Ms", request.app[CONFIG].delay_ms)
    if delay > 0:
        await asyncio.sleep(delay / 1000)


async def _stream(request: web.Request, events: list[bytes]) -> web.StreamResponse:
    """Send SSE events; count the stream as completed, or as cancelled when the client goes away mid-stream."""
    stats = request.app[STATS]
    chunk_delay = _float_header(request, "X-Mock-Chunk-Delay-Ms", request.app[CONFIG].chunk_delay_ms) / 1000
    response = web.StreamResponse(headers=SSE_HEADERS)
    stats.streams_in_flight += 1
    try:
        await _delay(request)
        await response.prepare(request)
        cut = request.get(CUT_AFTER)
        if cut is not None:
            events = events[:cut]
        if chunk_delay <= 0:
            await response.write(b"".join(events))
        else:
            for index, event in enumerate(events):
                if index:
                    await asyncio.sleep(chunk_delay)
                await response.write(event)
        cut = request.get(CUT_AFTER)
        if cut is not None:
            stats.streams_cancelled += 1
            _reset(request)
            return response
        await response.write_eof()
    except asyncio.CancelledError:
        stats.streams_cancelled += 1
        raise
    except ConnectionResetError:
        stats.streams_cancelled += 1
        return response
    finally:
        stats.streams_in_flight -= 1
    stats.streams_completed += 1
    return response


#
# OpenAI endpoints
#


async def chat_completions(request: web.Request) -> web.StreamResponse:
    early = _begin(request, "/chat/completions")
    if early is not None:
        return early
    body, problem = await _read_object(request)
    if body is None:
        return problem  # type: ignore[return-value]
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error_response(400, ERR_REQUIRED.format(param="messages"), param="messages")
    model = _model(body)
    n, finish = _completion_size(request, body, "max_completion_tokens", "max_tokens")
    prompt = content.prompt_tokens(messages)
    cid, created = _new_id("chatcmpl-"), int(time.time())
    if body.get("stream") is True:
        return await _stream(request, _chat_events(cid, created, model, n, finish, prompt, _include_usage(body)))
    await _delay(request)
    return _json(
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(content.completion_words(n)), "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": _usage(prompt, n),
        }
    )


def _chat_events(
    cid: str, created: int, model: str, n: int, finish: str, prompt: int, include_usage: bool
) -> list[bytes]:
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        data = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": choices,
        }
        if include_usage:
            data["usage"] = None
        data.update(extra)
        return _sse(data)

    def choice(delta: dict[str, Any], reason: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]

    events = [chunk(choice({"role": "assistant", "content": ""}))]
    events.extend(chunk(choice({"content": word})) for word in content.completion_words(n))
    events.append(chunk(choice({}, finish)))
    if include_usage:
        events.append(chunk([], usage=_usage(prompt, n)))
    events.append(DONE)
    return events


async def completions(request: web.Request) -> web.StreamResponse:
    early = _begin(request, "/completions")
    if early is not None:
        return early
    body, problem = await _read_object(request)
    if body is None:
        return problem  # type: ignore[return-value]
    if "prompt" not in body:
        return error_response(400, ERR_REQUIRED.format(param="prompt"), param="prompt")
    model = _model(body)
    n, finish = _completion_size(request, body, "max_tokens")
    prompt = content.input_tokens(body["prompt"])
    cid, created = _new_id("cmpl-"), int(time.time())
    head = {"id": cid, "object": "text_completion", "created": created, "model": model}
    if body.get("stream") is True:
        events = [
            _sse({**head, "choices": [{"text": word, "index": 0, "logprobs": None, "finish_reason": None}]})
            for word in content.completion_words(n)
        ]
        events.append(_sse({**head, "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}]}))
        if _include_usage(body):
            events.append(_sse({**head, "choices": [], "usage": _usage(prompt, n)}))
        events.append(DONE)
        return await _stream(request, events)
    await _delay(request)
    text = "".join(content.completion_words(n))
    return _json(
        {
            **head,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": _usage(prompt, n),
        }
    )


async def embeddings(request: web.Request) -> web.StreamResponse:
    early = _begin(request, "/embeddings")
    if early is not None:
        return early
    body, problem = await _read_object(request)
    if body is None:
        return problem  # type: ignore[return-value]
    value = body.get("input")
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(x, int) for x in value)):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        return error_response(400, ERR_REQUIRED.format(param="input"), param="input")
    dim = body.get("dimensions")
    if not isinstance(dim, int) or not 0 < dim <= 8192:
        dim = request.app[CONFIG].embed_dim
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(items):
        vector = content.embedding(item if isinstance(item, str) else orjson.dumps(item).decode(), dim)
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": content.embedding_base64(vector) if as_base64 else vector,
            }
        )
    tokens = content.input_tokens(value)
    await _delay(request)
    return _json(
        {
            "object": "list",
            "data": data,
            "model": _model(body, "text-embedding-3-small"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _model_entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1700000000, "owned_by": "sluice-mock"}


async def list_models(request: web.Request) -> web.StreamResponse:
    early = _begin(request, "/models")
    if early is not None:
        return early
    return _json({"object": "list", "data": [_model_entry(m) for m in request.app[CONFIG].models]})


async def retrieve_model(request: web.Request) -> web.StreamResponse:
    early = _begin(request, "/models/{model}")
    if early is not None:
        return early
    name = request.match_info["model"]
    if name not in request.app[CONFIG].models:
        return error_response(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
    return _json(_model_entry(name))


async def responses(request: web.Request) -> web.StreamResponse:
    """A minimal Responses API: one assistant message with ``output_text``."""
    early = _begin(request, "/responses")
    if early is not None:
        return early
    body, problem = await _read_object(request)
    if body is None:
        return problem  # type: ignore[return-value]
    if "input" not in body:
        return error_response(400, ERR_REQUIRED.format(param="input"), param="input")
    n, _ = _completion_size(request, body, "max_output_tokens")
    prompt = content.input_tokens(body["input"])
    text = "".join(content.completion_words(n))
    rid, mid = _new_id("resp_"), _new_id("msg_")
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"type": "message", "id": mid, "status": "completed", "role": "assistant", "content": [part]}
    usage = {
        "input_tokens": prompt,
        "output_tokens": n,
        "total_tokens": prompt + n,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    done = {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": _model(body),
        "output": [item],
        "usage": usage,
        "error": None,
        "incomplete_details": None,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    if body.get("stream") is not True:
        await _delay(request)
        return _json(done)
    started = {**done, "status": "in_progress", "output": [], "usage": None}
    seq = itertools.count()
    events = [
        ("response.created", {"response": started}),
        ("response.output_item.added", {"output_index": 0, "item": {**item, "status": "in_progress", "content": []}}),
        (
            "response.content_part.added",
            {"item_id": mid, "output_index": 0, "content_index": 0, "part": {**part, "text": ""}},
        ),
        *(
            ("response.output_text.delta", {"item_id": mid, "output_index": 0, "content_index": 0, "delta": word})
            for word in content.completion_words(n)
        ),
        ("response.output_text.done", {"item_id": mid, "output_index": 0, "content_index": 0, "text": text}),
        ("response.content_part.done", {"item_id": mid, "output_index": 0, "content_index": 0, "part": part}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": done}),
    ]
    encoded = [
        f"event: {kind}\n".encode() + _sse({"type": kind, "sequence_number": next(seq), **data})
        for kind, data in events
    ]
    return await _stream(request, encoded)


#
# Test helpers: health, counters, passthrough echo, unknown routes
#


async def health(request: web.Request) -> web.StreamResponse:
    return _json({"status": "ok"})


async def stats(request: web.Request) -> web.StreamResponse:
    return _json(request.app[STATS].as_dict())


async def reset_stats(request: web.Request) -> web.StreamResponse:
    request.app[STATS].requests.clear()
    request.app[STATS].streams_completed = request.app[STATS].streams_cancelled = 0
    request.app[STATS].failures.clear()
    request.app[FAILURE] = FailurePlan()
    return _json(request.app[STATS].as_dict())


async def echo(request: web.Request) -> web.StreamResponse:
    """Return what arrived, so passthrough tests can see what a gateway forwarded."""
    early = _begin(request, "/echo")
    if early is not None:
        return early
    raw = await request.read()
    try:
        parsed = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        parsed = None
    args: dict[str, list[str]] = {}
    for name, value in request.query.items():
        args.setdefault(str(name), []).append(value)
    await _delay(request)
    return _json(
        {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query": request.query_string,
            "args": args,
            "headers": _headers(request),
            "body": raw.decode("utf-8", errors="replace"),
            "json": parsed,
        }
    )


async def not_found(request: web.Request) -> web.StreamResponse:
    early = _begin(request, "<unknown>")
    if early is not None:
        return early
    return error_response(404, ERR_NO_ROUTE.format(method=request.method, path=request.path), code="unknown_url")


def _azure(handler: Handler) -> Handler:
    """An Azure OpenAI deployment route: the same answers, once the request carries ``api-version``."""

    async def deployment(request: web.Request) -> web.StreamResponse:
        if not request.query.get("api-version"):
            request.app[STATS].last_request = request
            return error_response(400, ERR_NO_API_VERSION, param="api-version", code="missing_api_version")
        return await handler(request)

    return deployment


@web.middleware
async def unreadable_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A body that cannot be read (a Content-Encoding it is not in, a broken chunk) is the client's 400, as a real
    provider answers it, not a 500 with a traceback."""
    try:
        return await handler(request)
    except RequestPayloadError as exc:
        detail = " ".join(str(exc).split())
        return error_response(400, ERR_BAD_PAYLOAD.format(detail=detail), code="invalid_request_body")


def create_app(config: MockConfig | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[unreadable_body])
    app[CONFIG] = config or MockConfig()
    app[STATS] = MockStats()
    app[FAILURE] = FailurePlan()
    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/chat/completions", _failing(chat_completions)),
        ("POST", "/completions", _failing(completions)),
        ("POST", "/embeddings", _failing(embeddings)),
        ("GET", "/models", list_models),
        ("GET", "/models/{model}", retrieve_model),
        ("POST", "/responses", responses),
        ("GET", "/health", health),
        ("*", "/echo", echo),
        ("*", "/echo/{tail:.*}", echo),
    ]
    for prefix in ("", "/v1"):
        for method, path, handler in routes:
            app.router.add_route(method, prefix + path, handler)
    for path, handler in (("chat/completions", _failing(chat_completions)), ("completions", _failing(completions)),
                          ("embeddings", _failing(embeddings))):  # fmt: skip
        app.router.add_post(f"/openai/deployments/{{deployment}}/{path}", _azure(handler))
    app.router.add_get("/mock/stats", stats)
    app.router.add_post("/mock/reset", reset_stats)
    app.router.add_post("/mock/fail", set_failure)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
