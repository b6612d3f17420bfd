"""The direct forward of run_pipeline (a backend section that is one plain forward-request) against the general path:
the same requests through two gateways, one with the direct path turned off, give the same responses, the same
upstream calls, the same request state and the same usage records."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

import gateway.app
from gateway.app import TRACE_HEADER, create_app
from gateway.context import RequestContext
from gateway.http.client import UpstreamConnectError, UpstreamTimeout
from gateway.http.server import StreamingResponse
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline, compile_pipeline, run_pipeline
from gateway.policy import parse_document
from gateway.policy.builtin.forward_request import ForwardRequest
from gateway.settings import GatewaySettings
from gateway.snapshot import load_snapshot
from gateway.usage.sinks import MemorySink

from .fakes import FakePool, FakeUpstream, make_request
from .helpers import KEYS, TOKEN, llm_snapshot, trace_token

KEY = (b"ocp-apim-subscription-key", KEYS["master"][0].encode())
CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]})
COMPLETION = orjson.dumps(
    {"id": "c1", "model": "gpt-4o-mini", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}
)
SSE = [
    b'data: {"id":"c1","model":"gpt-4o-mini","choices":[{"delta":{"content":"hi"}}]}\n\n',
    b'data: {"id":"c1","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1}}\n\n',
    b"data: [DONE]\n\n",
]

POLICIES = {
    "none": None,
    "literal-timeout": '<policies><backend><forward-request timeout="30"/></backend></policies>',
    "on-error": '<policies><on-error><set-header name="x-failed"><value>@(context.LastError.Reason)</value>'
    "</set-header></on-error></policies>",
}


def upstream_for(case: str):
    def respond(call):
        if case == "json":
            return FakeUpstream(body=COMPLETION)
        if case == "stream":
            return FakeUpstream(headers=[(b"content-type", b"text/event-stream")], chunks=SSE)
        if case == "error-status":
            return FakeUpstream(503, headers=[(b"content-type", b"text/plain"), (b"retry-after", b"7")], body=b"busy")
        raise AssertionError(case)

    return respond


class Gateway:
    """An app over a FakePool whose request contexts are kept (``contexts``)."""

    def __init__(self, policy: str | None, *, direct: bool, wall: float) -> None:
        self.pool = FakePool()
        self.sink = MemorySink()
        now = iter(range(10_000))
        self.app = create_app(
            GatewaySettings(gateway_token=TOKEN),
            pool=self.pool,
            clock=lambda: float(next(now)),
            wall_clock=lambda: wall,
            metrics=Metrics(),
            usage_sink=self.sink,
        )
        self.app.snapshot = load_snapshot(llm_snapshot("http://127.0.0.1:9/v1", policy), gateway_token=TOKEN)
        if not direct:
            for pipelines in self.app.snapshot.pipelines.values():
                for pipeline in pipelines.values():
                    object.__setattr__(pipeline, "direct_forward", False)
        self.contexts: list[RequestContext] = []

    async def send(self, case: str, headers=()) -> dict[str, Any]:
        if case in ("connect-error", "timeout"):
            self.pool.error = UpstreamConnectError("refused") if case == "connect-error" else UpstreamTimeout("slow")
        else:
            self.pool.error = None
            self.pool.respond = upstream_for(case)
        request = make_request("POST", "/llm/chat/completions", "", [KEY, *headers], CHAT)
        response = await self.app.handle(request, b"rid-1")
        if isinstance(response, StreamingResponse):
            body = b"".join([chunk async for chunk in response.body_iter])
        else:
            body = response.body
        ctx = self.contexts[-1]
        error = ctx.last_error
        headers: list[tuple[bytes, Any]] = list(response.headers)
        for i, (name, value) in enumerate(headers):
            if name == TRACE_HEADER:  # each step's elapsed_ms is wall time: left out
                headers[i] = (name, [{k: v for k, v in e.items() if k != "elapsed_ms"} for e in orjson.loads(value)])
        return {
            "status": response.status,
            "headers": headers,
            "body": body,
            "streamed": isinstance(response, StreamingResponse),
            "calls": [(c.origin, c.method, c.target, c.headers, c.body) for c in self.pool.calls],
            "ctx": (
                ctx.section,
                ctx.status,
                ctx.attempts,
                ctx.usage,
                ctx.variables,
                ctx.response_headers,
                ctx.block_reason,
                ctx.on_finish,
            ),
            "error": None
            if error is None
            else (error.status, error.source, error.reason, error.section, error.scope, error.policy_id),
            "records": [record.to_fields() for record in self.sink.records],
        }


@pytest.fixture
def keep_contexts(monkeypatch):
    """Run the app's pipeline as usual, keeping each request context on its Gateway."""
    gateways: dict[int, Gateway] = {}

    async def recording(pipeline: Pipeline, ctx: RequestContext):
        gateways[id(ctx.services)].contexts.append(ctx)
        return await run_pipeline(pipeline, ctx)

    monkeypatch.setattr(gateway.app, "run_pipeline", recording)

    wall = time.time()  # one wall clock for both gateways: the same record times, and valid trace tokens

    def make(policy: str | None, *, direct: bool) -> Gateway:
        made = Gateway(policy, direct=direct, wall=wall)
        gateways[id(made.app.forwarder)] = made
        return made

    return make


@pytest.mark.parametrize("policy", sorted(POLICIES))
async def test_direct_forward_gives_what_the_general_path_gives(keep_contexts, monkeypatch, policy):
    direct, general = keep_contexts(POLICIES[policy], direct=True), keep_contexts(POLICIES[policy], direct=False)
    pipeline = next(iter(direct.app.snapshot.pipelines.values()))[None]
    assert pipeline.direct_forward
    applied = []
    original_apply = ForwardRequest.apply

    async def counting_apply(self, ctx):
        applied.append(ctx)
        return await original_apply(self, ctx)

    monkeypatch.setattr(ForwardRequest, "apply", counting_apply)
    cases = ["json", "stream", "error-status", "connect-error", "timeout", "json"]
    for case in cases:
        assert await direct.send(case) == await general.send(case), case
    assert [ctx.services for ctx in applied] == [general.app.forwarder] * len(cases)  # the direct path skips apply
    assert len(direct.sink.records) == len(cases)


async def test_a_traced_request_takes_the_general_path(keep_contexts):
    direct, general = keep_contexts(None, direct=True), keep_contexts(None, direct=False)
    trace = (TRACE_HEADER, trace_token("llm"))
    first, second = await direct.send("json", [trace]), await general.send("json", [trace])
    assert first == second
    traced = dict(first["headers"])[TRACE_HEADER]
    assert [entry["policy"] for entry in traced] == ["subscription-check", "forward-request"]


@pytest.mark.parametrize(
    ("backend", "direct"),
    [
        ("<forward-request/>", True),
        ('<forward-request timeout="12"/>', True),
        ('<forward-request timeout="@(&quot;5&quot;)"/>', False),  # an expression: evaluated by the step
        ('<forward-request fail-on-error-status-code="true"/>', False),
        ('<retry condition="@(false)" count="1" interval="0"><forward-request/></retry>', False),
    ],
)
def test_the_direct_path_is_decided_when_the_pipeline_compiles(backend, direct):
    pipeline = compile_pipeline(
        [None, None, parse_document(f"<policies><backend>{backend}</backend></policies>", "api"), None]
    )
    assert pipeline.direct_forward is direct
    assert pipeline.forward_timeout == (12.0 if "12" in backend and direct else None)
