"""Usage records handed to the sink (and to the journal first), request metrics at the end of a request (no sockets).
The journal itself and its recovery are tested in test_usage_emit_journal.py; a real SIGKILL in
test_usage_emit_kill.py."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.app import create_app
from gateway.forward import DEFAULT_BUFFER_LIMIT
from gateway.http.server import StreamingResponse
from gateway.metrics import Metrics
from gateway.settings import GatewaySettings
from gateway.snapshot import load_snapshot
from gateway.telemetry import CLIENT_CLOSED
from gateway.usage.journal import UsageJournal
from gateway.usage.record import UsageRecord
from gateway.usage.sinks import MemorySink

from .fakes import FakePool, FakeUpstream, header, make_request
from .helpers import KEYS, TOKEN, base_snapshot

KEY = (b"ocp-apim-subscription-key", KEYS["master"][0].encode())
STARTER_KEY = (b"ocp-apim-subscription-key", KEYS["starter-sub"][0].encode())
CHAT = "/llm/chat/chat/completions"
BODY = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def chat_response() -> FakeUpstream:
    return FakeUpstream(body=orjson.dumps({"model": "gpt-4o-mini-2024", "choices": [], "usage": USAGE}))


def sse_response() -> FakeUpstream:
    events = [
        b'data: {"model":"m-1","choices":[{"delta":{"content":"hi"}}]}\n\n',
        b'data: {"model":"m-1","choices":[],"usage":' + orjson.dumps(USAGE) + b"}\n\n",
        b"data: [DONE]\n\n",
    ]
    return FakeUpstream(chunks=events, headers=[(b"content-type", b"text/event-stream")])


def make_gateway(sink=None, *, respond=chat_response, api_policy=None, metrics=None, api_type="openai", **kw):
    data = base_snapshot()
    data["apis"][0]["api_type"] = api_type
    data["apis"][0]["policy"] = api_policy
    clock, wall = Clock(100.0), Clock(1_700_000_000.0)
    pool = kw.pop("pool", None) or FakePool(respond=lambda call: respond())
    app = create_app(
        GatewaySettings(gateway_token=TOKEN, gateway_id="gw-test"),
        pool=pool,
        clock=clock,
        wall_clock=wall,
        metrics=metrics,
        usage_sink=sink if sink is not None else MemorySink(),
        **kw,
    )
    app.snapshot = load_snapshot(data, gateway_token=TOKEN)
    return app, app.telemetry.sink, clock, wall


async def call(app, path=CHAT, *headers, body=BODY, method="POST"):
    return await app(make_request(method, path, "", list(headers), body))


async def read(response) -> bytes:
    if isinstance(response, StreamingResponse):
        return b"".join([chunk async for chunk in response.body_iter])
    return response.body


#
# The records
#


async def test_record_of_a_json_response():
    app, sink, _, _ = make_gateway()
    response = await call(app, CHAT, STARTER_KEY)
    assert response.status == 200
    (record,) = sink.records
    assert record == UsageRecord(
        request_id=header(response, b"x-request-id").decode(),
        ts_ms=1_700_000_000_000,
        api="chat",
        operation="chat-completions",
        subscription="starter-sub",
        product="starter",
        backend=None,
        model="gpt-4o-mini-2024",
        prompt_tokens=11,
        completion_tokens=7,
        status=200,
        latency_ms=0.0,
        cache_hit=False,
        gateway_id="gw-test",
    )
    UsageRecord.from_json(record.to_json())  # valid for the management plane


async def test_latency_and_start_time_come_from_the_injected_clocks():
    app, sink, clock, wall = make_gateway()

    def slow_backend(call):
        clock.now += 0.25  # the backend takes 250 ms
        wall.now += 0.25
        return chat_response()

    app.pool.respond = slow_backend
    await call(app, CHAT, KEY)
    (record,) = sink.records
    assert record.latency_ms == pytest.approx(250.0)
    assert record.ts_ms == 1_700_000_000_000  # the start, not the end


async def test_record_of_a_stream_is_emitted_at_its_end():
    app, sink, _, _ = make_gateway(respond=sse_response)
    response = await call(app, CHAT, KEY, body=b'{"model": "asked", "messages": [], "stream": true}')
    assert isinstance(response, StreamingResponse)
    assert sink.records == []
    await read(response)
    (record,) = sink.records
    assert (record.status, record.model, record.prompt_tokens, record.completion_tokens) == (200, "m-1", 11, 7)
    assert record.subscription == "master" and record.product is None


async def test_record_of_a_request_refused_by_a_policy():
    policy = (
        "<policies><inbound><base/><return-response><set-status code='429'/></return-response></inbound></policies>"
    )
    app, sink, _, _ = make_gateway(api_policy=policy)
    response = await call(app, CHAT, KEY)
    assert response.status == 429
    (record,) = sink.records
    assert (record.status, record.prompt_tokens, record.completion_tokens) == (429, 0, 0)
    assert record.model == "gpt-4o-mini" or record.model is None  # the requested model, when the body was parsed


async def test_record_of_a_backend_error_and_upstream_error_metric():
    metrics = Metrics()
    app, sink, _, _ = make_gateway(metrics=metrics)
    from gateway.http.client import UpstreamConnectError

    app.pool.error = UpstreamConnectError("refused")
    response = await call(app, CHAT, KEY)
    assert response.status == 502
    assert sink.records[0].status == 502
    text = metrics.exposition().decode()
    labels = 'api="chat",backend="http://127.0.0.1:9/base",reason="BackendConnectionFailure"'
    assert f"sluice_upstream_errors_total{{{labels}}} 1.0" in text


async def test_record_of_a_refused_subscription_key():
    app, sink, _, _ = make_gateway()
    response = await call(app, CHAT, (b"ocp-apim-subscription-key", b"wrong"))
    assert response.status == 401
    (record,) = sink.records
    assert (record.api, record.operation, record.status, record.subscription) == ("chat", "chat-completions", 401, None)
    assert record.request_id == header(response, b"x-request-id").decode()


async def test_no_record_without_an_operation():
    app, sink, _, _ = make_gateway()
    assert (await call(app, "/nowhere", KEY)).status == 404
    assert sink.records == []


async def test_stream_closed_early_is_recorded_once():
    app, sink, _, _ = make_gateway(respond=sse_response)
    response = await call(app, CHAT, KEY, body=b'{"model": "asked", "messages": [], "stream": true}')
    iterator = response.body_iter
    await iterator.__anext__()
    await iterator.aclose()
    await iterator.aclose()
    (record,) = sink.records
    assert record.status == 200 and record.request_id


async def test_client_gone_before_the_response_is_recorded_as_499():
    started = asyncio.Event()

    class HangingPool(FakePool):
        async def request(self, *args, **kwargs):
            started.set()
            await asyncio.Event().wait()

    app, sink, _, _ = make_gateway(pool=HangingPool())
    task = asyncio.ensure_future(call(app, CHAT, KEY))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (record,) = sink.records
    assert record.status == CLIENT_CLOSED


#
# Written to the journal before the end of the response
#


def journal_ids(journal: UsageJournal) -> list[str]:
    if not journal._writer.path:  # no record yet: no file
        return []
    with open(journal._writer.path, "rb") as f:
        return [orjson.loads(line)["request_id"] for line in f]


async def test_a_json_response_is_in_the_journal_when_it_is_returned(tmp_path):
    journal = UsageJournal(str(tmp_path / "spool"))
    journal.open()
    app, sink, _, _ = make_gateway(usage_journal=journal)
    response = await call(app, CHAT, KEY)
    assert journal_ids(journal) == [header(response, b"x-request-id").decode()] == [sink.records[0].request_id]


async def test_a_refused_key_is_in_the_journal(tmp_path):
    journal = UsageJournal(str(tmp_path / "spool"))
    journal.open()
    app, _, _, _ = make_gateway(usage_journal=journal)
    response = await call(app, CHAT, (b"ocp-apim-subscription-key", b"wrong"))
    assert journal_ids(journal) == [header(response, b"x-request-id").decode()]


async def test_a_stream_is_in_the_journal_before_its_end(tmp_path):
    journal = UsageJournal(str(tmp_path / "spool"))
    journal.open()
    app, _, _, _ = make_gateway(respond=sse_response, usage_journal=journal)
    response = await call(app, CHAT, KEY, body=b'{"model": "m", "messages": [], "stream": true}')
    iterator = response.body_iter
    received = [chunk async for chunk in _until_exhausted(iterator, lambda: journal_ids(journal))]
    # the journal had the record when the iterator reported the end (the server writes the terminator after that)
    assert received[-1] == [header(response, b"x-request-id").decode()]


async def _until_exhausted(iterator, probe):
    while True:
        try:
            await iterator.__anext__()
        except StopAsyncIteration:
            yield probe()
            return


async def test_a_known_length_stream_holds_its_last_chunk_until_the_record_is_written(tmp_path):
    journal = UsageJournal(str(tmp_path / "spool"))
    journal.open()
    first = b"a" * (DEFAULT_BUFFER_LIMIT + 1)  # too big to be read whole: streamed with its Content-Length
    big = FakeUpstream(chunks=[first, b"b" * 10], content_length=len(first) + 10)
    app, _, _, _ = make_gateway(respond=lambda: big, api_type="passthrough", usage_journal=journal)  # no filter
    response = await call(app, CHAT, KEY)
    assert isinstance(response, StreamingResponse) and response.content_length == len(first) + 10
    iterator = response.body_iter
    assert await iterator.__anext__() == first
    assert journal_ids(journal) == []
    assert await iterator.__anext__() == b"b" * 10  # the last bytes: returned only once the body is over
    assert big.closed and len(journal_ids(journal)) == 1
    with pytest.raises(StopAsyncIteration):
        await iterator.__anext__()
    assert len(journal_ids(journal)) == 1


async def test_a_known_length_body_longer_than_announced_is_passed_on():
    big = FakeUpstream(
        chunks=[b"a" * (DEFAULT_BUFFER_LIMIT + 1), b"bb", b"cc"], content_length=DEFAULT_BUFFER_LIMIT + 3
    )
    app, sink, _, _ = make_gateway(respond=lambda: big, api_type="passthrough")
    response = await call(app, CHAT, KEY)
    body = await read(response)
    assert body.endswith(b"bbcc")  # the server refuses the excess (and closes the connection)
    assert len(sink.records) == 1


class FailingUpstream(FakeUpstream):
    """Yields its chunks, then fails as a backend connection that breaks."""

    async def _gen(self):
        for chunk in self._chunks:
            yield chunk
        raise ConnectionResetError("backend gone")


async def test_a_stream_failing_midway_is_recorded_once_and_the_error_reaches_the_server():
    failing = FailingUpstream(chunks=[b"data: {}\n\n"], headers=[(b"content-type", b"text/event-stream")])
    app, sink, _, _ = make_gateway(respond=lambda: failing)
    response = await call(app, CHAT, KEY, body=b'{"model": "m", "messages": [], "stream": true}')
    iterator = response.body_iter
    assert await iterator.__anext__() == b"data: {}\n\n"
    assert sink.records == []
    with pytest.raises(ConnectionResetError):
        await iterator.__anext__()
    assert failing.closed and len(sink.records) == 1
    with pytest.raises(StopAsyncIteration):
        await iterator.__anext__()
    await iterator.aclose()
    assert len(sink.records) == 1


async def test_a_known_length_body_failing_after_its_last_bytes_raises_instead_of_returning_them():
    first = b"a" * (DEFAULT_BUFFER_LIMIT + 1)
    big = FailingUpstream(chunks=[first, b"b" * 10], content_length=len(first) + 10)
    app, sink, _, _ = make_gateway(respond=lambda: big, api_type="passthrough")
    response = await call(app, CHAT, KEY)
    iterator = response.body_iter
    assert await iterator.__anext__() == first
    with pytest.raises(ConnectionResetError):  # the held last bytes are not returned: the body did not end well
        await iterator.__anext__()
    assert big.closed and len(sink.records) == 1
    with pytest.raises(StopAsyncIteration):
        await iterator.__anext__()
