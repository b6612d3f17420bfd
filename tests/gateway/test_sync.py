"""The snapshot poller against a fake management plane (aiohttp.web): swap, keep old, serve from cache."""

from __future__ import annotations

import asyncio
import copy
import os
import stat

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.sync import SnapshotSync, write_cache

from .fakes import FakePool, make_request
from .helpers import TOKEN, api, base_snapshot, op


class Management:
    def __init__(self) -> None:
        self.snapshot = base_snapshot()
        self.requests: list[dict[str, str]] = []
        self.polled = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/api/gateway/snapshot/", self.serve)
        self.heartbeats: list[dict] = []
        self.heartbeat_status = 204
        self.app.router.add_post("/api/gateway/heartbeat/", self.heartbeat)

    async def heartbeat(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Gateway {TOKEN}":
            return web.json_response({"detail": "bad token"}, status=401)
        self.heartbeats.append(await request.json())
        return web.Response(status=self.heartbeat_status)

    async def serve(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        self.polled.set()
        if request.headers.get("Authorization") != f"Gateway {TOKEN}":
            return web.json_response({"detail": "bad token"}, status=401)
        etag = f'"{self.snapshot["revision"]}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=orjson.dumps(self.snapshot), content_type="application/json", headers={"ETag": etag})


@pytest.fixture
async def management():
    mgmt = Management()
    server = TestServer(mgmt.app, host="127.0.0.1")
    await server.start_server()
    mgmt.url = str(server.make_url("")).rstrip("/")
    yield mgmt
    await server.close()


def make_sync(url: str, cache: str, token: str = TOKEN, heartbeat_interval: float = 15.0) -> SnapshotSync:
    config = GatewaySettings(
        gateway_token=token,
        management_url=url,
        snapshot_cache=cache,
        poll_interval=0.05,
        heartbeat_interval=heartbeat_interval,
        gateway_id="gw-1",
        region="eu",
    )
    return SnapshotSync(create_app(config, pool=FakePool()))


@pytest.fixture
def cache_path(tmp_path):
    return str(tmp_path / "var" / "gateway-snapshot.json")


def unreachable_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_swaps_on_change_and_writes_the_cache(management, cache_path):
    sync = make_sync(management.url, cache_path)
    try:
        assert await sync.poll_once() is True
        first = sync.app.snapshot
        assert first.revision == 7
        assert management.requests[0]["Authorization"] == f"Gateway {TOKEN}"
        assert stat.S_IMODE(os.stat(cache_path).st_mode) == 0o600
        with open(cache_path, "rb") as f:
            cached = orjson.loads(f.read())
        assert cached == management.snapshot
        assert cached["named_values"][0]["encrypted_value"]  # secrets stay encrypted on disk

        assert await sync.poll_once() is False  # 304
        assert management.requests[-1]["If-None-Match"] == '"7"'
        assert sync.app.snapshot is first

        management.snapshot = copy.deepcopy(management.snapshot)
        management.snapshot["revision"] = 8
        management.snapshot["apis"].append(api("new", "new", operations=[op("m", "GET", "/m")]))
        assert await sync.poll_once() is True
        assert sync.app.snapshot.revision == 8
        assert sync.app.snapshot.router.match("GET", "/new/m") is not None
    finally:
        await sync.stop()


async def test_keeps_the_old_config_on_a_bad_snapshot(management, cache_path, caplog):
    sync = make_sync(management.url, cache_path)
    try:
        await sync.poll_once()
        good = sync.app.snapshot
        bad = copy.deepcopy(management.snapshot)
        bad["revision"] = 9
        bad["global_policy"] = "<policies><inbound><nope/></inbound></policies>"
        management.snapshot = bad
        assert await sync.poll_once() is False
        assert sync.app.snapshot is good
        assert "unknown policy <nope>" in caplog.text and "still serving revision 7" in caplog.text
        with open(cache_path, "rb") as f:
            assert orjson.loads(f.read())["revision"] == 7  # the cache keeps the last good one
        # the bad revision is not fetched and validated again
        assert await sync.poll_once() is False
        assert management.requests[-1]["If-None-Match"] == '"9"'
        fixed = copy.deepcopy(bad)
        fixed["revision"] = 10
        fixed["global_policy"] = None
        management.snapshot = fixed
        assert await sync.poll_once() is True
        assert sync.app.snapshot.revision == 10
    finally:
        await sync.stop()


async def test_serves_from_cache_when_management_is_down(management, cache_path):
    first = make_sync(management.url, cache_path)
    await first.poll_once()
    await first.stop()

    sync = make_sync(unreachable_url(), cache_path)
    try:
        assert sync.load_cache() is True
        assert sync.app.snapshot.revision == 7
        assert await sync.poll_once() is False
        assert sync.app.snapshot.revision == 7
        health = await sync.app(make_request("GET", "/__sluice/health"))
        assert health.status == 200 and orjson.loads(health.body)["revision"] == 7
    finally:
        await sync.stop()


async def test_bad_or_missing_cache_is_ignored(cache_path):
    sync = make_sync(unreachable_url(), cache_path)
    assert sync.load_cache() is False
    write_cache(cache_path, b"{not json")
    assert sync.load_cache() is False
    write_cache(cache_path, orjson.dumps(base_snapshot()))
    other_token = make_sync(unreachable_url(), cache_path, token="rotated-token")
    assert other_token.load_cache() is False  # secrets no longer decrypt
    assert sync.load_cache() is True


async def test_wrong_token_keeps_serving_nothing(management, cache_path):
    sync = make_sync(management.url, cache_path, token="wrong")
    try:
        assert await sync.poll_once() is False
        assert sync.app.snapshot is None
        response = await sync.app(make_request("GET", "/llm/chat/x"))
        assert response.status == 503
    finally:
        await sync.stop()


async def test_background_task_polls_until_stopped(management, cache_path):
    sync = make_sync(management.url, cache_path)
    sync.start()
    try:
        async with asyncio.timeout(5):
            while len(management.requests) < 2:
                management.polled.clear()
                await management.polled.wait()
        assert sync.app.snapshot.revision == 7
    finally:
        await sync.stop()


#
# Heartbeat
#


async def test_heartbeat_reports_health_when_due_or_changed(management, cache_path):
    sync = make_sync(management.url, cache_path, heartbeat_interval=10)
    try:
        assert await sync.heartbeat(now=100.0) is True  # before any snapshot: starting, no revision
        assert management.heartbeats[-1] == {
            "status": "starting", "revision": None, "gateway_id": "gw-1", "region": "eu", "interval": 10,
        }  # fmt: skip
        assert await sync.heartbeat(now=105.0) is False  # not due, nothing changed
        await sync.poll_once()
        assert await sync.heartbeat(now=106.0) is True  # changed: now serving revision 7
        assert (management.heartbeats[-1]["status"], management.heartbeats[-1]["revision"]) == ("ok", 7)
        assert await sync.heartbeat(now=110.0) is False
        assert await sync.heartbeat(now=116.5) is True  # due again
        assert len(management.heartbeats) == 3
    finally:
        await sync.stop()


async def test_heartbeat_reports_a_refused_snapshot(management, cache_path):
    sync = make_sync(management.url, cache_path)
    try:
        await sync.poll_once()
        management.snapshot = {**copy.deepcopy(management.snapshot), "revision": 8, "apis": "nope"}
        await sync.poll_once()
        assert await sync.heartbeat(now=1.0) is True
        beat = management.heartbeats[-1]
        assert beat["status"] == "degraded" and beat["revision"] == 7 and beat["rejected"]["revision"] == 8
    finally:
        await sync.stop()


async def test_heartbeat_off_or_refused_is_not_fatal(management, cache_path):
    off = make_sync(management.url, cache_path, heartbeat_interval=0)
    assert await off.heartbeat(now=1.0) is False
    await off.stop()
    sync = make_sync(management.url, cache_path)
    management.heartbeat_status = 404  # an older management plane
    try:
        assert await sync.heartbeat(now=1.0) is False
        assert await sync.heartbeat(now=2.0) is False  # not remembered as sent: tried again
        assert len(management.heartbeats) == 2
    finally:
        await sync.stop()
    down = make_sync(unreachable_url(), cache_path)
    try:
        assert await down.heartbeat(now=1.0) is False
    finally:
        await down.stop()
