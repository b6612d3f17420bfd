"""The client of an embeddings backend: any OpenAI-compatible ``POST …/embeddings`` endpoint.

The backend's URL may be a base URL (``https://api.openai.com/v1``: ``/embeddings`` is appended) or the full URL of
the endpoint (``…/v1/embeddings``, as APIM's embeddings backends are configured). The backend's credentials (headers
and query parameters, as the snapshot carries them) are sent with the request.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import orjson

from gateway.http.client import UpstreamError

from .store import Vector

if TYPE_CHECKING:
    from gateway.http.client import UpstreamPool
    from gateway.model import BackendTarget

__all__ = ("EmbeddingsError", "embed", "embeddings_path")

ENDPOINT: Final = "/embeddings"
MAX_RESPONSE: Final = 8 << 20  # more than any one vector needs


class EmbeddingsError(Exception):
    """The embeddings backend did not give a usable vector (down, slow, an error status, a body it cannot read)."""


def embeddings_path(target: BackendTarget) -> str:
    """The request target: the backend's URL when it already ends with ``/embeddings``, else that plus it."""
    return target.url_for("" if target.base_path.endswith(ENDPOINT) else ENDPOINT, "")


async def embed(pool: UpstreamPool, target: BackendTarget, text: str, model: str, timeout: float) -> Vector:
    """The unit-length embedding of ``text``; raises EmbeddingsError."""
    if target.origin is None:
        raise EmbeddingsError("the embeddings backend is a pool: name one of its members")
    headers = [(b"content-type", b"application/json"), (b"accept", b"application/json"), *target.headers]
    body = orjson.dumps({"model": model, "input": text})
    try:
        async with asyncio.timeout(timeout):
            response = await pool.request(target.origin, "POST", embeddings_path(target), headers, body)
            try:
                data = await response.read()
            finally:
                await response.aclose()
    except TimeoutError:
        raise EmbeddingsError(f"no answer within {timeout:g} s") from None
    except (UpstreamError, OSError, ValueError) as exc:
        raise EmbeddingsError(f"request failed: {exc}") from None
    if response.status != 200:
        raise EmbeddingsError(f"status {response.status}")
    if len(data) > MAX_RESPONSE:
        raise EmbeddingsError("response too large")
    return _vector(data)


def _vector(data: bytes) -> Vector:
    try:
        document = orjson.loads(data)
        raw: Any = document["data"][0]["embedding"]
        if isinstance(raw, str):
            vector = np.frombuffer(base64.b64decode(raw, validate=True), dtype="<f4").astype(np.float32)
        else:
            vector = np.asarray(raw, dtype=np.float32)
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise EmbeddingsError(f"unreadable response ({type(exc).__name__})") from None
    if vector.ndim != 1 or vector.size == 0 or not np.all(np.isfinite(vector)):
        raise EmbeddingsError("the embedding is not a vector of finite numbers")
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        raise EmbeddingsError("the embedding is the zero vector")
    result: Vector = vector / np.float32(norm)
    return result
