"""Raw HTTP/1.1 over a socket, for tests that must send bytes no client library would (``..`` in a path, a
backslash, a broken header): one request per connection, the response read until the server closes or the body
announced by Content-Length / chunked framing is complete."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass

__all__ = ("RawResponse", "exchange", "exchange_all", "request_bytes")


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def request_bytes(
    method: str, target: str | bytes, headers: list[tuple[str, str]] | None = None, body: bytes = b""
) -> bytes:
    """A request with Host, Connection: close and (when there is a body) Content-Length."""
    raw_target = target if isinstance(target, bytes) else target.encode("latin-1")
    lines = [method.encode("latin-1") + b" " + raw_target + b" HTTP/1.1", b"Host: gateway", b"Connection: close"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}".encode("latin-1"))
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def exchange(port: int, data: bytes, *, timeout: float = 10.0, head: bool = False) -> RawResponse | None:
    """Send ``data`` and parse the first final response (1xx skipped); None when the server closed without
    answering. ``head``: the request was HEAD (the response has no body, whatever it announces). A server that
    neither answers nor closes within ``timeout`` raises TimeoutError."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # the server may answer and close before it has read everything
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            response = _parse(b"".join(chunks), head=head)
            if response is not None:
                return response
    return _parse(b"".join(chunks), eof=True, head=head)


def exchange_all(port: int, data: bytes, *, timeout: float = 10.0) -> list[RawResponse]:
    """Send ``data`` (pipelined requests, the last one closing the connection) and parse every response until the
    server closes (no HEAD among them)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    raw, responses = b"".join(chunks), []
    while raw:
        parsed = _parse_one(raw, eof=True)
        if parsed is None:
            break
        response, raw = parsed
        responses.append(response)
    return responses


def _parse(raw: bytes, *, eof: bool = False, head: bool = False) -> RawResponse | None:
    parsed = _parse_one(raw, eof=eof, head=head)
    return parsed[0] if parsed is not None else None


def _parse_one(raw: bytes, *, eof: bool = False, head: bool = False) -> tuple[RawResponse, bytes] | None:
    """The first final response in ``raw`` and the bytes after it; None while it is incomplete."""
    while True:
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            return None
        text, rest = raw[:end].decode("latin-1"), raw[end + 4 :]
        status_line, *header_lines = text.split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        if not 100 <= status < 200:
            break
        raw = rest  # an interim response (100 Continue): the final one follows
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines if ":" in line]
    response = RawResponse(status, headers, b"")  # type: ignore[arg-type]
    if head or status in (204, 304):
        return response, rest
    length = response.header("content-length")
    if length is not None:
        if len(rest) < int(length) and not eof:
            return None
        response.body = rest[: int(length)]
        return response, rest[int(length) :]
    if (response.header("transfer-encoding") or "").lower() == "chunked":
        dechunked = _dechunk(rest)
        if dechunked is None:
            return None
        response.body, rest = dechunked
        return response, rest
    if not eof:
        return None
    response.body = rest
    return response, b""


def _dechunk(data: bytes) -> tuple[bytes, bytes] | None:
    """(body, the bytes after the chunked body); None while it is incomplete. Trailers are skipped."""
    body = b""
    while True:
        line_end = data.find(b"\r\n")
        if line_end < 0:
            return None
        size = int(data[:line_end].split(b";")[0], 16)
        if size == 0:
            end = data.find(b"\r\n\r\n", line_end)
            if data[line_end : line_end + 4] == b"\r\n\r\n":
                end = line_end
            if end < 0:
                return None
            return body, data[end + 4 :]
        start = line_end + 2
        if len(data) < start + size + 2:
            return None
        body += data[start : start + size]
        data = data[start + size + 2 :]
