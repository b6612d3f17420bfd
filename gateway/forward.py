"""Forwarding to the backend and turning the response head into what the HTTP server sends.

Small, known-length responses are read whole (fast path). Server-sent events, responses without a
Content-Length and large bodies are streamed chunk by chunk through ``ctx.chunk_filters``; the upstream
response is closed when the stream ends, fails, or the client goes away (the server closes the body
iterator, which runs its ``finally``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gateway.backends import BackendStates, parse_retry_after
from gateway.context import ChunkFilter, RequestContext, ResponseHead
from gateway.errors import (
    MSG_BACKEND_CONNECT,
    MSG_BACKEND_OPEN,
    MSG_BACKEND_PROTOCOL,
    MSG_BACKEND_TIMEOUT,
    MSG_BAD_TARGET,
    MSG_NO_BACKEND,
    MSG_POOL_UNAVAILABLE,
    GatewayError,
)
from gateway.http.client import UpstreamConnectError, UpstreamError, UpstreamTimeout
from gateway.http.headers import find_header
from gateway.http.messages import Response, StreamingResponse
from gateway.llm_accounting import OPENAI_API_TYPE, current_exchange, exchange_for

if TYPE_CHECKING:
    from gateway.http.client import UpstreamPool, UpstreamResponse
    from gateway.model import BackendTarget, PoolMember

__all__ = (
    "DEFAULT_BUFFER_LIMIT",
    "Forwarder",
    "UpstreamBody",
    "abandon_filters",
    "build_response",
    "discard_upstream",
    "run_finish",
)

logger = logging.getLogger("gateway.forward")

DEFAULT_BUFFER_LIMIT = 1 << 20  # bodies up to 1 MiB with a Content-Length are read whole
_RESPONSE_DROP = frozenset({b"content-length", b"transfer-encoding"})
_EVENT_STREAM = b"text/event-stream"


class Forwarder:
    """The ``Services`` implementation of the app: forwards over an UpstreamPool."""

    __slots__ = ("backends", "buffer_limit", "clock", "pool", "sleep")

    def __init__(
        self,
        pool: UpstreamPool,
        clock: Callable[[], float],
        *,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        backends: BackendStates | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.sleep = sleep
        self.buffer_limit = buffer_limit
        self.backends = backends if backends is not None else BackendStates(clock, wall_clock=time.time)

    async def forward(self, ctx: RequestContext, timeout: float | None) -> None:
        target = ctx.backend
        if target is None:
            raise GatewayError(500, MSG_NO_BACKEND, source="forward-request", reason="BackendNotConfigured")
        why = ""
        if target.pool is not None or target.breaker is not None:  # a single plain backend needs no choosing
            target, why = await self._choose(ctx, target)
        attempt: dict[str, Any] = {"backend": target.name or target.url}
        if why:
            attempt["chosen"] = why
        ctx.attempts.append(attempt)
        exchange = current_exchange(ctx)
        if exchange is None and ctx.api.api_type == OPENAI_API_TYPE:
            exchange = exchange_for(ctx)  # usage accounting for every OpenAI request (may drop Accept-Encoding)
        headers = ctx.request_headers
        if target.headers:
            names = target.header_names
            headers = [h for h in headers if h[0] not in names]
            headers.extend(target.headers)
        request_target = target.url_for(ctx.forward_path, ctx.query)
        request = ctx.request
        body = request.body if exchange is None else exchange.upstream_body(request.body)
        origin = target.origin
        assert origin is not None  # a pool was resolved to a member above
        states = self.backends
        try:
            try:
                # the pool checks the timeout with its connection's timer: no asyncio.timeout() per request
                upstream = await self.pool.request(
                    origin, request.method, request_target, headers, body, timeout=timeout
                )
            except (UpstreamTimeout, TimeoutError):
                raise GatewayError(504, MSG_BACKEND_TIMEOUT, source="forward-request", reason="Timeout") from None
            except UpstreamConnectError:
                raise GatewayError(
                    502, MSG_BACKEND_CONNECT, source="forward-request", reason="BackendConnectionFailure"
                ) from None
            except UpstreamError:
                raise GatewayError(
                    502, MSG_BACKEND_PROTOCOL, source="forward-request", reason="BackendConnectionFailure"
                ) from None
            except ValueError:  # the pool refuses a target or header it cannot put on the wire
                raise GatewayError(400, MSG_BAD_TARGET, source="forward-request", reason="InvalidRequest") from None
            head = self._head(upstream, request.method)
            if head.upstream is None:  # small, known length: read whole (here, not in a coroutine of its own)
                try:
                    head.body = await upstream.read()
                except UpstreamTimeout:
                    await upstream.aclose()
                    raise GatewayError(504, MSG_BACKEND_TIMEOUT, source="forward-request", reason="Timeout") from None
                except UpstreamError:
                    await upstream.aclose()
                    raise GatewayError(
                        502, MSG_BACKEND_PROTOCOL, source="forward-request", reason="BackendConnectionFailure"
                    ) from None
                except BaseException:
                    await upstream.aclose()
                    raise
        except GatewayError as error:
            attempt["error"] = error.reason
            if target.breaker is not None and error.status != 400:
                attempt["tripped"] = states.record(target, None, error.reason)
            raise
        except BaseException:  # cancelled: the client went away, nothing learnt about the backend
            if target.breaker is not None:
                states.release_probe(target)
            raise
        attempt["status"] = head.status
        if target.breaker is not None:
            retry_after = parse_retry_after(find_header(head.headers, b"retry-after"), states.wall_clock())
            if states.record(target, head.status, None, retry_after):
                attempt["tripped"] = True
        ctx.response = head
        if exchange is not None:
            exchange.on_response(ctx)

    async def _choose(self, ctx: RequestContext, target: BackendTarget) -> tuple[BackendTarget, str]:
        """The backend to send this attempt to: a pool member (skipping tripped ones and those this request
        already tried) or ``target`` itself; 503 when none may take traffic."""
        states = self.backends
        if target.pool is not None:
            pool_name = target.name or ""
            tried = [a["backend"] for a in ctx.attempts]
            member, why = await states.choose(pool_name, target.pool, tried)
            if member is None:
                raise self._unavailable(ctx, MSG_POOL_UNAVAILABLE.format(pool_name), target.pool.members)
            return member.target, why
        if target.breaker is not None and not await states.admit(target):
            raise self._unavailable(ctx, MSG_BACKEND_OPEN.format(target.name), ())
        return target, ""

    def _unavailable(self, ctx: RequestContext, message: str, members: tuple[PoolMember, ...]) -> GatewayError:
        states = self.backends
        target = ctx.backend
        names = [m.target.name or "" for m in members] if members else [target.name or "" if target else ""]
        wait = min((states.retry_in(n) for n in names), default=0.0)
        if wait > 0:
            ctx.response_headers.append((b"retry-after", str(max(1, math.ceil(wait))).encode("ascii")))
        return GatewayError(503, message, source="forward-request", reason="BackendUnavailable")

    def _head(self, upstream: UpstreamResponse, method: str) -> ResponseHead:
        """The response head; ``upstream`` is kept on it when the body is streamed, else left off it (None): the
        caller reads that body whole."""
        headers = []
        streaming = False
        for header in upstream.headers:
            name = header[0]
            if name in _RESPONSE_DROP:
                continue
            if name == b"content-type" and header[1].startswith(_EVENT_STREAM):
                streaming = True
            headers.append(header)
        length = upstream.content_length
        head = ResponseHead(upstream.status, headers, upstream.reason)
        if streaming or length is None or length > self.buffer_limit or method == "HEAD":
            head.upstream = upstream
            head.content_length = length
        return head


async def discard_upstream(ctx: RequestContext) -> None:
    """Close a backend response whose body will not be sent (the request ended another way)."""
    head = ctx.response
    if head is not None and head.upstream is not None:
        upstream, head.upstream = head.upstream, None
        await upstream.aclose()


def build_response(ctx: RequestContext) -> Response | StreamingResponse:
    """Turn ``ctx.response`` into what the server sends. A streamed body runs ``ctx.on_finish`` when it is over."""
    head = ctx.response
    assert head is not None
    filters = ctx.chunk_filters
    if head.upstream is None:
        body = _filter_whole(filters, head.body) if filters else head.body
        return Response(head.status, head.headers, body)
    length = None if filters or ctx.stream_stages else head.content_length
    return StreamingResponse(head.status, head.headers, UpstreamBody(head.upstream, filters, ctx, length), length)


def run_finish(ctx: RequestContext, complete: bool) -> None:
    """Run and clear the request's finish callbacks (each at most once); a failing one is logged, not raised."""
    callbacks = ctx.on_finish
    if not callbacks:
        return
    ctx.on_finish = []
    for callback in callbacks:
        try:
            callback(ctx, complete)
        except Exception:
            logger.exception("finish callback failed")


def _filter_whole(filters: list[ChunkFilter], body: bytes) -> bytes:
    for f in filters:
        body = f.feed(body)
    return body + _finish(filters)


def abandon_filters(filters: list[ChunkFilter]) -> None:
    """Tell every chunk filter that its body will not complete (their ``finish(False)`` settles what they saw), then
    drop them. One failing filter is logged and does not stop the others."""
    for f in filters:
        try:
            f.finish(False)
        except Exception:
            logger.exception("chunk filter failed while abandoning the body")
    filters.clear()


def _finish(filters: list[ChunkFilter]) -> bytes:
    tail = b""
    for f in filters:
        if tail:
            tail = f.feed(tail)
        tail += f.finish(True)
    return tail


def _split_first_event(chunk: bytes) -> tuple[bytes, bytes | None]:
    """``chunk`` cut after its first blank line (the end of an SSE event): ``(first, rest)``, or ``(chunk, None)``
    when no blank line ends before the chunk does. Chunk filters take any cut, as the network's reads."""
    end = chunk.find(b"\n\n") + 2
    if end < 2 or end >= len(chunk):
        return chunk, None
    return chunk[:end], chunk[end:]


class UpstreamBody:
    """The body iterator of a streamed response: upstream chunks through the chunk filters, no buffering.

    A class rather than an async generator so that ``aclose()`` releases the upstream response even when
    iteration never started (HEAD, 204/304, client gone before the first chunk). ``ctx.on_finish`` runs before the
    end of the body reaches the client: before the end is reported and, for a body of known ``length``, before its
    last bytes are returned (they are held back until the upstream body has ended).
    """

    __slots__ = ("_complete", "_ctx", "_filters", "_iter", "_remaining", "_rest", "_tail_sent", "_upstream", "closed")

    def __init__(
        self, upstream: UpstreamResponse, filters: list[ChunkFilter], ctx: RequestContext, length: int | None = None
    ) -> None:
        self._upstream = upstream
        self._filters = filters
        self._ctx = ctx
        self._remaining = length  # the bytes of a body of known length not returned yet
        self._complete = False
        self._iter: AsyncIterator[bytes] | None = None
        self._tail_sent = False
        self._rest: bytes | None = None  # what follows the first event of the first chunk, not filtered yet
        self.closed = False

    def __aiter__(self) -> UpstreamBody:
        return self

    async def __anext__(self) -> bytes:
        if self.closed:
            raise StopAsyncIteration
        if self._iter is None:
            source: AsyncIterator[bytes] = self._upstream.__aiter__()
            for stage in self._ctx.stream_stages:
                source = stage(source)
            self._iter = source
            first = True
        else:
            first = False
        filters = self._filters
        held = None  # the last bytes of a body of known length, returned once the upstream body has ended
        try:
            while True:
                if self._rest is not None:
                    chunk, self._rest = self._rest, None
                else:
                    try:
                        chunk = await self._iter.__anext__()
                    except StopAsyncIteration:
                        tail = b""
                        if filters:
                            self._tail_sent = True
                            tail = _finish(filters)
                        self._complete = True
                        await self.aclose()
                        if held is not None:
                            return held + tail
                        if tail:
                            return tail
                        raise
                    if first and filters:
                        # The first event leaves before the rest of the chunk is filtered (SSE usage accounting
                        # parses every event): a backend that sends the whole stream at once still gets its
                        # first byte to the client at once.
                        first = False
                        chunk, self._rest = _split_first_event(chunk)
                for f in filters:
                    chunk = f.feed(chunk)
                    if not chunk:
                        break
                if chunk:
                    if held is not None:
                        return held + chunk  # more than announced: the server refuses the excess and closes
                    remaining = self._remaining
                    if remaining is None:
                        return chunk
                    remaining -= len(chunk)
                    if remaining > 0:
                        self._remaining = remaining
                        return chunk
                    self._remaining = None  # the last bytes: held until the upstream body has ended
                    held = chunk
        except StopAsyncIteration:
            raise
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if not self._tail_sent:
                abandon_filters(self._filters)
            await self._upstream.aclose()
        finally:
            run_finish(self._ctx, self._complete)
