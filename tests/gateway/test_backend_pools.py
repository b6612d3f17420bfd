"""Backend pools, circuit breakers and retries against real failing model servers (issue #11).

Three ``python -m mockllm`` processes sit behind an in-process gateway (the real HTTP server and upstream pool).
Each test tells the mocks how to fail (``POST /mock/fail``: 429 with Retry-After, 500s, resets, hangs, slow first
bytes, mid-stream cuts) and counts what each one received. Breaker time is an injected clock moved by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.app import create_app
from gateway.backends import BackendState, BackendStates, RedisBreakers
from gateway.http.client import UpstreamPool
from gateway.http.server import ServerLimits, serve
from gateway.metrics import Metrics
from gateway.redis import RespClient
from gateway.settings import GatewaySettings
from gateway.snapshot import load_snapshot
from tests.fixtures_procs import MockLLM, _factory, _stop, start_mock_llm

from .helpers import KEYS, TOKEN, api, op, subscription, trace_token

KEY = KEYS["master"][0]
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
RULE_429 = {  # the Azure OpenAI rule of APIM's labs: trip on one 429 for a minute, accepting Retry-After
    "name": "aoai-429",
    "failure_count": 1,
    "interval_seconds": 60,
    "status_code_ranges": [[429, 429]],
    "error_reasons": [],
    "trip_duration_seconds": 60,
    "accept_retry_after": True,
}
RULE_5XX = {
    "name": "server-errors",
    "failure_count": 3,
    "interval_seconds": 60,
    "status_code_ranges": [[500, 599]],
    "error_reasons": ["BackendConnectionFailure", "Timeout"],
    "trip_duration_seconds": 30,
    "accept_retry_after": False,
}
RETRY_FORWARD = (
    '<retry condition="@(context.Response.StatusCode == 429 || context.Response.StatusCode >= 500)" '
    'count="{count}" interval="0" first-fast-retry="true"><forward-request timeout="{timeout}" /></retry>'
)


class Clock:
    """Monotonic and wall seconds that a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now


@pytest.fixture(scope="module")
def mocks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[MockLLM]]:
    start, started = _factory(tmp_path_factory.mktemp("pool-mocks"))
    yield [start_mock_llm(start, "--tokens", "5", name=f"mock{i}") for i in range(3)]
    _stop(started)


@pytest.fixture(autouse=True)
def reset_mocks(mocks: list[MockLLM]) -> None:
    for mock in mocks:
        mock.reset()


def calls(mock: MockLLM) -> int:
    """Model requests the mock received (answered, or refused on purpose: slow and cut ones are answered)."""
    stats = mock.stats()
    refused = sum(n for mode, n in stats["failures"].items() if mode in ("status", "reset", "hang"))
    return stats["requests"].get("/chat/completions", 0) + refused


def backend(name: str, mock: MockLLM, rule: dict[str, Any] | None = RULE_429) -> dict[str, Any]:
    return {"name": name, "type": "Single", "url": mock.base_url, "circuit_breaker": rule}


def pool(name: str, *members: tuple[str, int, int]) -> dict[str, Any]:
    services = [{"backend": b, "priority": p, "weight": w} for b, p, w in members]
    return {"name": name, "type": "Pool", "url": None, "pool_services": services}


def pool_snapshot(backends: list[dict[str, Any]], backend_id: str, backend_policy: str = "<base />") -> dict:
    policy = (
        f'<policies><inbound><base /><set-backend-service backend-id="{backend_id}" /></inbound>'
        f"<backend>{backend_policy}</backend></policies>"
    )
    return {
        "version": 1,
        "revision": 1,
        "named_values": [],
        "backends": backends,
        "products": [],
        "apis": [
            api(
                "llm",
                "llm",
                "http://127.0.0.1:9/unused",
                api_type="openai",
                policy=policy,
                operations=[op("chat-completions", "POST", "/chat/completions")],
            )
        ],
        "subscriptions": [subscription("master", "/apis")],
    }


def lab_snapshot(ptu: MockLLM, paygo: MockLLM, backend_policy: str = "<base />") -> dict:
    """APIM's lab: the pool ``aoai`` of ``ptu`` (priority 1) and ``paygo`` (priority 2), each with the 429 rule."""
    members = [backend("ptu", ptu), backend("paygo", paygo), pool("aoai", ("ptu", 1, 1), ("paygo", 2, 1))]
    return pool_snapshot(members, "aoai", backend_policy)


class Gateway:
    def __init__(self, session: aiohttp.ClientSession, states: BackendStates, app: Any) -> None:
        self.session = session
        self.states = states
        self.app = app

    async def chat(self, body: dict[str, Any] | None = None, *, trace: bool = False) -> tuple[int, dict, Any]:
        headers = {"Ocp-Apim-Subscription-Key": KEY}
        if trace:
            headers["x-sluice-trace"] = trace_token("llm").decode()
        async with self.session.post("/llm/chat/completions", json=body or CHAT, headers=headers) as response:
            raw = await response.read()
            return response.status, dict(response.headers), raw


@contextlib.asynccontextmanager
async def gateway(
    data: dict[str, Any], clock: Clock, *, metrics: Metrics | None = None, states: BackendStates | None = None
) -> AsyncIterator[Gateway]:
    config = GatewaySettings(gateway_token=TOKEN, max_retry_after=120)
    upstream = UpstreamPool(connect_timeout=2.0, read_timeout=10.0)
    if states is None:
        states = BackendStates(clock.monotonic, wall_clock=clock.wall, max_trip=config.max_retry_after)
    app = create_app(config, pool=upstream, backends=states, metrics=metrics)
    app.snapshot = load_snapshot(data, gateway_token=TOKEN)
    assert app.snapshot.quarantined == ()
    server = await serve(app, "127.0.0.1", 0, limits=ServerLimits())
    port = server.sockets[0].getsockname()[1]
    session = aiohttp.ClientSession(f"http://127.0.0.1:{port}")
    try:
        yield Gateway(session, states, app)
    finally:
        await session.close()
        server.close()
        await app.aclose()


# Balancing


async def test_round_robin_and_weighted_splits_are_exact(mocks):
    a, b, c = mocks
    data = pool_snapshot(
        [
            backend("a", a, None),
            backend("b", b, None),
            backend("c", c, None),
            pool("rr", ("a", 1, 1), ("b", 1, 1), ("c", 1, 1)),
            pool("weighted", ("a", 1, 3), ("b", 1, 1)),
        ],
        "rr",
    )
    async with gateway(data, Clock()) as gw:
        for _ in range(9):
            assert (await gw.chat())[0] == 200
    assert [calls(m) for m in mocks] == [3, 3, 3]
    for m in mocks:
        m.reset()
    data["apis"][0]["policy"] = data["apis"][0]["policy"].replace('backend-id="rr"', 'backend-id="weighted"')
    async with gateway(data, Clock()) as gw:
        for _ in range(8):
            assert (await gw.chat())[0] == 200
    assert [calls(m) for m in mocks] == [6, 2, 0]


# The lab setup: PTU first, spill over to pay-as-you-go on 429


async def test_ptu_first_spills_over_on_429_and_comes_back_after_retry_after(mocks):
    ptu, paygo, _ = mocks
    data = lab_snapshot(ptu, paygo, RETRY_FORWARD.format(count=2, timeout=5))
    clock = Clock()
    metrics = Metrics()
    async with gateway(data, clock, metrics=metrics) as gw:
        for _ in range(3):  # healthy: everything to the PTU
            assert (await gw.chat())[0] == 200
        assert (calls(ptu), calls(paygo)) == (3, 0)

        ptu.fail("status", status=429, retry_after="20")
        status, _, _ = await gw.chat(trace=True)
        assert status == 200  # the 429 tripped the PTU, the retry went to pay-as-you-go
        assert (calls(ptu), calls(paygo)) == (4, 1)
        assert gw.states.state("ptu") == BackendState.OPEN
        assert gw.states.retry_in("ptu") == 20  # Retry-After, not the rule's 60 s

        for _ in range(5):  # while tripped, the PTU gets nothing
            assert (await gw.chat())[0] == 200
        assert (calls(ptu), calls(paygo)) == (4, 6)
        async with gw.session.get("/__sluice/health") as response:
            health = (await response.json())["backends"]
        assert health["ptu"]["state"] == "open" and health["paygo"]["state"] == "closed"
        assert health["ptu"]["open_until"] == int(clock.wall() + 20) and health["ptu"]["trips"] == 1
        assert b'sluice_backend_state{backend="ptu"} 1.0' in metrics.exposition()

        ptu.fail("none")
        clock.now += 19.9
        assert (await gw.chat())[0] == 200
        assert (calls(ptu), calls(paygo)) == (4, 7)  # not yet
        clock.now += 0.1
        assert (await gw.chat())[0] == 200  # the half-open probe, which succeeds
        assert (calls(ptu), calls(paygo)) == (5, 7)
        assert gw.states.state("ptu") == BackendState.CLOSED
        for _ in range(3):
            assert (await gw.chat())[0] == 200
        assert (calls(ptu), calls(paygo)) == (8, 7)
        assert b'sluice_backend_state{backend="ptu"} 0.0' in metrics.exposition()
        assert b'sluice_backend_trips_total{backend="ptu"} 1.0' in metrics.exposition()


async def test_a_failed_probe_trips_again_and_retry_after_is_capped(mocks):
    ptu, paygo, _ = mocks
    data = lab_snapshot(ptu, paygo, RETRY_FORWARD.format(count=2, timeout=5))
    clock = Clock()
    async with gateway(data, clock) as gw:
        ptu.fail("status", status=429, retry_after="86400")  # a day: capped by max_retry_after (120 s)
        assert (await gw.chat())[0] == 200
        assert gw.states.retry_in("ptu") == 120
        clock.now += 120
        assert (await gw.chat())[0] == 200  # the probe got a 429 again: tripped again, answered by paygo
        assert (calls(ptu), calls(paygo)) == (2, 2)
        assert gw.states.state("ptu") == BackendState.OPEN


async def test_the_probe_is_one_request_not_a_herd(mocks):
    ptu, paygo, _ = mocks
    data = lab_snapshot(ptu, paygo)
    clock = Clock()
    async with gateway(data, clock) as gw:
        ptu.fail("status", count=1, status=429, retry_after="10")
        assert (await gw.chat())[0] == 429  # no retry declared: the client sees the 429 that tripped it
        clock.now += 10
        ptu.fail("slow", count=1, delay_ms=1000)  # the probe takes a while
        results = await asyncio.gather(*(gw.chat() for _ in range(6)))
        assert [r[0] for r in results] == [200] * 6
        assert (calls(ptu), calls(paygo)) == (2, 5)  # one probe; the others went to the fallback group
        assert gw.states.state("ptu") == BackendState.CLOSED


# Failures without an answer, single backends


async def test_resets_and_hangs_trip_a_server_error_rule_and_clients_do_not_fail(mocks):
    a, b, c = mocks
    data = pool_snapshot(
        [
            backend("a", a, RULE_5XX),
            backend("b", b, RULE_5XX),
            backend("c", c, RULE_5XX),
            pool("p", ("a", 1, 1), ("b", 1, 1), ("c", 1, 1)),
        ],
        "p",
        RETRY_FORWARD.format(count=2, timeout=0.5),
    )
    async with gateway(data, Clock()) as gw:
        a.fail("reset")
        b.fail("hang")
        results = [await gw.chat() for _ in range(12)]
        assert [r[0] for r in results] == [200] * 12  # c is healthy: no client failure
        assert gw.states.state("a") == BackendState.OPEN
        assert gw.states.state("b") == BackendState.OPEN
        assert gw.states.state("c") == BackendState.CLOSED
        assert a.stats()["failures"]["reset"] == 3  # the threshold, then no more traffic
        assert b.stats()["failures"]["hang"] == 3
        assert c.stats()["requests"]["/chat/completions"] == 12  # each client request answered once by c


async def test_a_tripped_single_backend_answers_503_with_retry_after(mocks):
    a = mocks[0]
    data = pool_snapshot([backend("a", a)], "a")
    clock = Clock()
    async with gateway(data, clock) as gw:
        a.fail("status", count=1, status=429, retry_after="7")
        assert (await gw.chat())[0] == 429
        status, headers, raw = await gw.chat()
        assert status == 503
        assert orjson.loads(raw) == {"statusCode": 503, "message": "The backend 'a' is temporarily unavailable "
                                     "(circuit breaker open)."}  # fmt: skip
        assert headers["Retry-After"] == "7"
        assert calls(a) == 1
        clock.now += 7
        assert (await gw.chat())[0] == 200


async def test_a_pool_with_every_member_tripped_answers_503(mocks):
    a, b, _ = mocks
    data = pool_snapshot([backend("a", a), backend("b", b), pool("p", ("a", 1, 1), ("b", 1, 1))], "p")
    async with gateway(data, Clock()) as gw:
        a.fail("status", status=429, retry_after="30")
        b.fail("status", status=429, retry_after="5")
        assert [(await gw.chat())[0] for _ in range(2)] == [429, 429]
        status, headers, raw = await gw.chat()
        assert status == 503 and headers["Retry-After"] == "5"  # the soonest member back
        assert "pool 'p'" in orjson.loads(raw)["message"]
        assert calls(a) + calls(b) == 2


# Streams


async def test_a_stream_is_retried_before_its_first_byte_and_a_cut_is_never_silent(mocks):
    a, b, _ = mocks
    data = pool_snapshot(
        [backend("a", a, RULE_5XX), backend("b", b, RULE_5XX), pool("p", ("a", 1, 1), ("b", 2, 1))],
        "p",
        RETRY_FORWARD.format(count=1, timeout=5),
    )
    stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with gateway(data, Clock()) as gw:
        a.fail("status", count=1, status=500)
        status, _, raw = await gw.chat(stream)
        assert status == 200 and raw.endswith(b"data: [DONE]\n\n")
        assert (calls(a), calls(b)) == (1, 1)

        a.fail("cut", count=1, after=2)  # two events reach the client, then the backend connection resets
        with pytest.raises(aiohttp.ClientPayloadError):
            await gw.chat(stream)
        assert (calls(a), calls(b)) == (2, 1)  # not retried once bytes were sent


async def test_a_slow_first_byte_past_the_timeout_fails_over(mocks):
    a, b, _ = mocks
    data = pool_snapshot(
        [backend("a", a, RULE_5XX), backend("b", b, RULE_5XX), pool("p", ("a", 1, 1), ("b", 2, 1))],
        "p",
        RETRY_FORWARD.format(count=1, timeout=0.3),
    )
    async with gateway(data, Clock()) as gw:
        a.fail("slow", count=1, delay_ms=2000)
        status, headers, _ = await gw.chat(trace=True)
        assert status == 200
        assert a.stats()["failures"] == {"slow": 1}  # given up on after 0.3 s, before it answered
        assert calls(b) == 1
        forward = next(e for e in orjson.loads(headers["x-sluice-trace"]) if e.get("policy") == "retry")
        assert [(x["backend"], x.get("error"), x.get("status")) for x in forward["attempts"]] == [
            ("a", "Timeout", None),
            ("b", None, 200),
        ]


# Usage and the trace


@pytest.mark.parametrize("stream", [False, True])
async def test_usage_names_the_answering_member_and_the_failed_attempts(mocks, stream):
    from gateway.usage.sinks import MemorySink

    a, b, _ = mocks
    data = pool_snapshot(
        [backend("a", a), backend("b", b), pool("p", ("a", 1, 1), ("b", 2, 1))],
        "p",
        RETRY_FORWARD.format(count=2, timeout=5),
    )
    config = GatewaySettings(gateway_token=TOKEN)
    sink = MemorySink()
    upstream = UpstreamPool(connect_timeout=2.0, read_timeout=10.0)
    app = create_app(config, pool=upstream, usage_sink=sink)
    app.snapshot = load_snapshot(data, gateway_token=TOKEN)
    server = await serve(app, "127.0.0.1", 0, limits=ServerLimits())
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            a.fail("status", count=1, status=429, retry_after="30")
            body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}} if stream else CHAT
            async with session.post(
                "/llm/chat/completions", json=body, headers={"Ocp-Apim-Subscription-Key": KEY}
            ) as response:
                assert response.status == 200
                raw = await response.read()
            if stream:
                events = [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: {")]
                answer = orjson.loads(events[-1])
            else:
                answer = orjson.loads(raw)
    finally:
        server.close()
        await app.aclose()
    record = sink.records[-1]
    assert record.backend == "b"
    assert record.failed_attempts == "a:429"
    assert record.prompt_tokens == answer["usage"]["prompt_tokens"]
    assert record.completion_tokens == answer["usage"]["completion_tokens"] == 5


async def test_context_backend_is_exposed_to_expressions(mocks):
    a, b, _ = mocks
    data = pool_snapshot([backend("a", a), backend("b", b), pool("p", ("a", 1, 1), ("b", 1, 1))], "p")
    data["apis"][0]["policy"] = data["apis"][0]["policy"].replace(
        "<backend>",
        '<outbound><set-header name="x-backend" exists-action="override"><value>@(context.Backend.Id + "/" + '
        "context.Backend.Type)</value></set-header></outbound><backend>",
    )
    async with gateway(data, Clock()) as gw:
        status, headers, _ = await gw.chat()
        assert status == 200 and headers["x-backend"] == "p/Pool"


async def test_limit_concurrency_answers_429_when_full(mocks):
    a = mocks[0]
    data = pool_snapshot(
        [backend("a", a, None)],
        "a",
        '<limit-concurrency key="one" max-count="2"><forward-request /></limit-concurrency>',
    )
    async with gateway(data, Clock()) as gw:
        a.fail("slow", delay_ms=1000)
        results = await asyncio.gather(*(gw.chat() for _ in range(4)))
        statuses = sorted(r[0] for r in results)
        assert statuses == [200, 200, 429, 429]
        a.fail("none")
        assert (await gw.chat())[0] == 200  # the slots were released


# Two gateways sharing Redis


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL is not set (CI sets redis://127.0.0.1:6379/0)")
async def test_two_gateways_share_a_trip_and_one_probe_decides_for_both(mocks):
    ptu, paygo, _ = mocks
    data = lab_snapshot(ptu, paygo, RETRY_FORWARD.format(count=2, timeout=5))
    clock = Clock()
    prefix = f"sluice-test:{uuid.uuid4().hex}:"
    shared = [RedisBreakers(RespClient(os.environ["REDIS_URL"]), prefix=prefix) for _ in range(2)]
    states = [BackendStates(clock.monotonic, wall_clock=clock.wall, shared=s) for s in shared]
    async with gateway(data, clock, states=states[0]) as one, gateway(data, clock, states=states[1]) as two:
        ptu.fail("status", status=429, retry_after="30")
        assert (await one.chat())[0] == 200  # one trips the PTU (and retries on paygo)
        assert two.states.state("ptu") == BackendState.CLOSED
        await shared[1].poll(states[1], ["ptu", "paygo"])  # what two's background poll does every interval
        assert two.states.state("ptu") == BackendState.OPEN
        assert two.states.retry_in("ptu") == 30
        assert [(await two.chat())[0] for _ in range(3)] == [200] * 3
        assert (calls(ptu), calls(paygo)) == (1, 4)  # two never sent to the tripped PTU

        ptu.fail("slow", count=1, delay_ms=1000)
        clock.now += 30
        results = await asyncio.gather(one.chat(), two.chat(), one.chat(), two.chat())
        assert [r[0] for r in results] == [200] * 4
        assert calls(ptu) == 2  # a single probe for both gateways
        assert one.states.state("ptu") == BackendState.CLOSED or two.states.state("ptu") == BackendState.CLOSED
        for s, st in zip(shared, states, strict=True):
            await s.poll(st, ["ptu", "paygo"])
        assert one.states.state("ptu") == two.states.state("ptu") == BackendState.CLOSED
        assert [(await gw.chat())[0] for gw in (one, two)] == [200, 200]
        assert calls(ptu) == 4


async def test_fail_on_error_status_code_goes_to_on_error_unless_the_retry_condition_holds(mocks):
    a, b, _ = mocks
    data = pool_snapshot(
        [backend("a", a, None), backend("b", b, None), pool("p", ("a", 1, 1), ("b", 2, 1))],
        "p",
        '<retry condition="@(context.Response.StatusCode &gt;= 500)" count="1" interval="0">'
        '<forward-request fail-on-error-status-code="true" /></retry>',
    )
    data["apis"][0]["policy"] = data["apis"][0]["policy"].replace(
        "</backend>",
        '</backend><on-error><set-header name="x-error" exists-action="override">'
        "<value>@(context.LastError.Reason)</value></set-header></on-error>",
    )
    async with gateway(data, Clock()) as gw:
        a.fail("status", count=1, status=502)
        assert (await gw.chat())[0] == 200  # judged by the condition: retried on b
        a.fail("status", count=1, status=404)
        status, headers, _ = await gw.chat()
        assert status == 404 and headers["x-error"] == "BackendErrorStatusCode"  # not retried
        assert (calls(a), calls(b)) == (2, 1)


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL is not set (CI sets redis://127.0.0.1:6379/0)")
async def test_the_background_poll_carries_a_trip_to_another_gateway_within_its_interval(mocks):
    ptu, paygo, _ = mocks
    config = GatewaySettings(gateway_token=TOKEN, redis_url=os.environ["REDIS_URL"], poll_interval=0.05)
    apps = [create_app(config, pool=UpstreamPool()) for _ in range(2)]
    prefix = f"sluice-test:{uuid.uuid4().hex}:"
    for app in apps:
        app.snapshot = load_snapshot(lab_snapshot(ptu, paygo), gateway_token=TOKEN)
        app.forwarder.backends.shared.prefix = prefix  # this test's own keys
    one, two = apps
    two.start()
    try:
        ptu_target = one.snapshot.backends["ptu"]
        assert one.forwarder.backends.record(ptu_target, 429, None, 30.0)
        started = time.monotonic()
        async with asyncio.timeout(5):
            while two.forwarder.backends.state("ptu") != BackendState.OPEN:
                await asyncio.sleep(0.01)
        assert time.monotonic() - started < 3.0  # poll intervals (0.05 s), not the trip time (30 s)
        assert 29 < two.forwarder.backends.retry_in("ptu") <= 30
        assert two.health()["backends"]["ptu"]["reason"] == "tripped by another gateway"
    finally:
        for app in apps:
            await app.aclose()
