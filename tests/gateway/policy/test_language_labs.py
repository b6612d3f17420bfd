"""Policies written the way APIM's docs and labs write them load unchanged and behave as documented:
token rate limiting (``azure-openai-token-limit``) and token metrics (``azure-openai-emit-token-metric``)."""

from __future__ import annotations

import orjson
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Metrics
from gateway.policy import get_policy_class, parse_document
from gateway.policy.document import policy_class

from .helpers import FIXTURES, fixture, gateway, header, upstream

CHAT = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello."}]})


def usage_body(total: int) -> bytes:
    prompt = total // 3
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": total - prompt, "total_tokens": total},
        }
    )


def test_azure_openai_names_are_the_llm_policies():
    for azure, llm in (
        ("azure-openai-token-limit", "llm-token-limit"),
        ("azure-openai-emit-token-metric", "llm-emit-token-metric"),
    ):
        assert issubclass(policy_class(azure), get_policy_class(llm))


def test_lab_documents_load_unchanged():
    for name in ("token-rate-limiting.raw.xml", "token-metrics-emitting.xml"):
        text = (FIXTURES / name).read_text()
        fmt = "rawxml" if name.endswith(".raw.xml") else "xml"
        document = parse_document(text, "api", fmt)
        assert [p.name for p in document.sections[next(iter(document.sections))]][2].startswith("azure-openai-")


async def test_token_rate_limiting_lab():
    gw = gateway(upstream(body=usage_body(300)), api_type="openai", api_policy=fixture("token-rate-limiting.raw.xml"))
    first = await gw.chat(body=CHAT)
    assert first.status == 200
    # remaining-tokens-variable-name="remainingTokens", read back by the outbound expression
    assert header(first, b"x-remaining-tokens") == b"200"
    assert gw.last_call.header(b"api-key") == b"k1"  # set-backend-service backend-id="openai-backend"
    statuses = [(await gw.chat(body=CHAT)).status for _ in range(3)]
    assert 429 in statuses
    refused = await gw.chat(body=CHAT)
    assert refused.status == 429
    assert orjson.loads(refused.body)["message"].startswith("Token limit is exceeded. Try again in ")
    assert int(header(refused, b"retry-after")) > 0
    calls = len(gw.pool.calls)
    gw.clock.now += 60  # the next minute frees the window
    assert (await gw.chat(body=CHAT)).status == 200
    assert len(gw.pool.calls) == calls + 1


async def test_token_metrics_emitting_lab():
    metrics = Metrics()
    gw = gateway(
        upstream(body=usage_body(30)),
        api_type="openai",
        metrics=metrics,
        api_policy=fixture("token-metrics-emitting.xml"),
    )
    for ip in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        assert (await gw.chat(body=CHAT, client_ip=ip)).status == 200
    samples = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name.startswith("openai_") and sample.name.endswith("_total"):
                samples[(sample.name, sample.labels["client_ip"])] = sample.value
                assert sample.labels["subscription_id"] == "master" and sample.labels["api_id"] == "aoai"
    assert samples[("openai_total_tokens_total", "10.0.0.1")] == 60
    assert samples[("openai_total_tokens_total", "10.0.0.2")] == 30
    assert samples[("openai_prompt_tokens_total", "10.0.0.2")] == 10
