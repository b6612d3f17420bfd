"""The HTTP messages the server hands to its handler and takes back: ``Request``, ``Response``, ``StreamingResponse``.

Kept apart from the server so that code which only builds or reads messages (policies, the pipeline, tests) does
not import the connection machinery.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final, Protocol

from gateway.http.headers import find_header

__all__ = ("BodySource", "Request", "RequestBodyError", "Response", "StreamingResponse")

# Request body states (the server's connection moves a request through them)
BODY_READING: Final = 0
BODY_DONE: Final = 1
BODY_FAILED: Final = 2


class BodySource(Protocol):
    """The connection a server-made request reads its body from."""

    def take(self, request: Request) -> None: ...

    async def read_body(self, request: Request) -> bytes: ...


class RequestBodyError(Exception):
    """The request body cannot be read: too large (413), malformed framing (400) or too slow (408)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    """One HTTP request as handed to the handler: the head, and ``body`` once ``read_body()`` has returned.

    A Request built by hand (tests, tools) carries its whole body already; one from the server reads it on demand.
    """

    __slots__ = (
        "_body_error",
        "_body_state",
        "_conn",
        "_continue",
        "_parts",
        "_size",
        "_taken",
        "body",
        "client_ip",
        "headers",
        "http_version",
        "method",
        "path",
        "query",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        client_ip: str,
        http_version: str,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.client_ip = client_ip
        self.http_version = http_version
        self._conn: BodySource | None = None
        self._body_state = BODY_DONE
        self._body_error: RequestBodyError | None = None
        self._parts: list[bytes] = []
        self._size = len(body)  # body bytes received so far
        self._taken = True  # False while the connection holds body bytes the handler has not asked for
        self._continue = False  # Expect: 100-continue, not answered yet

    @property
    def body_complete(self) -> bool:
        """Whether ``body`` holds the whole body (always, once ``read_body()`` has returned)."""
        return self._body_state == BODY_DONE

    async def read_body(self) -> bytes:
        """Read the whole body (also into ``body``); raises ``RequestBodyError`` when it cannot be read."""
        if self._body_state == BODY_DONE:
            if not self._taken and self._conn is not None:
                self._conn.take(self)
            return self.body
        assert self._conn is not None
        return await self._conn.read_body(self)

    def header(self, name: bytes) -> bytes | None:
        """Return the first value of header ``name`` (given lower-case), or ``None``."""
        return find_header(self.headers, name)

    def __repr__(self) -> str:
        target = f"{self.path}?{self.query}" if self.query else self.path
        return f"<Request {self.method} {target} HTTP/{self.http_version} from {self.client_ip}>"


class Response:
    """A complete response. The server adds Content-Length (except for 204 and 304) and drops any framing or
    hop-by-hop header given; for HEAD it keeps Content-Length and sends no body bytes."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b"") -> None:
        self.status = status
        self.headers: list[tuple[bytes, bytes]] = headers if headers is not None else []
        self.body = body

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)} bytes>"


class StreamingResponse:
    """A response whose body is produced incrementally (SSE passthrough).

    With ``content_length=None`` the body goes out chunked to HTTP/1.1 clients and close-delimited to HTTP/1.0
    clients. The iterator is closed (``aclose()``) when the response ends, fails or the client goes away; for HEAD,
    204 and 304 it is closed without being iterated.
    """

    __slots__ = ("body_iter", "content_length", "headers", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]] | None,
        body_iter: AsyncIterator[bytes],
        content_length: int | None = None,
    ) -> None:
        self.status = status
        self.headers: list[tuple[bytes, bytes]] = headers if headers is not None else []
        self.body_iter = body_iter
        self.content_length = content_length

    def __repr__(self) -> str:
        return f"<StreamingResponse {self.status} content_length={self.content_length}>"
