"""RedisStreamSink against a real Redis: one pipeline per batch, bounded stream, outage -> spool -> delivery,
restart replay, and the whole path into the rollups."""

import asyncio
import os
from urllib.parse import urlsplit

import pytest

from gateway.usage.journal import encode_line
from gateway.usage.record import STREAM_FIELD, UsageRecord
from gateway.usage.sinks import RedisStreamSink
from usage.tasks import ingest_usage_stream

from .conftest import FakeClock, Relay, closed_port, spool_lines, totals
from .factories import UsageRecordFactory


def stream_ids(conn, stream) -> list[str]:
    return [UsageRecord.from_fields(fields).request_id for _, fields in conn.xrange(stream)]


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"127.0.0.1:{port}").geturl()


async def test_a_batch_is_one_pipelined_round_trip(redis_url, redis_conn, stream_key, monkeypatch):
    sink = RedisStreamSink(redis_url, stream_key, batch_max=100)
    warm_up = UsageRecordFactory()
    sink.emit(warm_up)
    await sink.flush()  # connects
    client = sink._redis
    executes = []  # records per pipelined batch
    writes = []  # socket writes (commands leave in one write per batch)
    original_batch, original_flush = client.call_batch, client._flush

    async def counting_batch(commands, count):
        executes.append(count)
        return await original_batch(commands, count)

    def counting_flush():
        if client._outbox:
            writes.append(len(client._outbox))
        original_flush()

    monkeypatch.setattr(client, "call_batch", counting_batch)
    monkeypatch.setattr(client, "_flush", counting_flush)
    sent = UsageRecordFactory.build_batch(150)
    for record in sent:
        sink.emit(record)
    await sink.flush()
    assert executes == [100, 50]  # batches of up to batch_max, one round trip each
    assert writes == [1, 1]  # each batch's XADDs leave in a single write
    assert stream_ids(redis_conn, stream_key) == [r.request_id for r in [warm_up, *sent]]
    await sink.close()


async def test_each_entry_is_the_records_journal_line(redis_url, redis_conn, stream_key):
    sink = RedisStreamSink(redis_url, stream_key)
    journaled, alone = UsageRecordFactory.build_batch(2)
    line = encode_line(journaled)
    sink.emit(journaled, line)  # the journal's line, as the gateway hands it over
    sink.emit(alone)  # no journal: the sink encodes the record itself
    await sink.close()
    entries = [fields for _, fields in redis_conn.xrange(stream_key)]
    assert entries == [{STREAM_FIELD: line.decode()}, {STREAM_FIELD: encode_line(alone).decode()}]
    assert [UsageRecord.from_fields(fields) for fields in entries] == [journaled, alone]


async def test_the_stream_is_capped_approximately(redis_url, redis_conn, stream_key):
    sink = RedisStreamSink(redis_url, stream_key, batch_max=500, maxlen=100)
    for record in UsageRecordFactory.build_batch(1000):
        sink.emit(record)
    await sink.close()
    assert 100 <= redis_conn.xlen(stream_key) < 1000


async def test_background_flush(redis_url, redis_conn, stream_key):
    sink = RedisStreamSink(redis_url, stream_key, batch_max=2)
    await sink.start()
    sent = UsageRecordFactory.build_batch(2)
    for record in sent:
        sink.emit(record)
    await sink.close()
    assert stream_ids(redis_conn, stream_key) == [r.request_id for r in sent]


async def test_redis_down_spools_then_delivers_when_it_comes_back(redis_url, redis_conn, stream_key, tmp_path):
    port = closed_port()
    spool = str(tmp_path / "usage.spool")
    clock = FakeClock()
    sink = RedisStreamSink(with_port(redis_url, port), stream_key, batch_max=10, spool_path=spool, clock=clock)
    await sink.start()
    during = UsageRecordFactory.build_batch(15)
    for record in during:
        sink.emit(record)
    await sink.flush()
    assert sink.stats.spooled == 15 and sink.stats.delivered == 0
    assert spool_lines(spool) == 15
    assert redis_conn.xlen(stream_key) == 0

    target = urlsplit(redis_url)
    relay = Relay(port, target.hostname, target.port or 6379)
    await relay.start()  # Redis is back on the address the sink knows
    clock.now += 10  # and the sink's backoff is over
    try:
        after = UsageRecordFactory.build_batch(3)
        for record in after:
            sink.emit(record)
        await sink.flush()
        assert sorted(stream_ids(redis_conn, stream_key)) == sorted(r.request_id for r in during + after)
        assert not os.path.exists(spool) or os.path.getsize(spool) == 0
        assert sink.stats.delivered == 18
        await sink.close()
    finally:
        await relay.close()


async def test_a_restarted_gateway_replays_the_spool(redis_url, redis_conn, stream_key, tmp_path):
    spool = str(tmp_path / "usage.spool")
    down = RedisStreamSink(with_port(redis_url, closed_port()), stream_key, spool_path=spool)
    await down.start()
    sent = UsageRecordFactory.build_batch(7)
    for record in sent:
        down.emit(record)
    await down.close()  # the gateway stops during the outage: everything is on disk
    assert spool_lines(spool) == 7

    restarted = RedisStreamSink(redis_url, stream_key, spool_path=spool)
    await restarted.start()
    await restarted.flush()
    assert stream_ids(redis_conn, stream_key) == [r.request_id for r in sent]
    assert os.listdir(tmp_path) == []
    await restarted.close()


@pytest.mark.django_db
def test_gateway_to_rollups_through_the_stream(redis_url, stream_key):
    sent = UsageRecordFactory.build_batch(20)

    async def gateway():
        sink = RedisStreamSink(redis_url, stream_key)
        await sink.start()
        for record in sent:
            sink.emit(record)
        await sink.close()

    asyncio.run(gateway())
    assert ingest_usage_stream(stream=stream_key)["counted"] == 20
    assert totals() == {"requests": 20, "prompt_tokens": 200, "completion_tokens": 400, "total_tokens": 600}
