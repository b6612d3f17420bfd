"""In-memory stand-ins for the upstream pool, for tests that need no sockets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.http.server import Request


class FakeUpstream:
    """Quacks like gateway.http.client.UpstreamResponse."""

    def __init__(self, status=200, headers=None, body=b"", *, chunks=None, content_length: Any = "auto"):
        self.status = status
        self.reason = b"OK"
        self.headers = list(headers or [(b"content-type", b"application/json")])
        self._chunks = list(chunks) if chunks is not None else [body]
        if content_length == "auto":
            content_length = None if chunks is not None else len(body)
        self.content_length = content_length
        self.closed = False
        self.iterated = False

    async def read(self) -> bytes:
        return b"".join(self._chunks)

    def __aiter__(self):
        self.iterated = True
        return self._gen()

    async def _gen(self):
        for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Call:
    origin: Any
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass
class FakePool:
    respond: Callable[[Call], FakeUpstream] | None = None
    error: BaseException | None = None
    calls: list[Call] = field(default_factory=list)
    responses: list[FakeUpstream] = field(default_factory=list)

    async def request(self, origin, method, target, headers, body=b"", *, timeout=None):
        call = Call(origin, method, target, list(headers), body)
        self.calls.append(call)
        if self.error is not None:
            raise self.error
        upstream = self.respond(call) if self.respond is not None else FakeUpstream(body=b'{"ok": true}')
        self.responses.append(upstream)
        return upstream

    async def close(self) -> None:
        pass


def make_request(method="GET", path="/", query="", headers=None, body=b"", client_ip="10.0.0.1") -> Request:
    return Request(method, path, query, list(headers or []), body, client_ip, "1.1")


def header(response, name: bytes) -> bytes | None:
    for key, value in response.headers:
        if key == name:
            return value
    return None
