"""A deliberately independent, minimal HTTP/1.1 reader for tests: raw sockets, no shared parsing code."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

TIMEOUT = 5.0  # every read is bounded, so a broken server fails a test instead of hanging it


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_names(self) -> list[str]:
        return [key for key, _ in self.headers]


class RawConnection:
    """One TCP connection to a server under test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, *, rcvbuf: int | None = None, limit: int = 2**20) -> RawConnection:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, method: str, target: str, body: bytes = b"", headers: str = "") -> RawResponse:
        head = f"{method} {target} HTTP/1.1\r\nHost: test\r\n{headers}"
        if body:
            head += f"Content-Length: {len(body)}\r\n"
        await self.send(head.encode() + b"\r\n" + body)
        return await self.read_response(head_only=method == "HEAD")

    async def read_head(self) -> RawResponse:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        lines = raw.decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.lower(), value.strip()))
        return RawResponse(int(status), reason[0] if reason else "", headers)

    async def read_chunk(self) -> bytes | None:
        """Read one chunk of a chunked body; ``None`` for the last (zero-size) chunk, after its trailers."""
        size_line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), TIMEOUT)
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            while await asyncio.wait_for(self.reader.readuntil(b"\r\n"), TIMEOUT) != b"\r\n":
                pass
            return None
        data = await asyncio.wait_for(self.reader.readexactly(size + 2), TIMEOUT)
        assert data.endswith(b"\r\n")
        return data[:-2]

    async def read_response(self, *, head_only: bool = False) -> RawResponse:
        """Read a whole response; skip interim (1xx) ones."""
        response = await self.read_head()
        while 100 <= response.status < 200:
            response = await self.read_head()
        if head_only or response.status in (204, 304):
            return response
        if response.header("transfer-encoding") == "chunked":
            parts = []
            while (chunk := await self.read_chunk()) is not None:
                parts.append(chunk)
            response.body = b"".join(parts)
        elif (length := response.header("content-length")) is not None:
            response.body = await asyncio.wait_for(self.reader.readexactly(int(length)), TIMEOUT)
        else:
            response.body = await self.read_to_eof()
        return response

    async def read_to_eof(self) -> bytes:
        return await asyncio.wait_for(self.reader.read(), TIMEOUT)

    async def at_eof(self) -> bool:
        """Wait until the server closes the connection; ``True`` when it did and sent nothing more."""
        try:
            data = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        except ConnectionResetError:
            return True
        return data == b""

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.transport.abort()
