"""HTTP/1.1 server for the data plane: one asyncio protocol per connection, on uvloop + httptools.

The handler gets a ``Request`` (``gateway.http.messages``) as soon as its head has arrived, reads the body with
``await request.read_body()`` when it wants it (until then at most ``ServerLimits.body_buffer`` bytes are held and
``Expect: 100-continue`` is not answered), and answers with a ``Response`` or ``StreamingResponse``. The connection
owns everything below the handler: framing (Content-Length, chunked, HEAD, keep-alive, pipelining in order),
smuggling resistance (conflicting lengths, unknown codings, a missing or repeated Host are refused and the
connection closed), limits and timeouts (``ServerLimits``), backpressure, and disconnects (a client that goes away
cancels the handler's task). Body errors reach the handler as ``RequestBodyError``. See docs/gateway-operations.md.

The requests of one connection are answered by one task, which waits between requests instead of ending: handlers
of one connection share its ``contextvars`` context, so a handler that sets a context variable resets it.
"""

from __future__ import annotations

import asyncio
import http
import logging
import socket
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, cast

import httptools
import orjson

from gateway.http.headers import SERVER_OWNED, has_token
from gateway.http.messages import (
    BODY_DONE as _BODY_DONE,
)
from gateway.http.messages import (
    BODY_FAILED as _BODY_FAILED,
)
from gateway.http.messages import (
    BODY_READING as _BODY_READING,
)
from gateway.http.messages import (
    Request,
    RequestBodyError,
    Response,
    StreamingResponse,
)
from gateway.ids import next_request_id

__all__ = (
    "Handler",
    "Request",
    "RequestBodyError",
    "Response",
    "ServerLimits",
    "StreamingResponse",
    "error_response",
    "serve",
    "shutdown",
)

logger = logging.getLogger("gateway.http")

MSG_BAD_REQUEST: Final = "Malformed HTTP request."
MSG_BAD_HOST: Final = "A request must carry exactly one Host header."
MSG_BODY_TOO_LARGE: Final = "Request body is too large."
MSG_HEADERS_TOO_LARGE: Final = "Request header fields are too large."
MSG_TIMEOUT: Final = "Timed out reading the request."
MSG_INTERNAL: Final = "Internal server error."
MSG_TE_UNSUPPORTED: Final = "Transfer-Encoding other than chunked is not supported."
MSG_UPGRADE_UNSUPPORTED: Final = "Protocol upgrade and CONNECT are not supported."
MSG_VERSION_UNSUPPORTED: Final = "HTTP version not supported."
MSG_EXPECTATION_FAILED: Final = "Only the 100-continue expectation is supported."
MSG_BAD_BODY: Final = "Malformed request body."
MSG_BODY_TIMEOUT: Final = "Timed out reading the request body."
MSG_TOO_MANY_CONNECTIONS: Final = "The gateway is serving too many connections; try again later."

LOG_HANDLER_FAILED: Final = "handler failed for %s %s"
LOG_STREAM_FAILED: Final = "response body iterator failed for %s %s"
LOG_BAD_RESPONSE: Final = "handler returned an invalid response for %s %s: %r"
LOG_LENGTH_MISMATCH: Final = "streamed body for %s %s does not match content_length=%d; closing the connection"
LOG_CONNECTION_FAILED: Final = "HTTP connection failed"
LOG_PARSER_FAILED: Final = "request parser callback failed"

_NEVER: Final = float("inf")

# Parsing states of the request being read.
_IDLE: Final = 0  # between requests
_HEAD: Final = 1  # request line and header fields
_BODY: Final = 2  # body (or the remainder of a chunked body)

_MAX_QUEUED: Final = 16  # pipelined requests waiting for their turn before reading pauses

# Body states of a Request.
_FLUSH_SIZE: Final = 64 * 1024  # a streamed response's pending writes are flushed at this size
_LARGE_BODY: Final = 64 * 1024  # above this a complete response's body is written apart from its head

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_CHUNKED_END: Final = b"0\r\n\r\n"
_TE_CHUNKED: Final = b"transfer-encoding: chunked\r\n"
_CONNECTION_CLOSE: Final = b"connection: close\r\n"
_CONNECTION_KEEP_ALIVE: Final = b"connection: keep-alive\r\n"

# Request header names that on_header inspects while collecting.
_WATCHED: Final = frozenset(
    {b"content-length", b"transfer-encoding", b"host", b"expect", b"connection", b"proxy-connection"}
)
# The header names llhttp reads a keep-alive option from (see on_headers_complete).
_CONNECTION_NAMES: Final = frozenset({b"connection", b"proxy-connection"})

# Final statuses whose responses never carry a body or framing headers.
_NO_BODY: Final = frozenset({204, 304})

_STATUS_LINES: Final[dict[int, bytes]] = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode("ascii")) for status in http.HTTPStatus
}

_METHODS: Final[dict[bytes, str]] = {
    method: method.decode("ascii")
    for method in (b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS", b"TRACE")
}


#
# Messages
#


Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]


@dataclass(frozen=True)
class ServerLimits:
    """Per-connection limits and timeouts (seconds), and the server's connection limit."""

    max_body_bytes: int = 16 * 1024 * 1024  # bigger -> 413 (counted when the handler reads the body)
    body_buffer: int = 64 * 1024  # unread body bytes held per connection before the handler asks; then reading pauses
    max_connections: int = 10000  # open client connections per server; beyond, 503 and close
    max_header_bytes: int = 64 * 1024  # request line + header fields; bigger -> 431
    max_headers: int = 100  # more -> 431
    header_timeout: float = 30.0  # to receive a whole request head (slowloris) -> 408 then close
    body_timeout: float = 60.0  # to receive the body -> 408 then close
    keepalive_timeout: float = 75.0  # an idle keep-alive connection is closed after this
    send_timeout: float = 60.0  # a client that reads nothing of a response for this long is disconnected
    linger_timeout: float = 2.0  # after an answer that leaves body bytes unread, input is drained this long


def error_response(status: int, message: str) -> Response:
    """The JSON error answer the server itself gives: ``{"statusCode": N, "message": "..."}`` with an id."""
    body = orjson.dumps({"statusCode": status, "message": message})
    headers = [(b"content-type", b"application/json"), (b"x-request-id", next_request_id().encode("ascii"))]
    return Response(status, headers, body)


async def serve(
    handler: Handler,
    host: str,
    port: int,
    *,
    limits: ServerLimits = ServerLimits(),
    reuse_port: bool = False,
    sock: socket.socket | None = None,
    backlog: int = 1024,
) -> asyncio.Server:
    """Start serving ``handler`` on ``host``:``port`` (or on the listening ``sock``, when given)."""
    loop = asyncio.get_running_loop()
    registry = _Registry()

    def factory() -> _Connection:
        return _Connection(handler, limits, loop, registry)

    if sock is not None:
        server = await loop.create_server(factory, sock=sock, backlog=backlog)
    else:
        server = await loop.create_server(factory, host, port, reuse_port=reuse_port or None, backlog=backlog)
    _REGISTRIES[server] = registry
    return server


async def shutdown(server: asyncio.Server, timeout: float = 30.0) -> None:
    """Stop a server started by ``serve()`` gracefully.

    It stops accepting, closes idle keep-alive connections at once, lets requests in progress finish (their
    responses say ``connection: close``) for up to ``timeout`` seconds, then aborts what is left (which cancels
    those handlers).
    """
    server.close()
    registry = _REGISTRIES.get(server)
    if registry is None or not registry.connections:
        return
    for conn in list(registry.connections):
        conn.shutdown()
    if registry.connections:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        registry.empty_waiter = waiter
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            for conn in list(registry.connections):
                conn.abort()


#
# Connection
#


class _Reject(Exception):
    """Raised from a parser callback to answer the request with an error status and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Discard(Exception):
    """Raised from a parser callback to drop input that follows a request that closes the connection."""


class _Registry:
    """The live connections of one server, for ``shutdown()``."""

    __slots__ = ("connections", "empty_waiter")

    def __init__(self) -> None:
        self.connections: set[_Connection] = set()
        self.empty_waiter: asyncio.Future[None] | None = None

    def discard(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        waiter = self.empty_waiter
        if not self.connections and waiter is not None and not waiter.done():
            waiter.set_result(None)


_REGISTRIES: weakref.WeakKeyDictionary[asyncio.Server, _Registry] = weakref.WeakKeyDictionary()


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d \r\n" % status
    return line


async def _close_iterator(body_iter: object) -> None:
    aclose = getattr(body_iter, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        logger.exception("closing a response body iterator failed")


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs the handler for each in turn, writes the responses."""

    __slots__ = (
        "_body_waiter",
        "_busy",
        "_client_ip",
        "_close_after",
        "_closed",
        "_connection_header",
        "_content_length",
        "_current",
        "_deadline",
        "_drain_waiter",
        "_draining",
        "_expect",
        "_flush_handle",
        "_flushed",
        "_handler",
        "_head_size",
        "_headers",
        "_held",
        "_host_count",
        "_idle_waiter",
        "_limits",
        "_linger_handle",
        "_lingering",
        "_loop",
        "_max_body",
        "_max_head",
        "_parser",
        "_pending_error",
        "_phase_timed",
        "_queue",
        "_raw_head",
        "_reading_paused",
        "_registry",
        "_state",
        "_stopped",
        "_task",
        "_te",
        "_timer",
        "_timer_when",
        "_transport",
        "_url",
        "_version",
        "_wbuf",
        "_wbuf_size",
        "_write_paused",
    )

    def __init__(
        self, handler: Handler, limits: ServerLimits, loop: asyncio.AbstractEventLoop, registry: _Registry
    ) -> None:
        self._handler = handler
        self._registry = registry
        self._draining = False
        self._limits = limits
        self._max_head = limits.max_header_bytes
        self._max_body = limits.max_body_bytes
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._client_ip = ""
        self._closed = False
        self._stopped = False  # input is ignored from now on
        # the request being parsed
        self._state = _IDLE
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._raw_head = 0
        self._current: Request | None = None  # from its head until the end of its body
        self._body_waiter: asyncio.Future[None] | None = None  # a handler waiting in read_body()
        self._held = 0  # body bytes received for requests whose handler has not asked for them
        self._content_length = -1
        self._te: bytes | None = None
        self._expect: bytes | None = None
        self._host_count = 0
        self._connection_header = False
        self._version = "1.1"
        self._close_after = False
        self._phase_timed = False
        # responding
        self._queue: deque[tuple[Request, bool]] = deque()
        # The connection's task is started by its first request and then waits between requests (_idle_waiter)
        # rather than ending: a task per request costs its creation and the registration of every asyncio task.
        # ``_busy`` is True from a request's head until the queue is empty (and for good once the task has ended).
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._idle_waiter: asyncio.Future[None] | None = None
        self._pending_error: Response | None = None
        self._reading_paused = False
        # writing
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._wbuf: list[bytes] = []
        self._wbuf_size = 0
        self._flush_handle: asyncio.Handle | None = None
        self._flushed = False
        # one timer per connection, re-armed lazily (see _set_deadline)
        self._deadline = _NEVER
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = _NEVER
        self._lingering = False
        self._linger_handle: asyncio.TimerHandle | None = None

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = cast(asyncio.Transport, transport)
        if len(self._registry.connections) >= self._limits.max_connections:
            self._stopped = True
            self._send_error_and_close(error_response(503, MSG_TOO_MANY_CONNECTIONS))
            return
        self._registry.connections.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._client_ip = str(peer[0])
        self._set_deadline(self._loop.time() + self._limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._stopped = True
        self._registry.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None
        self._wbuf.clear()
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.cancel()
        self._wake_body()

    def eof_received(self) -> bool | None:
        # A client that half-closes is treated as gone, like nginx does: the transport closes and any handler in
        # progress is cancelled.
        return None

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._busy:
            self._set_deadline(self._loop.time() + self._limits.send_timeout)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._busy:
            self._deadline = _NEVER
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request was complete (it closes the connection); what follows is another protocol.
            self._stopped = True
        except httptools.HttpParserCallbackError as exc:
            self._parser_failed(exc.__context__)
            return
        except httptools.HttpParserError:
            self._parser_failed(None)
            return
        if self._held > self._limits.body_buffer and not self._reading_paused:
            self._update_reading()
        state = self._state
        if state == _IDLE:
            return
        if state == _HEAD:
            # Bytes httptools holds for a header line we have not seen yet; the exact check is in on_header.
            self._raw_head += len(data)
            if self._raw_head > 2 * self._max_head:
                self._reject(431, MSG_HEADERS_TOO_LARGE)
                return
        if not self._phase_timed and not self._busy:
            self._phase_timed = True
            limits = self._limits
            timeout = limits.header_timeout if state == _HEAD else limits.body_timeout
            self._set_deadline(self._loop.time() + timeout)

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._stopped:
            raise _Discard
        # _url and _headers were reset when the previous message completed
        self._state = _HEAD
        self._head_size = 0
        self._raw_head = 0
        self._current = None
        self._content_length = -1
        self._te = None
        self._expect = None
        self._host_count = 0
        self._connection_header = False
        self._close_after = False
        self._phase_timed = False
        if not self._busy:
            self._deadline = _NEVER

    def on_url(self, url: bytes) -> None:
        self._url += url
        size = self._head_size = self._head_size + len(url)
        if size > self._max_head:
            raise _Reject(431, MSG_HEADERS_TOO_LARGE)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._head_size = self._head_size + len(name) + len(value) + 4
        if size > self._max_head:
            raise _Reject(431, MSG_HEADERS_TOO_LARGE)
        if self._state != _HEAD:
            return  # a trailer field of a chunked body: counted, then dropped
        name = name.lower()
        self._headers.append((name, value))
        # The header count is checked in on_headers_complete; the size check above bounds memory until then.
        if name in _WATCHED:
            if name == b"content-length":
                try:
                    self._content_length = int(value)
                except ValueError:
                    raise _Reject(400, MSG_BAD_REQUEST) from None
            elif name == b"transfer-encoding":
                self._te = value if self._te is None else self._te + b"," + value
            elif name == b"host":
                self._host_count += 1
            elif name in _CONNECTION_NAMES:
                self._connection_header = True
            else:
                self._expect = value

    def on_headers_complete(self) -> None:
        self._state = _BODY
        if len(self._headers) > self._limits.max_headers:
            raise _Reject(431, MSG_HEADERS_TOO_LARGE)
        parser = self._parser
        # should_keep_alive() is only meaningful inside the callbacks.
        keep_alive = parser.should_keep_alive()
        # llhttp accepts only the versions 0.9, 1.0, 1.1 and 2.0, and keeps a request without a Connection (or
        # Proxy-Connection) header alive only when both version numbers are above zero: that is HTTP/1.1, known
        # without get_http_version() (which formats a new string for every request).
        version = "1.1" if keep_alive and not self._connection_header else parser.get_http_version()
        self._version = version
        if version != "1.1" and version != "1.0":
            raise _Reject(505, MSG_VERSION_UNSUPPORTED)
        if self._host_count != 1 and (self._host_count > 1 or version == "1.1"):
            raise _Reject(400, MSG_BAD_HOST)
        has_body = False
        if self._te is not None:
            # httptools already refuses Transfer-Encoding together with Content-Length.
            if version == "1.0":
                raise _Reject(400, MSG_BAD_REQUEST)
            if self._te.strip().lower() != b"chunked":
                raise _Reject(501, MSG_TE_UNSUPPORTED)
            has_body = True
        elif self._content_length > 0:
            if self._content_length > self._max_body:
                raise _Reject(413, MSG_BODY_TOO_LARGE)
            has_body = True
        if parser.should_upgrade():
            # httptools skips the body of an upgrade request, so one with a body cannot be served correctly.
            if has_body or parser.get_method() == b"CONNECT":
                raise _Reject(501, MSG_UPGRADE_UNSUPPORTED)
            self._close_after = True
        expect_continue = False
        if self._expect is not None:
            if self._expect.strip().lower() != b"100-continue":
                raise _Reject(417, MSG_EXPECTATION_FAILED)
            expect_continue = has_body and version == "1.1"
        # The handler gets the request now; its body follows on demand (read_body).
        keep_alive = keep_alive and not self._close_after
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        path, query = _split_target(self._url)
        request = Request(method, path, query, self._headers, b"", self._client_ip, version)
        request._conn = self
        if has_body:
            request._body_state = _BODY_READING
            request._taken = False
            request._continue = expect_continue
        self._current = request
        self._url = b""
        self._headers = []
        self._queue.append((request, keep_alive))
        if not self._busy:
            self._busy = True
            waiter = self._idle_waiter
            if waiter is not None:
                self._idle_waiter = None
                waiter.set_result(None)
            else:
                self._task = self._loop.create_task(self._respond())
        elif len(self._queue) >= _MAX_QUEUED and not self._reading_paused:
            self._update_reading()

    def on_body(self, body: bytes) -> None:
        request = self._current
        assert request is not None
        size = request._size + len(body)
        if size > self._max_body:
            raise _Reject(413, MSG_BODY_TOO_LARGE)
        request._size = size
        request._parts.append(body)
        if not request._taken:
            self._held += len(body)

    def on_message_complete(self) -> None:
        request = self._current
        self._current = None
        self._state = _IDLE
        if request is not None and request._body_state == _BODY_READING:
            parts = request._parts
            request.body = parts[0] if len(parts) == 1 else b"".join(parts)
            request._parts = []
            request._body_state = _BODY_DONE
            if self._body_waiter is not None:
                self._wake_body()
        if not self._parser.should_keep_alive() or self._close_after:
            self._stopped = True

    # request bodies

    async def read_body(self, request: Request) -> bytes:
        """The handler of ``request`` (the one being answered) asks for its body: from here on it is read."""
        self.take(request)
        if request._continue:
            request._continue = False
            self._write(_CONTINUE)  # the responses before this one are out: the interim answer cuts into none
        if request._body_state == _BODY_READING:
            self._set_deadline(self._loop.time() + self._limits.body_timeout)
            try:
                while request._body_state == _BODY_READING:
                    waiter: asyncio.Future[None] = asyncio.Future(loop=self._loop)  # see _respond
                    self._body_waiter = waiter
                    await waiter
            finally:
                self._body_waiter = None
                if self._busy and not self._write_paused:
                    self._deadline = _NEVER
        if request._body_error is not None:
            raise request._body_error
        return request.body

    def take(self, request: Request) -> None:
        """``request``'s body bytes are the handler's now: they no longer count against the buffer."""
        if not request._taken:
            request._taken = True
            self._held -= request._size
            if self._reading_paused:
                self._update_reading()

    def _release(self, request: Request) -> None:
        """A request is answered: its body no longer counts against the buffer, and an unfinished one is dropped (a
        complete one stays: a streamed response may still look at it)."""
        if not request._taken:
            request._taken = True
            self._held -= request._size
            request._parts = []

    def _fail_body(self, status: int, message: str) -> None:
        """The body being read cannot be: its handler gets the error, and no further input is parsed."""
        request = self._current
        assert request is not None
        self._stopped = True
        self._current = None
        request._body_state = _BODY_FAILED
        request._body_error = RequestBodyError(status, message)
        request._continue = False
        self._release(request)
        self._wake_body()

    def _wake_body(self) -> None:
        waiter = self._body_waiter
        if waiter is not None:
            self._body_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _update_reading(self) -> None:
        """Pause reading while too many requests wait or too many unread body bytes are held, else resume."""
        transport = self._transport
        if transport is None or self._closed:
            return
        pause = len(self._queue) >= _MAX_QUEUED or self._held > self._limits.body_buffer
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # errors and timeouts

    def _parser_failed(self, cause: BaseException | None) -> None:
        if isinstance(cause, _Reject):
            self._reject(cause.status, cause.message)
        elif isinstance(cause, _Discard):
            return
        elif cause is not None:
            logger.error(LOG_PARSER_FAILED, exc_info=cause)
            self._reject(500, MSG_INTERNAL)
        else:
            self._reject(400, MSG_BAD_BODY if self._current is not None else MSG_BAD_REQUEST)

    def _reject(self, status: int, message: str) -> None:
        """Answer the request being read with an error after any earlier responses, then close."""
        if self._current is not None:  # its head is with a handler already: the error goes to its read_body()
            self._fail_body(status, message)
            return
        self._stopped = True
        response = error_response(status, message)
        if self._busy:
            self._pending_error = response
            return
        self._send_error_and_close(response)

    def _send_error_and_close(self, response: Response) -> None:
        framing = b"content-length: %d\r\n" % len(response.body)
        head, _ = self._serialize_head(response.status, response.headers, framing, False, "1.1")
        if head is not None:
            self._write(head + response.body)
        self._linger()

    def _set_deadline(self, when: float) -> None:
        # The timer is only moved earlier, never later: when it fires early it re-arms itself for the current
        # deadline. So a keep-alive request costs one loop.time(), not a timer cancel and re-arm.
        self._deadline = when
        timer = self._timer
        if timer is None or self._timer_when > when:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(when, self._on_timer)
            self._timer_when = when

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = _NEVER
        deadline = self._deadline
        if deadline == _NEVER or self._closed:
            return
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_when = deadline
            return
        self._deadline = _NEVER
        if self._lingering:
            return
        if self._body_waiter is not None and self._current is not None:
            self._fail_body(408, MSG_BODY_TIMEOUT)
        elif self._busy:
            if self._write_paused and self._transport is not None:
                logger.debug("client read nothing for %.1f s; disconnecting", self._limits.send_timeout)
                self._transport.abort()
        elif self._state == _IDLE:
            self._close()
        else:
            self._reject(408, MSG_TIMEOUT)

    # responding

    async def _respond(self) -> None:
        """The connection's task: answer the queued requests in order, then wait for the next request."""
        queue = self._queue
        while True:
            try:
                while queue:
                    request, keep_alive = queue.popleft()
                    if self._reading_paused:
                        self._update_reading()
                    try:
                        response = await self._handler(request)
                    except RequestBodyError as exc:  # the handler let it through: answer it as the server's own
                        response = error_response(exc.status, exc.message)
                    except Exception:
                        logger.exception(LOG_HANDLER_FAILED, request.method, request.path)
                        response = error_response(500, MSG_INTERNAL)
                    except asyncio.CancelledError:
                        task = asyncio.current_task()
                        if self._closed or task is None or task.cancelling():
                            raise
                        # A CancelledError nobody asked for escaped the handler: a bug in it, not a disconnect.
                        logger.exception(LOG_HANDLER_FAILED, request.method, request.path)
                        response = error_response(500, MSG_INTERNAL)
                    if self._closed:
                        if isinstance(response, StreamingResponse):
                            await _close_iterator(response.body_iter)
                        return
                    if self._draining or request._body_state != _BODY_DONE:
                        keep_alive = False  # the rest of an unread or failed body cannot be told from a next request
                    self._release(request)
                    if isinstance(response, Response):
                        keep_alive = self._send(response, request, keep_alive)
                    elif isinstance(response, StreamingResponse):
                        keep_alive = await self._send_stream(response, request, keep_alive)
                    else:
                        logger.error(LOG_BAD_RESPONSE, request.method, request.path, response)
                        keep_alive = self._send(error_response(500, MSG_INTERNAL), request, keep_alive)
                    if not keep_alive:
                        if request._body_state == _BODY_DONE and self._state == _IDLE:
                            self._close()
                        else:
                            self._linger()  # the client may still be sending: drain, so it reads our answer
                        return
                    if self._write_paused:
                        await self._drain()
            except Exception:
                logger.exception(LOG_CONNECTION_FAILED)
                self._abort()
                return
            self._busy = False
            self._after_queue()
            if self._closed or self._lingering:
                return
            # With its loop given: Future() asks asyncio for the running loop, which on Python 3.11 is a getpid(2)
            # (fork check) per call; loop.create_future() adds uvloop's method call to the same Future(loop=...)
            waiter: asyncio.Future[None] = asyncio.Future(loop=self._loop)
            self._idle_waiter = waiter
            await waiter  # on_headers_complete sets _busy and wakes it; connection_lost cancels the task

    def _after_queue(self) -> None:
        if self._closed:
            return
        if self._pending_error is not None:
            response, self._pending_error = self._pending_error, None
            self._send_error_and_close(response)
            return
        if self._reading_paused:
            self._update_reading()
        state = self._state
        limits = self._limits
        if state == _IDLE:
            timeout = limits.keepalive_timeout
        else:
            timeout = limits.header_timeout if state == _HEAD else limits.body_timeout
            self._phase_timed = True
        self._set_deadline(self._loop.time() + timeout)

    def _send(self, response: Response, request: Request, keep_alive: bool) -> bool:
        status = response.status
        body = response.body
        if status in _NO_BODY:
            framing = b""
            body = b""
        else:
            framing = b"content-length: %d\r\n" % len(body)
            if request.method == "HEAD":
                body = b""
        head, keep_alive = self._serialize_head(status, response.headers, framing, keep_alive, request.http_version)
        if head is None:
            logger.error(LOG_BAD_RESPONSE, request.method, request.path, response)
            return self._send(error_response(500, MSG_INTERNAL), request, keep_alive)
        if len(body) > _LARGE_BODY:
            self._write(head)
            self._write(body)
        else:
            self._write(head + body)
        return keep_alive

    async def _send_stream(self, response: StreamingResponse, request: Request, keep_alive: bool) -> bool:
        status = response.status
        body_iter = response.body_iter
        length = response.content_length
        version = request.http_version
        if request.method == "HEAD" or status in _NO_BODY:
            framing = b"content-length: %d\r\n" % length if length is not None and status not in _NO_BODY else b""
            head, keep_alive = self._serialize_head(status, response.headers, framing, keep_alive, version)
            await _close_iterator(body_iter)
            if head is None:
                logger.error(LOG_BAD_RESPONSE, request.method, request.path, response)
                return self._send(error_response(500, MSG_INTERNAL), request, keep_alive)
            self._write(head)
            return keep_alive

        chunked = False
        if length is not None:
            framing = b"content-length: %d\r\n" % length
        elif version == "1.1":
            framing = _TE_CHUNKED
            chunked = True
        else:
            framing = b""
            keep_alive = False  # close-delimited
        head, keep_alive = self._serialize_head(status, response.headers, framing, keep_alive, version)
        if head is None:
            await _close_iterator(body_iter)
            logger.error(LOG_BAD_RESPONSE, request.method, request.path, response)
            return self._send(error_response(500, MSG_INTERNAL), request, keep_alive)

        # The head waits in the write buffer for the first chunk and leaves with it at once (one write, and the
        # client's first byte is not held back by whatever the iterator does next). Later chunks are buffered
        # until the next loop iteration at the latest, so chunks that are ready together leave in one write.
        self._flushed = False
        self._buffer(head)
        sent = 0
        try:
            async for chunk in body_iter:
                if not chunk:
                    continue
                size = len(chunk)
                sent += size
                if chunked:
                    self._buffer(b"%x\r\n%b\r\n" % (size, chunk))
                elif length is not None and sent > length:
                    logger.error(LOG_LENGTH_MISMATCH, request.method, request.path, length)
                    self._flush()
                    return False
                else:
                    self._buffer(chunk)
                if not self._flushed or self._wbuf_size >= _FLUSH_SIZE or self._write_paused:
                    self._flush()
                    if self._write_paused:
                        await self._drain()
        except Exception:
            logger.exception(LOG_STREAM_FAILED, request.method, request.path)
            if not self._flushed:
                self._discard_buffer()
                return self._send(error_response(500, MSG_INTERNAL), request, keep_alive)
            self._flush()
            return False  # closing without the end of the body tells the client the response is incomplete
        finally:
            await _close_iterator(body_iter)
        if chunked:
            self._buffer(_CHUNKED_END)
        elif length is not None and sent != length:
            logger.error(LOG_LENGTH_MISMATCH, request.method, request.path, length)
            self._flush()
            return False
        self._flush()
        return keep_alive

    def _serialize_head(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        framing: bytes,
        keep_alive: bool,
        version: str,
    ) -> tuple[bytes | None, bool]:
        """Build the status line and header block; ``None`` when the status or a handler header is not valid."""
        if not 200 <= status <= 999:
            return None, keep_alive  # interim (1xx) answers are the server's business, not a handler's
        parts = [_STATUS_LINES.get(status) or _status_line(status)]
        lines = 1
        for name, value in headers:
            lname = name.lower()
            if lname in SERVER_OWNED:
                if lname == b"connection" and has_token(value, b"close"):
                    keep_alive = False
                continue
            parts += (name, b": ", value, b"\r\n")
            lines += 1
        try:
            head = b"".join(parts)
        except TypeError:
            return None, keep_alive
        # A CR or LF inside a handler's name or value would split the response: refuse it.
        if head.count(b"\n") != lines or head.count(b"\r") != lines:
            return None, keep_alive
        if not keep_alive:
            connection = _CONNECTION_CLOSE
        elif version == "1.0":
            connection = _CONNECTION_KEEP_ALIVE
        else:
            connection = b""
        return b"".join((head, framing, connection, b"\r\n")), keep_alive

    # writing

    def _write(self, data: bytes) -> None:
        if not self._closed and not self._lingering and self._transport is not None:
            self._transport.write(data)

    def _buffer(self, data: bytes) -> None:
        self._wbuf.append(data)
        self._wbuf_size += len(data)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        self._flush()

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        wbuf = self._wbuf
        if not wbuf:
            return
        data = wbuf[0] if len(wbuf) == 1 else b"".join(wbuf)
        wbuf.clear()
        self._wbuf_size = 0
        self._flushed = True
        self._write(data)

    def _discard_buffer(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._wbuf.clear()
        self._wbuf_size = 0

    async def _drain(self) -> None:
        if not self._write_paused or self._closed:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiter = waiter
        await waiter

    def shutdown(self) -> None:
        """Close now if idle, else after the response in progress; no further request is read."""
        self._draining = True
        self._stopped = True
        if not self._busy:
            self._close()

    def abort(self) -> None:
        self._abort()

    def _linger(self) -> None:
        """Close after the client has stopped sending (or ``linger_timeout``): the output side is shut now, input is
        read and dropped. Closing with unread input would reset the connection, and the client could lose the
        answer it was sent (RFC 9112 section 9.6)."""
        self._stopped = True
        transport = self._transport
        if self._closed or self._lingering or transport is None:
            return
        self._flush()
        if not transport.can_write_eof():
            self._close()
            return
        self._lingering = True
        self._deadline = _NEVER
        transport.write_eof()
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        self._linger_handle = self._loop.call_later(self._limits.linger_timeout, self._close)

    def _close(self) -> None:
        self._stopped = True
        if not self._closed and self._transport is not None:
            self._closed = True
            self._transport.close()

    def _abort(self) -> None:
        self._stopped = True
        if not self._closed and self._transport is not None:
            self._closed = True
            self._transport.abort()


def _split_target(url: bytes) -> tuple[str, str]:
    """Split a request target into the raw path and the raw query (without ``?`` or any fragment)."""
    # Split as str: latin-1 maps byte for byte, and ``in`` on bytes tries the needle as an int first (a TypeError
    # formatted and cleared, about 2 k instructions per test).
    target = url.decode("latin-1")
    if "#" in target:
        target = target.partition("#")[0]
    if target[:1] != "/" and target != "*":
        # absolute-form (``http://host/path?q``), as a forward proxy would receive it
        try:
            parsed: Any = httptools.parse_url(target.encode("latin-1"))
        except httptools.HttpParserInvalidURLError:  # found by the fuzz battery: was a 500 and a traceback
            raise _Reject(400, MSG_BAD_REQUEST) from None
        path = parsed.path or b"/"
        query = parsed.query or b""
        return path.decode("latin-1"), query.decode("latin-1")
    path, _, query = target.partition("?")
    return path, query
