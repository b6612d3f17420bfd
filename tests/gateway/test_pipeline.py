"""The policy pipeline: short-circuits, on-error, header changes, tracing and chunk filters (no sockets)."""

from __future__ import annotations

import orjson
import pytest

from gateway.app import TRACE_HEADER, create_app
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.http.client import UpstreamConnectError, UpstreamTimeout
from gateway.http.server import Response, StreamingResponse
from gateway.llm_accounting import exchange_for
from gateway.pipeline import Pipeline, run_pipeline
from gateway.policy import Policy, Section
from gateway.settings import GatewaySettings
from gateway.snapshot import load_snapshot

from .fakes import FakePool, FakeUpstream, header, make_request
from .helpers import KEYS, TOKEN, base_snapshot, trace_token

KEY = (b"ocp-apim-subscription-key", KEYS["master"][0].encode())


def make_gateway(api_policy=None, op_policy=None, global_policy=None, pool=None):
    data = base_snapshot()
    data["global_policy"] = global_policy
    data["apis"][0]["policy"] = api_policy
    data["apis"][0]["operations"][0]["policy"] = op_policy  # POST /chat/completions
    pool = pool or FakePool()
    app = create_app(GatewaySettings(gateway_token=TOKEN), pool=pool)
    app.snapshot = load_snapshot(data, gateway_token=TOKEN)
    return app, pool


async def send(app, headers=(), body=b"{}"):
    return await app(make_request("POST", "/llm/chat/chat/completions", "", [KEY, *headers], body))


async def test_return_response_in_inbound_short_circuits():
    app, pool = make_gateway(
        op_policy="""<policies><inbound><base/>
        <return-response>
            <set-status code="418" reason="Teapot"/>
            <set-header name="x-why"><value>a</value><value>b</value></set-header>
            <set-body>{"short": true}</set-body>
        </return-response>
        <set-header name="x-never"><value>1</value></set-header>
    </inbound></policies>"""
    )
    response = await send(app)
    assert isinstance(response, Response)
    assert response.status == 418
    assert response.body == b'{"short": true}'
    assert header(response, b"x-why") == b"a,b"
    assert header(response, b"x-request-id")
    assert pool.calls == []


async def test_return_response_in_outbound_closes_the_upstream():
    app, pool = make_gateway(
        op_policy="<policies><outbound><return-response><set-status code='202'/>"
        "</return-response></outbound></policies>"
    )
    pool.respond = lambda call: FakeUpstream(chunks=[b"data: 1\n\n"], headers=[(b"content-type", b"text/event-stream")])
    response = await send(app)
    assert response.status == 202 and response.body == b""
    assert pool.responses[0].closed and not pool.responses[0].iterated


async def test_set_header_inbound_and_outbound():
    app, pool = make_gateway(
        api_policy="""<policies>
          <inbound><base/>
            <set-header name="x-added"><value>v1</value></set-header>
            <set-header name="user-agent" exists-action="delete"/>
            <set-header name="x-keep" exists-action="skip"><value>gateway</value></set-header>
            <set-header name="x-multi" exists-action="append"><value>2</value></set-header>
            <set-header name="x-over" exists-action="override"><value>new</value></set-header>
          </inbound>
          <outbound><base/>
            <set-header name="x-served-by"><value>sluice</value></set-header>
            <set-header name="set-cookie" exists-action="append"><value>a=1</value><value>b=2</value></set-header>
            <set-header name="x-upstream-secret" exists-action="delete"/>
          </outbound></policies>"""
    )
    pool.respond = lambda call: FakeUpstream(
        headers=[(b"content-type", b"application/json"), (b"x-upstream-secret", b"s"), (b"content-length", b"2")],
        body=b"{}",
    )
    response = await send(
        app,
        headers=[
            (b"user-agent", b"curl"),
            (b"x-keep", b"client"),
            (b"x-multi", b"1"),
            (b"x-over", b"old"),
            (b"x-over", b"o2"),
        ],
    )
    sent = pool.calls[0]
    assert sent.header(b"x-added") == b"v1"
    assert sent.header(b"user-agent") is None
    assert sent.header(b"x-keep") == b"client"
    assert [v for k, v in sent.headers if k == b"x-multi"] == [b"1", b"2"]
    assert [v for k, v in sent.headers if k == b"x-over"] == [b"new"]
    assert sent.header(b"x-forwarded-for") == b"10.0.0.1"
    assert response.status == 200 and response.body == b"{}"
    assert header(response, b"x-served-by") == b"sluice"
    assert [v for k, v in response.headers if k == b"set-cookie"] == [b"a=1", b"b=2"]
    assert header(response, b"x-upstream-secret") is None
    assert header(response, b"content-length") is None  # the server sets framing


async def test_set_status_in_outbound():
    app, _ = make_gateway(op_policy='<policies><outbound><set-status code="299" reason="Fine"/></outbound></policies>')
    assert (await send(app)).status == 299


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [(UpstreamConnectError("refused"), 502, "BackendConnectionFailure"), (UpstreamTimeout("slow"), 504, "Timeout")],
)
async def test_backend_failure_default_error_response(error, status, reason):
    app, pool = make_gateway()
    pool.error = error
    response = await send(app)
    assert response.status == status
    body = orjson.loads(response.body)
    assert body["statusCode"] == status and body["message"]
    assert header(response, b"x-request-id")


async def test_on_error_section_sees_the_error_and_can_change_the_response():
    app, pool = make_gateway(
        global_policy="""<policies><on-error>
        <set-header name="x-error"><value>yes</value></set-header>
        <set-status code="503" reason="Down"/>
    </on-error></policies>"""
    )
    pool.error = UpstreamConnectError("refused")
    response = await send(app)
    assert response.status == 503
    assert header(response, b"x-error") == b"yes"
    assert orjson.loads(response.body)["statusCode"] == 502  # the body of the default error response


async def test_on_error_return_response():
    app, pool = make_gateway(
        api_policy="<policies><on-error><return-response><set-status code='500'/>"
        "<set-body>custom</set-body></return-response></on-error></policies>"
    )
    pool.error = UpstreamTimeout("slow")
    response = await send(app)
    assert (response.status, response.body) == (500, b"custom")


async def test_forward_request_timeout_attribute_gives_504():
    import asyncio

    class Hanging(FakePool):
        async def request(self, *args, timeout=None, **kwargs):
            # the pool enforces the forward timeout (UpstreamPool.request): one that never answers, as it would
            assert timeout == 0.05
            await asyncio.sleep(timeout)
            raise UpstreamTimeout(f"nothing within {timeout} s")

    app, _ = make_gateway(
        global_policy='<policies><backend><forward-request timeout="0.05"/></backend></policies>', pool=Hanging()
    )
    response = await send(app)
    assert response.status == 504


async def test_trace_when_requested_with_a_trace_token_for_the_api():
    app, _ = make_gateway(
        api_policy='<policies><inbound><base/><set-header name="x-a"><value>1</value></set-header></inbound></policies>'
    )
    traced = await send(app, headers=[(TRACE_HEADER, trace_token("chat"))])
    trace = orjson.loads(header(traced, TRACE_HEADER))
    assert [(e["section"], e["policy"], e["scope"]) for e in trace] == [
        ("inbound", "subscription-check", None),
        ("inbound", "set-header", "api"),
        ("backend", "forward-request", None),
    ]
    assert trace[0]["key-matched"] is True and trace[0]["subscription"] == "master"
    assert all(e["elapsed_ms"] >= 0 for e in trace)
    assert trace[2]["status"] == 200 and trace[2]["target"] == "/base/chat/completions"


@pytest.mark.parametrize(
    "value",
    [
        None,  # never on by default
        b"nope",
        TOKEN.encode(),  # the gateway token itself no longer enables the trace
        trace_token("other"),  # signed for another API
        trace_token("chat", ttl=-1),  # expired
        trace_token("chat", ttl=3600),  # would live longer than TRACE_TOKEN_MAX_TTL
        trace_token("chat", token="another-gateway-token"),  # signed with another key
        trace_token("chat")[:-1] + b"x",  # signature altered
        b"Y2hhdA.99999999999." + b"0" * 64,  # forged
    ],
)
async def test_no_trace_without_a_valid_trace_token(value):
    app, _ = make_gateway()
    response = await send(app, headers=[] if value is None else [(TRACE_HEADER, value)])
    assert response.status == 200
    assert header(response, TRACE_HEADER) is None


#
# run_pipeline directly, with ad-hoc policies
#


class Recorder(Policy):
    name = "recorder"
    sections = frozenset(Section)

    def __init__(self, log, result=None, exc=None):
        super().__init__()
        self.log, self.result, self.exc = log, result, exc

    async def apply(self, ctx):
        self.log.append((ctx.section, ctx.last_error))
        if self.exc is not None:
            raise self.exc
        return self.result


class Upper:
    """A chunk filter: upper-cases, and appends a trailer at the end."""

    def __init__(self):
        self.finished = None

    def feed(self, chunk):
        return chunk.upper()

    def finish(self, complete):
        self.finished = complete
        return b"!END"


class AddFilter(Policy):
    name = "add-filter"
    sections = frozenset({Section.OUTBOUND})

    def __init__(self, f):
        super().__init__()
        self.f = f

    async def apply(self, ctx):
        ctx.chunk_filters.append(self.f)


def context(app, pool) -> RequestContext:
    config = app.snapshot
    api = config.apis["chat"]
    return RequestContext(
        request=make_request("POST", "/llm/chat/chat/completions"),
        request_id=b"rid",
        api=api,
        operation=api.operations[0],
        product=None,
        subscription=None,
        services=app.forwarder,
        backend=api.backend,
        forward_path="/chat/completions",
        query="",
        request_headers=[],
        matched_parameters={},
    )


def forward_step(app):
    return app.snapshot.pipelines[app.snapshot.apis["chat"].operations[0]][None].backend[-1]


async def test_gateway_error_jumps_to_on_error_with_last_error():
    app, pool = make_gateway()
    log = []
    failure = GatewayError(429, "Too many", source="rate-limit", reason="RateLimitExceeded")
    failing = Recorder(log, exc=failure)
    failing.section = Section.INBOUND
    pipeline = Pipeline(
        inbound=(failing, Recorder(log)),
        backend=(forward_step(app),),
        outbound=(Recorder(log),),
        on_error=(Recorder(log),),
    )
    response = await run_pipeline(pipeline, context(app, pool))
    assert response.status == 429
    assert orjson.loads(response.body) == {"statusCode": 429, "message": "Too many"}
    assert log == [(Section.INBOUND, None), (Section.ON_ERROR, failure)]
    assert (failure.section, failure.source, failure.reason) == ("inbound", "rate-limit", "RateLimitExceeded")
    assert pool.calls == []


async def test_unexpected_exception_becomes_a_500_gateway_error():
    app, pool = make_gateway()
    log = []
    pipeline = Pipeline(
        inbound=(Recorder(log, exc=RuntimeError("bug")),), backend=(), outbound=(), on_error=(Recorder(log),)
    )
    response = await run_pipeline(pipeline, context(app, pool))
    assert response.status == 500
    error = log[-1][1]
    assert (error.reason, error.source) == ("InternalError", "recorder")


async def test_error_inside_on_error_gives_plain_error_response():
    app, pool = make_gateway()
    boom = GatewayError(400, "bad", source="x", reason="Bad")
    pipeline = Pipeline(
        inbound=(Recorder([], exc=GatewayError(401, "no", source="a", reason="A")),),
        backend=(),
        outbound=(),
        on_error=(Recorder([], exc=boom),),
    )
    response = await run_pipeline(pipeline, context(app, pool))
    assert (response.status, orjson.loads(response.body)["message"]) == (400, "bad")


async def test_inbound_response_skips_backend_and_outbound():
    app, pool = make_gateway()
    log = []
    pipeline = Pipeline(
        inbound=(Recorder(log, result=Response(204)),),
        backend=(forward_step(app),),
        outbound=(Recorder(log),),
        on_error=(),
    )
    response = await run_pipeline(pipeline, context(app, pool))
    assert response.status == 204 and len(log) == 1 and pool.calls == []


class ReadsBody(Policy):
    """Reads the request's JSON object through the LLM exchange, as the token policies do."""

    name = "reads-body"
    sections = frozenset({Section.INBOUND})
    requires_json_body = True

    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    async def apply(self, ctx):
        self.seen.append(exchange_for(ctx).body)


async def run_reads_body(body: bytes):
    """A pipeline whose one inbound step reads the JSON object through the exchange: (response, ctx, objects read)."""
    app, pool = make_gateway()
    seen = []
    pipeline = Pipeline(
        inbound=(ReadsBody(seen),), backend=(forward_step(app),), outbound=(), on_error=(), requires_json_body=True
    )
    ctx = context(app, pool)
    ctx.request.body = body
    return await run_pipeline(pipeline, ctx), ctx, seen


async def test_the_exchange_takes_the_object_the_body_check_parsed():
    response, ctx, seen = await run_reads_body(b'{"model": "gpt-4", "messages": []}')
    assert response.status == 200
    checked, document = ctx.json_body
    assert checked is ctx.request.body and document == {"model": "gpt-4", "messages": []}
    assert seen == [document] and seen[0] is document  # the same object: the bytes were not parsed a second time
    assert ctx.llm.model == "gpt-4"


async def test_a_body_the_check_refuses_leaves_nothing_for_the_exchange():
    response, ctx, seen = await run_reads_body(b"[1, 2]")
    assert response.status == 400 and ctx.json_body is None and seen == []


async def test_chunk_filter_on_buffered_body():
    app, pool = make_gateway()
    upper = Upper()
    pool.respond = lambda call: FakeUpstream(body=b"hello")
    pipeline = Pipeline(inbound=(), backend=(forward_step(app),), outbound=(AddFilter(upper),), on_error=())
    response = await run_pipeline(pipeline, context(app, pool))
    assert response.body == b"HELLO!END" and upper.finished is True


async def test_chunk_filter_on_streamed_body_and_upstream_closed():
    app, pool = make_gateway()
    upper = Upper()
    pool.respond = lambda call: FakeUpstream(
        chunks=[b"data: a\n\n", b"data: b\n\n"], headers=[(b"content-type", b"text/event-stream")]
    )
    pipeline = Pipeline(inbound=(), backend=(forward_step(app),), outbound=(AddFilter(upper),), on_error=())
    response = await run_pipeline(pipeline, context(app, pool))
    assert isinstance(response, StreamingResponse) and response.content_length is None
    chunks = [chunk async for chunk in response.body_iter]
    assert chunks == [b"DATA: A\n\n", b"DATA: B\n\n", b"!END"]
    assert upper.finished is True and pool.responses[0].closed


async def test_the_first_event_of_a_whole_stream_in_one_read_leaves_before_the_rest_is_filtered():
    app, pool = make_gateway()
    fed = []

    class Recorder(Upper):
        def feed(self, chunk):
            fed.append(chunk)
            return super().feed(chunk)

    pool.respond = lambda call: FakeUpstream(
        chunks=[b"data: a\n\ndata: b\n\ndata: c\n\n", b"data: d\n\n"],
        headers=[(b"content-type", b"text/event-stream")],
    )
    pipeline = Pipeline(inbound=(), backend=(forward_step(app),), outbound=(AddFilter(Recorder()),), on_error=())
    response = await run_pipeline(pipeline, context(app, pool))
    body = response.body_iter
    assert await body.__anext__() == b"DATA: A\n\n"
    assert fed == [b"data: a\n\n"]  # the rest of the read is not filtered yet
    rest = [chunk async for chunk in body]
    assert rest == [b"DATA: B\n\nDATA: C\n\n", b"DATA: D\n\n", b"!END"]  # later reads pass whole


async def test_stream_closed_before_iteration_releases_upstream_and_aborts_filters():
    app, pool = make_gateway()
    upper = Upper()
    pool.respond = lambda call: FakeUpstream(chunks=[b"x"], headers=[(b"content-type", b"text/event-stream")])
    pipeline = Pipeline(inbound=(), backend=(forward_step(app),), outbound=(AddFilter(upper),), on_error=())
    response = await run_pipeline(pipeline, context(app, pool))
    await response.body_iter.aclose()
    assert pool.responses[0].closed and upper.finished is False


async def test_large_known_length_body_is_streamed_with_its_length():
    app, pool = make_gateway()
    big = b"x" * (app.forwarder.buffer_limit + 1)
    pool.respond = lambda call: FakeUpstream(body=big)
    response = await send(app)
    assert isinstance(response, StreamingResponse) and response.content_length == len(big)
    assert b"".join([c async for c in response.body_iter]) == big


async def test_503_until_configured_and_health():
    app = create_app(GatewaySettings(gateway_token=TOKEN, gateway_id="gw-1"), pool=FakePool())
    response = await app(make_request("GET", "/llm/chat/x"))
    assert response.status == 503 and orjson.loads(response.body)["statusCode"] == 503
    health = await app(make_request("GET", "/__sluice/health"))
    assert health.status == 503 and orjson.loads(health.body)["revision"] is None
    app.snapshot = load_snapshot(base_snapshot(), gateway_token=TOKEN)
    health = await app(make_request("GET", "/__sluice/health"))
    assert health.status == 200
    assert orjson.loads(health.body) == {"status": "ok", "revision": 7, "gateway_id": "gw-1"}
    assert (await app(make_request("GET", "/__sluice/other"))).status == 404


async def test_unknown_route_is_404_with_apim_body():
    app, _ = make_gateway()
    response = await app(make_request("GET", "/nowhere"))
    assert response.status == 404
    assert orjson.loads(response.body) == {
        "statusCode": 404,
        "message": "Unable to match incoming request to an operation.",
    }
    assert header(response, b"x-request-id")


async def test_cancellation_after_forward_releases_the_upstream():
    import asyncio

    app, pool = make_gateway()
    started = asyncio.Event()

    class Stuck(Policy):
        name = "stuck"
        sections = frozenset({Section.OUTBOUND})

        async def apply(self, ctx):
            started.set()
            await asyncio.Event().wait()

    pool.respond = lambda call: FakeUpstream(chunks=[b"x"], headers=[(b"content-type", b"text/event-stream")])
    pipeline = Pipeline(inbound=(), backend=(forward_step(app),), outbound=(Stuck(),), on_error=())
    task = asyncio.ensure_future(run_pipeline(pipeline, context(app, pool)))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.responses[0].closed


class Failing(Upper):
    """A chunk filter whose finish raises: the others must still finish and the upstream must still be released."""

    def finish(self, complete):
        raise RuntimeError("filter bug")


async def test_outbound_error_after_forward_aborts_the_filters_it_added():
    # regression: on-error used to drop the chunk filters unfinished, so usage meters and byte counters never settled
    app, pool = make_gateway()
    upper = Upper()
    pool.respond = lambda call: FakeUpstream(chunks=[b"x"], headers=[(b"content-type", b"text/event-stream")])
    boom = Recorder([], exc=GatewayError(500, "outbound failed", source="test", reason="Test"))
    pipeline = Pipeline(inbound=(), backend=(forward_step(app),), outbound=(AddFilter(upper), boom), on_error=())
    response = await run_pipeline(pipeline, context(app, pool))
    assert response.status == 500
    assert upper.finished is False and pool.responses[0].closed


async def test_a_failing_filter_does_not_keep_the_upstream_or_skip_on_finish():
    app, pool = make_gateway()
    upper = Upper()
    pool.respond = lambda call: FakeUpstream(chunks=[b"x"], headers=[(b"content-type", b"text/event-stream")])
    pipeline = Pipeline(
        inbound=(), backend=(forward_step(app),), outbound=(AddFilter(Failing()), AddFilter(upper)), on_error=()
    )
    ctx = context(app, pool)
    finished = []
    ctx.on_finish.append(lambda c, complete: finished.append(complete))
    response = await run_pipeline(pipeline, ctx)
    await response.body_iter.aclose()
    assert pool.responses[0].closed and upper.finished is False and finished == [False]


async def test_a_known_length_body_runs_on_finish_before_its_last_bytes_are_returned():
    from types import SimpleNamespace

    from gateway.forward import UpstreamBody

    finished = []
    upstream = FakeUpstream(chunks=[b"aaa", b"bb", b""], content_length=5)
    ctx = SimpleNamespace(stream_stages=[], on_finish=[lambda c, complete: finished.append(complete)])
    body = UpstreamBody(upstream, [], ctx, 5)
    assert await body.__anext__() == b"aaa" and finished == []
    assert await body.__anext__() == b"bb"  # the last bytes: returned once the upstream body has ended
    assert finished == [True] and upstream.closed
    with pytest.raises(StopAsyncIteration):
        await body.__anext__()
    await body.aclose()
    assert finished == [True]


async def test_an_unknown_length_body_runs_on_finish_before_it_reports_its_end():
    from types import SimpleNamespace

    from gateway.forward import UpstreamBody

    finished = []
    upstream = FakeUpstream(chunks=[b"aaa", b"bb"])
    ctx = SimpleNamespace(stream_stages=[], on_finish=[lambda c, complete: finished.append(complete)])
    body = UpstreamBody(upstream, [], ctx)
    assert [await body.__anext__(), await body.__anext__()] == [b"aaa", b"bb"] and finished == []
    with pytest.raises(StopAsyncIteration):
        await body.__anext__()
    assert finished == [True] and upstream.closed
