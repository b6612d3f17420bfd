"""The OpenAI-compatible embeddings server (aiohttp, like ``mockllm``).

``POST /v1/embeddings`` (and ``/embeddings``) takes ``{"model": str, "input": str | [str], "encoding_format":
"float" | "base64", "dimensions": 384}`` and answers ``{"object": "list", "data": [{"object": "embedding", "index":
i, "embedding": [...]}], "model": ..., "usage": {"prompt_tokens": n, "total_tokens": n}}``. One model is served,
whatever ``model`` names; the answer names it. Bad input gets a 400 with an OpenAI-shaped error body. The forward
pass runs on one worker thread, so the event loop keeps answering (``/health``) while a batch is computed.
"""

import asyncio
import base64
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson
from aiohttp import web

from .model import MODEL_NAME, Encoded

__all__ = ("MAX_BATCH", "MAX_CHARS", "Encoder", "ServerConfig", "create_app", "error_response")

MAX_BATCH = 256  # inputs per request
MAX_CHARS = 8_000  # characters per input: past the 256 tokens the model reads (the rest is cut), bounds the work

ERR_BAD_JSON = "We could not parse the JSON body of your request. ({detail})"
ERR_NOT_OBJECT = "The request body must be a JSON object."
ERR_MODEL = "'model' is required and must be a string."
ERR_INPUT = "'input' must be a non-empty string or a non-empty array of non-empty strings."
ERR_TOKENS = "'input' as token arrays is not supported by this server; send text."
ERR_BATCH = "'input' has {n} items; this server takes at most {cap} per request."
ERR_LONG = "'input[{i}]' has {n} characters; this server takes at most {cap} per input."
ERR_FORMAT = "'encoding_format' must be 'float' or 'base64'."
ERR_DIMENSIONS = "'dimensions' must be {dim} for {model} (it does not shorten its vectors)."
ERR_TOO_LARGE = "The request body is larger than this server takes ({cap} bytes)."
ERR_NO_ROUTE = "Unknown request URL: {method} {path}."


class Encoder(Protocol):
    dimensions: int

    def encode(self, texts: list[str]) -> Encoded: ...


@dataclass(frozen=True)
class ServerConfig:
    max_batch: int = MAX_BATCH
    max_chars: int = MAX_CHARS
    model_name: str = MODEL_NAME


ENCODER = web.AppKey("encoder", object)
CONFIG = web.AppKey("config", ServerConfig)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return _json({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def _bad(message: str, param: str) -> web.Response:
    return error_response(400, message, param=param, code="invalid_value")


def _texts(body: dict[str, Any], config: ServerConfig) -> list[str] | web.Response:
    value = body.get("input")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        return _bad(ERR_INPUT, "input")
    if all(type(item) is int for item in items) or any(isinstance(item, list) for item in items):
        return _bad(ERR_TOKENS, "input")
    if not all(isinstance(item, str) and item for item in items):
        return _bad(ERR_INPUT, "input")
    if len(items) > config.max_batch:
        return _bad(ERR_BATCH.format(n=len(items), cap=config.max_batch), "input")
    for i, item in enumerate(items):
        if len(item) > config.max_chars:
            return _bad(ERR_LONG.format(i=i, n=len(item), cap=config.max_chars), "input")
    return items


def _check_options(body: dict[str, Any], encoder: Encoder, config: ServerConfig) -> web.Response | None:
    if not isinstance(body.get("model"), str):
        return _bad(ERR_MODEL, "model")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return _bad(ERR_FORMAT, "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or dimensions != encoder.dimensions):
        return _bad(ERR_DIMENSIONS.format(dim=encoder.dimensions, model=config.model_name), "dimensions")
    return None


def _vector(row: np.ndarray, as_base64: bool) -> list[float] | str:
    if as_base64:  # what the openai SDK asks for by default: little-endian float32 bytes
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return row.tolist()


async def embeddings(request: web.Request) -> web.StreamResponse:
    try:
        body = orjson.loads(await request.read())
    except web.HTTPRequestEntityTooLarge:
        cap = request.client_max_size
        return error_response(413, ERR_TOO_LARGE.format(cap=cap), param="body", code="body_too_large")
    except orjson.JSONDecodeError as exc:
        return _bad(ERR_BAD_JSON.format(detail=exc), "body")
    if not isinstance(body, dict):
        return _bad(ERR_NOT_OBJECT, "body")
    encoder: Encoder = request.app[ENCODER]  # type: ignore[assignment]
    config = request.app[CONFIG]
    problem = _check_options(body, encoder, config)
    if problem is not None:
        return problem
    texts = _texts(body, config)
    if isinstance(texts, web.Response):
        return texts
    loop = asyncio.get_running_loop()
    encoded = await loop.run_in_executor(request.app[EXECUTOR], encoder.encode, texts)
    as_base64 = body.get("encoding_format") == "base64"
    tokens = sum(encoded.tokens)
    return _json(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _vector(row, as_base64)}
                for i, row in enumerate(encoded.vectors)
            ],
            "model": config.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def list_models(request: web.Request) -> web.StreamResponse:
    name = request.app[CONFIG].model_name
    return _json({"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "sluice"}]})


async def health(request: web.Request) -> web.StreamResponse:
    return _json({"status": "ok", "model": request.app[CONFIG].model_name})


async def not_found(request: web.Request) -> web.StreamResponse:
    return error_response(404, ERR_NO_ROUTE.format(method=request.method, path=request.path), code="unknown_url")


async def _close_executor(app: web.Application) -> None:
    app[EXECUTOR].shutdown(wait=False, cancel_futures=True)


def create_app(encoder: Encoder, config: ServerConfig | None = None) -> web.Application:
    config = config or ServerConfig()
    # bodies: max_batch inputs of max_chars characters (up to 4 UTF-8 bytes each, JSON-escaped at most 6)
    app = web.Application(client_max_size=config.max_batch * config.max_chars * 6 + 65536)
    app[ENCODER] = encoder
    app[CONFIG] = config
    app[EXECUTOR] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
    app.on_cleanup.append(_close_executor)
    for prefix in ("", "/v1"):
        app.router.add_post(f"{prefix}/embeddings", embeddings)
        app.router.add_get(f"{prefix}/models", list_models)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
