"""Upstream HTTP/1.1 client for the data plane: a keep-alive connection pool on uvloop + httptools.

``UpstreamPool.request()`` sends one request (head and body in one write) over a pooled connection and returns an
``UpstreamResponse`` as soon as the response head has arrived; its body is then read whole (``read()``) or chunk by
chunk as it arrives (``async for``). Connections are kept per ``Origin`` in LIFO order and reused when the previous
response was complete and both sides allow keep-alive.

Failure mapping: DNS, connect and TLS failures, and a fresh connection reset before any response byte, raise
``UpstreamConnectError`` (the gateway answers 502); connect and read timeouts raise ``UpstreamTimeout`` (504); a
malformed or truncated response raises ``UpstreamProtocolError`` (502). A pooled connection found closing before the
request is written is skipped (nothing was sent). One that closes after the request was written but before any
response byte arrives is retried once on a fresh connection only for an idempotent method: the upstream may have
read and acted on the request, so a POST is never sent twice (``UpstreamConnectError`` instead).

The read timeout runs between received bytes, not over the whole response, so long model streams live. A slow
consumer pauses the upstream socket (a high-water mark on the buffered body), and a cancelled request closes
its connection so the upstream sees the disconnect at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

from gateway.http.headers import (
    CLIENT_OWNED,
    SERVER_OWNED,
    connection_options,
    find_header,
    has_token,
    strip_hop_by_hop,
)

__all__ = (
    "Origin",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "UpstreamTimeout",
)

MSG_CONNECT_FAILED: Final = "cannot connect to {origin}: {error}"
MSG_CONNECT_TIMEOUT: Final = "timed out connecting to {origin}"
MSG_RESET_BEFORE_RESPONSE: Final = "{origin} closed the connection before sending a response"
MSG_RESET_NOT_RETRIED: Final = (
    "{origin} closed a reused connection after the request was written; {method} is not idempotent, not retried"
)
MSG_READ_TIMEOUT: Final = "{origin} sent nothing for {timeout:g} s"
MSG_HEAD_TIMEOUT: Final = "{origin} sent no response head within {timeout:g} s"
MSG_CLOSED_EARLY: Final = "{origin} closed the connection before the response was complete"
MSG_MALFORMED: Final = "malformed response from {origin}: {error}"
MSG_UNEXPECTED_UPGRADE: Final = "unexpected protocol switch"
MSG_HEAD_TOO_LARGE: Final = "response head too large"
MSG_POOL_CLOSED: Final = "the upstream pool is closed"
MSG_BAD_URL: Final = "invalid upstream URL {url!r}: {reason}"
MSG_BAD_METHOD: Final = "invalid HTTP method {method!r}"
MSG_BAD_TARGET: Final = "invalid request target {target!r}"
MSG_BAD_HEADER: Final = "invalid request header (CR or LF in a name or value)"

#: Buffered body bytes above which the upstream socket stops being read; reading resumes once the consumer has
#: taken them (every read takes all that is buffered).
HIGH_WATER: Final = 256 * 1024

_NEVER: Final = float("inf")
_MAX_HEAD_BYTES: Final = 256 * 1024  # a response head bigger than this is refused
_LARGE_BODY: Final = 256 * 1024  # above this a request body is written apart from its head

#: Response headers that never reach the caller: hop-by-hop and framing (``content_length`` carries the length).
_RESPONSE_DROP: Final = SERVER_OWNED
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_CONNECTION_PLAIN: Final = frozenset({b"keep-alive", b"close"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_TARGET: Final = re.compile(r"[\x00-\x20\x7f\u0100-\U0010ffff]")  # CTLs, space, beyond latin-1
_KNOWN_METHODS: Final = {
    method: method.encode("ascii") for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
}
#: Request targets already checked, with their encoding: a backend's targets repeat, and the check (a regular
#: expression over every character) costs more than the rest of the request line. Filled up to a bound and then
#: left as it is, so targets made from request data cannot grow it.
_checked_targets: dict[str, bytes] = {}
_CHECKED_TARGETS_MAX: Final = 1024
_CHECKED_TARGET_MAX_LENGTH: Final = 256
#: RFC 9110 section 9.2.2: sending one of these twice has the effect of sending it once
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


#
# Errors
#


class UpstreamError(Exception):
    """The upstream call failed."""


class UpstreamConnectError(UpstreamError):
    """DNS, connect or TLS failure, or a fresh connection reset before any response byte."""


class UpstreamTimeout(UpstreamError):
    """Connecting took longer than ``connect_timeout``, or nothing arrived for ``read_timeout``."""


class UpstreamProtocolError(UpstreamError):
    """The upstream response was malformed or cut short."""


class _StaleConnection(Exception):
    """The connection closed before any byte of the response arrived."""


class _HeadResponseEnd(Exception):
    """Raised from on_headers_complete to end a response to HEAD (httptools cannot skip its body)."""


class _ExtraMessage(Exception):
    """Raised from on_message_begin when bytes follow a complete response."""


#
# Origin
#


@dataclass(frozen=True, slots=True)
class Origin:
    """Scheme, host and port of an upstream: the key of the connection pool."""

    scheme: str  # "http" | "https"
    host: str  # lower-case; an IPv6 address without brackets
    port: int
    _host_header: bytes = field(init=False, repr=False, compare=False)
    #: ``scheme://host:port``: the pool's dict key (a str caches its hash; the dataclass hash is Python code)
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        object.__setattr__(self, "key", f"{self.scheme}://{host}:{self.port}")
        if self.port != _DEFAULT_PORTS.get(self.scheme):
            host = f"{host}:{self.port}"
        object.__setattr__(self, "_host_header", host.encode("idna" if not host.isascii() else "ascii"))

    @classmethod
    def from_url(cls, url: str) -> tuple[Origin, str]:
        """Split a backend URL into its origin and its base path without a trailing ``/``.

        Raises ``ValueError`` for anything but an absolute ``http``/``https`` URL with a host and no user info,
        query or fragment.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(MSG_BAD_URL.format(url=url, reason=exc)) from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(MSG_BAD_URL.format(url=url, reason="scheme must be http or https"))
        host = parts.hostname
        if not host:
            raise ValueError(MSG_BAD_URL.format(url=url, reason="no host"))
        if parts.username is not None or parts.password is not None:
            raise ValueError(MSG_BAD_URL.format(url=url, reason="user info is not supported"))
        if parts.query or parts.fragment:
            raise ValueError(MSG_BAD_URL.format(url=url, reason="query and fragment are not supported"))
        if _BAD_TARGET.search(parts.path):
            raise ValueError(MSG_BAD_URL.format(url=url, reason="invalid characters in the path"))
        origin = cls(scheme, host, port if port is not None else _DEFAULT_PORTS[scheme])
        return origin, parts.path.rstrip("/")

    @property
    def host_header(self) -> bytes:
        """The Host header value: ``host``, or ``host:port`` when the port is not the scheme's default."""
        return self._host_header

    def __str__(self) -> str:
        return f"{self.scheme}://{self._host_header.decode('ascii')}"


#
# Response
#


class UpstreamResponse:
    """An upstream response whose head has arrived; the body is read with ``read()`` or ``async for``.

    The connection goes back to the pool as soon as the body has been read to the end; ``aclose()`` (or leaving
    ``async with``) releases it otherwise: back to the pool when the message was complete, else closed.
    """

    __slots__ = ("_conn", "_released", "content_length", "headers", "reason", "status")

    def __init__(self, conn: _UpstreamConnection) -> None:
        self._conn = conn
        self._released = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None

    def header(self, name: bytes) -> bytes | None:
        """Return the first value of header ``name`` (given lower-case), or ``None``."""
        return find_header(self.headers, name)

    async def read(self) -> bytes:
        """Read the whole body."""
        conn = self._conn
        if not self._released and conn.done and conn.error is None:
            self._released = True
            return conn.take_rest()
        return b"".join([chunk async for chunk in self])

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        """Return the body bytes received so far and not yet returned, waiting only when there are none."""
        conn = self._conn
        while True:
            if self._released:
                raise StopAsyncIteration
            if conn.buffered:
                return conn.take_buffered()
            if conn.error is not None:
                self._discard()
                raise conn.error
            if conn.done:
                self._release()
                raise StopAsyncIteration
            await conn.wait()

    async def aclose(self) -> None:
        """Release the connection: back to the pool if the message is complete, else closed."""
        if self._released:
            return
        conn = self._conn
        if conn.done and conn.error is None:
            conn.take_buffered()
            self._release()
        else:
            self._discard()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._conn.finish()

    def _discard(self) -> None:
        if not self._released:
            self._released = True
            self._conn.abort()

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status} content_length={self.content_length}>"


#
# Connection
#


class _UpstreamConnection(asyncio.Protocol):
    """One upstream connection and the state of the response it is reading."""

    __slots__ = (
        "_chunked",
        "_connection",
        "_head_bytes",
        "_head_deadline",
        "_head_timeout",
        "_interim",
        "_is_head",
        "_last_activity",
        "_parser",
        "_pool",
        "_read_timeout",
        "_reason",
        "_received",
        "_timer",
        "_timer_when",
        "_transport",
        "_waiter",
        "buffered",
        "chunks",
        "closed",
        "content_length",
        "done",
        "error",
        "head_done",
        "headers",
        "idle_since",
        "keep_alive",
        "loop",
        "on_body",
        "origin",
        "paused",
        "response",
    )

    def __init__(self, pool: UpstreamPool, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self.origin = origin
        self.loop = loop
        self._read_timeout = pool.read_timeout
        self._transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []
        # httptools' body callback: the list's own append, no Python frame per body piece (a chunked stream sends
        # one per event, all in one read); ``data_received`` counts the bytes and wakes the reader after the feed
        self.on_body = self.chunks.append
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = _NEVER
        # the request's timeout for the response head (UpstreamPool.request), as a loop time, and in seconds
        self._head_deadline = _NEVER
        self._head_timeout = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._last_activity = 0.0
        self.paused = False
        self.buffered = 0
        self.response: UpstreamResponse | None = None
        self._is_head = False
        self._received = False
        self._interim = False
        self._head_bytes = 0
        self.head_done = False
        self.done = False
        self.keep_alive = False
        self.error: BaseException | None = None
        # reset by on_message_begin
        self._reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self._connection: bytes | None = None
        self._chunked = False
        self.content_length: int | None = None

    # pool-facing API

    def send(self, data: bytes, is_head: bool, deadline: float = _NEVER, timeout: float = 0.0) -> UpstreamResponse:
        """Write a serialized request; the response fills in as it arrives. Its head must have arrived by the loop
        time ``deadline`` (``timeout`` seconds after the request began), else the wait fails with UpstreamTimeout."""
        transport = self._transport
        assert transport is not None
        response = UpstreamResponse(self)
        self.response = response
        self._is_head = is_head
        self._received = False
        self._interim = False
        self._head_bytes = 0
        self.head_done = False
        self.done = False
        self.keep_alive = False
        self.error = None
        self._head_deadline = deadline
        self._head_timeout = timeout
        if len(data) > _LARGE_BODY:
            head_end = data.index(b"\r\n\r\n") + 4
            transport.write(data[:head_end])
            transport.write(data[head_end:])
        else:
            transport.write(data)
        self._last_activity = self.loop.time()
        return response

    def waiter(self) -> asyncio.Future[None]:
        """A future resolved when more of the response (or its end, or an error) arrives."""
        # With its loop given: Future() asks asyncio for the running loop, which on Python 3.11 is a getpid(2)
        # (fork check) per call; loop.create_future() adds uvloop's method call to the same Future(loop=...)
        waiter: asyncio.Future[None] = asyncio.Future(loop=self.loop)
        self._waiter = waiter
        if self._timer is None or (self._head_deadline < self._timer_when and not self.head_done):
            self._arm()
        return waiter

    def _arm(self) -> None:
        """Set the timer for the first of the read timeout and the head's deadline. It is only ever moved earlier;
        firing early, it re-arms itself (``_on_timer``): so a request with a timeout costs no timer of its own."""
        if self.closed:
            return
        when = self._last_activity + self._read_timeout
        if not self.head_done and self._head_deadline < when:
            when = self._head_deadline
        timer = self._timer
        if timer is not None:
            if self._timer_when <= when:
                return
            timer.cancel()
        self._timer = self.loop.call_at(when, self._on_timer)
        self._timer_when = when

    async def wait(self) -> None:
        """Wait for more of the response; a cancelled wait closes the connection."""
        try:
            await self.waiter()
        except asyncio.CancelledError:
            self.abort()
            raise

    def take_buffered(self) -> bytes:
        chunks = self.chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.paused:
            self.paused = False
            self._last_activity = self.loop.time()
            if not self.closed and self._transport is not None:
                self._transport.resume_reading()
        return data

    def take_rest(self) -> bytes:
        """The response is complete: its body bytes not taken yet; the connection goes back to the pool (or is
        closed). ``take_buffered()`` then ``finish()``, for the common case of a body read whole (``finish`` resumes
        a paused read through the pool)."""
        chunks = self.chunks
        data = (chunks[0] if len(chunks) == 1 else b"".join(chunks)) if chunks else b""
        self.finish()
        return data

    def finish(self) -> None:
        """The response was read to its end: go back to the pool, or close."""
        self.response = None
        self.chunks.clear()
        self.buffered = 0
        if self.keep_alive and not self.closed:
            self._pool.release(self)
        else:
            self.close()

    def closing(self) -> bool:
        transport = self._transport
        return transport is None or transport.is_closing()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.close()

    def abort(self) -> None:
        self.keep_alive = False
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.abort()

    def resume(self) -> None:
        """Read again after a pause for a slow consumer (the connection is going back to the pool)."""
        self.paused = False
        if self._transport is not None:
            self._transport.resume_reading()

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_when = _NEVER
        if self.response is not None and not self.done and self.error is None:
            if not self._received:
                self.error = _StaleConnection()
            elif self.head_done and self.content_length is None and not self._chunked and not self._is_head:
                self.done = True  # a close-delimited body ends here
            else:
                self.error = UpstreamProtocolError(MSG_CLOSED_EARLY.format(origin=self.origin))
        self.keep_alive = False
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost settles the response

    def data_received(self, data: bytes) -> None:
        if self.response is None:
            self.close()  # bytes on an idle connection: it cannot be trusted with a request
            return
        if self.done:
            self.keep_alive = False  # bytes after the end of the response
            return
        self._received = True
        self._last_activity = self.loop.time()
        if not self.head_done:
            self._head_bytes += len(data)
            if self._head_bytes > _MAX_HEAD_BYTES:
                self._fail(UpstreamProtocolError(MSG_MALFORMED.format(origin=self.origin, error=MSG_HEAD_TOO_LARGE)))
                return
        chunks = self.chunks
        had = len(chunks)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadResponseEnd):
                self._end_head_response(data)
            elif isinstance(cause, _ExtraMessage):
                self.keep_alive = False
            else:
                self._fail(UpstreamProtocolError(MSG_MALFORMED.format(origin=self.origin, error=cause or exc)))
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError(MSG_MALFORMED.format(origin=self.origin, error=MSG_UNEXPECTED_UPGRADE)))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(MSG_MALFORMED.format(origin=self.origin, error=exc)))
        if len(chunks) > had:  # body bytes came (``on_body`` is ``chunks.append``)
            self.buffered += sum(map(len, chunks[had:])) if had else sum(map(len, chunks))
            if self.buffered > HIGH_WATER and not self.paused and not self.closed and self._transport is not None:
                self.paused = True  # (a read that failed has aborted the transport already: nothing to pause)
                self._transport.pause_reading()
            if self._waiter is not None:
                self._wake()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.done:
            raise _ExtraMessage
        self._reason = b""
        self.headers = []
        self._connection = None
        self._chunked = False
        self.content_length = None

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:
            return  # a trailer field of a chunked body: dropped
        name = name.lower()
        if name in _RESPONSE_DROP:
            if name == b"content-length":
                self.content_length = int(value)
            elif name == b"transfer-encoding":
                self._chunked = has_token(value, b"chunked")
            elif name == b"connection":
                self._connection = value if self._connection is None else self._connection + b"," + value
            return
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                raise httptools.HttpParserError(MSG_UNEXPECTED_UPGRADE)
            self._interim = True  # 100 Continue, 103 Early Hints: skipped
            return
        response = self.response
        assert response is not None
        headers = self.headers
        connection = self._connection
        if connection is not None and connection.lower() not in _CONNECTION_PLAIN:
            listed = connection_options(connection)
            if listed:
                headers = [(name, value) for name, value in headers if name not in listed]
        response.status = status
        response.reason = self._reason
        response.headers = headers
        response.content_length = None if status == 204 else self.content_length
        self.head_done = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._is_head:
            raise _HeadResponseEnd

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.done = True
        self.keep_alive = self._parser.should_keep_alive()  # only meaningful inside the callbacks
        if self._waiter is not None:
            self._wake()

    # internals

    def _end_head_response(self, data: bytes) -> None:
        # httptools stopped at the end of the head; a fresh parser takes the next response. The connection is
        # reused only when the head ended exactly at the end of the read (nothing unexplained follows it).
        version = self._parser.get_http_version()
        connection = self._connection or b""
        keep_alive = not has_token(connection, b"close") if version == "1.1" else has_token(connection, b"keep-alive")
        self._parser = httptools.HttpResponseParser(self)
        self.done = True
        self.keep_alive = keep_alive and data.endswith(b"\r\n\r\n")
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _on_timer(self) -> None:
        # Armed at most once at a time; it re-arms itself while bytes keep arriving and requests keep being
        # answered, so a busy connection costs one timer per read_timeout (or request timeout), not one per wait.
        self._timer = None
        self._timer_when = _NEVER
        if self._waiter is None or self.closed:
            return
        now = self.loop.time()
        if not self.head_done and now >= self._head_deadline:
            self._fail(UpstreamTimeout(MSG_HEAD_TIMEOUT.format(origin=self.origin, timeout=self._head_timeout)))
        elif now < self._last_activity + self._read_timeout:
            self._arm()
        else:
            self._fail(UpstreamTimeout(MSG_READ_TIMEOUT.format(origin=self.origin, timeout=self._read_timeout)))


#
# Pool
#


class UpstreamPool:
    """Keep-alive connections per origin (LIFO), shared by all requests of a gateway process."""

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        max_idle_per_origin: int = 512,
        max_origins: int = 256,
        idle_ttl: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle_per_origin = max_idle_per_origin
        #: origins with idle connections kept at most; origins come from request data (a ``base-url``
        #: expression), so a new one beyond this evicts the idle connections of the oldest (see ``_add_origin``)
        self.max_origins = max_origins
        self.idle_ttl = idle_ttl
        self._ssl_context = ssl_context
        self._idle: dict[str, list[_UpstreamConnection]] = {}  # by Origin.key
        self._closed = False
        #: counters: connections ``opened``, requests sent on a ``reused`` connection, stale connections ``retried``,
        #: origins whose idle connections were ``evicted`` to stay within ``max_origins``
        self.stats: dict[str, int] = {"opened": 0, "reused": 0, "retried": 0, "evicted": 0}

    async def request(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        *,
        timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send a request and return once the response head has arrived.

        ``target`` is the path plus ``"?" + query`` when there is one. The pool writes Host (from the origin) and
        Content-Length; any Host, hop-by-hop or framing header in ``headers`` is dropped. With ``timeout``, the head
        must have arrived that many seconds after the call (connecting, writing and waiting), else
        ``UpstreamTimeout`` and the connection is closed; the body's reads have ``read_timeout`` only.
        """
        if self._closed:
            raise UpstreamConnectError(MSG_POOL_CLOSED)
        data = _serialize_request(origin, method, target, headers, body)
        is_head = method == "HEAD"
        conn = self._take_idle(origin.key)
        reused = conn is not None
        # The timeout is checked by the connection's own timer (see _UpstreamConnection._arm), not by a timer of
        # its own: asyncio.timeout() costs about 29 k instructions per request. A pooled connection's loop is the
        # running one; asyncio.get_running_loop() is a getpid(2) per call on Python 3.11.
        deadline = _NEVER
        if timeout is not None:
            deadline = (conn.loop if conn is not None else asyncio.get_running_loop()).time() + timeout
        head_timeout = 0.0 if timeout is None else timeout
        if conn is None:
            conn = await self._connect(origin, deadline)
        else:
            self.stats["reused"] += 1
        while True:
            response = conn.send(data, is_head, deadline, head_timeout)
            while not conn.head_done and conn.error is None:
                try:
                    await conn.waiter()
                except asyncio.CancelledError:
                    conn.abort()  # the upstream sees the disconnect at once
                    raise
            if conn.head_done:
                return response
            error = conn.error
            if not isinstance(error, _StaleConnection):
                assert error is not None
                raise error
            if not reused:
                raise UpstreamConnectError(MSG_RESET_BEFORE_RESPONSE.format(origin=origin)) from None
            if method not in _IDEMPOTENT:  # the upstream may have read it: never send a POST twice
                raise UpstreamConnectError(MSG_RESET_NOT_RETRIED.format(origin=origin, method=method)) from None
            # A pooled connection the upstream had closed: once more on a fresh one.
            self.stats["retried"] += 1
            reused = False
            conn = await self._connect(origin, deadline)

    async def close(self) -> None:
        """Close the idle connections; connections in use are closed when their response is released."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def idle_count(self, origin: Origin) -> int:
        """Number of idle pooled connections to ``origin``."""
        return len(self._idle.get(origin.key, ()))

    def origin_count(self) -> int:
        """Number of origins the pool keeps an entry for (at most ``max_origins``)."""
        return len(self._idle)

    # connection bookkeeping

    def release(self, conn: _UpstreamConnection) -> None:
        if self._closed or conn.closed:
            conn.close()
            return
        key = conn.origin.key
        idle = self._idle.get(key)
        if idle is None:
            idle = self._add_origin(key)
        elif len(idle) >= self.max_idle_per_origin:
            conn.close()
            return
        now = conn.loop.time()
        conn.idle_since = now
        if conn.paused:
            conn.resume()
        idle.append(conn)
        if now - idle[0].idle_since > self.idle_ttl:
            idle.pop(0).close()  # LIFO leaves the oldest at the bottom: expire it lazily

    def _add_origin(self, key: str) -> list[_UpstreamConnection]:
        # Off the hot path: only a connection to an origin without an entry gets here. Entries left empty by
        # _take_idle/forget stay (a busy origin empties and refills its list every request) until room is needed.
        idle_map = self._idle
        if len(idle_map) >= self.max_origins:
            for old in [k for k, conns in idle_map.items() if not conns]:
                del idle_map[old]
            while len(idle_map) >= self.max_origins:  # the least recently added origin loses its idle connections
                oldest = next(iter(idle_map))
                for conn in idle_map.pop(oldest):
                    conn.close()
                self.stats["evicted"] += 1
        idle: list[_UpstreamConnection] = []
        idle_map[key] = idle
        return idle

    def forget(self, conn: _UpstreamConnection) -> None:
        idle = self._idle.get(conn.origin.key)
        if idle:
            with contextlib.suppress(ValueError):
                idle.remove(conn)

    def _take_idle(self, key: str) -> _UpstreamConnection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        conn = idle.pop()
        now = conn.loop.time()
        ttl = self.idle_ttl
        # closing: the upstream's FIN was seen while idle (connection_lost has not run yet); nothing is written to it
        while conn.closed or conn.closing() or now - conn.idle_since > ttl:
            conn.close()
            if not idle:
                return None
            conn = idle.pop()
        return conn

    async def _connect(self, origin: Origin, deadline: float = _NEVER) -> _UpstreamConnection:
        loop = asyncio.get_running_loop()
        limit = self.connect_timeout
        if deadline != _NEVER:
            limit = min(limit, deadline - loop.time())  # the request's timeout covers its connect as well
        context: ssl.SSLContext | None = None
        if origin.scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            context = self._ssl_context

        def factory() -> _UpstreamConnection:
            return _UpstreamConnection(self, origin, loop)

        try:
            async with asyncio.timeout(limit):
                _, conn = await loop.create_connection(
                    factory,
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                )
        except TimeoutError:
            raise UpstreamTimeout(MSG_CONNECT_TIMEOUT.format(origin=origin)) from None
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            raise UpstreamConnectError(MSG_CONNECT_FAILED.format(origin=origin, error=exc)) from exc
        self.stats["opened"] += 1
        return conn


def _serialize_request(
    origin: Origin, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    raw_method = _KNOWN_METHODS.get(method)
    if raw_method is None:
        if not _TOKEN.fullmatch(method):
            raise ValueError(MSG_BAD_METHOD.format(method=method))
        raw_method = method.encode("ascii")
    raw_target = _checked_targets.get(target) or _check_target(target)
    parts = [
        raw_method,
        b" ",
        raw_target,
        b" HTTP/1.1\r\nhost: ",
        origin._host_header,
        b"\r\n",
    ]
    lines = 2
    listed = False
    for name, value in headers:
        lname = name.lower()
        if lname in CLIENT_OWNED:
            listed = listed or lname == b"connection"
            continue
        parts += (name, b": ", value, b"\r\n")
        lines += 1
    if listed:
        # Rare: the caller passed a Connection header; the names it lists are hop-by-hop too.
        del parts[6:]
        lines = 2
        for name, value in strip_hop_by_hop(headers, CLIENT_OWNED):
            parts += (name, b": ", value, b"\r\n")
            lines += 1
    if body or method in _BODY_METHODS:
        parts.append(b"content-length: %d\r\n" % len(body))
        lines += 1
    parts.append(b"\r\n")
    lines += 1
    head = b"".join(parts)
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise ValueError(MSG_BAD_HEADER)
    return head + body if body else head


def _check_target(target: str) -> bytes:
    if not target or _BAD_TARGET.search(target):
        raise ValueError(MSG_BAD_TARGET.format(target=target))
    raw = target.encode("latin-1")
    if len(_checked_targets) < _CHECKED_TARGETS_MAX and len(target) <= _CHECKED_TARGET_MAX_LENGTH:
        _checked_targets[target] = raw
    return raw
