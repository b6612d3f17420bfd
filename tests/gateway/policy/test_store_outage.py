"""``sluice-on-store-error`` (issue #7 item 5): what the limit policies do when the counter store cannot answer.

The store is the real Redis store pointed at a closed loopback port (connection refused), so its circuit breaker
runs too: three refusals open it, and later requests fail fast with the breaker's ``Retry-After``.
"""

from __future__ import annotations

import socket

import orjson
import pytest
from prometheus_client import CollectorRegistry

from gateway.limits import create_store
from gateway.limits.breaker import BreakerState
from gateway.metrics import Metrics
from gateway.policy import PolicyError, parse_document

from ..exposition import families, value
from .helpers import Clock, gateway, header, upstream

CHAT = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
POLICIES = {
    "llm-token-limit": 'counter-key="k" tokens-per-minute="1000" estimate-prompt-tokens="false"',
    "azure-openai-token-limit": 'counter-key="k" tokens-per-minute="1000" estimate-prompt-tokens="false"',
    "rate-limit-by-key": 'calls="10" renewal-period="60" counter-key="k"',
    "quota-by-key": 'calls="10" renewal-period="3600" counter-key="k"',
    "quota-by-key bandwidth": 'bandwidth="100" renewal-period="3600" counter-key="k"',
}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def document(name: str, choice: str | None) -> str:
    tag = name.split()[0]
    extra = f' sluice-on-store-error="{choice}"' if choice is not None else ""
    return f"<policies><inbound><base/><{tag} {POLICIES[name]}{extra}/></inbound></policies>"


def down_gateway(name: str, choice: str | None, metrics: Metrics | None = None):
    clock = Clock()
    store = create_store("redis", url=f"redis://127.0.0.1:{closed_port()}/0", clock=clock, connect_timeout=0.5)
    return gateway(upstream(), api_type="openai", api_policy=document(name, choice), clock=clock, store=store,
                   metrics=metrics)  # fmt: skip


@pytest.mark.parametrize("name", list(POLICIES))
async def test_deny_answers_503_with_retry_after(name):
    gw = down_gateway(name, "deny")
    for _ in range(5):  # the first three reach the closed port; then the breaker is open
        response = await gw.chat(body=CHAT)
        assert response.status == 503
        body = orjson.loads(response.body)
        assert body["statusCode"] == 503
        assert body["message"].startswith("Rate limit counters are unavailable. Try again in ")
        assert int(header(response, b"retry-after")) >= 1
    assert gw.store.breaker.state is not BreakerState.CLOSED
    assert gw.pool.calls == []  # nothing reached the backend
    await gw.store.aclose()


@pytest.mark.parametrize("name", list(POLICIES))
@pytest.mark.parametrize("choice", ["allow", None])
async def test_allow_and_the_default_let_requests_through(name, choice):
    gw = down_gateway(name, choice)
    assert [(await gw.chat(body=CHAT)).status for _ in range(5)] == [200] * 5
    await gw.store.aclose()


async def test_breaker_metrics_state_and_opened_total():
    metrics = Metrics(CollectorRegistry())
    gw = down_gateway("rate-limit-by-key", "allow", metrics)

    def sample(name: str) -> float | None:
        scraped = families(metrics.exposition().decode())
        return value([s for samples in scraped.values() for s in samples], name)

    assert sample("sluice_redis_breaker_state") == 0
    for _ in range(4):
        await gw.chat(body=CHAT)
    assert sample("sluice_redis_breaker_state") in (1, 2)  # open, or half-open while a probe runs
    assert sample("sluice_redis_breaker_opened_total") == 1
    await gw.store.aclose()


@pytest.mark.parametrize("tag", ["llm-token-limit", "rate-limit-by-key", "quota-by-key"])
def test_other_values_are_rejected_at_load_time(tag):
    text = document(tag, "maybe")
    with pytest.raises(PolicyError, match="sluice-on-store-error") as caught:
        parse_document(text, "api")
    assert caught.value.line == 1 and caught.value.column is not None
