"""HttpSink against real HTTP servers on loopback: a fake management plane (aiohttp.web), then the real endpoint."""

import asyncio
import os

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.usage.record import UsageRecord
from gateway.usage.sinks import HttpSink

from .conftest import FakeClock, closed_port, spool_lines, totals
from .factories import UsageRecordFactory

TOKEN = "test-gateway-token"


class Management:
    """Answers POST /api/gateway/usage/ with the next status of `answers` (then 202), keeping accepted records."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.posts: list[dict] = []
        self.peers: list[tuple | None] = []  # the client's address of each POST: one per connection
        self.records: list[UsageRecord] = []
        self.app = web.Application()
        self.app.router.add_post("/api/gateway/usage/", self.ingest)

    async def ingest(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.posts.append({"headers": dict(request.headers), "body": orjson.loads(body)})
        self.peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        if request.headers.get("Authorization") != f"Gateway {TOKEN}":
            return web.json_response({"detail": "Invalid or missing gateway token."}, status=401)
        status = self.answers.pop(0) if self.answers else 202
        if status == 202:
            self.records += [UsageRecord.from_json(r) for r in orjson.loads(body)["records"]]
        return web.json_response({"detail": "..."}, status=status)


async def serve(management: Management, port: int = 0) -> tuple[TestServer, str]:
    server = TestServer(management.app, host="127.0.0.1", port=port)
    await server.start_server()
    return server, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def management():
    mgmt = Management()
    server, mgmt.url = await serve(mgmt)
    yield mgmt
    await server.close()


async def test_posts_batches_with_the_gateway_token(management):
    sink = HttpSink(management.url, TOKEN, batch_max=2)
    sent = UsageRecordFactory.build_batch(3)
    for record in sent:
        sink.emit(record)
    await sink.flush()
    assert [len(p["body"]["records"]) for p in management.posts] == [2, 1]
    assert management.posts[0]["headers"]["Authorization"] == f"Gateway {TOKEN}"
    assert management.posts[0]["headers"]["Content-Type"] == "application/json"
    assert management.posts[0]["body"]["records"][0] == sent[0].to_json()
    assert management.records == sent
    await sink.close()


async def test_batches_share_one_kept_alive_connection(management):
    sink = HttpSink(management.url, TOKEN, batch_max=2)
    for _ in range(3):
        for record in UsageRecordFactory.build_batch(2):
            sink.emit(record)
        await sink.flush()
    assert len(management.posts) == 3
    assert len(set(management.peers)) == 1
    await sink.close()


async def test_server_errors_are_retried_and_bad_requests_dropped(management):
    sink = HttpSink(management.url, TOKEN)
    kept, rejected = UsageRecordFactory.build_batch(2)
    management.answers = [503]
    sink.emit(kept)
    await sink.flush()
    assert (len(management.posts), sink.stats.delivered) == (1, 0)
    await sink.flush()
    assert (len(management.posts), management.records) == (2, [kept])
    management.answers = [400]
    sink.emit(rejected)
    await sink.flush()
    await sink.flush()
    assert (len(management.posts), sink.stats.rejected) == (3, 1)
    await sink.close()


async def test_a_wrong_token_keeps_the_records(management):
    sink = HttpSink(management.url, "wrong-token")
    sink.emit(UsageRecordFactory())
    await sink.flush()
    assert sink.stats.delivered == 0 and sink.stats.rejected == 0
    await sink.close()
    assert sink.stats.dropped == 1  # no spool: reported as lost at close


async def test_a_413_splits_the_batch(management):
    management.answers = [413]
    sink = HttpSink(management.url, TOKEN, batch_max=4)
    sent = UsageRecordFactory.build_batch(4)
    for record in sent:
        sink.emit(record)
    await sink.flush()
    assert [len(p["body"]["records"]) for p in management.posts] == [4, 2, 2]
    assert management.records == sent
    await sink.close()


async def test_management_down_spools_then_delivers_when_it_comes_back(tmp_path):
    port = closed_port()
    spool = str(tmp_path / "usage.spool")
    clock = FakeClock()
    sink = HttpSink(f"http://127.0.0.1:{port}", TOKEN, spool_path=spool, clock=clock)
    await sink.start()
    during = UsageRecordFactory.build_batch(5)
    for record in during:
        sink.emit(record)
    await sink.flush()
    assert sink.stats.spooled == 5 and spool_lines(spool) == 5

    mgmt = Management()
    server, _ = await serve(mgmt, port)  # the management plane is back on the same address
    clock.now += 20  # and the sink's backoff is over
    try:
        after = UsageRecordFactory.build_batch(2)
        for record in after:
            sink.emit(record)
        await sink.flush()
        assert sorted(r.request_id for r in mgmt.records) == sorted(r.request_id for r in during + after)
        await sink.close()
        assert os.listdir(tmp_path) == []
    finally:
        await server.close()


async def test_a_restarted_gateway_replays_the_spool(management, tmp_path):
    spool = str(tmp_path / "usage.spool")
    down = HttpSink(f"http://127.0.0.1:{closed_port()}", TOKEN, spool_path=spool)
    await down.start()
    sent = UsageRecordFactory.build_batch(3)
    for record in sent:
        down.emit(record)
    await down.close()
    restarted = HttpSink(management.url, TOKEN, spool_path=spool)
    await restarted.start()
    await restarted.flush()
    assert management.records == sent
    await restarted.close()


#
# Against the real endpoint (Django's live server)
#


@pytest.mark.django_db(transaction=True)
def test_gateway_to_rollups_over_http(live_server):
    sent = UsageRecordFactory.build_batch(12)

    async def gateway():
        sink = HttpSink(live_server.url, TOKEN, batch_max=5)
        await sink.start()
        for record in sent:
            sink.emit(record)
        await sink.flush()
        # the answer to the last batch is lost: the gateway sends it again
        for record in sent[10:]:
            sink.emit(record)
        await sink.close()
        return sink.stats

    stats = asyncio.run(gateway())
    assert (stats.delivered, stats.rejected) == (14, 0)
    assert totals() == {"requests": 12, "prompt_tokens": 120, "completion_tokens": 240, "total_tokens": 360}


async def test_the_body_is_the_journal_lines_of_the_records(management, tmp_path):
    """A record comes with the line the journal wrote: the body joins those lines (the same JSON as the records'
    to_json()), whether the batch goes out at once or after a stay in the spool."""
    from gateway.usage.journal import UsageJournal, encode_line

    journal = UsageJournal(str(tmp_path / "usage.spool"))
    sent = [*UsageRecordFactory.build_batch(3), UsageRecordFactory.build(model='modèle "x"\n', failed_attempts="a:1")]
    for record in sent:
        line = journal.append(record)
        assert line == encode_line(record) == orjson.dumps(record.to_json(), option=orjson.OPT_APPEND_NEWLINE)
    sink = HttpSink(management.url, TOKEN)
    for record in sent:
        sink.emit(record, encode_line(record))
    await sink.flush()
    assert management.posts[-1]["body"] == {"records": [record.to_json() for record in sent]}
    assert management.records == sent
    await sink.close()
    await journal.close(sink)
