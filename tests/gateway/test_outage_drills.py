"""Backend outage drills (#7 batteries): real misbehaving backends on loopback, a real gateway server in front.

Each drill starts a raw asyncio server scripted to fail one way (stall, reset, garbage, a short body, nobody
listening, an SSE stream cut midway), sends REQUESTS requests through the gateway (real ``serve()``, real
``UpstreamPool``) and asserts what the client sees: the APIM-style JSON error (``{"statusCode", "message"}``) for a
failure before the response head, an incomplete body (no final chunk) once the head has gone out. Every drill also
asserts that exactly one usage record was produced per request, with the request id the client saw: none lost,
none doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
import pytest

from gateway.app import create_app
from gateway.errors import MSG_BACKEND_CONNECT, MSG_BACKEND_PROTOCOL, MSG_BACKEND_TIMEOUT
from gateway.http.client import UpstreamPool
from gateway.http.server import ServerLimits, serve
from gateway.settings import GatewaySettings
from gateway.snapshot import load_snapshot
from gateway.usage.sinks import MemorySink
from tests.fixtures_procs import free_port

from .helpers import KEYS, TOKEN, llm_snapshot

REQUESTS = 3
DEFAULT_LIMITS = ServerLimits()
READ_TIMEOUT = 0.5  # the pool's read timeout: a stalled backend answers 504 after this
KEY = {"Ocp-Apim-Subscription-Key": KEYS["master"][0]}
CHAT = "/llm/chat/completions"
BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "drill"}]})
STREAM_BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "drill"}], "stream": True})
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def sse_chunk(n: int) -> bytes:
    event = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"w%d"}}]}\n\n'
    data = event % n
    return b"%x\r\n%b\r\n" % (len(data), data)


Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Backend:
    """A raw HTTP server on loopback running ``behaviour`` for every connection; counts the requests it read."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def read_request(self, reader: asyncio.StreamReader) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":", 1)[1]))
        self.requests += 1
        return True

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            if await self.read_request(reader):
                await self.behaviour(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5)


@contextlib.asynccontextmanager
async def gateway(backend_url: str, limits: ServerLimits = DEFAULT_LIMITS):
    """A gateway serving one OpenAI API (``/llm``) in front of ``backend_url``; yields (client session, sink)."""
    sink = MemorySink()
    pool = UpstreamPool(connect_timeout=2.0, read_timeout=READ_TIMEOUT)
    app = create_app(GatewaySettings(gateway_token=TOKEN), pool=pool, usage_sink=sink)
    app.snapshot = load_snapshot(llm_snapshot(backend_url, None), gateway_token=TOKEN)
    server = await serve(app, "127.0.0.1", 0, limits=limits)
    session = aiohttp.ClientSession(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        yield session, sink
    finally:
        await session.close()
        server.close()
        await app.aclose()


@contextlib.asynccontextmanager
async def drill(behaviour: Behaviour):
    backend = Backend(behaviour)
    url = await backend.start()
    try:
        async with asyncio.timeout(30), gateway(url) as (session, sink):
            yield session, sink, backend
    finally:
        await backend.close()


async def expect_error(session: aiohttp.ClientSession, status: int, message: str) -> str:
    async with session.post(CHAT, data=BODY, headers=KEY) as response:
        body = await response.read()
        assert response.status == status, body
        assert response.headers["content-type"].startswith("application/json")
        assert orjson.loads(body) == {"statusCode": status, "message": message}
        return response.headers["x-request-id"]


def assert_one_record_each(sink: MemorySink, request_ids: list[str], status: int) -> None:
    assert sorted(r.request_id for r in sink.records) == sorted(request_ids)  # exactly one each: none lost
    assert {r.status for r in sink.records} == {status}
    assert all(r.api == "llm" and r.subscription == "master" for r in sink.records)


#
# Failures before the response head: an APIM error body
#


async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()  # reads the request, never answers


async def stall_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"id": "x", ')
    await writer.drain()
    await asyncio.Event().wait()


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    writer.transport.abort()


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x16\x03\x01 this is not HTTP at all\r\n\r\n")
    await writer.drain()


async def short_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"id": "x", ')
    await writer.drain()  # then close: 500 bytes promised, 12 sent


@pytest.mark.parametrize(
    ("behaviour", "status", "message"),
    [
        pytest.param(stall, 504, MSG_BACKEND_TIMEOUT, id="slow-no-answer"),
        pytest.param(stall_mid_body, 504, MSG_BACKEND_TIMEOUT, id="stall-mid-body"),
        pytest.param(reset, 502, MSG_BACKEND_CONNECT, id="connection-reset"),
        pytest.param(garbage, 502, MSG_BACKEND_PROTOCOL, id="garbage"),
        pytest.param(short_body, 502, MSG_BACKEND_PROTOCOL, id="short-body"),
    ],
)
async def test_backend_failure_before_the_head_is_an_apim_error(behaviour, status, message):
    async with drill(behaviour) as (session, sink, backend):
        ids = [await expect_error(session, status, message) for _ in range(REQUESTS)]
        assert backend.requests == REQUESTS  # each request reached the backend once: nothing was resent
    assert_one_record_each(sink, ids, status)


async def test_backend_refusing_connections_is_a_502():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with asyncio.timeout(30), gateway(url) as (session, sink):
        ids = [await expect_error(session, 502, MSG_BACKEND_CONNECT) for _ in range(REQUESTS)]
    assert_one_record_each(sink, ids, 502)


async def test_reused_connection_dying_after_a_post_is_a_502_not_a_resend():
    # The backend answers the first request on a keep-alive connection, then reads the next POST and closes.
    async def answer_once_then_die(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        writer.write(body)
        await writer.drain()
        await backend.read_request(reader)  # the second request arrives on the same connection: close, no answer

    async with drill(answer_once_then_die) as (session, sink, backend):
        async with session.post(CHAT, data=BODY, headers=KEY) as response:
            assert response.status == 200
            first = response.headers["x-request-id"]
            await response.read()
        second = await expect_error(session, 502, MSG_BACKEND_CONNECT)
        assert backend.requests == 2  # the POST the backend read was not sent again
    assert sorted(r.request_id for r in sink.records) == sorted([first, second])
    assert {r.request_id: r.status for r in sink.records} == {first: 200, second: 502}


#
# Failures after the head went out: the client sees an incomplete stream
#


async def sse_cut_midway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(SSE_HEAD + sse_chunk(0) + sse_chunk(1))
    await writer.drain()  # then the connection closes: no final chunk, no [DONE]


async def sse_stall_midway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(SSE_HEAD + sse_chunk(0))
    await writer.drain()
    await asyncio.Event().wait()


@pytest.mark.parametrize("behaviour", [sse_cut_midway, sse_stall_midway], ids=["cut", "stall"])
async def test_sse_stream_broken_midway_reaches_the_client_incomplete(behaviour):
    async with drill(behaviour) as (session, sink, backend):
        ids = []
        for _ in range(REQUESTS):
            received = b""
            async with session.post(CHAT, data=STREAM_BODY, headers=KEY) as response:
                assert response.status == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                ids.append(response.headers["x-request-id"])
                with pytest.raises(aiohttp.ClientPayloadError):  # the chunked body ends without its last chunk
                    async for data in response.content.iter_any():
                        received += data
            assert b'"content":"w0"' in received  # what the backend sent before it broke got through
            assert b"[DONE]" not in received
        assert backend.requests == REQUESTS
    assert sorted(r.request_id for r in sink.records) == sorted(ids)


#
# The client's body breaks: refused before or after the key check, one record each, nothing forwarded
#


async def test_client_body_errors_are_json_and_recorded():
    backend = Backend(stall)
    url = await backend.start()
    try:
        async with asyncio.timeout(30), gateway(url, ServerLimits(max_body_bytes=1024)) as (session, sink):

            async def chunks(size: int):
                yield b"x" * size

            # chunked, so the size is only known while reading: after the key check
            async with session.post(CHAT, data=chunks(4096), headers=KEY) as response:
                assert response.status == 413
                assert orjson.loads(await response.read()) == {
                    "statusCode": 413,
                    "message": "Request body is too large.",
                }
                too_large = response.headers["x-request-id"]
            wrong_key = {"Ocp-Apim-Subscription-Key": "wrong"}
            async with session.post(CHAT, data=chunks(4096), headers=wrong_key) as response:
                assert response.status == 401  # answered from the head; the body was never read
                refused = response.headers["x-request-id"]
        assert backend.requests == 0
        assert {r.request_id: r.status for r in sink.records} == {too_large: 413, refused: 401}
    finally:
        await backend.close()
