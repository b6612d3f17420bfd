"""The gateway's durable files of usage records: one format and one recovery routine for the journal and the spool.

Both keep records that are not known to be delivered yet, so that neither a crash nor an outage loses one:

* the **journal** (``UsageJournal``): every record handed to the sink, appended first (one ``write(2)``, no fsync: the
  data is in the kernel once the call returns and outlives a SIGKILLed process). Every ``CHECKPOINT_INTERVAL`` it
  starts a new file, flushes the sink and deletes the older files.
* the **spool** (``Spool``): the records a sink could not deliver, appended and fsynced, replayed batch by batch
  once the peer answers again.

Format (version 1)
    A file is JSON lines, one ``UsageRecord.to_json()`` object per line, named
    ``<spool path>.<kind>-<pid>-<random>-<n>`` (kind ``journal`` or ``spool``). **One process writes a file**, and
    holds an exclusive ``flock`` on it for as long as it uses it (writing, or replaying it). So pre-forked workers
    (``SLUICE_GATEWAY_WORKERS``) sharing a spool path never append to the same file; a writer inherited through
    ``fork`` starts a file of its own in the child.

Recovery (``recover``)
    The files of a kind whose lock can be taken belong to processes that are gone (the kernel drops a lock with
    its process): they are returned locked (``Segment``), read, and deleted once their records are safe. A line
    that cannot be read (torn by a crash in the middle of a write) is skipped with a warning. Replay is at least
    once: a file is deleted only after its records were delivered (or handed on), so a crash during replay sends
    some of them again; the management plane counts each request id once.

Files of earlier versions (``migrate_legacy``)
    Up to this version the spool was one file, ``<spool path>``, shared by the processes under a lock on
    ``<spool path>.lock``, and claimed for replay by renaming it to ``<spool path>.replay-<random>``. Those files
    have the same lines; ``Spool.claim(adopt=True)`` renames them into spool files of this format first, so a
    deployment that is upgraded replays them. Journal files kept their name and lines.

Everything here blocks (file I/O, fsync), except ``UsageJournal.append`` (one ``write(2)`` on the event loop's
thread); run the rest in a thread from async code.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Iterable
from typing import IO, Final, Protocol

import msgspec
import orjson

from gateway.usage.record import RecordError, UsageRecord


class UsageSink(Protocol):
    """What the journal needs of a sink (gateway.usage.sinks): a flush that delivers or spools what was emitted."""

    async def flush(self) -> None: ...


__all__ = (
    "CHECKPOINT_INTERVAL",
    "Segment",
    "SegmentWriter",
    "Spool",
    "UsageJournal",
    "encode",
    "encode_line",
    "migrate_legacy",
    "recover",
)

logger = logging.getLogger("gateway.usage")

CHECKPOINT_INTERVAL: Final = 1.0
LOG_EVERY: Final = 10.0
JOURNAL: Final = "journal"
SPOOL: Final = "spool"


def encode(records: Iterable[UsageRecord]) -> bytes:
    """Lines of the format, one per record."""
    return b"".join(encode_line(record) for record in records)


_encode_struct = msgspec.json.Encoder().encode


def encode_line(record: UsageRecord) -> bytes:
    """One record's line: ``to_json()``'s object and a newline."""
    # msgspec encodes the record (a Struct) in C, fields in order: 5 k instructions against 13 k for orjson of
    # to_json()'s dict, and the same bytes but for a latency of 1e16 ms or more (1e16, not 1e+16: the same number)
    try:
        return _encode_struct(record) + b"\n"
    except TypeError:  # a value msgspec does not encode (a str subclass): orjson of the dict, as before
        return orjson.dumps(record.to_json(), option=orjson.OPT_APPEND_NEWLINE)


#
# One file: Segment (read) and SegmentWriter (write)
#


class Segment:
    """A file of the format locked by this process: ``read`` a batch, ``commit`` it once safe, ``done`` at the end."""

    def __init__(self, path: str, file: IO[bytes]) -> None:
        self.path = path
        self._file = file
        self._offset = 0
        self._next = 0

    def read(self, limit: int) -> list[UsageRecord]:
        """Up to ``limit`` records after the committed position; an empty list at the end of the file."""
        self._file.seek(self._offset)
        records: list[UsageRecord] = []
        while len(records) < limit:
            line = self._file.readline()
            if not line:
                break
            if not line.strip():
                continue
            try:
                records.append(UsageRecord.from_json(orjson.loads(line)))
            except (orjson.JSONDecodeError, RecordError) as exc:  # a torn last line after a crash: skip it
                logger.warning("skipping an unreadable line in the usage file %s: %s", self.path, exc)
        self._next = self._file.tell()
        return records

    def read_all(self) -> list[UsageRecord]:
        records: list[UsageRecord] = []
        while batch := self.read(10_000):
            records += batch
            self.commit()
        return records

    def commit(self) -> None:
        self._offset = self._next

    def done(self) -> None:
        """Delete the replayed file and release it."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._file.close()

    def release(self) -> None:
        """Release the file unfinished; the next ``recover`` replays it from the start."""
        self._file.close()


def _lock(path: str, flags: int) -> int:
    """Open ``path`` and take its exclusive lock without waiting; -1 when it is gone or locked."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return -1
    if os.fstat(fd).st_nlink == 0:  # deleted by its owner while we waited
        os.close(fd)
        return -1
    return fd


def _segment(path: str, fd: int) -> Segment:
    return Segment(path, os.fdopen(fd, "rb"))


def recover(prefix: str) -> list[Segment]:
    """The files named ``<prefix>*`` that no live process holds, locked, oldest name first."""
    segments: list[Segment] = []
    for path in sorted(glob.glob(glob.escape(prefix) + "*")):
        fd = _lock(path, os.O_RDONLY)
        if fd >= 0:
            segments.append(_segment(path, fd))
    return segments


_writers: weakref.WeakSet[SegmentWriter] = weakref.WeakSet()


def _after_fork() -> None:
    for writer in list(_writers):
        writer.forget()


os.register_at_fork(after_in_child=_after_fork)


class SegmentWriter:
    """This process's files ``<prefix><pid>-<random>-<n>``; a file is created (and locked) at the first append after
    ``seal``. With ``fsync`` every append is synced before it returns."""

    def __init__(self, prefix: str, *, fsync: bool) -> None:
        self.prefix = prefix
        self.fsync = fsync
        self._mutex = threading.Lock()
        self._name = ""
        self._seq = 0
        self._fd = -1
        self._path = ""
        self.forget()
        _writers.add(self)

    @property
    def path(self) -> str:
        """The file being written ("" before the first append and after ``seal``)."""
        return self._path

    def forget(self) -> None:
        """Start afresh under a new name (in a forked child: the inherited file stays its parent's)."""
        if self._fd >= 0:
            os.close(self._fd)  # the child's copy; the parent's lock holds
        self._name = f"{self.prefix}{os.getpid()}-{secrets.token_hex(4)}-"
        self._fd, self._path = -1, ""

    def append(self, data: bytes) -> None:
        """Write ``data`` (whole lines) to the current file; raises ``OSError``."""
        with self._mutex:
            self.append_unlocked(data)

    def append_unlocked(self, data: bytes) -> None:
        """``append`` for a writer that one thread uses alone (the journal's: the event loop's thread)."""
        fd = self._fd if self._fd >= 0 else self._open()
        written = os.write(fd, data)  # a regular file takes it all unless the disk is full
        if written != len(data):
            view = memoryview(data)[written:]
            while view:
                view = view[os.write(fd, view) :]
        if self.fsync:
            os.fsync(fd)

    def seal(self) -> Segment | None:
        """Stop writing the current file and return it, still locked (None when nothing was written since)."""
        with self._mutex:
            if self._fd < 0:
                return None
            segment = _segment(self._path, self._fd)
            self._fd, self._path = -1, ""
            return segment

    def close(self) -> None:
        """Release the current file; it stays on disk for the next ``recover``."""
        with self._mutex:
            fd, self._fd, self._path = self._fd, -1, ""
            if fd >= 0:
                os.close(fd)

    def _open(self) -> int:
        os.makedirs(os.path.dirname(self.prefix) or ".", mode=0o700, exist_ok=True)
        self._seq += 1
        path = f"{self._name}{self._seq}"
        fd = _lock(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        if fd < 0:
            raise OSError(f"cannot lock the new usage file {path}")
        self._fd, self._path = fd, path
        return fd


#
# Files of earlier versions
#


def migrate_legacy(spool_path: str) -> list[str]:
    """Rename the spool files of earlier versions (``<spool>``, ``<spool>.replay-*``) into spool files of this
    format, so that ``recover`` replays them; returns the new names."""
    moved: list[str] = []
    legacy = f"{spool_path}.replay-"
    if os.path.exists(spool_path):
        # the old writers appended under this lock: take it, so no old process is in the middle of an append
        lock = os.open(f"{spool_path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError):
                os.replace(spool_path, legacy + "current")
        finally:
            os.close(lock)
    for path in sorted(glob.glob(glob.escape(legacy) + "*")):
        fd = _lock(path, os.O_RDONLY)
        if fd < 0:
            continue  # replayed by a live process of the earlier version
        try:
            target = f"{spool_path}.{SPOOL}-legacy-{secrets.token_hex(4)}-1"
            os.replace(path, target)
            moved.append(target)
        finally:
            os.close(fd)
    if moved:
        logger.warning("replaying %d usage spool files of an earlier version: %s", len(moved), ", ".join(moved))
    return moved


#
# The sink's spool
#


class Spool:
    """The records a sink could not deliver: this process's spool files, and those left by processes that are gone."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer = SegmentWriter(f"{path}.{SPOOL}-", fsync=True)

    def append(self, records: list[UsageRecord]) -> None:
        if records:
            self._writer.append(encode(records))

    def append_lines(self, data: bytes) -> None:
        """Append lines already encoded (``encode``)."""
        if data:
            self._writer.append(data)

    def claim(self, *, adopt: bool = False) -> list[Segment]:
        """This process's spooled records, to replay; with ``adopt``, first the files of processes that are gone
        (and those of earlier versions)."""
        claims: list[Segment] = []
        if adopt:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            migrate_legacy(self.path)
            claims += recover(self._writer.prefix)
        segment = self._writer.seal()
        if segment is not None:
            claims.append(segment)
        return claims

    def close(self) -> None:
        self._writer.close()


#
# The journal
#


class UsageJournal:
    """This process's journal of the records handed to the sink and not yet known to be safe (see the module
    docstring). ``append`` is synchronous; ``checkpoint`` seals the current file, flushes the sink and deletes the
    sealed files."""

    def __init__(self, spool_path: str, *, interval: float = CHECKPOINT_INTERVAL) -> None:
        self.prefix = f"{spool_path}.{JOURNAL}-"
        self.interval = interval
        self._writer = SegmentWriter(self.prefix, fsync=False)
        self._sealed: list[Segment] = []  # files to delete after the next flush
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_error = 0.0

    def open(self) -> list[UsageRecord]:
        """Return the records of journals left by processes that are gone (re-emit them to the sink: their files
        are deleted by the next checkpoint)."""
        os.makedirs(os.path.dirname(self.prefix) or ".", mode=0o700, exist_ok=True)
        recovered: list[UsageRecord] = []
        for segment in recover(self.prefix):
            recovered += segment.read_all()
            self._sealed.append(segment)
        if recovered:
            logger.warning("re-sending %d usage records from the journal of a gateway that stopped", len(recovered))
        return recovered

    def append(self, record: UsageRecord) -> bytes:
        """Write ``record``'s line and return it (a sink that sends JSON reuses it)."""
        line = encode_line(record)
        if self._closed:
            return line
        try:
            self._writer.append_unlocked(line)  # append, seal and close all run on the event loop's thread
        except OSError as exc:
            now = time.monotonic()
            if now - self._last_error >= LOG_EVERY:
                self._last_error = now
                logger.error("cannot write the usage journal %s: %s", self._writer.path or self.prefix, exc)
        return line

    async def checkpoint(self, sink: UsageSink) -> None:
        """Seal the current file, flush the sink, delete the sealed files (kept when the flush raises)."""
        segment = self._writer.seal()
        if segment is not None:
            self._sealed.append(segment)
        if not self._sealed:
            return
        sealed, self._sealed = self._sealed, []
        try:
            await sink.flush()  # after this, what was emitted before is delivered or in the fsynced spool
        except BaseException:
            self._sealed = sealed + self._sealed
            raise
        for segment in sealed:
            segment.done()

    def start(self, sink: UsageSink) -> None:
        """Checkpoint every ``interval`` seconds in the background."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(sink), name="sluice-usage-journal")

    async def _run(self, sink: UsageSink) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.checkpoint(sink)
            except Exception:
                logger.exception("usage journal checkpoint failed")

    async def close(self, sink: UsageSink) -> None:
        """Stop with a last checkpoint; what it could not make safe stays for the next start. Call it before closing
        the sink."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.checkpoint(sink)
        self._closed = True
        self._writer.close()
        for segment in self._sealed:  # a failed last checkpoint: left for the next start
            segment.release()
        self._sealed = []
