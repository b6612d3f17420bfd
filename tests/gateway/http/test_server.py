"""gateway.http.server over real sockets: framing, keep-alive, limits, timeouts, streaming, disconnects."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.http.server import Request, RequestBodyError, Response, StreamingResponse, serve, shutdown

ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


async def echo(request: Request) -> Response:
    """Answer with what the server parsed, as JSON."""
    data = {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": [[k.decode(), v.decode()] for k, v in request.headers],
        "body": (await request.read_body()).decode("latin-1"),
        "client_ip": request.client_ip,
        "http_version": request.http_version,
    }
    return Response(200, [(b"content-type", b"application/json")], json.dumps(data).encode())


def assert_error(response, status: int) -> dict:
    assert response.status == status
    assert response.header("content-type") == "application/json"
    assert ID_RE.match(response.header("x-request-id") or "")
    data = json.loads(response.body)
    assert data["statusCode"] == status
    assert isinstance(data["message"], str) and data["message"]
    return data


async def assert_refused(connect, port: int, raw: bytes, status: int) -> None:
    """``raw`` sent on a new connection gets the JSON error ``status``, then the server closes the connection."""
    conn = await connect(port)
    await conn.send(raw)
    assert_error(await conn.read_response(), status)
    assert await conn.at_eof()


#
# Basics
#


async def test_get_and_post_roundtrip_with_aiohttp(start_server):
    port = await start_server(echo)
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/gemini/chat%2Fx/completions?a=1&b=%20"
        async with session.get(url, headers=[("X-Multi", "1"), ("X-Multi", "2")]) as resp:
            assert resp.status == 200
            got = await resp.json()
        assert got["method"] == "GET"
        assert got["path"] == "/gemini/chat%2Fx/completions"
        assert got["query"] == "a=1&b=%20"
        assert ["x-multi", "1"] in got["headers"] and ["x-multi", "2"] in got["headers"]
        assert got["client_ip"] == "127.0.0.1"
        assert got["http_version"] == "1.1"

        async with session.post(f"http://127.0.0.1:{port}/p", data=b'{"hello": "world"}') as resp:
            got = await resp.json()
        assert got["method"] == "POST"
        assert got["query"] == ""
        assert got["body"] == '{"hello": "world"}'


async def test_request_header_lookup_and_order(start_server, connect):
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        return Response(204)

    port = await start_server(handler)
    conn = await connect(port)
    await conn.send(b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-b: two\r\nX-A: 3\r\n\r\n")
    response = await conn.read_response()
    assert response.status == 204
    assert response.header("content-length") is None
    request = seen[0]
    assert request.headers == [(b"host", b"h"), (b"x-a", b"1"), (b"x-b", b"two"), (b"x-a", b"3")]
    assert request.header(b"x-a") == b"1"
    assert request.header(b"missing") is None


async def test_keep_alive_serves_several_requests_on_one_connection(start_server, connect):
    port = await start_server(echo)
    conn = await connect(port)
    for i in range(3):
        response = await conn.request("POST", f"/r{i}", body=b"x" * i)
        assert response.status == 200
        assert response.header("connection") is None
        assert json.loads(response.body)["path"] == f"/r{i}"


async def test_waits_for_the_next_request_and_the_body_use_futures_of_the_connections_loop(
    start_server, connect, future_loops
):
    reading = asyncio.Event()

    async def handler(request: Request) -> Response:
        reading.set()
        return Response(200, [], await request.read_body())

    port = await start_server(handler)
    conn = await connect(port)
    assert (await conn.request("POST", "/first", body=b"x")).body == b"x"
    assert len(future_loops) == 1  # the connection's wait for its next request
    reading.clear()
    await conn.send(b"POST /second HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab")
    await reading.wait()  # the handler waits in read_body for the rest
    await conn.send(b"cd")
    assert (await conn.read_response()).body == b"abcd"
    assert len(future_loops) >= 2
    assert all(loop is asyncio.get_running_loop() for loop in future_loops)


async def test_pipelined_requests_are_answered_in_order(start_server, connect):
    first_started = asyncio.Event()
    release_first = asyncio.Event()
    order: list[str] = []

    async def handler(request: Request) -> Response:
        order.append(request.path)
        if request.path == "/first":
            first_started.set()
            await release_first.wait()
        return Response(200, body=request.path.encode())

    port = await start_server(handler)
    conn = await connect(port)
    await conn.send(
        b"GET /first HTTP/1.1\r\nHost: h\r\n\r\nPOST /second HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    )
    await asyncio.wait_for(first_started.wait(), 5)
    assert order == ["/first"]  # both were parsed from one read; the second waits for the first
    release_first.set()
    assert (await conn.read_response()).body == b"/first"
    assert (await conn.read_response()).body == b"/second"
    assert order == ["/first", "/second"]


async def test_pipelined_garbage_after_a_good_request(start_server, connect):
    port = await start_server(echo)
    conn = await connect(port)
    await conn.send(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
    assert (await conn.read_response()).status == 200
    assert_error(await conn.read_response(), 400)
    assert await conn.at_eof()


async def test_http10_closes_unless_keep_alive(start_server, connect):
    port = await start_server(echo)
    conn = await connect(port)
    await conn.send(b"GET /a HTTP/1.0\r\n\r\n")
    response = await conn.read_response()
    assert response.status == 200
    assert response.header("connection") == "close"
    assert json.loads(response.body)["http_version"] == "1.0"
    assert await conn.at_eof()

    conn = await connect(port)
    for _ in range(2):
        await conn.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        response = await conn.read_response()
        assert response.status == 200
        assert response.header("connection") == "keep-alive"


@pytest.mark.parametrize(
    ("raw", "version", "connection"),
    [
        (b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", "1.1", None),
        (b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", "1.1", None),
        (b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "1.0", "keep-alive"),
        # llhttp reads the keep-alive option from Proxy-Connection too: still an HTTP/1.0 request
        (b"GET /a HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n", "1.0", "keep-alive"),
        (b"GET /a HTTP/1.0\r\nHost: h\r\nPROXY-CONNECTION: Keep-Alive\r\n\r\n", "1.0", "keep-alive"),
    ],
)
async def test_http_version_of_kept_alive_requests(start_server, connect, raw, version, connection):
    port = await start_server(echo)
    conn = await connect(port)
    for _ in range(2):
        await conn.send(raw)
        response = await conn.read_response()
        assert response.status == 200
        assert json.loads(response.body)["http_version"] == version
        assert response.header("connection") == connection


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/2.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", 505),
        (b"GET / HTTP/0.9\r\nHost: h\r\nProxy-Connection: keep-alive\r\n\r\n", 505),
        (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/3.0\r\nHost: h\r\n\r\n", 400),
    ],
)
async def test_other_http_versions_are_refused_with_or_without_keep_alive(start_server, connect, raw, status):
    port = await start_server(echo)
    await assert_refused(connect, port, raw, status)


async def test_http10_streaming_is_close_delimited(start_server, connect):
    async def handler(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"one "
            yield b"two"

        return StreamingResponse(200, None, body())

    port = await start_server(handler)
    conn = await connect(port)
    await conn.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    response = await conn.read_head()
    assert response.header("transfer-encoding") is None
    assert response.header("content-length") is None
    assert response.header("connection") == "close"
    assert await conn.read_to_eof() == b"one two"


async def test_connection_close_request_closes_after_response(start_server, connect):
    port = await start_server(echo)
    conn = await connect(port)
    await conn.send(b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\nHost: h\r\n\r\n")
    response = await conn.read_response()
    assert response.header("connection") == "close"
    assert await conn.at_eof()


#
# Expect: 100-continue
#


async def test_expect_100_continue_is_answered_before_the_body(start_server, connect):
    port = await start_server(echo)
    conn = await connect(port)
    await conn.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = await conn.read_head()
    assert interim.status == 100
    await conn.send(b"hello")
    response = await conn.read_response()
    assert response.status == 200
    assert json.loads(response.body)["body"] == "hello"


async def test_other_expectations_get_417(start_server, connect):
    port = await start_server(echo)
    await assert_refused(
        connect, port, b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: teapot\r\n\r\nhello", 417
    )


async def test_expect_with_too_large_body_gets_413_without_100(start_server, connect):
    port = await start_server(echo, max_body_bytes=10)
    await assert_refused(
        connect, port, b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n", 413
    )


#
# Limits and malformed requests
#


async def test_body_over_the_limit_gets_413(start_server, connect):
    port = await start_server(echo, max_body_bytes=10)
    await assert_refused(connect, port, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", 413)

    await assert_refused(
        connect,
        port,
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n",
        413,
    )


async def test_body_at_the_limit_is_accepted(start_server, connect):
    port = await start_server(echo, max_body_bytes=10)
    conn = await connect(port)
    response = await conn.request("POST", "/", body=b"0123456789")
    assert json.loads(response.body)["body"] == "0123456789"


async def test_header_fields_over_the_limit_get_431(start_server, connect):
    port = await start_server(echo, max_header_bytes=1024, max_headers=5)
    await assert_refused(connect, port, b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n", 431)

    conn = await connect(port)
    many = b"".join(b"X-%d: v\r\n" % i for i in range(6))
    await conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n" + many + b"\r\n")
    assert_error(await conn.read_response(), 431)

    conn = await connect(port)
    await conn.send(b"GET /" + b"p" * 2000 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert_error(await conn.read_response(), 431)


async def test_endless_header_line_is_refused_without_buffering_it(start_server, connect):
    port = await start_server(echo, max_header_bytes=1024)
    conn = await connect(port)
    await conn.send(b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ")
    for _ in range(5):
        conn.writer.write(b"a" * 1000)
    await conn.writer.drain()
    assert_error(await conn.read_response(), 431)


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
    ],
)
async def test_bad_chunked_framing_is_a_400_for_the_handler_reading_the_body(start_server, connect, raw):
    errors: list[RequestBodyError] = []

    async def handler(request: Request) -> Response:
        try:
            await request.read_body()
        except RequestBodyError as exc:
            errors.append(exc)
            raise  # answered by the server as JSON
        return Response(200)

    port = await start_server(handler)
    await assert_refused(connect, port, raw, 400)
    assert [(e.status, e.message) for e in errors] == [(400, "Malformed request body.")]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        # request smuggling: both framings, conflicting or repeated lengths
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc", 501),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        # malformed heads
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\nHost: h\n\n", 400),
        (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
    ],
)
async def test_malformed_or_ambiguous_requests_are_refused_and_closed(start_server, connect, raw, status):
    handled: list[Request] = []

    async def handler(request: Request) -> Response:
        handled.append(request)
        return Response(200)

    port = await start_server(handler)
    await assert_refused(connect, port, raw, status)
    assert handled == []


async def test_chunked_request_body_is_dechunked_and_trailers_dropped(start_server, connect):
    port = await start_server(echo)
    conn = await connect(port)
    await conn.send(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    got = json.loads((await conn.read_response()).body)
    assert got["body"] == "abcde"
    assert ["x-trailer", "t"] not in got["headers"]


async def test_http10_request_without_host_is_accepted(start_server, connect):
    port = await start_server(echo)
    conn = await connect(port)
    await conn.send(b"GET /old HTTP/1.0\r\n\r\n")
    assert (await conn.read_response()).status == 200


async def test_upgrade_request_is_served_as_plain_http_then_closed(start_server, connect):
    port = await start_server(echo)
    conn = await connect(port)
    await conn.send(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00")
    response = await conn.read_response()
    assert response.status == 200
    assert response.header("connection") == "close"
    assert await conn.at_eof()


#
# Timeouts
#


async def test_slow_request_head_gets_408(start_server, connect):
    port = await start_server(echo, header_timeout=0.2)
    await assert_refused(connect, port, b"GET / HTTP/1.1\r\nHost: h\r\n", 408)  # the head is never finished


async def test_slow_request_body_gets_408(start_server, connect):
    port = await start_server(echo, body_timeout=0.2)
    await assert_refused(connect, port, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc", 408)


async def test_silent_new_connection_is_closed_after_header_timeout(start_server, connect):
    port = await start_server(echo, header_timeout=0.2)
    conn = await connect(port)
    assert await conn.at_eof()


async def test_idle_keep_alive_connection_is_closed(start_server, connect):
    port = await start_server(echo, keepalive_timeout=0.2)
    conn = await connect(port)
    assert (await conn.request("GET", "/")).status == 200
    assert await conn.at_eof()


async def test_slow_handler_is_not_cut_by_read_timeouts(start_server, connect):
    async def handler(request: Request) -> Response:
        await asyncio.sleep(0.4)  # longer than every read timeout: the handler owns its time
        return Response(200, body=b"late")

    port = await start_server(handler, header_timeout=0.1, body_timeout=0.1, keepalive_timeout=0.1)
    conn = await connect(port)
    assert (await conn.request("GET", "/")).body == b"late"


#
# Responses
#


async def test_head_keeps_content_length_and_sends_no_body(start_server, connect):
    closed = asyncio.Event()

    async def handler(request: Request) -> Response | StreamingResponse:
        if request.path == "/stream":

            async def body() -> AsyncIterator[bytes]:
                try:
                    yield b"never sent"
                finally:
                    closed.set()

            return StreamingResponse(200, None, body(), content_length=42)
        return Response(200, [(b"content-type", b"text/plain")], b"hello")

    port = await start_server(handler)
    conn = await connect(port)
    response = await conn.request("HEAD", "/")
    assert response.header("content-length") == "5"
    response = await conn.request("HEAD", "/stream")
    assert response.header("content-length") == "42"
    # any stray body byte would now be read as the start of the next response
    response = await conn.request("GET", "/")
    assert response.status == 200
    assert response.body == b"hello"


async def test_204_and_304_carry_no_framing(start_server, connect):
    async def handler(request: Request) -> Response:
        return Response(int(request.path[1:]), [(b"etag", b'"x"')], b"ignored")

    port = await start_server(handler)
    conn = await connect(port)
    for status in (204, 304):
        response = await conn.request("GET", f"/{status}")
        assert response.status == status
        assert response.header("content-length") is None
        assert response.header("transfer-encoding") is None
    assert (await conn.request("GET", "/200")).body == b"ignored"


async def test_server_owns_framing_and_hop_by_hop_headers(start_server, connect):
    async def handler(request: Request) -> Response:
        headers = [
            (b"content-length", b"999"),
            (b"Transfer-Encoding", b"chunked"),
            (b"keep-alive", b"timeout=5"),
            (b"upgrade", b"h2c"),
            (b"trailer", b"x"),
            (b"x-kept", b"yes"),
        ]
        return Response(200, headers, b"body")

    port = await start_server(handler)
    conn = await connect(port)
    response = await conn.request("GET", "/")
    assert response.header_names() == ["x-kept", "content-length"]
    assert response.header("content-length") == "4"
    assert response.body == b"body"


async def test_handler_connection_close_closes_after_response(start_server, connect):
    async def handler(request: Request) -> Response:
        return Response(200, [(b"connection", b"close")], b"bye")

    port = await start_server(handler)
    conn = await connect(port)
    response = await conn.request("GET", "/")
    assert response.header("connection") == "close"
    assert await conn.at_eof()


async def test_handler_exception_gives_500_json_without_traceback(start_server, connect, caplog):
    async def handler(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("secret internal detail")
        return Response(200, body=b"fine")

    port = await start_server(handler)
    conn = await connect(port)
    with caplog.at_level(logging.ERROR, logger="gateway.http"):
        response = await conn.request("GET", "/boom")
    data = assert_error(response, 500)
    assert "secret" not in response.body.decode() and "Traceback" not in response.body.decode()
    assert data["message"] == "Internal server error."
    assert any(record.exc_info and "secret internal detail" in str(record.exc_info[1]) for record in caplog.records)
    # the request was read completely, so the connection goes on
    assert (await conn.request("GET", "/")).body == b"fine"


async def test_invalid_response_header_is_not_sent(start_server, connect):
    async def handler(request: Request) -> Response:
        return Response(200, [(b"x-evil", b"a\r\nset-cookie: stolen=1")], b"x")

    port = await start_server(handler)
    conn = await connect(port)
    response = await conn.request("GET", "/")
    assert_error(response, 500)
    assert response.header("set-cookie") is None


async def test_invalid_response_object_gives_500(start_server, connect):
    async def handler(request: Request) -> Response:
        return "not a response"  # type: ignore[return-value]

    port = await start_server(handler)
    conn = await connect(port)
    assert_error(await conn.request("GET", "/"), 500)


async def test_small_response_goes_out_in_one_write(start_server, connect, monkeypatch):
    writes: list[bytes] = []

    async def handler(request: Request) -> Response:
        return Response(200, [(b"content-type", b"text/plain")], b"x" * 100)

    from gateway.http import server as server_module

    original = server_module._Connection._write

    def spy(self, data: bytes) -> None:
        writes.append(data)
        original(self, data)

    monkeypatch.setattr(server_module._Connection, "_write", spy)
    port = await start_server(handler)
    conn = await connect(port)
    response = await conn.request("GET", "/")
    assert response.body == b"x" * 100
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"x" * 100)


#
# Streaming, disconnects, backpressure
#


async def test_streaming_response_is_chunked_and_incremental(start_server, connect):
    second = asyncio.Event()

    async def handler(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"data: 1\n\n"
            await second.wait()
            yield b""  # empty chunks are skipped, never sent as the terminator
            yield b"data: 2\n\n"

        return StreamingResponse(200, [(b"content-type", b"text/event-stream")], body())

    port = await start_server(handler)
    conn = await connect(port)
    await conn.send(b"GET /sse HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await conn.read_head()
    assert head.header("transfer-encoding") == "chunked"
    assert head.header("content-type") == "text/event-stream"
    assert await conn.read_chunk() == b"data: 1\n\n"  # before the producer is allowed to go on
    second.set()
    assert await conn.read_chunk() == b"data: 2\n\n"
    assert await conn.read_chunk() is None
    assert (await conn.request("GET", "/again")).status == 200


async def test_streaming_response_with_content_length(start_server, connect):
    async def handler(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"abc"
            yield b"def"

        return StreamingResponse(200, None, body(), content_length=6)

    port = await start_server(handler)
    conn = await connect(port)
    response = await conn.request("GET", "/")
    assert response.header("content-length") == "6"
    assert response.header("transfer-encoding") is None
    assert response.body == b"abcdef"
    assert (await conn.request("GET", "/")).body == b"abcdef"


async def test_streaming_length_mismatch_closes_the_connection(start_server, connect):
    async def handler(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"abc"

        return StreamingResponse(200, None, body(), content_length=10)

    port = await start_server(handler)
    conn = await connect(port)
    await conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await conn.read_head()
    assert head.header("content-length") == "10"
    assert await conn.read_to_eof() == b"abc"


async def test_stream_failing_before_the_first_chunk_gives_500(start_server, connect):
    async def handler(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            raise RuntimeError("upstream went away")
            yield b""  # pragma: no cover

        return StreamingResponse(200, None, body())

    port = await start_server(handler)
    conn = await connect(port)
    assert_error(await conn.request("GET", "/"), 500)
    assert (await conn.request("GET", "/")).status == 500  # still usable


async def test_stream_failing_midway_truncates_and_closes(start_server, connect):
    async def handler(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"part"
            await asyncio.sleep(0)
            raise RuntimeError("upstream went away")

        return StreamingResponse(200, None, body())

    port = await start_server(handler)
    conn = await connect(port)
    await conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await conn.read_head()
    assert await conn.read_chunk() == b"part"
    assert await conn.at_eof()  # no terminating chunk: the client can tell the body is incomplete


async def test_stream_sends_its_first_chunk_before_the_iterator_goes_on(start_server, connect):
    """Head and first chunk leave together at once: what the iterator does next (here it fails without yielding to
    the loop) no longer holds the client's first byte back, nor turns the answer into a 500."""

    async def handler(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first"
            raise RuntimeError("upstream went away")

        return StreamingResponse(200, None, body())

    port = await start_server(handler)
    conn = await connect(port)
    await conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (await conn.read_head()).status == 200
    assert await conn.read_chunk() == b"first"
    assert await conn.at_eof()


async def test_client_disconnect_cancels_the_handler(start_server, connect):
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(request: Request) -> Response:
        started.set()
        try:
            await asyncio.Event().wait()  # an upstream call that never answers
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response(200)  # pragma: no cover

    port = await start_server(handler)
    conn = await connect(port)
    await conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await asyncio.wait_for(started.wait(), 5)
    conn.close()
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_client_disconnect_mid_stream_closes_the_body_iterator(start_server, connect):
    first_sent = asyncio.Event()
    outcome: list[str] = []
    finished = asyncio.Event()

    class Body:
        """An iterator with aclose(), like an upstream response."""

        def __init__(self) -> None:
            self.n = 0

        def __aiter__(self) -> Body:
            return self

        async def __anext__(self) -> bytes:
            self.n += 1
            if self.n == 1:
                return b"first"
            first_sent.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise
            return b"never"  # pragma: no cover

        async def aclose(self) -> None:
            outcome.append("aclose")
            finished.set()

    async def handler(request: Request) -> StreamingResponse:
        return StreamingResponse(200, None, Body())

    port = await start_server(handler)
    conn = await connect(port)
    await conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await conn.read_head()
    assert await conn.read_chunk() == b"first"
    await asyncio.wait_for(first_sent.wait(), 5)
    conn.close()
    await asyncio.wait_for(finished.wait(), 5)
    assert outcome == ["cancelled", "aclose"]


async def test_backpressure_bounds_memory_with_a_client_that_does_not_read(start_server, connect):
    chunk = b"x" * 65536
    produced = 0
    progress = asyncio.Event()
    closed = asyncio.Event()

    async def handler(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            nonlocal produced
            try:
                while True:  # an endless stream, far more than any socket buffer
                    produced += len(chunk)
                    progress.set()
                    yield chunk
                    await asyncio.sleep(0)  # lets the test fail rather than hang if the server never waits
            finally:
                closed.set()

        return StreamingResponse(200, None, body())

    port = await start_server(handler)
    conn = await connect(port, rcvbuf=65536, limit=65536)
    await conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    # The producer must stall: wait until it makes no progress for a while.
    while True:
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), 0.5)
        except TimeoutError:
            break
        assert produced < 64 * 2**20, "the server kept producing for a client that reads nothing"
    assert produced < 16 * 2**20
    stalled_at = produced
    # reading some of it lets the producer go on
    for _ in range(40):
        await asyncio.wait_for(conn.reader.read(65536), 5)
    await asyncio.wait_for(progress.wait(), 5)
    assert produced > stalled_at
    conn.close()
    await asyncio.wait_for(closed.wait(), 5)


async def test_client_that_stops_reading_is_disconnected_after_send_timeout(start_server, connect):
    closed = asyncio.Event()

    async def handler(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"y" * 65536
            finally:
                closed.set()

        return StreamingResponse(200, None, body())

    port = await start_server(handler, send_timeout=0.3)
    conn = await connect(port, rcvbuf=65536, limit=65536)
    await conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await asyncio.wait_for(closed.wait(), 5)


async def test_large_response_body_is_delivered(start_server, connect):
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def handler(request: Request) -> Response:
        return Response(200, None, payload)

    port = await start_server(handler)
    conn = await connect(port)
    assert (await conn.request("GET", "/")).body == payload
    assert (await conn.request("GET", "/")).body == payload


#
# Graceful shutdown
#


async def test_shutdown_closes_idle_connections_and_lets_requests_finish(connect):
    started = asyncio.Event()
    release = asyncio.Event()

    async def handler(request: Request) -> Response:
        if request.path == "/slow":
            started.set()
            await release.wait()
        return Response(200, body=b"done")

    server = await serve(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    idle = await connect(port)
    assert (await idle.request("GET", "/")).status == 200
    busy = await connect(port)
    await busy.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
    await asyncio.wait_for(started.wait(), 5)

    stopping = asyncio.create_task(shutdown(server, timeout=5))
    assert await idle.at_eof()
    assert not stopping.done()
    release.set()
    response = await busy.read_response()
    assert response.body == b"done"
    assert response.header("connection") == "close"
    assert await busy.at_eof()
    await asyncio.wait_for(stopping, 5)


async def test_shutdown_aborts_requests_that_outlive_the_timeout(connect):
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(request: Request) -> Response:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response(200)  # pragma: no cover

    server = await serve(handler, "127.0.0.1", 0)
    conn = await connect(server.sockets[0].getsockname()[1])
    await conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await asyncio.wait_for(started.wait(), 5)
    await shutdown(server, timeout=0.2)
    await asyncio.wait_for(cancelled.wait(), 5)
    assert await conn.at_eof()


async def test_100_continue_for_a_pipelined_request_waits_for_the_earlier_response(start_server, connect):
    first_started = asyncio.Event()
    release_first = asyncio.Event()

    async def handler(request: Request) -> Response:
        if request.path == "/first":
            first_started.set()
            await release_first.wait()
        return Response(200, body=request.path.encode() + b":" + await request.read_body())

    port = await start_server(handler)
    conn = await connect(port)
    await conn.send(
        b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /second HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    )
    await asyncio.wait_for(first_started.wait(), 5)
    release_first.set()
    first = await conn.read_head()
    assert first.status == 200  # not the interim answer of the second request
    assert await asyncio.wait_for(conn.reader.readexactly(int(first.header("content-length"))), 5) == b"/first:"
    assert (await conn.read_head()).status == 100
    await conn.send(b"body")
    assert (await conn.read_response()).body == b"/second:body"


async def test_many_pipelined_requests_in_one_write(start_server, connect):
    async def handler(request: Request) -> Response:
        await asyncio.sleep(0)
        return Response(200, body=request.path.encode())

    port = await start_server(handler)
    conn = await connect(port)
    await conn.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(50)))
    for i in range(50):
        assert (await conn.read_response()).body == b"/%d" % i
    assert (await conn.request("GET", "/after")).body == b"/after"


@pytest.mark.parametrize("status", [101, 199, 1000])
async def test_status_outside_the_final_range_gives_500(start_server, connect, status):
    async def handler(request: Request) -> Response:
        return Response(status)

    port = await start_server(handler)
    conn = await connect(port)
    assert_error(await conn.request("GET", "/"), 500)


async def test_absolute_form_and_asterisk_targets(start_server, connect):
    port = await start_server(echo)
    conn = await connect(port)
    await conn.send(b"GET http://upstream.example/v1/models?x=1#frag HTTP/1.1\r\nHost: upstream.example\r\n\r\n")
    got = json.loads((await conn.read_response()).body)
    assert (got["path"], got["query"]) == ("/v1/models", "x=1")
    await conn.send(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    got = json.loads((await conn.read_response()).body)
    assert (got["method"], got["path"], got["query"]) == ("OPTIONS", "*", "")


@pytest.mark.parametrize("target", [b"http://h:99999/x", b"http://h:/x", b"http://[::1/x"])
async def test_an_absolute_form_target_that_is_not_a_url_is_400(start_server, connect, caplog, target):
    """Found by the gateway fuzz battery (issue #7): httptools.parse_url raised inside the parser callback, which
    answered 500 and logged a traceback."""
    port = await start_server(echo)
    conn = await connect(port)
    await conn.send(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert_error(await conn.read_response(), 400)
    assert "Traceback" not in caplog.text and "parser callback failed" not in caplog.text
