"""llm-token-limit end to end: the real HTTP server and upstream pool in this process, the mock model server
(``python -m mockllm``) as a real process, clients over loopback (aiohttp and the openai SDK)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import orjson
import pytest

from gateway.app import create_app
from gateway.http.client import UpstreamPool
from gateway.http.server import ServerLimits, serve
from gateway.limits import create_store, minute_window, quota_window
from gateway.policy.builtin.llm_token_limit import format_wait
from gateway.settings import GatewaySettings
from gateway.snapshot import load_snapshot
from tests.fixtures_procs import mock_llm, process_factory  # noqa: F401  (fixtures)

from .helpers import KEYS, TOKEN, llm_snapshot
from .limits.helpers import FakeClock

KEY = {"Ocp-Apim-Subscription-Key": KEYS["master"][0]}
CHAT_URL = "/llm/chat/completions"
# mock: prompt = words + 3 per message -> "say hello to me" = 4 + 3 = 7; completion = X-Mock-Tokens or 16
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "say hello to me"}], "max_tokens": 20}
MOCK_TOTAL = 7 + 16
WAIT = 10.0  # the bound on each wait for a settlement or a disconnect: reached only on a failure


def limit_policy(attrs: str) -> str:
    return f"<policies><inbound><base/><llm-token-limit {attrs}/></inbound></policies>"


@contextlib.asynccontextmanager
async def gateway(base_url: str, policy: str):
    store = create_store("memory", clock=FakeClock())  # no minute or hour turns mid-test
    pool = UpstreamPool(connect_timeout=2.0, read_timeout=10.0)
    app = create_app(GatewaySettings(gateway_token=TOKEN), pool=pool, token_store=store)
    app.snapshot = load_snapshot(llm_snapshot(base_url, policy), gateway_token=TOKEN)
    server = await serve(app, "127.0.0.1", 0, limits=ServerLimits())
    port = server.sockets[0].getsockname()[1]
    session = aiohttp.ClientSession(f"http://127.0.0.1:{port}", timeout=aiohttp.ClientTimeout(total=10))
    session.store = store  # type: ignore[attr-defined]
    session.port = port  # type: ignore[attr-defined]
    try:
        yield session
    finally:
        await session.close()
        server.close()
        await app.aclose()


async def settled(store, window, expected: int) -> int:
    """The counter once settlements (finish callbacks after the last byte) have run, or after ``WAIT`` seconds."""
    return await polled(lambda: store.count(window), lambda value: value == expected)


async def polled(read, done, timeout: float = WAIT):
    """``await read()`` until ``done(value)`` or ``timeout`` seconds have passed; the last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    value = await read()
    while not done(value) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)  # the polling interval of a bounded wait
        value = await read()
    return value


async def test_429_after_the_minute_budget(mock_llm):  # noqa: F811
    policy = limit_policy(
        'counter-key="@(context.Subscription.Id)" tokens-per-minute="60" estimate-prompt-tokens="true" '
        'remaining-tokens-header-name="x-remaining-tokens" tokens-consumed-header-name="x-tokens-consumed"'
    )
    async with gateway(mock_llm.base_url, policy) as client:
        first = await client.post(CHAT_URL, json=CHAT, headers=KEY)
        assert first.status == 200, await first.text()
        assert (await first.json())["usage"]["total_tokens"] == MOCK_TOTAL
        assert first.headers["x-tokens-consumed"] == str(MOCK_TOTAL)
        assert first.headers["x-remaining-tokens"] == str(60 - MOCK_TOTAL)
        second = await client.post(CHAT_URL, json=CHAT, headers=KEY)
        assert second.status == 200
        third = await client.post(CHAT_URL, json=CHAT, headers=KEY)  # 46 used, reserves ~32
        assert third.status == 429
        body = await third.json()
        retry = int(third.headers["Retry-After"])
        assert 1 <= retry <= 60
        assert body == {
            "statusCode": 429,
            "message": f"Token limit is exceeded. Try again in {format_wait(retry)}.",  # 60 s reads "1 minute"
        }
        assert third.headers["x-remaining-tokens"] == str(60 - 2 * MOCK_TOTAL)
        assert third.headers["content-type"].startswith("application/json")
        assert third.headers["x-request-id"]


async def test_403_when_the_quota_is_used(mock_llm):  # noqa: F811
    policy = limit_policy(
        'counter-key="quota-it" token-quota="30" token-quota-period="Daily" estimate-prompt-tokens="false" '
        'remaining-quota-tokens-header-name="x-quota-left"'
    )
    async with gateway(mock_llm.base_url, policy) as client:
        first = await client.post(CHAT_URL, json=CHAT, headers=KEY)
        assert first.status == 200 and first.headers["x-quota-left"] == str(30 - MOCK_TOTAL)
        refused = await client.post(CHAT_URL, json=CHAT, headers=KEY)
        assert refused.status == 403
        retry = int(refused.headers["Retry-After"])
        assert 0 < retry <= 86400
        assert await refused.json() == {
            "statusCode": 403,
            "message": f"Token quota is exceeded. Try again in {format_wait(retry)}.",
        }
        assert refused.headers["x-quota-left"] == str(30 - MOCK_TOTAL)  # 7 left, but 20 are needed


async def read_events(response: aiohttp.ClientResponse) -> list[bytes]:
    data = await response.read()
    return [e for e in data.split(b"\n\n") if e]


async def test_stream_without_client_usage_is_stripped_and_counted(mock_llm):  # noqa: F811
    policy = limit_policy('counter-key="stream-it" tokens-per-minute="100000" estimate-prompt-tokens="true"')
    async with gateway(mock_llm.base_url, policy) as client:
        window = minute_window("stream-it", client.store.now(), 1)
        response = await client.post(CHAT_URL, json={**CHAT, "stream": True}, headers=KEY)
        assert response.status == 200
        events = await read_events(response)
        assert events[-1] == b"data: [DONE]"
        assert not any(b'"choices":[]' in e for e in events)  # the usage event the gateway asked for is gone
        assert sum(b'"content":" word' in e or b'"content":"word' in e for e in events) == 16
        assert mock_llm.stats()["last_request"]["path"].endswith("/chat/completions")
        assert await settled(client.store, window, MOCK_TOTAL) == MOCK_TOTAL


async def test_stream_with_client_usage_keeps_the_event(mock_llm):  # noqa: F811
    policy = limit_policy('counter-key="stream-it-2" tokens-per-minute="100000" estimate-prompt-tokens="false"')
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    async with gateway(mock_llm.base_url, policy) as client:
        window = minute_window("stream-it-2", client.store.now(), 1)
        response = await client.post(CHAT_URL, json=body, headers=KEY)
        events = await read_events(response)
        usage_events = [orjson.loads(e[6:]) for e in events if b'"choices":[]' in e]
        assert len(usage_events) == 1 and usage_events[0]["usage"]["total_tokens"] == MOCK_TOTAL
        assert await settled(client.store, window, MOCK_TOTAL) == MOCK_TOTAL


async def test_openai_sdk_streams_through_the_gateway(mock_llm):  # noqa: F811
    openai = pytest.importorskip("openai")
    policy = limit_policy('counter-key="sdk" tokens-per-minute="100000" estimate-prompt-tokens="true"')
    async with gateway(mock_llm.base_url, policy) as client:
        sdk = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{client.port}/llm", api_key="unused", default_headers=KEY, max_retries=0
        )
        window = minute_window("sdk", client.store.now(), 1)
        stream = await sdk.chat.completions.create(**CHAT, stream=True)
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("word0 word1")
        assert all(c.usage is None for c in chunks)
        completion = await sdk.chat.completions.create(**CHAT)
        assert completion.usage.total_tokens == MOCK_TOTAL
        assert await settled(client.store, window, 2 * MOCK_TOTAL) == 2 * MOCK_TOTAL
        await sdk.close()


async def test_a_cancelled_stream_is_settled_with_the_tokens_that_passed(mock_llm):  # noqa: F811
    policy = limit_policy('counter-key="cancel-it" tokens-per-minute="100000" estimate-prompt-tokens="true"')
    headers = {**KEY, "X-Mock-Tokens": "200", "X-Mock-Chunk-Delay-Ms": "20"}
    body = {**CHAT, "max_tokens": 500, "stream": True}
    async with gateway(mock_llm.base_url, policy) as client:
        window = minute_window("cancel-it", client.store.now(), 1)
        cancelled_before = mock_llm.stats()["streams_cancelled"]
        response = await client.post(CHAT_URL, json=body, headers=headers)
        received = b""
        while received.count(b"word") < 5:
            received += await response.content.readany()
        response.close()  # the client goes away after ~5 of 200 words

        async def cancelled() -> int:
            return (await asyncio.to_thread(mock_llm.stats))["streams_cancelled"]

        # the backend saw the disconnect
        assert await polled(cancelled, lambda value: value > cancelled_before) > cancelled_before
        # the reservation (prompt 9 + max_tokens 500) was corrected
        count = await polled(lambda: client.store.count(window), lambda value: value < 9 + 500)
        # prompt estimate (3 + "user" + "say hello to me" + 3 = 11) + the ~2 tokens per word that passed
        assert 11 + 5 * 2 <= count < 11 + 200 * 2
        # the stream would have been 7 + 200 tokens; the counter holds what was generated up to the cancel
        assert count < 100


async def test_quota_and_minute_windows_share_the_settlement(mock_llm):  # noqa: F811
    policy = limit_policy(
        'counter-key="both-it" tokens-per-minute="1000" token-quota="1000" token-quota-period="Hourly" '
        'estimate-prompt-tokens="true"'
    )
    async with gateway(mock_llm.base_url, policy) as client:
        now = client.store.now()
        for _ in range(3):
            assert (await client.post(CHAT_URL, json=CHAT, headers=KEY)).status == 200
        hour = quota_window("both-it", "Hourly", now, 1)
        minute = minute_window("both-it", now, 1)
        assert await settled(client.store, hour, 3 * MOCK_TOTAL) == 3 * MOCK_TOTAL
        assert await client.store.count(minute) == 3 * MOCK_TOTAL  # the injected clock: the minute never turns
