"""UsageJournal: append before the sink, checkpoint (seal, flush, delete), recovery of a dead process's files."""

from __future__ import annotations

import asyncio
import glob
import os

import orjson
import pytest

from gateway.usage.journal import UsageJournal
from gateway.usage.record import UsageRecord
from gateway.usage.sinks import MemorySink


def record(n: int) -> UsageRecord:
    return UsageRecord(
        request_id=f"3f2a9c1e-5b7d-4e21-9a0b-{n:012x}",
        ts_ms=1_700_000_000_000 + n,
        api="chat",
        operation="chat-completions",
        subscription="master",
        product=None,
        backend=None,
        model="m",
        prompt_tokens=n,
        completion_tokens=1,
        status=200,
        latency_ms=1.5,
        cache_hit=False,
        gateway_id="gw",
    )


class CountingSink(MemorySink):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.flushes = 0
        self.fail = fail

    async def flush(self) -> None:
        self.flushes += 1
        if self.fail:
            raise RuntimeError("flush failed")


def files(spool: str) -> list[str]:
    return sorted(glob.glob(spool + ".journal-*"))


def abandon(journal: UsageJournal) -> None:
    """What SIGKILL does to a journal: its descriptors (and locks) go, its files stay."""
    writer = journal._writer
    if writer._fd >= 0:
        os.close(writer._fd)
        writer._fd = -1
    for segment in journal._sealed:
        segment.release()
    journal._sealed = []


@pytest.fixture
def spool(tmp_path) -> str:
    return str(tmp_path / "var" / "gateway-usage.spool")


def test_the_first_record_creates_a_locked_file_of_this_process(spool):
    journal = UsageJournal(spool)
    assert journal.open() == []
    assert files(spool) == []
    journal.append(record(1))
    (path,) = files(spool)
    assert f".journal-{os.getpid()}-" in path
    assert UsageJournal(spool).open() == []  # locked: not taken over


def test_append_writes_one_json_line_per_record(spool):
    journal = UsageJournal(spool)
    journal.open()
    journal.append(record(1))
    journal.append(record(2))
    (path,) = files(spool)
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    assert [UsageRecord.from_json(orjson.loads(line)) for line in lines] == [record(1), record(2)]


async def test_checkpoint_seals_flushes_and_deletes(spool):
    journal = UsageJournal(spool)
    journal.open()
    sink = CountingSink()
    await journal.checkpoint(sink)
    assert sink.flushes == 0  # nothing written: nothing to seal
    journal.append(record(1))
    first = files(spool)
    await journal.checkpoint(sink)
    assert sink.flushes == 1
    assert first and files(spool) == []
    journal.append(record(2))
    (current,) = files(spool)
    assert current not in first


async def test_a_failed_flush_keeps_the_files_for_the_next_checkpoint(spool):
    journal = UsageJournal(spool)
    journal.open()
    sink = CountingSink(fail=True)
    journal.append(record(1))
    with pytest.raises(RuntimeError):
        await journal.checkpoint(sink)
    journal.append(record(2))
    assert len(files(spool)) == 2
    sink.fail = False
    await journal.checkpoint(sink)
    assert files(spool) == [] and sink.flushes == 2


def test_files_of_a_live_journal_are_not_recovered(spool):
    alive = UsageJournal(spool)
    alive.open()
    alive.append(record(1))
    other = UsageJournal(spool)
    assert other.open() == []
    assert len(files(spool)) == 1


async def test_files_of_a_dead_journal_are_recovered_then_deleted(spool):
    dead = UsageJournal(spool)
    dead.open()
    dead.append(record(1))
    dead.append(record(2))
    dead._sealed.append(dead._writer.seal())  # a sealed file whose flush never happened ...
    dead.append(record(3))  # ... and the current one
    abandon(dead)
    successor = UsageJournal(spool)
    assert successor.open() == [record(1), record(2), record(3)]
    assert len(files(spool)) == 2
    sink = CountingSink()
    await successor.checkpoint(sink)
    assert files(spool) == []
    assert UsageJournal(spool).open() == []


def test_a_torn_last_line_is_skipped(spool):
    dead = UsageJournal(spool)
    dead.open()
    dead.append(record(1))
    os.write(dead._writer._fd, b'{"request_id": "3f2a9c1e-5b7d-4e21-9a0b-0000')  # killed in the middle of a write
    abandon(dead)
    assert UsageJournal(spool).open() == [record(1)]


async def test_close_deletes_an_empty_journal_and_keeps_a_written_one(spool):
    journal = UsageJournal(spool)
    journal.open()
    journal.append(record(1))
    await journal.close(CountingSink())
    assert files(spool) == []  # the last checkpoint delivered it
    journal.append(record(2))  # after close: ignored (the sink still gets it)
    assert files(spool) == []

    failing = UsageJournal(spool)
    failing.open()
    failing.append(record(3))
    await failing.close(CountingSink(fail=True))
    assert len(files(spool)) == 1  # left for the next start
    assert UsageJournal(spool).open() == [record(3)]


async def test_background_checkpoints(spool):
    journal = UsageJournal(spool, interval=0.01)
    journal.open()
    sink = CountingSink()
    journal.start(sink)
    journal.append(record(1))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if sink.flushes:
            break
    assert sink.flushes >= 1
    await journal.close(sink)


def test_a_write_error_is_logged_not_raised(spool, caplog):
    journal = UsageJournal(spool)
    journal.open()
    journal.append(record(0))
    writer = journal._writer
    os.close(writer._fd)
    writer._fd = os.open(os.devnull, os.O_RDONLY)  # writes fail with EBADF
    journal.append(record(1))
    journal.append(record(2))
    assert sum("cannot write the usage journal" in r.message for r in caplog.records) == 1
