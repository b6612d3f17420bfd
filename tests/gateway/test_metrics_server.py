"""/metrics through the real HTTP server: scraped by prometheus_client's parser after traffic to the mock model.

Metrics are served on the admin listener (``AdminApp``); on the client listener only ``/__sluice/metrics`` with the
metrics token (#7 item 12)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import HEALTH_PATH, METRICS_PATH, PUBLIC_METRICS_PATH, AdminApp, create_app
from gateway.http.client import UpstreamPool
from gateway.http.server import ServerLimits, serve
from gateway.metrics import OVERFLOW_VALUE, Metrics
from gateway.settings import GatewaySettings
from gateway.snapshot import load_snapshot
from gateway.usage.sinks import MemorySink
from mockllm.app import MockConfig
from mockllm.app import create_app as create_mock

from .exposition import families, value
from .helpers import KEYS, TOKEN, api, base_snapshot, op

KEY = {"Ocp-Apim-Subscription-Key": KEYS["master"][0]}
CHAT = "/llm/chat/chat/completions"
MESSAGES = [{"role": "user", "content": "Say something about gateways."}]
TEAM = "@(context.Request.Headers.GetValueOrDefault(&quot;x-team&quot;, &quot;none&quot;))"
TOKEN_METRIC = (
    '<llm-emit-token-metric namespace="Sluice LLM"><dimension name="API ID"/><dimension name="Subscription ID"/>'
    f'<dimension name="Team" value="{TEAM}"/></llm-emit-token-metric>'
)


@pytest.fixture
async def mock_url():
    server = TestServer(create_mock(MockConfig(tokens=5)), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@contextlib.asynccontextmanager
async def running(upstream: str, *, metrics: Metrics | None = None, extra_apis=(), **config):
    data = base_snapshot(upstream)
    data["apis"][0]["api_type"] = "openai"
    data["apis"][0]["policy"] = f"<policies><inbound><base/>{TOKEN_METRIC}</inbound></policies>"
    data["apis"].extend(extra_apis)
    metrics = metrics or Metrics()
    pool = UpstreamPool(connect_timeout=2.0, read_timeout=10.0)
    app = create_app(
        GatewaySettings(gateway_token=TOKEN, **config), pool=pool, metrics=metrics, usage_sink=MemorySink()
    )
    app.snapshot = load_snapshot(data, gateway_token=TOKEN)
    server = await serve(app, "127.0.0.1", 0, limits=ServerLimits())
    admin_server = await serve(AdminApp(app), "127.0.0.1", 0, limits=ServerLimits())
    session = aiohttp.ClientSession(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    admin = aiohttp.ClientSession(f"http://127.0.0.1:{admin_server.sockets[0].getsockname()[1]}")
    try:
        yield session, admin
    finally:
        await session.close()
        await admin.close()
        server.close()
        admin_server.close()
        await app.aclose()


async def scrape(session: aiohttp.ClientSession, path: str = PUBLIC_METRICS_PATH, **headers: str) -> dict[str, list]:
    async with session.get(path, headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await response.text()
    return families(text)


async def chat(session, *, stream: bool = False, team: str | None = None) -> dict:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    headers = dict(KEY)
    if team:
        headers["x-team"] = team
    async with session.post(CHAT, data=orjson.dumps(body), headers=headers) as response:
        assert response.status == 200, await response.text()
        raw = await response.read()
    if not stream:
        return orjson.loads(raw)["usage"]
    events = [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]
    return next(event["usage"] for event in events if event.get("usage"))


async def test_token_counters_for_json_and_stream_requests(mock_url):
    async with asyncio.timeout(20), running(mock_url) as (session, admin):
        plain = await chat(session, team="research")
        streamed = await chat(session, stream=True, team="research")
        families = await scrape(admin)

    labels = {"api_id": "chat", "subscription_id": "master", "team": "research"}
    for kind in ("prompt", "completion", "total"):
        expected = plain[f"{kind}_tokens"] + streamed[f"{kind}_tokens"]
        assert value(families[f"sluice_llm_{kind}_tokens"], f"sluice_llm_{kind}_tokens_total", **labels) == expected
    assert plain["completion_tokens"] == 5 and streamed["completion_tokens"] == 5

    requests = families["sluice_requests"]
    assert value(requests, "sluice_requests_total", api="chat", operation="chat-completions", code="200") == 2
    duration = families["sluice_request_duration_seconds"]
    labels = {"api": "chat", "operation": "chat-completions"}
    assert value(duration, "sluice_request_duration_seconds_count", **labels) == 2
    assert value(duration, "sluice_request_duration_seconds_bucket", le="60.0", **labels) == 2
    assert value(duration, "sluice_request_duration_seconds_sum", **labels) > 0


async def test_refused_and_unmatched_requests_are_counted(mock_url):
    async with asyncio.timeout(20), running(mock_url) as (session, admin):
        async with session.post(CHAT, json={}, headers={"Ocp-Apim-Subscription-Key": "wrong"}) as response:
            assert response.status == 401
        async with session.get("/nowhere") as response:
            assert response.status == 404
        families = await scrape(admin)
    requests = families["sluice_requests"]
    assert value(requests, "sluice_requests_total", api="chat", operation="chat-completions", code="401") == 1
    assert value(requests, "sluice_requests_total", api="", operation="", code="404") == 1
    assert "sluice_llm_total_tokens" not in families or not families["sluice_llm_total_tokens"]


async def test_label_sets_beyond_the_cap_go_to_the_overflow_series(mock_url):
    async with asyncio.timeout(20), running(mock_url, metrics=Metrics(max_label_sets=2)) as (session, admin):
        totals = [await chat(session, team=f"team-{i}") for i in range(5)]
        families = await scrape(admin)
    samples = families["sluice_llm_total_tokens"]
    teams = {s.labels["team"]: s.value for s in samples}
    assert set(teams) == {"team-0", "team-1", OVERFLOW_VALUE}
    overflow = {"api_id": OVERFLOW_VALUE, "subscription_id": OVERFLOW_VALUE, "team": OVERFLOW_VALUE}
    assert value(samples, "sluice_llm_total_tokens_total", **overflow) == sum(t["total_tokens"] for t in totals[2:])
    dropped = families["sluice_metric_label_sets_dropped"]
    assert value(dropped, "sluice_metric_label_sets_dropped_total", metric="sluice_llm_tokens") == 3


async def test_an_api_at_metrics_keeps_its_path_and_the_admin_listener_serves_both_paths(mock_url):
    claiming = api("metrics-api", "metrics", mock_url, operations=[op("get", "GET", "/")], subscription_required=False)
    async with asyncio.timeout(20), running(mock_url, extra_apis=[claiming]) as (session, admin):
        async with session.get(PUBLIC_METRICS_PATH) as response:
            assert response.headers.get("content-type", "").startswith("application/json")  # the API's answer
        for path in (PUBLIC_METRICS_PATH, METRICS_PATH):
            assert "sluice_requests" in await scrape(admin, path)


async def test_client_listener_serves_no_metrics_without_a_token(mock_url):
    # Regression (#7 item 12): anyone who could reach the gateway read every API, subscription and token count.
    async with asyncio.timeout(20), running(mock_url) as (session, admin):
        await chat(session, team="research")
        for path in (PUBLIC_METRICS_PATH, METRICS_PATH):
            async with session.get(path) as response:
                assert response.status == 404
                body = await response.read()
                assert orjson.loads(body)["statusCode"] == 404 and b"sluice_" not in body
        async with session.get(HEALTH_PATH) as response:  # health stays on both listeners (load balancers)
            assert response.status == 200
        async with admin.get(HEALTH_PATH) as response:
            assert response.status == 200 and (await response.json())["status"] == "ok"
        async with admin.get(CHAT) as response:  # the admin listener routes nothing to an API
            assert response.status == 404
        async with admin.post(PUBLIC_METRICS_PATH) as response:
            assert response.status == 405


async def test_metrics_token(mock_url):
    async with asyncio.timeout(20), running(mock_url, metrics_token="scrape-secret") as (session, admin):
        for client in (session, admin):
            async with client.get(METRICS_PATH) as response:
                assert response.status == 401
            async with client.get(METRICS_PATH, headers={"Authorization": "Bearer nope"}) as response:
                assert response.status == 401
            families = await scrape(client, METRICS_PATH, Authorization="Bearer scrape-secret")
            assert "sluice_requests" in families
        async with session.get(PUBLIC_METRICS_PATH, headers={"Authorization": "Bearer scrape-secret"}) as response:
            assert response.status == 404  # the client listener: only the reserved path


async def test_metrics_are_served_before_a_snapshot_is_loaded():
    app = create_app(GatewaySettings(gateway_token=TOKEN), metrics=Metrics())
    server = await serve(app, "127.0.0.1", 0, limits=ServerLimits())
    admin_server = await serve(AdminApp(app), "127.0.0.1", 0, limits=ServerLimits())
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{admin_server.sockets[0].getsockname()[1]}") as admin:
            families = await scrape(admin)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session, session.get("/chat") as response:
            assert response.status == 503
    finally:
        server.close()
        admin_server.close()
        await app.aclose()
    assert "sluice_requests" in families


async def test_without_metrics_the_paths_are_not_found():
    app = create_app(GatewaySettings(gateway_token=TOKEN, metrics_token="t"))
    server = await serve(app, "127.0.0.1", 0, limits=ServerLimits())
    port = server.sockets[0].getsockname()[1]
    try:
        async with (
            aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session,
            session.get(METRICS_PATH) as response,
        ):
            assert response.status == 404
    finally:
        server.close()
        await app.aclose()
