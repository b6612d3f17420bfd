"""The request body is read on demand (#7 item 10): the handler gets the head first, and until it asks for the body
the server holds at most ``body_buffer`` bytes of it, sends no 100 Continue, and closes (lingering) after answering.
Also the connection limit."""

from __future__ import annotations

import asyncio
import json

from gateway.http.server import Request, RequestBodyError, Response

from .test_server import assert_error, echo

BUFFER = 16 * 1024
BIG = 8 * 1024 * 1024


def refuse(seen: list[Request]):
    """A handler that answers 401 from the head alone, as the gateway does for a bad key."""

    async def handler(request: Request) -> Response:
        seen.append(request)
        await asyncio.sleep(0)
        return Response(401, [(b"content-type", b"application/json")], b'{"statusCode": 401}')

    return handler


async def test_handler_gets_the_head_before_the_body_arrives(start_server, connect):
    seen: list[Request] = []
    port = await start_server(refuse(seen), body_buffer=BUFFER)
    conn = await connect(port)
    await conn.send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\nabc")  # 997 bytes never come
    response = await conn.read_response()
    assert response.status == 401
    assert response.header("connection") == "close"  # the unread body cannot be told from a next request
    assert await conn.at_eof()
    assert len(seen) == 1 and not seen[0].body_complete and seen[0].body == b""


async def test_unread_body_held_is_bounded_and_reading_pauses(start_server, connect):
    held: list[int] = []
    paused = asyncio.Event()

    async def handler(request: Request) -> Response:
        connection = request._conn
        async with asyncio.timeout(5):
            while not connection._reading_paused:  # the client keeps sending: the server stops reading
                await asyncio.sleep(0.001)
        held.append(connection._held)
        paused.set()
        return Response(401)

    port = await start_server(handler, body_buffer=BUFFER)
    conn = await connect(port)
    conn.writer.write(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % BIG)
    sender = asyncio.ensure_future(_send_body(conn, BIG))
    response = await conn.read_response()
    assert response.status == 401
    assert paused.is_set()
    assert held[0] <= BUFFER + 256 * 1024, held  # the buffer plus at most one socket read
    sender.cancel()


async def _send_body(conn, size: int) -> None:
    chunk = b"x" * 65536
    try:
        for _ in range(size // len(chunk)):
            conn.writer.write(chunk)
            await conn.writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass


async def test_client_sending_a_body_reads_the_answer_not_a_reset(start_server, connect):
    # Lingering close: the server answers from the head while the client is still sending; it shuts its side and
    # drains, so the client gets the whole 401 (an abrupt close with unread input would reset the connection).
    seen: list[Request] = []
    port = await start_server(refuse(seen), body_buffer=BUFFER)
    conn = await connect(port)
    conn.writer.write(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % BIG)
    sender = asyncio.ensure_future(_send_body(conn, BIG))
    response = await conn.read_response()
    assert response.status == 401 and response.body == b'{"statusCode": 401}'
    assert await conn.at_eof()
    sender.cancel()


async def test_100_continue_only_when_the_handler_reads(start_server, connect):
    seen: list[Request] = []
    port = await start_server(refuse(seen))
    conn = await connect(port)
    await conn.send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    response = await conn.read_head()
    assert response.status == 401  # the final answer, no interim 100: the client never sends the body

    port = await start_server(echo)
    conn = await connect(port)
    await conn.send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert (await conn.read_head()).status == 100
    await conn.send(b"hello")
    assert json.loads((await conn.read_response()).body)["body"] == "hello"


async def test_small_complete_body_not_read_keeps_the_connection(start_server, connect):
    seen: list[Request] = []
    port = await start_server(refuse(seen))
    conn = await connect(port)
    await conn.send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
    response = await conn.read_response()
    assert response.status == 401 and response.header("connection") is None
    assert (await conn.request("GET", "/next")).status == 401


async def test_chunked_body_over_the_limit_is_a_413_when_read(start_server, connect):
    errors: list[int] = []

    async def handler(request: Request) -> Response:
        try:
            await request.read_body()
        except RequestBodyError as exc:
            errors.append(exc.status)
            raise
        return Response(200)

    port = await start_server(handler, max_body_bytes=10)
    conn = await connect(port)
    chunks = b"8\r\n01234567\r\n" * 2
    await conn.send(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
    assert_error(await conn.read_response(), 413)
    assert errors == [413]
    assert await conn.at_eof()


async def test_slow_body_is_a_408_counted_from_the_read(start_server, connect):
    port = await start_server(echo, body_timeout=0.2)
    conn = await connect(port)
    await conn.send(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
    data = assert_error(await conn.read_response(), 408)
    assert "body" in data["message"]
    assert await conn.at_eof()


async def test_connections_over_the_limit_get_503(start_server, connect):
    port = await start_server(echo, max_connections=2)
    first, second = await connect(port), await connect(port)
    assert (await first.request("GET", "/a")).status == 200
    assert (await second.request("GET", "/b")).status == 200
    third = await connect(port)
    await third.send(b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n")
    data = assert_error(await third.read_response(), 503)
    assert "connections" in data["message"]
    assert await third.at_eof()
    first.close()
    assert await first.at_eof()
    async with asyncio.timeout(5):  # the server sees the close, and has room again
        while True:
            fourth = await connect(port)
            response = await fourth.request("GET", "/d")
            if response.status == 200:
                break
            await asyncio.sleep(0.01)
