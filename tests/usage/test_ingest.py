"""Ingestion into the per-minute rollups: new records, duplicates, rollup math, dedupe window, concurrency."""

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, connections

from gateway.usage.record import UsageRecord, canonical_guid
from usage.models import UsageRecordSeen, UsageRollup
from usage.services import _timestamp_adapter, ingest_records, purge_seen, purge_seen_if_due

from .conftest import totals
from .factories import BASE, UsageRecordFactory, at

pytestmark = pytest.mark.django_db


def test_new_records_are_counted():
    result = ingest_records(UsageRecordFactory.build_batch(3))
    assert result.as_dict() == {"received": 3, "counted": 3, "duplicates": 0, "expired": 0, "invalid": 0}
    row = UsageRollup.objects.get()
    assert (row.requests, row.prompt_tokens, row.completion_tokens, row.total_tokens) == (3, 30, 60, 90)
    assert UsageRecordSeen.objects.count() == 3


def test_a_batch_sent_again_is_not_counted_again():
    batch = UsageRecordFactory.build_batch(4)
    ingest_records(batch)
    result = ingest_records(batch)
    assert (result.counted, result.duplicates) == (0, 4)
    assert totals()["requests"] == 4


def test_mixed_batch_counts_only_the_new_records():
    old = UsageRecordFactory.build_batch(2)
    ingest_records(old)
    new = UsageRecordFactory.build_batch(3, prompt_tokens=1, completion_tokens=1)
    result = ingest_records([*new, *old, new[0]])
    assert result.as_dict() == {"received": 6, "counted": 3, "duplicates": 3, "expired": 0, "invalid": 0}
    assert totals() == {"requests": 5, "prompt_tokens": 23, "completion_tokens": 43, "total_tokens": 66}


def test_a_batch_of_seen_and_new_ids_counts_exactly_the_new_ones():
    """The records counted are the ones whose ids were not seen, wherever they sort among the others, also when
    ids seen before were purged in between (a gap in the table's rows) or were the last rows the table got."""
    seen = [UsageRecordFactory(prompt_tokens=1 << i, completion_tokens=0) for i in range(20)]
    ingest_records(seen)
    purged = seen[3::4]
    UsageRecordSeen.objects.filter(request_id__in=[record.request_id for record in purged]).delete()
    new = [UsageRecordFactory(prompt_tokens=1 << (20 + i), completion_tokens=0) for i in range(7)]
    result = ingest_records([*seen[::2], *new, *seen[1::2]])
    assert result.as_dict() == {"received": 27, "counted": 12, "duplicates": 15, "expired": 0, "invalid": 0}
    counted = sum(record.prompt_tokens for record in [*seen, *purged, *new])
    assert totals() == {"requests": 32, "prompt_tokens": counted, "completion_tokens": 0, "total_tokens": counted}
    assert UsageRecordSeen.objects.count() == 27
    assert ingest_records([*new, *seen]).as_dict()["duplicates"] == 27


def test_request_ids_are_compared_as_guids():
    record = UsageRecordFactory()
    ingest_records([record])
    same = UsageRecordFactory(request_id=uuid.UUID(record.request_id).hex.upper())
    assert ingest_records([same]).duplicates == 1


def test_records_read_by_from_json_need_no_second_check_of_their_ids():
    record = UsageRecordFactory()
    ingest_records([record])
    same = UsageRecord.from_json({**record.to_json(), "request_id": uuid.UUID(record.request_id).hex.upper()})
    assert ingest_records([same], canonical_ids=True).duplicates == 1


def test_canonical_request_ids_sort_as_guids():
    """Two workers insert a batch's ids in sorted order (so they wait for each other instead of deadlocking): the
    canonical strings sort as the GUIDs' numbers, as the ids of a worker of an earlier version did."""
    guids = [uuid.uuid4() for _ in range(1000)] + [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]
    assert sorted(canonical_guid(g.hex.upper()) for g in guids) == [str(g) for g in sorted(guids)]


@pytest.mark.parametrize(
    "ts_ms",
    [0, 999, 1000, 1_700_000_000_000, 1_700_000_000_001, 1_709_164_799_999, at(0, 59.999), 4_102_444_800_000],
)
def test_the_seen_timestamp_is_what_django_would_store(ts_ms):
    expected = connection.ops.adapt_datetimefield_value(datetime.fromtimestamp(ts_ms / 1000, tz=UTC))
    assert _timestamp_adapter()(ts_ms) == expected


def test_the_seen_timestamp_of_every_millisecond_is_what_django_would_store():
    adapt = _timestamp_adapter()
    for ts_ms in range(1_700_000_000_000, 1_700_000_001_000):
        assert adapt(ts_ms) == connection.ops.adapt_datetimefield_value(datetime.fromtimestamp(ts_ms / 1000, tz=UTC))


def test_the_seen_rows_are_what_django_would_store():
    """The rows go to the database as one JSON text (SQLite) or two lists (PostgreSQL): the ORM finds each by its
    exact id and start (on SQLite a comparison of the stored text with the text Django makes)."""
    edges = [0, 999, 1000, 1_700_000_000_001, 1_709_164_799_999, 4_102_444_800_000, 253_402_300_799_999]
    records = [UsageRecordFactory(ts_ms=ts_ms) for ts_ms in edges] + UsageRecordFactory.build_batch(997)
    ingest_records(records, now=datetime.fromtimestamp(0, tz=UTC) + timedelta(hours=1))
    assert UsageRecordSeen.objects.count() == 1004
    for record in records:
        start = datetime.fromtimestamp(0, tz=UTC) + timedelta(milliseconds=record.ts_ms)
        assert UsageRecordSeen.objects.filter(request_id=uuid.UUID(record.request_id), ts=start).exists()


def test_the_seen_timestamp_reads_back_as_the_request_start():
    record = UsageRecordFactory(ts_ms=at(0, 7.25))
    ingest_records([record])
    assert UsageRecordSeen.objects.get().ts == BASE + timedelta(seconds=7.25)


def test_rollup_math_per_minute_and_dimensions():
    ingest_records(
        [
            UsageRecordFactory(ts_ms=at(0, 1), prompt_tokens=5, completion_tokens=7, latency_ms=10.0),
            UsageRecordFactory(ts_ms=at(0, 59.9), prompt_tokens=1, completion_tokens=2, latency_ms=30.5),
            UsageRecordFactory(ts_ms=at(1, 0), prompt_tokens=100, completion_tokens=0, latency_ms=1.0),
            UsageRecordFactory(ts_ms=at(0, 2), status=429, prompt_tokens=0, completion_tokens=0, latency_ms=2.0),
            UsageRecordFactory(ts_ms=at(0, 3), cache_hit=True, latency_ms=3.0),
            UsageRecordFactory(ts_ms=at(0, 4), subscription=None, product=None, backend=None, model=None),
        ]
    )
    rows = {(r.minute, r.status, r.cache_hit, r.subscription): r for r in UsageRollup.objects.all()}
    assert len(rows) == 5
    first = rows[(BASE, 200, False, "master")]
    assert (first.requests, first.prompt_tokens, first.completion_tokens, first.total_tokens) == (2, 6, 9, 15)
    assert (first.latency_ms_sum, first.latency_ms_max) == (40.5, 30.5)
    second_minute = rows[(BASE + timedelta(minutes=1), 200, False, "master")]
    assert (second_minute.requests, second_minute.prompt_tokens, second_minute.latency_ms_max) == (1, 100, 1.0)
    assert rows[(BASE, 429, False, "master")].requests == 1
    assert rows[(BASE, 200, True, "master")].requests == 1
    anonymous = rows[(BASE, 200, False, "")]
    assert (anonymous.product, anonymous.backend, anonymous.model) == ("", "", "")


def test_the_rollup_minute_is_what_django_would_store():
    """The upsert adapts the minute as DateTimeField does: the ORM finds each row by it (on SQLite a comparison of the
    stored text with the text Django makes)."""
    ingest_records([UsageRecordFactory(ts_ms=at(0, 1)), UsageRecordFactory(ts_ms=at(2, 59.999))])
    assert UsageRollup.objects.filter(minute=BASE).count() == 1
    assert UsageRollup.objects.filter(minute=BASE + timedelta(minutes=2)).count() == 1


def test_later_batches_add_to_existing_rows_and_keep_the_max():
    ingest_records([UsageRecordFactory(latency_ms=50.0)])
    ingest_records([UsageRecordFactory(latency_ms=20.0), UsageRecordFactory(latency_ms=80.0)])
    row = UsageRollup.objects.get()
    assert (row.requests, row.latency_ms_sum, row.latency_ms_max, row.total_tokens) == (3, 150.0, 80.0, 90)


def test_records_older_than_the_dedupe_window_are_refused(settings):
    settings.SLUICE = {**settings.SLUICE, "USAGE_DEDUPE_HOURS": 2}
    now = BASE + timedelta(hours=2, minutes=30)
    result = ingest_records([UsageRecordFactory(ts_ms=at(0)), UsageRecordFactory(ts_ms=at(31))], now=now)
    assert (result.counted, result.expired) == (1, 1)
    assert UsageRollup.objects.get().minute == BASE + timedelta(minutes=31)


def test_purge_forgets_only_ids_that_can_no_longer_be_accepted(settings):
    settings.SLUICE = {**settings.SLUICE, "USAGE_DEDUPE_HOURS": 2}
    old, recent = UsageRecordFactory(ts_ms=at(0)), UsageRecordFactory(ts_ms=at(120))
    ingest_records([old, recent], now=BASE + timedelta(hours=1))
    # Three hours on, `old` is outside the window (and one hour of margin); `recent` is not.
    assert purge_seen(now=BASE + timedelta(hours=3, minutes=1)) == 1
    assert list(UsageRecordSeen.objects.values_list("request_id", flat=True)) == [uuid.UUID(recent.request_id)]
    # A re-delivered `old` is refused rather than counted again.
    assert ingest_records([old], now=BASE + timedelta(hours=3, minutes=1)).expired == 1
    assert totals()["requests"] == 2


def test_purge_if_due_runs_once_an_hour(monkeypatch):
    monkeypatch.setattr("usage.services._last_purge", None)
    clock = iter([1000.0, 1500.0, 4601.0])
    assert purge_seen_if_due(clock=lambda: next(clock)) == 0
    assert purge_seen_if_due(clock=lambda: next(clock)) is None
    assert purge_seen_if_due(clock=lambda: next(clock)) == 0


#
# Two workers at once (PostgreSQL: SQLite serialises writers anyway)
#


@pytest.mark.django_db(transaction=True)
def test_two_workers_with_overlapping_batches_count_each_record_once():
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (set DATABASE_URL); SQLite serialises them")
    records = [UsageRecordFactory(ts_ms=at(i % 3, 1), prompt_tokens=i) for i in range(400)]
    # Worker A gets records 0..299, worker B 100..399, each in batches of 50 in opposite orders: the overlap
    # (100..299) is ingested by both at nearly the same time.
    batches_a = [records[i : i + 50] for i in range(0, 300, 50)]
    batches_b = [records[i : i + 50] for i in range(100, 400, 50)][::-1]
    start = threading.Barrier(2)
    errors = []

    def worker(batches):
        try:
            start.wait()
            for batch in batches:
                ingest_records(batch)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(b,)) for b in (batches_a, batches_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert totals() == {
        "requests": 400,
        "prompt_tokens": sum(range(400)),
        "completion_tokens": 400 * 20,
        "total_tokens": sum(range(400)) + 400 * 20,
    }
    assert UsageRecordSeen.objects.count() == 400
