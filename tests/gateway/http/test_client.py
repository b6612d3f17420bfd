"""gateway.http.client against real peers: our own server, and small raw asyncio servers that misbehave."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.http import client as client_module
from gateway.http.client import (
    HIGH_WATER,
    Origin,
    UpstreamConnectError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from gateway.http.server import Request, Response, StreamingResponse

TIMEOUT = 5.0

#
# A raw upstream whose behaviour each test scripts
#


@dataclass
class RawRequest:
    line: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


async def read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    """Read one request (Content-Length bodies only); ``None`` at EOF."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return None
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.lower(), value.strip()))
    request = RawRequest(lines[0], headers, b"")
    length = request.header("content-length")
    if length:
        request.body = await reader.readexactly(int(length))
    return request


async def wait_eof(reader: asyncio.StreamReader) -> bool:
    """Wait until the client closes the connection (EOF or reset)."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionResetError:
        pass
    return True


Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@dataclass
class RawUpstream:
    behaviour: Behaviour
    ssl_context: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[RawRequest] = field(default_factory=list)
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0, ssl=self.ssl_context)
        return int(self.server.sockets[0].getsockname()[1])

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.behaviour(reader, writer, index)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the test is over
        finally:
            writer.close()
            self.tasks.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=TIMEOUT)


@pytest.fixture
async def upstream() -> AsyncIterator[Callable[..., Awaitable[tuple[RawUpstream, Origin]]]]:
    """``raw, origin = await upstream(behaviour)``: a scripted raw HTTP server."""
    started: list[RawUpstream] = []

    async def start(behaviour: Behaviour, ssl_context: ssl.SSLContext | None = None) -> tuple[RawUpstream, Origin]:
        raw = RawUpstream(behaviour, ssl_context)
        port = await raw.start()
        started.append(raw)
        scheme = "https" if ssl_context else "http"
        return raw, Origin(scheme, "127.0.0.1", port)

    yield start
    for raw in started:
        await raw.close()


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool(connect_timeout=2.0, read_timeout=5.0)
    yield pool
    await pool.close()


def keep_alive_responder(body: bytes = b"ok", extra: bytes = b"", record: list[RawRequest] | None = None) -> Behaviour:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        while (request := await read_request(reader)) is not None:
            if record is not None:
                record.append(request)
            payload = b"" if request.line.startswith("HEAD ") else body
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, payload))
            await writer.drain()

    return behaviour


#
# Origin
#


def test_origin_from_url():
    origin, base = Origin.from_url("https://generativelanguage.googleapis.com/v1beta/openai/")
    assert origin == Origin("https", "generativelanguage.googleapis.com", 443)
    assert base == "/v1beta/openai"
    assert origin.host_header == b"generativelanguage.googleapis.com"

    origin, base = Origin.from_url("http://Example.COM:8080")
    assert origin == Origin("http", "example.com", 8080)
    assert base == ""
    assert origin.host_header == b"example.com:8080"

    origin, _ = Origin.from_url("http://[::1]:9000/x")
    assert origin.host == "::1"
    assert origin.host_header == b"[::1]:9000"
    assert Origin.from_url("http://h:80/")[0].host_header == b"h"
    assert hash(Origin("http", "h", 80)) == hash(Origin.from_url("http://h/")[0])


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "example.com/path",
        "http:///nohost",
        "http://user:pw@example.com/",
        "http://example.com:99999/",
        "http://example.com/?q=1",
        "http://example.com/#frag",
        "http://example.com/a b",
    ],
)
def test_origin_from_url_refuses_bad_urls(url):
    with pytest.raises(ValueError):
        Origin.from_url(url)


#
# Requests and reuse
#


async def test_pool_reuses_one_connection(start_server, pool):
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        return Response(200, [(b"x-upstream", b"1")], b"answer:" + request.body)

    port = await start_server(handler)
    origin = Origin("http", "127.0.0.1", port)
    for i in range(3):
        response = await pool.request(origin, "POST", f"/v1/chat?i={i}", [(b"x-custom", b"v")], b"body%d" % i)
        assert response.status == 200
        assert response.reason == b"OK"
        assert response.header(b"x-upstream") == b"1"
        assert response.content_length == len(b"answer:body0")
        assert await response.read() == b"answer:body%d" % i
    assert pool.stats["opened"] == 1
    assert pool.stats["reused"] == 2
    assert pool.idle_count(origin) == 1
    assert [r.query for r in seen] == ["i=0", "i=1", "i=2"]
    assert seen[0].header(b"host") == f"127.0.0.1:{port}".encode()
    assert seen[0].header(b"x-custom") == b"v"


async def test_per_request_futures_are_made_with_the_connections_loop(start_server, pool, future_loops):
    async def handler(request: Request) -> Response:
        return Response(200, [], b"answer")

    port = await start_server(handler)
    origin = Origin("http", "127.0.0.1", port)
    for _ in range(3):
        response = await pool.request(origin, "POST", "/v1/chat", [], b"body")
        assert await response.read() == b"answer"
    # per request: the upstream response head's wait, and our server's wait for the connection's next request
    assert len(future_loops) >= 6
    assert all(loop is asyncio.get_running_loop() for loop in future_loops)


async def test_request_head_is_built_by_the_pool(upstream, pool):
    record: list[RawRequest] = []
    _raw, origin = await upstream(keep_alive_responder(record=record))
    headers = [
        (b"Host", b"client.example"),
        (b"connection", b"keep-alive, x-hop"),
        (b"x-hop", b"dropped"),
        (b"keep-alive", b"timeout=5"),
        (b"te", b"trailers"),
        (b"transfer-encoding", b"chunked"),
        (b"content-length", b"999"),
        (b"expect", b"100-continue"),
        (b"proxy-authorization", b"secret"),
        (b"authorization", b"Bearer x"),
        (b"x-dup", b"1"),
        (b"x-dup", b"2"),
    ]
    response = await pool.request(origin, "POST", "/v1/x?q=1", headers, b"{}")
    assert await response.read() == b"ok"
    request = record[0]
    assert request.line == "POST /v1/x?q=1 HTTP/1.1"
    assert request.headers == [
        ("host", f"127.0.0.1:{origin.port}"),
        ("authorization", "Bearer x"),
        ("x-dup", "1"),
        ("x-dup", "2"),
        ("content-length", "2"),
    ]
    assert request.body == b"{}"

    await (await pool.request(origin, "POST", "/empty", [])).read()
    await (await pool.request(origin, "GET", "/get", [])).read()
    assert record[1].header("content-length") == "0"
    assert record[2].header("content-length") is None


def test_request_head_and_body_are_one_write():
    data = client_module._serialize_request(Origin("http", "h", 80), "POST", "/x", [(b"a", b"b")], b"body")
    assert data == b"POST /x HTTP/1.1\r\nhost: h\r\na: b\r\ncontent-length: 4\r\n\r\nbody"


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("GET", "/x", [(b"x-evil", b"a\r\nhost: other")]),
        ("GET", "/x", [(b"x-evil\r\nhost", b"other")]),
        ("GET", "/x y", []),
        ("GET", "/x\r\nHost: other", []),
        ("GET", "", []),
        ("G ET", "/x", []),
    ],
)
async def test_invalid_request_parts_are_refused(pool, method, target, headers):
    with pytest.raises(ValueError):
        await pool.request(Origin("http", "127.0.0.1", 9), method, target, headers)


def test_checked_targets_are_kept_up_to_a_bound(monkeypatch):
    checked: dict[str, bytes] = {}
    monkeypatch.setattr(client_module, "_checked_targets", checked)
    monkeypatch.setattr(client_module, "_CHECKED_TARGETS_MAX", 2)
    origin = Origin("http", "h", 80)
    for index in range(4):
        data = client_module._serialize_request(origin, "GET", f"/t{index}?\xe9", [], b"")
        assert data == b"GET /t%d?\xe9 HTTP/1.1\r\nhost: h\r\n\r\n" % index
    assert checked == {"/t0?\xe9": b"/t0?\xe9", "/t1?\xe9": b"/t1?\xe9"}
    assert client_module._serialize_request(origin, "GET", "/t0?\xe9", [], b"").startswith(b"GET /t0?\xe9 HTTP")
    long_target = "/" + "x" * client_module._CHECKED_TARGET_MAX_LENGTH
    checked.clear()
    client_module._serialize_request(origin, "GET", long_target, [], b"")
    assert checked == {}
    for bad in ("/x y", "/x\r\nHost: other", "/\u0100", ""):  # refused however full the record is
        with pytest.raises(ValueError):
            client_module._serialize_request(origin, "GET", bad, [], b"")


def test_unknown_methods_are_checked_and_sent_as_given():
    data = client_module._serialize_request(Origin("http", "h", 80), "PROPFIND", "/x", [], b"")
    assert data.startswith(b"PROPFIND /x HTTP/1.1\r\n")
    with pytest.raises(ValueError):
        client_module._serialize_request(Origin("http", "h", 80), "GET\r\n", "/x", [], b"")


def close_after_reading_second(seen: list[str]) -> Behaviour:
    """Answer the first request of the first connection, read the second one whole, then close without a byte of
    response (a keep-alive timeout racing the request); later connections answer everything."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        answered = 0
        while (request := await read_request(reader)) is not None:
            seen.append(request.line)
            if index == 0 and answered == 1:
                return
            answered += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + request.line[:5].encode())
            await writer.drain()

    return behaviour


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_idempotent_request_on_a_stale_pooled_connection_is_retried(upstream, pool, method):
    seen: list[str] = []
    raw, origin = await upstream(close_after_reading_second(seen))
    first = await pool.request(origin, "GET", "/one", [])
    assert await first.read() == b"GET /"
    second = await pool.request(origin, method, "/two", [], b"payload" if method == "PUT" else b"")
    assert await second.read() == f"{method} /"[:5].encode()
    assert pool.stats == {"opened": 2, "reused": 1, "retried": 1, "evicted": 0}
    assert raw.connections == 2
    assert seen == ["GET /one HTTP/1.1", f"{method} /two HTTP/1.1", f"{method} /two HTTP/1.1"]


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_non_idempotent_request_written_to_a_dying_connection_is_not_resent(upstream, pool, method):
    # Regression (#7 item 11): the upstream read the whole POST before the connection died, so it may have acted
    # on it (a completion billed, a job started). Sending it again on a fresh connection would do it twice.
    seen: list[str] = []
    raw, origin = await upstream(close_after_reading_second(seen))
    first = await pool.request(origin, "GET", "/one", [])
    assert await first.read() == b"GET /"
    with pytest.raises(UpstreamConnectError, match="not idempotent"):
        await pool.request(origin, method, "/two", [], b"payload")
    assert seen == ["GET /one HTTP/1.1", f"{method} /two HTTP/1.1"]  # the upstream saw it exactly once
    assert raw.connections == 1
    assert pool.stats == {"opened": 1, "reused": 1, "retried": 0, "evicted": 0}


async def test_pooled_connection_closed_while_idle_is_skipped_before_writing(upstream, pool):
    # The upstream closes an idle keep-alive connection and the gateway has seen its FIN: nothing of the next
    # request is written to it, so even a POST goes out (once) on a fresh connection.
    seen: list[str] = []
    closed = asyncio.Event()

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        while (request := await read_request(reader)) is not None:
            seen.append(request.line)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            if index == 0:
                writer.close()
                await writer.wait_closed()
                closed.set()
                return

    _, origin = await upstream(behaviour)
    first = await pool.request(origin, "GET", "/one", [])
    assert await first.read() == b"ok"
    await asyncio.wait_for(closed.wait(), TIMEOUT)
    async with asyncio.timeout(TIMEOUT):  # the pool has seen the FIN
        while pool.idle_count(origin):
            await asyncio.sleep(0)
    second = await pool.request(origin, "POST", "/two", [], b"payload")
    assert await second.read() == b"ok"
    assert seen == ["GET /one HTTP/1.1", "POST /two HTTP/1.1"]
    assert pool.stats["retried"] == 0


async def test_fresh_connection_reset_before_any_byte_is_a_connect_error(upstream, pool):
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)  # then close without answering

    raw, origin = await upstream(behaviour)
    with pytest.raises(UpstreamConnectError):
        await pool.request(origin, "GET", "/", [])
    assert raw.connections == 1


async def test_connection_refused_is_a_connect_error(pool, unused_tcp_port):
    with pytest.raises(UpstreamConnectError):
        await pool.request(Origin("http", "127.0.0.1", unused_tcp_port), "GET", "/", [])


async def test_unknown_host_is_a_connect_error(pool):
    with pytest.raises(UpstreamConnectError):
        await pool.request(Origin("http", "no-such-host.invalid", 80), "GET", "/", [])


async def test_read_timeout_waiting_for_the_head(upstream):
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        await wait_eof(reader)  # never answers

    _raw, origin = await upstream(behaviour)
    pool = UpstreamPool(read_timeout=0.2)
    with pytest.raises(UpstreamTimeout):
        await pool.request(origin, "GET", "/", [])
    await pool.close()


async def test_request_timeout_for_the_head_closes_the_connection(upstream, pool):
    closed = asyncio.Event()

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        await wait_eof(reader)  # never answers
        closed.set()

    _raw, origin = await upstream(behaviour)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeout, match=r"no response head within 0\.2 s"):
        await pool.request(origin, "POST", "/", [], b"{}", timeout=0.2)
    assert 0.19 <= loop.time() - started < 2.0  # its own timeout, well before the pool's read_timeout (5 s)
    async with asyncio.timeout(TIMEOUT):
        await closed.wait()  # the upstream sees the disconnect
    assert pool.idle_count(origin) == 0


async def test_request_timeouts_on_one_connection_each_run_from_their_own_start(upstream, pool):
    """The connection's one timer is moved earlier for a shorter timeout, and a timer armed for an earlier request's
    deadline re-arms itself instead of failing a later request."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        while (request := await read_request(reader)) is not None:
            await asyncio.sleep(float(request.line.split()[1][1:]))  # GET /<seconds> HTTP/1.1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    raw, origin = await upstream(behaviour)
    response = await pool.request(origin, "GET", "/0", [], timeout=0.2)  # arms the timer at +0.2 s
    assert await response.read() == b"ok"
    response = await pool.request(origin, "GET", "/0.4", [], timeout=2.0)  # outlives that timer, which re-arms
    assert await response.read() == b"ok"
    response = await pool.request(origin, "GET", "/0", [])  # no timeout: the read timeout only
    assert await response.read() == b"ok"
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeout, match=r"no response head within 0\.3 s"):
        await pool.request(origin, "GET", "/3", [], timeout=0.3)  # before the timer armed for the 2 s one
    assert loop.time() - started < 1.2
    assert raw.connections == 1


async def test_request_timeout_on_a_pooled_connection_takes_the_time_from_its_loop(upstream, pool, request):
    """On Python 3.11 asyncio.get_running_loop() is a getpid(2) per call: a reused connection knows its loop."""
    raw, origin = await upstream(keep_alive_responder())
    assert await (await pool.request(origin, "GET", "/", [], timeout=5.0)).read() == b"ok"  # connects
    asked = request.getfixturevalue("running_loop_asks")
    assert await (await pool.request(origin, "GET", "/", [], timeout=5.0)).read() == b"ok"
    assert asked == []
    assert raw.connections == 1


async def test_request_timeout_covers_the_head_not_the_body(upstream, pool):
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(4):
            await asyncio.sleep(0.1)
            writer.write(b"1\r\na\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await wait_eof(reader)

    _raw, origin = await upstream(behaviour)
    response = await pool.request(origin, "GET", "/", [], timeout=0.2)
    assert await response.read() == b"aaaa"


async def test_read_timeout_between_body_bytes_but_not_over_the_whole_body(upstream):
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):  # a stream that takes longer than read_timeout in total, never between bytes
            writer.write(b"1\r\na\r\n")
            await writer.drain()
            await asyncio.sleep(0.15)
        await wait_eof(reader)  # then stalls

    _raw, origin = await upstream(behaviour)
    pool = UpstreamPool(read_timeout=0.5)
    response = await pool.request(origin, "GET", "/", [])
    received = b""
    with pytest.raises(UpstreamTimeout):
        async for chunk in response:
            received += chunk
    assert received == b"aaaaa"
    await pool.close()


#
# Response framing
#


async def test_chunked_response_is_dechunked(upstream, pool):
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        while await read_request(reader) is not None:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n"
                b"6;ext=1\r\ndata: \r\n3\r\n1\n\n\r\n0\r\nX-Trailer: t\r\n\r\n"
            )
            await writer.drain()

    _raw, origin = await upstream(behaviour)
    response = await pool.request(origin, "GET", "/", [])
    assert response.content_length is None
    assert response.headers == [(b"content-type", b"text/event-stream")]
    assert await response.read() == b"data: 1\n\n"
    assert await (await pool.request(origin, "GET", "/", [])).read() == b"data: 1\n\n"
    assert pool.stats["opened"] == 1


async def test_chunks_are_delivered_as_they_arrive(upstream, pool):
    go_on = asyncio.Event()

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()

    _raw, origin = await upstream(behaviour)
    response = await pool.request(origin, "GET", "/", [])
    chunks = response.__aiter__()
    assert await asyncio.wait_for(chunks.__anext__(), TIMEOUT) == b"first"
    go_on.set()
    assert await asyncio.wait_for(chunks.__anext__(), TIMEOUT) == b"second"
    with pytest.raises(StopAsyncIteration):
        await chunks.__anext__()


async def test_chunks_of_one_read_are_counted_and_taken_together(upstream, pool):
    """A stream sent whole (head, 40 chunks and the last chunk in one write, as gwbench's mock does): the body
    pieces the parser hands over in one read are counted in ``buffered`` and taken as one piece, and a piece that
    comes later in a read of its own wakes the reader."""
    events = [b'data: {"n":%d}\n\n' % i for i in range(40)]
    go_on = asyncio.Event()

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
        )
        await writer.drain()
        await go_on.wait()
        writer.write(b"5\r\nlater\r\n0\r\n\r\n")
        await writer.drain()
        await wait_eof(reader)

    _raw, origin = await upstream(behaviour)
    response = await pool.request(origin, "GET", "/", [])
    conn = response._conn
    assert conn.buffered == sum(map(len, events))  # the head came in the same read as every piece
    chunks = response.__aiter__()
    first = await asyncio.wait_for(chunks.__anext__(), TIMEOUT)
    assert conn.buffered == 0 and not conn.chunks
    assert first == b"".join(events)  # all 40 pieces of the first read, counted and taken as one
    go_on.set()
    assert await asyncio.wait_for(chunks.__anext__(), TIMEOUT) == b"later"
    with pytest.raises(StopAsyncIteration):
        await chunks.__anext__()
    assert pool.idle_count(origin) == 1


async def test_close_delimited_response_ends_at_eof(upstream, pool):
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
        await writer.drain()
        writer.write(b"the end")
        await writer.drain()
        # the handler returning closes the connection

    _raw, origin = await upstream(behaviour)
    response = await pool.request(origin, "GET", "/", [])
    assert response.content_length is None
    assert await response.read() == b"until the end"
    assert pool.idle_count(origin) == 0


async def test_http10_response_is_not_reused(upstream, pool):
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    _raw, origin = await upstream(behaviour)
    for _ in range(2):
        assert await (await pool.request(origin, "GET", "/", [])).read() == b"ok"
    assert pool.stats["opened"] == 2


async def test_head_response_has_length_but_no_body_and_the_connection_is_reused(upstream, pool):
    record: list[RawRequest] = []
    _raw, origin = await upstream(keep_alive_responder(b"x" * 100, record=record))
    response = await pool.request(origin, "HEAD", "/", [])
    assert response.status == 200
    assert response.content_length == 100
    assert await response.read() == b""
    response = await pool.request(origin, "GET", "/", [])
    assert await response.read() == b"x" * 100
    assert pool.stats == {"opened": 1, "reused": 1, "retried": 0, "evicted": 0}


async def test_no_content_and_not_modified_have_no_body(upstream, pool):
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await read_request(reader)
        writer.write(b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n')
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        await wait_eof(reader)

    _raw, origin = await upstream(behaviour)
    for status in (204, 304):
        response = await pool.request(origin, "GET", "/", [])
        assert response.status == status
        assert await response.read() == b""
    assert await (await pool.request(origin, "GET", "/", [])).read() == b"done"
    assert pool.stats["opened"] == 1


async def test_interim_responses_are_skipped(upstream, pool):
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        await wait_eof(reader)

    _raw, origin = await upstream(behaviour)
    response = await pool.request(origin, "POST", "/", [], b"x")
    assert response.status == 201
    assert response.headers == []
    assert await response.read() == b"ok"


async def test_connection_listed_headers_are_dropped_from_the_response(upstream, pool):
    _raw, origin = await upstream(
        keep_alive_responder(extra=b"Connection: x-private\r\nX-Private: 1\r\nX-Public: 2\r\n")
    )
    response = await pool.request(origin, "GET", "/", [])
    assert response.headers == [(b"x-public", b"2")]
    await response.aclose()


async def test_malformed_response_is_a_protocol_error(upstream, pool):
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 2OO OK\r\n\r\n")
        await wait_eof(reader)

    _raw, origin = await upstream(behaviour)
    with pytest.raises(UpstreamProtocolError):
        await pool.request(origin, "GET", "/", [])


async def test_truncated_body_is_a_protocol_error(upstream, pool):
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()

    _raw, origin = await upstream(behaviour)
    response = await pool.request(origin, "GET", "/", [])
    with pytest.raises(UpstreamProtocolError):
        await response.read()


async def test_extra_bytes_after_a_response_prevent_reuse(upstream, pool):
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE")
            await writer.drain()

    _raw, origin = await upstream(behaviour)
    assert await (await pool.request(origin, "GET", "/", [])).read() == b"ok"
    assert await (await pool.request(origin, "GET", "/", [])).read() == b"ok"
    assert pool.stats["opened"] == 2


#
# Cancellation, release and backpressure
#


async def test_cancelled_body_read_closes_the_upstream_connection(upstream, pool):
    eof_seen = asyncio.Event()

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await wait_eof(reader)
        eof_seen.set()

    _raw, origin = await upstream(behaviour)
    first_chunk = asyncio.Event()

    async def consume() -> None:
        response = await pool.request(origin, "GET", "/", [])
        async for _ in response:
            first_chunk.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_chunk.wait(), TIMEOUT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(eof_seen.wait(), TIMEOUT)
    assert pool.idle_count(origin) == 0


async def test_cancelled_request_waiting_for_the_head_closes_the_connection(upstream, pool):
    request_seen = asyncio.Event()
    eof_seen = asyncio.Event()

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        request_seen.set()
        await wait_eof(reader)
        eof_seen.set()

    _raw, origin = await upstream(behaviour)
    task = asyncio.create_task(pool.request(origin, "GET", "/", []))
    await asyncio.wait_for(request_seen.wait(), TIMEOUT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(eof_seen.wait(), TIMEOUT)


async def test_aclose_of_an_unfinished_response_closes_and_of_a_finished_one_pools(upstream, pool):
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        while await read_request(reader) is not None:
            if index == 0:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfull")
            await writer.drain()

    _raw, origin = await upstream(behaviour)
    async with await pool.request(origin, "GET", "/", []) as response:
        assert response.status == 200
    assert pool.idle_count(origin) == 0
    response = await pool.request(origin, "GET", "/", [])
    await response.aclose()  # unread, but complete: the connection is clean
    assert pool.idle_count(origin) == 1
    assert pool.stats["opened"] == 2


async def test_slow_consumer_pauses_the_upstream(upstream, pool):
    total = 32 * 2**20
    sent = 0
    progress = asyncio.Event()

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"z" * 65536
        while sent < total:
            writer.write(block)
            await writer.drain()
            sent += len(block)
            progress.set()

    _raw, origin = await upstream(behaviour)
    response = await pool.request(origin, "GET", "/", [])
    while True:  # wait until the upstream cannot send any more
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), 0.5)
        except TimeoutError:
            break
    assert sent < total / 2
    conn = response._conn
    assert conn.buffered <= HIGH_WATER + 2**20  # at most one socket read past the high-water mark
    received = 0
    async for chunk in response:
        received += len(chunk)
    assert received == total
    assert pool.idle_count(origin) == 1


async def test_pool_close_closes_idle_connections(upstream):
    eof_seen = asyncio.Event()

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await wait_eof(reader)
        eof_seen.set()

    _raw, origin = await upstream(behaviour)
    pool = UpstreamPool()
    assert await (await pool.request(origin, "GET", "/", [])).read() == b"ok"
    await pool.close()
    await asyncio.wait_for(eof_seen.wait(), TIMEOUT)
    with pytest.raises(UpstreamConnectError):
        await pool.request(origin, "GET", "/", [])


async def test_streaming_proxy_roundtrip_through_server_and_pool(start_server, pool, connect):
    async def backend(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for i in range(3):
                yield b"data: %d\n\n" % i

        return StreamingResponse(200, [(b"content-type", b"text/event-stream")], body())

    backend_port = await start_server(backend)
    origin = Origin("http", "127.0.0.1", backend_port)

    async def proxy(request: Request) -> StreamingResponse:
        upstream = await pool.request(origin, request.method, request.path, request.headers, request.body)
        return StreamingResponse(upstream.status, upstream.headers, upstream, upstream.content_length)

    proxy_port = await start_server(proxy)
    conn = await connect(proxy_port)
    for _ in range(2):
        response = await conn.request("GET", "/sse")
        assert response.header("content-type") == "text/event-stream"
        assert response.body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert pool.stats["opened"] == 1


#
# TLS
#


def self_signed(tmp_path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and a client context trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sluice-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    client_context = ssl.create_default_context(cadata=cert_pem.decode())
    return server_context, client_context


async def test_tls_upstream(upstream, tmp_path):
    server_context, client_context = self_signed(tmp_path)
    record: list[RawRequest] = []
    _raw, origin = await upstream(keep_alive_responder(b"secure", record=record), ssl_context=server_context)
    assert origin.scheme == "https"
    pool = UpstreamPool(ssl_context=client_context)
    for _ in range(2):
        response = await pool.request(origin, "POST", "/tls", [], b"{}")
        assert response.status == 200
        assert await response.read() == b"secure"
    assert pool.stats["opened"] == 1
    assert record[0].header("host") == f"127.0.0.1:{origin.port}"
    await pool.close()


async def test_tls_upstream_with_an_untrusted_certificate_is_a_connect_error(upstream, tmp_path):
    server_context, _ = self_signed(tmp_path)
    _raw, origin = await upstream(keep_alive_responder(), ssl_context=server_context)
    pool = UpstreamPool()  # the default context does not trust the test certificate
    with pytest.raises(UpstreamConnectError):
        await pool.request(origin, "GET", "/", [])
    await pool.close()


async def test_pool_keeps_idle_connections_for_at_most_max_origins(upstream):
    # Regression (#7 item 7): origins come from request data (a base-url expression), and every new one used to
    # add an entry to the idle map for good. Beyond max_origins the oldest origin's idle connections are closed.
    servers = [await upstream(keep_alive_responder()) for _ in range(10)]
    pool = UpstreamPool(connect_timeout=2.0, read_timeout=5.0, max_origins=4)
    try:
        first = None
        for _, origin in servers:
            response = await pool.request(origin, "GET", "/", [])
            assert await response.read() == b"ok"
            first = first or pool._idle[origin.key][0]
        assert pool.origin_count() == 4
        assert [pool.idle_count(origin) for _, origin in servers] == [0] * 6 + [1] * 4
        assert pool.stats["evicted"] == 6
        assert first is not None and first.closing()  # the evicted connection is closed, not leaked
        # an evicted origin works again (on a new connection), and an origin still pooled reuses its connection
        again = await pool.request(servers[0][1], "GET", "/", [])
        assert await again.read() == b"ok"
        last = await pool.request(servers[-1][1], "GET", "/", [])
        assert await last.read() == b"ok"
        assert pool.stats["opened"] == 11 and pool.stats["reused"] == 1
        assert pool.origin_count() <= 4
    finally:
        await pool.close()


async def test_pool_drops_emptied_origin_entries_before_evicting(upstream):
    servers = [await upstream(keep_alive_responder()) for _ in range(3)]
    pool = UpstreamPool(connect_timeout=2.0, read_timeout=5.0, max_origins=2)
    try:
        for _, origin in servers[:2]:
            response = await pool.request(origin, "GET", "/", [])
            assert await response.read() == b"ok"
        busy = await pool.request(servers[0][1], "GET", "/", [])  # takes origin 0's only idle connection
        third = await pool.request(servers[2][1], "GET", "/", [])
        assert await third.read() == b"ok"
        # origin 0's empty entry made room: origin 1 keeps its idle connection
        assert pool.idle_count(servers[1][1]) == 1 and pool.stats["evicted"] == 0
        assert await busy.read() == b"ok"
        assert pool.origin_count() == 2
    finally:
        await pool.close()
