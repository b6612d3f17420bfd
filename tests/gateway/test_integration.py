"""End to end: the real HTTP server and upstream pool, a real aiohttp upstream, a snapshot built from a dict."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from gateway.app import create_app
from gateway.errors import MSG_INVALID_KEY, MSG_MISSING_KEY, MSG_OPERATION_NOT_FOUND
from gateway.http.client import UpstreamPool
from gateway.http.server import ServerLimits, serve
from gateway.settings import GatewaySettings
from gateway.snapshot import load_snapshot

from .helpers import KEYS, TOKEN, api, base_snapshot, op

KEY = KEYS["master"][0]
VERBS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class Upstream:
    """A small aiohttp upstream with hooks the tests synchronise on."""

    def __init__(self) -> None:
        self.second_event = asyncio.Event()
        self.stream_cancelled = asyncio.Event()
        self.stream_started = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_route("*", "/base/sse", self.sse)
        self.app.router.add_route("*", "/base/hang-sse", self.hang_sse)
        self.app.router.add_route("*", "/base/never", self.never)
        self.app.router.add_route("*", "/{tail:.*}", self.echo)

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path_qs": request.raw_path,
                "headers": [[k.lower(), v] for k, v in request.headers.items()],
                "body": body.decode(),
            },
            headers={"x-upstream": "yes"},
        )

    async def sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: one\n\n")
        await self.second_event.wait()  # only after the client has received the first event
        await response.write(b"data: two\n\n")
        await response.write_eof()
        return response

    async def hang_sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        self.stream_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.stream_cancelled.set()  # the gateway closed the upstream connection
            raise
        return response

    async def never(self, request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot_for(upstream_url: str) -> dict:
    data = base_snapshot(upstream_url)
    data["apis"].append(api("pass", "pass", upstream_url, operations=[op(v.lower(), v, "/*") for v in VERBS]))
    data["apis"].append(
        api(
            "via-backend",
            "creds",
            upstream_url,
            operations=[op("any", "POST", "/*")],
            policy='<policies><inbound><base/><set-backend-service backend-id="llm-backend"/></inbound></policies>',
        )
    )
    data["apis"].append(api("dead", "dead", f"http://127.0.0.1:{closed_port()}", operations=[op("g", "GET", "/*")]))
    data["apis"].append(api("slow", "slow", upstream_url, operations=[op("g", "GET", "/*")]))
    return data


@contextlib.asynccontextmanager
async def running_gateway(upstream_url: str, *, read_timeout: float = 10.0):
    config = GatewaySettings(gateway_token=TOKEN, upstream_read_timeout=read_timeout)
    pool = UpstreamPool(connect_timeout=2.0, read_timeout=read_timeout)
    app = create_app(config, pool=pool)
    app.snapshot = load_snapshot(snapshot_for(upstream_url + "/base"), gateway_token=TOKEN)
    server = await serve(app, "127.0.0.1", 0, limits=ServerLimits())
    port = server.sockets[0].getsockname()[1]
    session = aiohttp.ClientSession(f"http://127.0.0.1:{port}", auto_decompress=False)
    try:
        yield session
    finally:
        await session.close()
        server.close()
        await pool.close()


@pytest.fixture
async def upstream():
    up = Upstream()
    server = TestServer(up.app, host="127.0.0.1")
    await server.start_server()
    up.url = str(server.make_url("")).rstrip("/")
    yield up
    await server.close()


@pytest.fixture
async def client(upstream):
    async with running_gateway(upstream.url) as session:
        yield session


def headers_of(echo: dict) -> dict[str, str]:
    return dict(echo["headers"])


async def test_json_roundtrip(client, upstream):
    async with asyncio.timeout(5):
        response = await client.post(
            "/llm/chat/chat/completions?api-version=1",
            json={"model": "m", "messages": []},
            headers={"Ocp-Apim-Subscription-Key": KEY, "x-custom": "kept"},
        )
        assert response.status == 200
        assert response.headers["x-request-id"] and response.headers["x-upstream"] == "yes"
        assert response.headers["content-type"].startswith("application/json")
        echo = await response.json()
    assert echo["method"] == "POST"
    assert echo["path_qs"] == "/base/chat/completions?api-version=1"
    assert orjson.loads(echo["body"]) == {"model": "m", "messages": []}
    sent = headers_of(echo)
    assert sent["x-custom"] == "kept"
    assert "ocp-apim-subscription-key" not in sent
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["host"] == upstream.url.removeprefix("http://")  # set by the pool from the origin


async def test_sse_is_streamed_incrementally(client, upstream):
    async with asyncio.timeout(5):
        response = await client.get("/llm/chat/sse", headers={"Ocp-Apim-Subscription-Key": KEY})
        assert response.status == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers.get("transfer-encoding") == "chunked"
        first = await response.content.readuntil(b"\n\n")
        assert first == b"data: one\n\n"
        assert not upstream.second_event.is_set()  # the first event arrived before the second was even written
        upstream.second_event.set()
        rest = await response.content.read()
    assert rest == b"data: two\n\n"


async def test_client_disconnect_mid_stream_closes_the_upstream(client, upstream):
    async with asyncio.timeout(5):
        response = await client.get("/llm/chat/hang-sse", headers={"Ocp-Apim-Subscription-Key": KEY})
        assert await response.content.readuntil(b"\n\n") == b"data: first\n\n"
        response.close()  # drop the connection mid-stream
        await upstream.stream_cancelled.wait()


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, MSG_MISSING_KEY),
        ({"Ocp-Apim-Subscription-Key": "wrong"}, 401, MSG_INVALID_KEY),
    ],
)
async def test_401s(client, headers, status, message):
    async with asyncio.timeout(5):
        response = await client.post("/llm/chat/chat/completions", json={}, headers=headers)
        assert response.status == status
        assert await response.json() == {"statusCode": status, "message": message}
        assert response.headers["x-request-id"]


async def test_404(client):
    async with asyncio.timeout(5):
        response = await client.get("/no/such/api", headers={"Ocp-Apim-Subscription-Key": KEY})
        assert response.status == 404
        assert await response.json() == {"statusCode": 404, "message": MSG_OPERATION_NOT_FOUND}
        assert response.headers["x-request-id"]
        # wrong method on a known path: the same 404
        response = await client.delete("/llm/chat/chat/completions", headers={"Ocp-Apim-Subscription-Key": KEY})
        assert response.status == 404


async def test_502_when_backend_refuses(client):
    async with asyncio.timeout(5):
        response = await client.get("/dead/x", headers={"Ocp-Apim-Subscription-Key": KEY})
        assert response.status == 502
        body = await response.json()
        assert body["statusCode"] == 502 and body["message"]
        assert response.headers["x-request-id"]


async def test_504_when_backend_never_answers(upstream):
    async with running_gateway(upstream.url, read_timeout=0.2) as session, asyncio.timeout(5):
        response = await session.get("/slow/never", headers={"Ocp-Apim-Subscription-Key": KEY})
        assert response.status == 504
        body = await response.json()
        assert body["statusCode"] == 504
        assert response.headers["x-request-id"]


async def test_key_stripped_from_query_and_credentials_injected(client):
    async with asyncio.timeout(5):
        url = URL(f"/creds/chat?a=1&subscription-key={KEY}&b=x%20y", encoded=True)
        response = await client.post(url, data=b"raw", headers={"authorization": "Bearer client-token"})
        echo = await response.json()
    assert response.status == 200
    assert echo["path_qs"] == "/base/v1/chat?a=1&b=x%20y&region=eu"
    sent = headers_of(echo)
    assert sent["authorization"] == "Bearer s3cret"  # backend credentials replace the client's
    assert echo["body"] == "raw"


@pytest.mark.parametrize("verb", VERBS)
async def test_passthrough_any_verb_and_sub_path(client, verb):
    async with asyncio.timeout(5):
        url = URL("/pass/v1/deep/sub/path?q=%2F&r", encoded=True)
        response = await client.request(verb, url, data=b"payload", headers={"Ocp-Apim-Subscription-Key": KEY})
        assert response.status == 200
        if verb == "HEAD":
            assert int(response.headers["content-length"]) > 0
            return
        echo = await response.json()
    assert echo["method"] == verb
    assert echo["path_qs"] == "/base/v1/deep/sub/path?q=%2F&r"
    assert echo["body"] == "payload"


async def test_keep_alive_reuse_across_requests(client):
    async with asyncio.timeout(5):
        for _ in range(3):
            response = await client.get("/free/x")
            assert response.status == 200
            await response.read()
