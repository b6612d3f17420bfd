"""The journal and spool files (gateway.usage.journal): writers SIGKILLed mid-stream, replay, every id exactly once;
one file per process when workers share a spool path; files of the earlier spool format replayed after an upgrade."""

import collections
import fcntl
import glob
import os
import pathlib
import signal
import subprocess
import sys

import orjson
import pytest

from gateway.usage.journal import UsageJournal
from gateway.usage.record import UsageRecord
from gateway.usage.sinks import Backoff

from .conftest import FakeClock
from .factories import UsageRecordFactory
from .fakes import RecordSink

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A writer process: appends record after record (to the journal, the spool, or both) and prints each id once its
# append returned, until it is killed.
WRITER = """
import itertools, sys
from gateway.usage.journal import Spool, UsageJournal
from gateway.usage.record import UsageRecord

spool_path, mode, tag = sys.argv[1], sys.argv[2], int(sys.argv[3])
journal = UsageJournal(spool_path)
journal.open()
spool = Spool(spool_path)
for n in itertools.count():
    record = UsageRecord(f"00000000-0000-4000-8{tag:03x}-{n:012x}", 1_700_000_000_000, "chat", "op", None, None,
                         None, None, n, 1, 200, 1.0, False, "gw")
    if mode in ("journal", "both"):
        journal.append(record)
    if mode in ("spool", "both"):
        spool.append([record])
    print(record.request_id, flush=True)
"""


class Writer:
    """A real writer process on `spool_path`; `wait_for(n)` returns once it has reported n appended records."""

    def __init__(self, spool_path: str, mode: str, tag: int = 1) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, spool_path, mode, str(tag)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        self.written: list[str] = []

    def wait_for(self, count: int) -> None:
        while len(self.written) < count:
            line = self.proc.stdout.readline()
            assert line, "the writer ended early"
            self.written.append(line.strip())

    def kill(self) -> list[str]:
        """SIGKILL it; the ids it reported as appended (it may have appended one more)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.written += [line.strip() for line in self.proc.stdout.read().splitlines() if line.strip()]
        self.proc.stdout.close()
        return self.written


class ListSink(RecordSink):
    """Delivers into `records`."""

    def __init__(self, spool_path: str) -> None:
        super().__init__(
            batch_max=100,
            flush_interval=0.0,
            spool_path=spool_path,
            buffer_max=100_000,
            backoff=Backoff(),
            clock=FakeClock(),
        )
        self.records: list[UsageRecord] = []

    async def _deliver(self, batch):
        self.records += batch


def assert_exactly_once(delivered: list[str], written: list[str]) -> None:
    counts = collections.Counter(delivered)
    assert [rid for rid, n in counts.items() if n > 1] == []  # no duplicates
    assert set(written) <= set(counts)  # nothing reported as written is missing
    assert len(counts) - len(written) <= 1  # at most the record whose print the kill cut off


def files(spool_path: str) -> list[str]:
    return sorted(glob.glob(glob.escape(spool_path) + ".*"))


@pytest.fixture
def spool_path(tmp_path) -> str:
    return str(tmp_path / "var" / "gateway-usage.spool")


async def replay_journal(spool_path: str) -> list[str]:
    """What the next gateway does at start: re-emit the journal of the dead one, then checkpoint."""
    journal = UsageJournal(spool_path)
    sink = ListSink(spool_path)
    for record in journal.open():
        sink.emit(record)
    await journal.checkpoint(sink)
    await journal.close(sink)
    await sink.close()
    return [record.request_id for record in sink.records]


async def replay_spool(spool_path: str) -> list[str]:
    """What the next gateway's sink does at start: adopt and deliver the spool files no live process holds."""
    sink = ListSink(spool_path)
    await sink.start()
    await sink.flush()
    await sink.close()
    return [record.request_id for record in sink.records]


async def test_a_killed_journal_writer_is_replayed_exactly_once(spool_path):
    writer = Writer(spool_path, "journal")
    writer.wait_for(500)
    written = writer.kill()
    assert_exactly_once(await replay_journal(spool_path), written)
    assert files(spool_path) == []
    assert await replay_journal(spool_path) == []  # replayed once: nothing left to send again


async def test_a_killed_spool_writer_is_replayed_exactly_once(spool_path):
    writer = Writer(spool_path, "spool")
    writer.wait_for(50)  # each append is fsynced
    written = writer.kill()
    assert_exactly_once(await replay_spool(spool_path), written)
    assert files(spool_path) == []
    assert await replay_spool(spool_path) == []


async def test_workers_on_one_spool_path_write_their_own_files_and_only_dead_ones_are_replayed(spool_path):
    first, second = Writer(spool_path, "both", tag=1), Writer(spool_path, "both", tag=2)
    first.wait_for(20)
    second.wait_for(20)
    owners = {os.path.basename(path).split("-")[2] for path in files(spool_path)}
    assert owners == {str(first.proc.pid), str(second.proc.pid)}  # <spool>.<kind>-<pid>-<random>-<n>
    written_first = first.kill()
    # the second is alive: its files are locked, only the first's are replayed
    journal_ids, spool_ids = await replay_journal(spool_path), await replay_spool(spool_path)
    assert_exactly_once(journal_ids, written_first)
    assert_exactly_once(spool_ids, written_first)
    written_second = second.kill()
    assert_exactly_once(await replay_journal(spool_path), written_second)
    assert_exactly_once(await replay_spool(spool_path), written_second)
    assert files(spool_path) == []


def test_a_forked_child_does_not_append_to_its_parents_file(spool_path):
    journal = UsageJournal(spool_path)
    journal.open()
    journal.append(UsageRecordFactory.build())
    parent_file = journal._writer.path
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write one record, report its file
        try:
            journal.append(UsageRecordFactory.build())
            os.write(write, journal._writer.path.encode())
        finally:
            os._exit(0)
    os.close(write)
    child_file = os.read(read, 4096).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert f".journal-{pid}-" in child_file and child_file != parent_file
    with open(parent_file, "rb") as f:
        assert len(f.read().splitlines()) == 1


#
# Files of the earlier format
#


def old_lines(records: list[UsageRecord]) -> bytes:
    """Lines as the earlier spool and journal wrote them."""
    return b"".join(orjson.dumps(record.to_json()) + b"\n" for record in records)


async def test_spool_files_of_the_earlier_format_are_replayed_once_after_an_upgrade(spool_path):
    os.makedirs(os.path.dirname(spool_path))
    shared, claimed, held = (UsageRecordFactory.build_batch(n) for n in (3, 2, 1))
    with open(spool_path, "wb") as f:  # the shared spool file, appended under <spool>.lock
        f.write(old_lines(shared))
    with open(spool_path + ".lock", "wb"):
        pass
    with open(spool_path + ".replay-0123abcd", "wb") as f:  # a claim left by a process that died while replaying
        f.write(old_lines(claimed))
    with open(spool_path + ".replay-4567cdef", "wb") as f:  # a claim a live process of the earlier version replays
        f.write(old_lines(held))
    live = open(spool_path + ".replay-4567cdef", "rb")  # noqa: SIM115
    fcntl.flock(live.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        delivered = await replay_spool(spool_path)
    finally:
        live.close()
    assert sorted(delivered) == sorted(record.request_id for record in shared + claimed)
    assert await replay_spool(spool_path) == [held[0].request_id]  # once its process is gone
    assert await replay_spool(spool_path) == []
    assert [os.path.basename(path) for path in files(spool_path)] == ["gateway-usage.spool.lock"]


async def test_journal_files_of_the_earlier_version_are_replayed(spool_path):
    os.makedirs(os.path.dirname(spool_path))
    records = UsageRecordFactory.build_batch(3)
    with open(f"{spool_path}.journal-4242-0123abcd-1", "wb") as f:
        f.write(b"".join(orjson.dumps(record.to_json(), option=orjson.OPT_APPEND_NEWLINE) for record in records))
    assert await replay_journal(spool_path) == [record.request_id for record in records]
    assert files(spool_path) == []
