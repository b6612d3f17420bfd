"""The Celery task reading the Redis stream, against a real Redis: consumer group, ack after commit, claiming the
entries of a worker that died, exact totals."""

import json
import threading

import pytest
import redis
from django.db import connection, connections

from gateway.usage.journal import encode_line
from gateway.usage.record import STREAM_FIELD, UsageRecord
from usage.models import UsageRollup
from usage.stream import GROUP, StreamConsumer
from usage.tasks import ingest_usage_stream, purge_usage_dedupe

from .conftest import totals
from .factories import UsageRecordFactory

pytestmark = pytest.mark.django_db


def add(conn, stream, records):
    """Entries as gateways before the JSON form wrote them (the sink's own form: ``test_sinks_redis.py``)."""
    for record in records:
        conn.xadd(stream, record.to_fields())


def pending(conn, stream) -> int:
    return conn.xpending(stream, GROUP)["pending"]


def consumer(conn, stream, name, count=50) -> StreamConsumer:
    return StreamConsumer(conn, stream, consumer=name, count=count)


def test_the_task_counts_the_stream_and_acknowledges_it(redis_conn, stream_key):
    add(redis_conn, stream_key, UsageRecordFactory.build_batch(120))
    result = ingest_usage_stream.apply(kwargs={"stream": stream_key}).get()
    assert (result["received"], result["counted"], result["claimed"]) == (120, 120, 0)
    assert totals()["requests"] == 120
    assert pending(redis_conn, stream_key) == 0
    # nothing new: a second run does nothing
    assert ingest_usage_stream.apply(kwargs={"stream": stream_key}).get()["received"] == 0


def test_the_group_is_created_with_the_stream(redis_conn, stream_key):
    assert ingest_usage_stream(stream=stream_key)["received"] == 0
    assert redis_conn.exists(stream_key)
    assert [g["name"] for g in redis_conn.xinfo_groups(stream_key)] == [GROUP]


def test_without_redis_the_task_has_nothing_to_do(settings):
    settings.REDIS_URL = ""
    assert ingest_usage_stream() == {}


def test_a_worker_that_died_after_reading_leaves_its_entries_to_the_next(redis_conn, stream_key):
    records = UsageRecordFactory.build_batch(80)
    add(redis_conn, stream_key, records)
    dead = consumer(redis_conn, stream_key, "worker-a")
    dead.ensure_group()
    assert len(dead.read_new()) == 50  # ... and the process is killed here
    assert pending(redis_conn, stream_key) == 50
    result = consumer(redis_conn, stream_key, "worker-b").run(min_idle_ms=0)
    assert (result.claimed, result.counted) == (50, 80)
    assert totals()["requests"] == 80
    assert pending(redis_conn, stream_key) == 0


def test_a_crash_between_commit_and_ack_does_not_count_twice(redis_conn, stream_key, monkeypatch):
    add(redis_conn, stream_key, UsageRecordFactory.build_batch(30, prompt_tokens=3))
    worker_a = consumer(redis_conn, stream_key, "worker-a")

    def connection_lost(*args):
        raise redis.ConnectionError("connection lost before XACK")

    monkeypatch.setattr(worker_a.client, "xack", connection_lost)
    with pytest.raises(redis.ConnectionError):
        worker_a.run()
    assert totals()["requests"] == 30  # committed, not acknowledged
    monkeypatch.undo()
    result = consumer(redis_conn, stream_key, "worker-b").run(min_idle_ms=0)
    assert (result.claimed, result.counted, result.duplicates) == (30, 0, 30)
    assert totals() == {"requests": 30, "prompt_tokens": 90, "completion_tokens": 600, "total_tokens": 690}
    assert pending(redis_conn, stream_key) == 0


def test_entries_pending_for_less_than_the_idle_time_are_left_alone(redis_conn, stream_key):
    add(redis_conn, stream_key, UsageRecordFactory.build_batch(5))
    busy = consumer(redis_conn, stream_key, "worker-a")
    busy.ensure_group()
    busy.read_new()
    result = consumer(redis_conn, stream_key, "worker-b").run(min_idle_ms=60_000)
    assert (result.claimed, result.received) == (0, 0)
    assert pending(redis_conn, stream_key) == 5


def test_unreadable_entries_are_acknowledged_and_counted_invalid(redis_conn, stream_key):
    good = UsageRecordFactory()
    add(redis_conn, stream_key, [good])
    redis_conn.xadd(stream_key, {**UsageRecordFactory().to_fields(), "status": "teapot"})
    redis_conn.xadd(stream_key, {"unrelated": "1"})
    result = ingest_usage_stream(stream=stream_key)
    assert (result["received"], result["counted"], result["invalid"]) == (3, 1, 2)
    assert pending(redis_conn, stream_key) == 0


def test_a_stream_of_both_entry_forms_counts_each_record_once(redis_conn, stream_key):
    """Across an upgrade a stream holds entries of older gateways (a field per record field) and of newer ones
    (the record's JSON line in one field), interleaved; and a record may come twice, once in each form."""
    records = UsageRecordFactory.build_batch(6, prompt_tokens=3)
    for i, record in enumerate(records):
        redis_conn.xadd(stream_key, record.to_fields() if i % 2 else {STREAM_FIELD: encode_line(record)})
    redis_conn.xadd(stream_key, {STREAM_FIELD: encode_line(records[1])})  # resent by a newer gateway
    redis_conn.xadd(stream_key, {STREAM_FIELD: "{not json"})
    redis_conn.xadd(stream_key, {STREAM_FIELD: json.dumps({**records[0].to_json(), "status": "teapot"})})
    result = ingest_usage_stream(stream=stream_key)
    assert (result["received"], result["counted"], result["duplicates"], result["invalid"]) == (9, 6, 1, 2)
    assert totals() == {"requests": 6, "prompt_tokens": 18, "completion_tokens": 120, "total_tokens": 138}
    assert pending(redis_conn, stream_key) == 0


def test_a_run_stops_after_its_budget(redis_conn, stream_key):
    add(redis_conn, stream_key, UsageRecordFactory.build_batch(25))
    worker = consumer(redis_conn, stream_key, "worker-a", count=10)
    assert worker.run(max_entries=10).received == 10
    assert worker.run().received == 15


def test_stopped_workers_are_forgotten(redis_conn, stream_key):
    add(redis_conn, stream_key, UsageRecordFactory.build_batch(2))
    consumer(redis_conn, stream_key, "gone-1").run()
    names = lambda: {c["name"] for c in redis_conn.xinfo_consumers(stream_key, GROUP)}  # noqa: E731
    assert names() == {"gone-1"}
    assert consumer(redis_conn, stream_key, "worker-b").forget_idle_consumers(idle_ms=0) == 1
    assert names() == set()
    assert purge_usage_dedupe(stream=stream_key) == 0


def test_entries_written_with_the_gateway_contract_round_trip(redis_conn, stream_key):
    record = UsageRecordFactory(subscription=None, cache_hit=True, latency_ms=12.25)
    add(redis_conn, stream_key, [record])
    ((_, fields),) = redis_conn.xrange(stream_key)
    assert UsageRecord.from_fields(fields) == record
    ingest_usage_stream(stream=stream_key)
    row = UsageRollup.objects.get()
    assert (row.subscription, row.cache_hit, row.latency_ms_sum) == ("", True, 12.25)


@pytest.mark.django_db(transaction=True)
def test_two_workers_draining_one_stream_count_exactly(redis_conn, stream_key):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (set DATABASE_URL); SQLite serialises them")
    records = [UsageRecordFactory(prompt_tokens=i) for i in range(600)]
    add(redis_conn, stream_key, records)
    # both claim everything pending right away (min_idle_ms=0): they fight over the same entries
    start, errors = threading.Barrier(2), []

    def worker(name):
        try:
            start.wait()
            for _ in range(5):
                consumer(redis_conn, stream_key, name, count=40).run(min_idle_ms=0)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("worker-a", "worker-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert totals()["requests"] == 600
    assert totals()["prompt_tokens"] == sum(range(600))
    assert pending(redis_conn, stream_key) == 0
