"""Telemetry builds the usage record field by field from the request context."""

from __future__ import annotations

from types import SimpleNamespace as NS
from typing import Any

from gateway.metrics import Metrics
from gateway.telemetry import Telemetry
from gateway.usage.record import UsageRecord
from gateway.usage.sinks import MemorySink

REQUEST_ID = b"3f2a9c1e-5b7d-4e21-9a0b-00000000002a"


def context(**changes: Any) -> Any:
    ctx = NS(
        started=10.0,
        status=200,
        request_id=REQUEST_ID,
        api=NS(name="chat"),
        operation=NS(name="chat-completions"),
        product=NS(name="starter"),
        subscription=NS(name="starter-sub"),
        backend=None,
        attempts=[],
        last_error=None,
        usage=NS(prompt_tokens=11, completion_tokens=7, model="gpt-4o-mini-2024"),
        llm=NS(model="asked"),
        semantic_cache=None,
        block_reason=None,
    )
    for name, value in changes.items():
        setattr(ctx, name, value)
    return ctx


def finish(ctx: Any) -> UsageRecord:
    sink = MemorySink()
    telemetry = Telemetry(
        metrics=Metrics(), sink=sink, clock=lambda: 10.25, wall_clock=lambda: 1_700_000_000.5, gateway_id="gw-1"
    )
    telemetry.finish(ctx, True)
    (record,) = sink.records
    return record


EXPECTED = UsageRecord.from_json(
    {
        "request_id": REQUEST_ID.decode(),
        "ts_ms": 1_700_000_000_250,  # the wall clock less the latency
        "api": "chat",
        "operation": "chat-completions",
        "subscription": "starter-sub",
        "product": "starter",
        "backend": None,
        "model": "gpt-4o-mini-2024",
        "prompt_tokens": 11,
        "completion_tokens": 7,
        "status": 200,
        "latency_ms": 250.0,
        "cache_hit": False,
        "gateway_id": "gw-1",
    }
)


def test_a_forwarded_request():
    assert finish(context()) == EXPECTED


def test_no_usage_no_key_client_gone():
    record = finish(context(usage=None, product=None, subscription=None, status=0, llm=None))
    assert record == UsageRecord(
        **{**EXPECTED.to_json(), "subscription": None, "product": None, "model": None, "prompt_tokens": 0,
           "completion_tokens": 0, "status": 499}
    )  # fmt: skip


def test_the_requested_model_when_the_backend_named_none():
    assert finish(context(usage=NS(prompt_tokens=1, completion_tokens=2, model=""))).model == "asked"
    assert finish(context(usage=None)).model == "asked"


def test_a_retried_pool_member_and_a_block_reason():
    attempts = [{"backend": "ptu", "status": 429}, {"backend": "b", "error": "Timeout"}, {"backend": "paygo"}]
    record = finish(context(backend=NS(name="pool", url=""), attempts=attempts, block_reason="content-safety:Hate"))
    assert (record.backend, record.failed_attempts, record.block_reason) == (
        "paygo",
        "ptu:429 b:Timeout",
        "content-safety:Hate",
    )


def test_a_semantic_cache_hit_carries_the_saved_tokens_and_no_backend():
    cache = NS(hit=True, prompt_tokens=5, completion_tokens=3)
    record = finish(context(backend=NS(name="b1", url=""), attempts=[{"backend": "b1"}], semantic_cache=cache))
    assert (record.cache_hit, record.backend, record.prompt_tokens, record.completion_tokens) == (True, None, 5, 3)
    missed = NS(hit=False, prompt_tokens=5, completion_tokens=3)
    record = finish(context(backend=NS(name="b1", url=""), attempts=[{"backend": "b1"}], semantic_cache=missed))
    assert (record.cache_hit, record.backend, record.prompt_tokens, record.completion_tokens) == (False, "b1", 11, 7)
