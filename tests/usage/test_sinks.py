"""Sink mechanics without a network: batching, backoff, bounded buffer, rejected batches, the spool file."""

import asyncio
import os
import time

import pytest

from gateway.usage.journal import Spool
from gateway.usage.record import UsageRecord
from gateway.usage.sinks import (
    Backoff,
    DeliveryError,
    HttpSink,
    MemorySink,
    NullSink,
    RedisStreamSink,
    make_sink,
)

from .conftest import FakeClock, spool_lines
from .factories import UsageRecordFactory
from .fakes import RecordSink


class FakeSink(RecordSink):
    """Delivers into `batches`; `failures` makes the next deliveries fail with the given errors."""

    def __init__(self, *, failures=(), batch_max=3, flush_interval=0.0, spool_path=None, buffer_max=100, clock=None):
        super().__init__(
            batch_max=batch_max,
            flush_interval=flush_interval,
            spool_path=spool_path,
            buffer_max=buffer_max,
            backoff=Backoff(initial=0.001, maximum=0.002, rand=lambda: 1.0),
            clock=clock or FakeClock(),
        )
        self.batches: list[list[UsageRecord]] = []
        self.failures = list(failures)
        self.attempts = 0
        self.delivered = asyncio.Event()

    async def _deliver(self, batch):
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(batch)
        self.delivered.set()

    @property
    def records(self):
        return [record for batch in self.batches for record in batch]


def records(n: int) -> list[UsageRecord]:
    return UsageRecordFactory.build_batch(n)


DOWN = DeliveryError("connection refused")


#
# Batching and the background flusher
#


async def test_flush_sends_batches_of_batch_max():
    sink = FakeSink(batch_max=3)
    sent = records(7)
    for record in sent:
        sink.emit(record)
    await sink.flush()
    assert [len(b) for b in sink.batches] == [3, 3, 1]
    assert sink.records == sent
    assert sink.stats.delivered == 7


async def test_full_batches_go_out_and_the_rest_lingers():
    # The flusher woken by a full batch sends full batches only: the records behind them wait for the next full
    # batch (or their linger), rather than follow in a small POST or XADD round trip of their own.
    sink = FakeSink(batch_max=3, flush_interval=60)  # the fake clock stands still: no linger expires
    await sink.start()
    sent = records(6)
    for record in sent[:4]:
        sink.emit(record)
    await asyncio.wait_for(sink.delivered.wait(), 5)
    assert sink.batches == [sent[:3]]
    sink.delivered.clear()
    for record in sent[4:]:
        sink.emit(record)  # the fourth record's batch fills
    await asyncio.wait_for(sink.delivered.wait(), 5)
    assert sink.batches == [sent[:3], sent[3:]]
    await sink.close()


async def test_the_records_behind_full_batches_linger_from_when_the_batch_filled():
    clock = FakeClock()
    sink = FakeSink(batch_max=3, flush_interval=10, clock=clock)
    sent = records(5)
    sink.emit(sent[0])  # its linger ends 10 s later
    clock.now += 4
    for record in sent[1:4]:
        sink.emit(record)  # the third fills a batch at +4 s; the fourth comes after it
    assert sink._next_wait() == 0.0
    await sink._tick()
    assert sink.batches == [sent[:3]]
    assert sink._next_wait() == pytest.approx(10)  # the fourth's linger counts from +4 s at the earliest
    clock.now += 6
    sink.emit(sent[4])
    assert sink._next_wait() == pytest.approx(4)
    clock.now += 4
    assert sink._next_wait() == 0.0
    await sink._tick()  # the linger is over: the partial batch goes
    assert sink.batches == [sent[:3], sent[3:]]


async def test_a_partial_batch_older_than_the_linger_goes_with_the_full_one():
    clock = FakeClock()
    sink = FakeSink(batch_max=3, flush_interval=10, clock=clock)
    sent = records(4)
    for record in sent:
        sink.emit(record)
    clock.now += 10  # the flusher did not run within the linger: everything is due
    await sink._tick()
    assert sink.batches == [sent[:3], sent[3:]]


async def test_background_flusher_sends_without_flush():
    sink = FakeSink(batch_max=100, flush_interval=0.01, clock=time.monotonic)  # the linger expires on its own
    await sink.start()
    sink.emit(records(1)[0])
    await asyncio.wait_for(sink.delivered.wait(), 5)
    assert len(sink.records) == 1
    await sink.close()


async def test_background_flusher_retries_after_a_failure():
    sink = FakeSink(failures=[DOWN], batch_max=2, clock=time.monotonic)
    await sink.start()
    sent = records(2)
    for record in sent:
        sink.emit(record)
    await asyncio.wait_for(sink.delivered.wait(), 5)
    assert sink.records == sent and sink.attempts == 2
    await sink.close()


async def test_a_failed_flush_is_retried_in_the_background():
    sink = FakeSink(failures=[DOWN], flush_interval=60, clock=time.monotonic)
    await sink.start()
    sink.emit(records(1)[0])  # the flusher lingers for a minute...
    await sink.flush()  # ...but this attempt fails, so it retries after the backoff instead
    await asyncio.wait_for(sink.delivered.wait(), 5)
    assert sink.attempts == 2
    await sink.close()


async def test_close_while_a_batch_is_in_flight_loses_nothing():
    class SlowOnce(FakeSink):
        async def _deliver(self, batch):
            if self.attempts == 0:
                self.attempts += 1
                self.entered.set()
                await asyncio.Event().wait()  # the peer never answers; close() cancels this
            await super()._deliver(batch)

    sink = SlowOnce(batch_max=2, clock=time.monotonic)
    sink.entered = asyncio.Event()
    await sink.start()
    sent = records(2)
    for record in sent:
        sink.emit(record)
    await asyncio.wait_for(sink.entered.wait(), 5)
    await sink.close()
    assert sink.records == sent


async def test_emit_never_awaits_and_works_before_start():
    sink = FakeSink()
    assert sink.emit(records(1)[0]) is None
    await sink.flush()
    assert len(sink.records) == 1


#
# Failures, backoff, bounds
#


def test_backoff_doubles_up_to_the_maximum_with_jitter():
    backoff = Backoff(initial=0.1, maximum=1.0, rand=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert Backoff(initial=0.1, rand=lambda: 0.0).next_delay() == 0.05
    assert backoff.next_delay() == 0.1


async def test_failed_batches_stay_buffered_and_the_flusher_waits_for_the_backoff():
    clock = FakeClock()
    sink = FakeSink(failures=[DOWN], clock=clock)
    sent = records(2)
    for record in sent:
        sink.emit(record)
    await sink.flush()
    assert sink.records == [] and sink.attempts == 1
    # the background flusher would sleep until the retry time (white-box: its schedule)
    assert sink._next_wait() == pytest.approx(0.001)
    clock.now += 0.001
    assert sink._next_wait() == 0.0
    await sink.flush()
    assert sink.records == sent


async def test_memory_buffer_is_bounded_and_drops_the_oldest():
    sink = FakeSink(failures=[DOWN] * 10, batch_max=2, buffer_max=4)
    sent = records(6)
    for record in sent:
        sink.emit(record)
    assert sink.stats.dropped == 2
    await sink.flush()
    sink.failures.clear()
    await sink.flush()
    assert sink.records == sent[2:]


async def test_rejected_batches_are_dropped_and_counted():
    sink = FakeSink(failures=[DeliveryError("400 bad record", retryable=False)], batch_max=2)
    for record in records(3):
        sink.emit(record)
    await sink.flush()
    assert (sink.stats.rejected, sink.stats.delivered) == (2, 1)


async def test_too_large_batches_are_split():
    too_large = DeliveryError("413", retryable=False, too_large=True)
    sink = FakeSink(failures=[too_large], batch_max=4)
    sent = records(4)
    for record in sent:
        sink.emit(record)
    await sink.flush()
    assert [len(b) for b in sink.batches] == [2, 2]
    assert sink.records == sent


async def test_close_without_spool_reports_what_is_lost_and_later_emits_are_dropped():
    sink = FakeSink(failures=[DOWN, DOWN])
    sink.emit(records(1)[0])
    await sink.close()
    assert sink.stats.dropped == 1
    sink.emit(records(1)[0])
    assert sink.stats.dropped == 2


#
# Spool
#


async def test_failed_batches_go_to_the_spool_and_are_replayed_after_recovery(tmp_path):
    path, clock = str(tmp_path / "usage.spool"), FakeClock()
    sink = FakeSink(failures=[DOWN], spool_path=path, clock=clock)
    sent = records(5)
    for record in sent:
        sink.emit(record)
    await sink.flush()
    assert spool_lines(path) == 5 and sink.stats.spooled == 5
    more = records(1)
    sink.emit(more[0])
    clock.now += 1  # the backoff is over
    await sink.flush()
    assert sorted(r.request_id for r in sink.records) == sorted(r.request_id for r in sent + more)
    assert os.listdir(tmp_path) == []


async def test_a_restarted_sink_replays_the_spool(tmp_path):
    path = str(tmp_path / "usage.spool")
    first = FakeSink(failures=[DOWN] * 3, spool_path=path)
    sent = records(4)
    for record in sent:
        first.emit(record)
    await first.flush()
    first.emit(records(1)[0])  # still buffered at close: spooled too
    await first.close()
    assert spool_lines(path) == 5
    second = FakeSink(spool_path=path)
    await second.start()
    await second.flush()
    assert len(second.records) == 5 and second.records[:4] == sent
    assert os.listdir(tmp_path) == []
    await second.close()


async def test_a_replay_interrupted_by_a_failure_resumes_at_the_failed_batch(tmp_path):
    path = str(tmp_path / "usage.spool")
    sent = records(5)
    dead = Spool(path)
    dead.append(sent)
    dead.close()  # as when its process ends
    clock = FakeClock()
    sink = FakeSink(batch_max=2, spool_path=path, clock=clock)
    await sink.start()
    sink.failures = [DOWN]
    await sink.flush()
    clock.now += 1
    await sink.flush()
    assert sink.records == sent
    await sink.close()


async def test_flush_while_backing_off_spools_without_trying_the_peer(tmp_path):
    path, clock = str(tmp_path / "usage.spool"), FakeClock()
    sink = FakeSink(failures=[DOWN], spool_path=path, clock=clock)
    sink.emit(records(1)[0])
    await sink.flush()
    sink.emit(records(1)[0])
    await sink.flush()
    assert (sink.attempts, spool_lines(path)) == (1, 2)
    clock.now += 1
    await sink.flush()
    assert (sink.attempts, len(sink.records), spool_lines(path)) == (2, 2, 0)


async def test_backing_off_moves_full_batches_to_disk(tmp_path):
    clock = FakeClock()
    sink = FakeSink(failures=[DOWN], batch_max=2, spool_path=str(tmp_path / "s"), clock=clock)
    sink.emit(records(1)[0])
    await sink.flush()  # fails: spooled, backing off
    for record in records(2):
        sink.emit(record)
    assert sink._next_wait() == 0.0  # a full batch while backing off: spill it rather than keep it in memory
    await sink._tick()
    assert spool_lines(str(tmp_path / "s")) == 3 and sink.records == []


def test_spool_claims_are_locked_and_orphans_adopted(tmp_path):
    path = str(tmp_path / "usage.spool")
    spool, other_process = Spool(path), Spool(path)
    spool.append(records(2))
    (claim,) = spool.claim()
    spool.append(records(1))  # appends go on into a new file while the claim is replayed
    # both files are locked: another process adopting orphans takes neither
    assert other_process.claim(adopt=True) == []
    # the first process dies without finishing: its files are released and become orphans
    assert len(claim.read(10)) == 2
    claim.release()
    spool.close()
    orphans = other_process.claim(adopt=True)
    assert [len(orphan.read(10)) for orphan in orphans] == [2, 1]
    for orphan in orphans:
        orphan.done()
    assert os.listdir(tmp_path) == []


def test_spool_skips_unreadable_lines(tmp_path):
    path = str(tmp_path / "usage.spool")
    spool = Spool(path)
    good = records(2)
    spool.append(good[:1])
    with open(spool._writer.path, "ab") as f:
        f.write(b'{"request_id": "torn\n\n')
    spool.append(good[1:])
    (claim,) = spool.claim()
    assert claim.read(10) == good
    claim.commit()
    assert claim.read(10) == []
    claim.done()


def test_spool_file_is_private(tmp_path):
    path = str(tmp_path / "var" / "usage.spool")
    spool = Spool(path)
    spool.append(records(1))
    assert oct(os.stat(spool._writer.path).st_mode & 0o777) == "0o600"


#
# The simple sinks and the factory
#


async def test_memory_and_null_sinks():
    memory, null = MemorySink(), NullSink()
    record = records(1)[0]
    for sink in (memory, null):
        await sink.start()
        sink.emit(record)
        await sink.flush()
        await sink.close()
    assert memory.records == [record] and memory.closed


def test_make_sink_picks_redis_when_configured(tmp_path):
    spool = str(tmp_path / "s")
    redis_sink = make_sink("redis://127.0.0.1:6379/0", "http://127.0.0.1:8000", "token", spool, stream="s:u")
    assert isinstance(redis_sink, RedisStreamSink) and redis_sink.stream == "s:u"
    assert redis_sink.spool is not None and redis_sink.spool.path == spool
    http_sink = make_sink(None, "http://127.0.0.1:8000/", "token", None)
    assert isinstance(http_sink, HttpSink) and http_sink.url == "http://127.0.0.1:8000/api/gateway/usage/"
    assert http_sink.spool is None
