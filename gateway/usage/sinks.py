"""The sinks that carry usage records from the gateway to the management plane (the record and its wire
formats: ``gateway.usage.record``).

Sinks
    ``UsageSink.emit(record, line)`` never blocks, never raises and does no I/O. Call it on the event loop's thread.
    ``line``, when given, is the record's line of the journal format (``gateway.usage.journal.encode_line``), which
    the journal has just written: a sink that sends JSON keeps it instead of encoding the record again.
    ``await start()`` starts the background flusher and replays the spool. ``await flush()`` returns once every
    record emitted before the call is safe, as far as the sink can make it: delivered, or, while the sink backs
    off after a failure and has a spool, appended to the spool (without waiting on the peer that just failed).
    Otherwise it tries to deliver, once, whatever the backoff; what still fails stays buffered. ``await
    close()`` flushes, spools what is left and closes the connection.

    ``RedisStreamSink`` and ``HttpSink`` buffer records as their JSON lines (``LineSink``): each line is a stream
    entry's value, or a part of a POST's body. A batch (up to ``batch_max`` records) goes out when it is full, or
    ``flush_interval`` seconds after its first record. When full batches go out, the records behind them that do
    not fill one keep lingering (they go with the next full batch, or ``flush_interval`` after they came) rather
    than follow in a small batch of their own. Each batch is one pipelined round trip (Redis) or
    one POST (HTTP: 1,000 records by default, over one kept-alive connection). When a delivery fails the sink backs
    off (exponential, jittered, capped) and keeps the records. Without ``spool_path`` they stay in memory: at most
    ``buffer_max`` records, and beyond that the oldest are dropped and counted in ``stats.dropped``. With
    ``spool_path`` they are appended to this process's spool file (``gateway.usage.journal.Spool``), fsynced. The
    spool is replayed and then deleted after the next successful delivery, and at the next ``start()``, so neither
    an outage nor a restart loses a record that was handed to the sink. Several processes (pre-forked workers) may
    share one spool path: each writes its own files (``gateway.usage.journal``) and replays those of processes that
    are gone.

    A killed process (SIGKILL, power loss) loses what it held in memory: the records of the last
    ``flush_interval``; while backing off, fewer than ``batch_max`` with a spool, the whole buffer without.

    Delivery is at least once. A record can arrive twice, for example after an answer was lost or after a
    crash in the middle of a batch. The management plane counts each ``request_id`` once. It remembers ids for
    ``SLUICE_USAGE_DEDUPE_HOURS`` (48 by default) and refuses records that started longer ago than that.

    ``MemorySink`` keeps records in a list (for tests). ``NullSink`` drops them.
    ``make_sink(redis_url, management_url, gateway_token, spool_path, *, stream=DEFAULT_STREAM)`` returns a
    ``RedisStreamSink`` when ``redis_url`` is set and an ``HttpSink`` otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import aiohttp

from gateway.redis import RespClient, RespError
from gateway.usage.journal import Segment, Spool, encode_line
from gateway.usage.record import DEFAULT_MAXLEN, DEFAULT_STREAM, STREAM_FIELD, USAGE_PATH, UsageRecord

__all__ = (
    "Backoff",
    "BufferedSink",
    "DeliveryError",
    "HttpSink",
    "LineSink",
    "MemorySink",
    "NullSink",
    "RedisStreamSink",
    "SinkStats",
    "UsageSink",
    "make_sink",
)

logger = logging.getLogger("gateway.usage")

# How long HttpSink keeps its idle connection to the management plane open.
KEEPALIVE_SECONDS = 1.0


def _bulk(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _xadd_prefix(stream: str, maxlen: int) -> bytes:
    """``XADD <stream> MAXLEN ~ <maxlen> * json`` in RESP, with the array header: what comes before an entry's value."""
    args = ("XADD", stream, "MAXLEN", "~", str(maxlen), "*", STREAM_FIELD)
    return b"*%d\r\n" % (len(args) + 1) + b"".join(_bulk(arg) for arg in args)


def _xadd_commands(prefix: bytes, lines: Iterable[bytes]) -> bytes:
    """One ``XADD`` per record, joined: the entry's ``json`` field is the record's journal line, as it is."""
    return b"".join([b"%s$%d\r\n%s\r\n" % (prefix, len(line), line) for line in lines])


#
# The sink interface and the trivial sinks
#


class UsageSink(Protocol):
    """Where the request handler hands usage records (see "Sinks" in the module docstring)."""

    def emit(self, record: UsageRecord, line: bytes | None = None) -> None: ...

    async def start(self) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


class NullSink:
    """Drops every record."""

    def emit(self, record: UsageRecord, line: bytes | None = None) -> None:
        return None

    async def start(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


class MemorySink:
    """Keeps every record in ``records`` (tests)."""

    def __init__(self) -> None:
        self.records: list[UsageRecord] = []
        self.closed = False

    def emit(self, record: UsageRecord, line: bytes | None = None) -> None:
        self.records.append(record)

    async def start(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


#
# Batching sinks
#


class DeliveryError(Exception):
    """A batch was not delivered. ``retryable`` False: it never will be (drop it); ``too_large``: split it."""

    def __init__(self, message: str, *, retryable: bool = True, too_large: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.too_large = too_large


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with jitter: ``initial`` doubling up to ``maximum``, each delay cut by up to half."""

    initial: float = 0.1
    maximum: float = 5.0
    rand: Callable[[], float] = random.random
    failures: int = 0

    def next_delay(self) -> float:
        self.failures += 1
        delay = min(self.maximum, self.initial * 2.0 ** min(self.failures - 1, 32))
        return delay * (0.5 + self.rand() / 2)

    def reset(self) -> None:
        self.failures = 0


@dataclass(slots=True)
class SinkStats:
    """Counters since the sink was created: records delivered, spooled, rejected (400) and dropped."""

    delivered: int = 0
    spooled: int = 0
    rejected: int = 0
    dropped: int = 0


@dataclass(slots=True)
class _SinkState:
    retry_at: float = 0.0  # clock time before which the background flusher does not try again
    since: float = 0.0  # clock time the oldest buffered record arrived (the batch's linger starts there)
    filled: float = 0.0  # clock time the buffer last held a whole number of full batches
    before: int = 0  # how many of the buffered records came before ``filled``, at most (the oldest ones)
    failing: str | None = None  # the current failure, logged once per episode
    spool_dirty: bool = False  # records were spooled since the last claim
    spill_failed: bool = False  # the spool could not be written in this backoff period
    dropping: bool = False  # records are being dropped (logged once per episode)
    claims: list[Segment] = field(default_factory=list)


E = TypeVar("E")  # what a sink buffers for each record: the record itself, or its encoded line


class BufferedSink(Generic[E]):
    """Base of the network sinks: buffer, background flusher, backoff and spool. Subclasses define ``_deliver``
    and what they buffer for a record: ``_entry``, ``_encode`` (the entries as spool lines) and ``_entries`` (the
    records replayed from the spool, as entries)."""

    def __init__(
        self,
        *,
        batch_max: int,
        flush_interval: float,
        spool_path: str | None,
        buffer_max: int,
        backoff: Backoff | None,
        clock: Callable[[], float],
    ) -> None:
        self.batch_max = max(1, batch_max)
        self.flush_interval = flush_interval
        self.buffer_max = max(buffer_max, self.batch_max)
        self.spool = Spool(spool_path) if spool_path else None
        self.stats = SinkStats()
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._buffer: deque[E] = deque()
        self._state = _SinkState()
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # the UsageSink interface

    def emit(self, record: UsageRecord, line: bytes | None = None) -> None:
        if self._closed:
            self._drop(1, "the sink is closed")
            return
        buffer = self._buffer
        buffer.append(self._entry(record, line))
        size = len(buffer)
        if size == 1:
            self._state.since = self._clock()
            self._wakeup.set()
        elif size > self.buffer_max:
            buffer.popleft()
            self._drop(1, f"the buffer is full ({self.buffer_max} records), dropping the oldest")
        elif size % self.batch_max == 0:
            state = self._state
            state.filled = self._clock()
            state.before = size
            self._wakeup.set()

    async def start(self) -> None:
        if self._task is not None or self._closed:
            return
        if self.spool is not None:
            try:
                self._state.claims += await asyncio.to_thread(self.spool.claim, adopt=True)
            except OSError as exc:
                logger.error("cannot read the usage spool %s: %s", self.spool.path, exc)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sluice-usage-sink")

    async def flush(self) -> None:
        async with self._lock:
            await self._flush_locked()

    async def close(self) -> None:
        if self._closed:
            return
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._lock:
            await self._flush_locked()
            self._closed = True
            left = list(self._buffer)
            self._buffer.clear()
            if left and not (self.spool is not None and await self._spill(left)):
                logger.error("usage sink closed with %d records neither delivered nor spooled: lost", len(left))
                self.stats.dropped += len(left)
            for claim in self._state.claims:
                claim.release()
            self._state.claims.clear()
            if self.spool is not None:
                self.spool.close()
        await self._close_transport()

    # to override

    async def _deliver(self, batch: list[E]) -> None:
        """Send ``batch`` in one go or raise ``DeliveryError``."""
        raise NotImplementedError("._deliver() must be overridden")

    def _entry(self, record: UsageRecord, line: bytes | None) -> E:
        """What the buffer holds for ``record`` (``line``: its encoded line, when the journal has made it)."""
        raise NotImplementedError("._entry() must be overridden")

    def _encode(self, entries: list[E]) -> bytes:
        """The lines of the spool for ``entries``."""
        raise NotImplementedError("._encode() must be overridden")

    def _entries(self, records: list[UsageRecord]) -> list[E]:
        """``records`` read back from the spool, as entries."""
        raise NotImplementedError("._entries() must be overridden")

    async def _close_transport(self) -> None:
        return None

    # the background flusher

    async def _run(self) -> None:
        while True:
            wait = self._next_wait()
            if wait != 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), wait)
                continue
            try:
                await self._tick()
            except Exception as exc:  # the flusher must outlive any bug
                logger.exception("usage sink flush failed")
                self._failed(f"{exc.__class__.__name__}: {exc}")

    def _next_wait(self) -> float | None:
        """Seconds until there is work (0: now; None: until a record arrives)."""
        state, now = self._state, self._clock()
        if state.retry_at > now:
            if self.spool is not None and len(self._buffer) >= self.batch_max and not state.spill_failed:
                return 0.0  # backing off: move the buffer to disk rather than hold it in memory
            return state.retry_at - now
        if state.claims or state.spool_dirty or len(self._buffer) >= self.batch_max:
            return 0.0
        if self._buffer:
            return max(0.0, state.since + self.flush_interval - now)
        return None

    async def _tick(self) -> None:
        async with self._lock:
            # within the oldest record's linger, only full batches are due: the rest waits to fill one
            state = self._state
            await self._flush_locked(full_only=self._clock() < state.since + self.flush_interval)

    async def _flush_locked(self, *, full_only: bool = False) -> None:
        """Make every buffered record safe: while backing off with a spool, append it to the spool without
        waiting on a peer that just failed; otherwise deliver it (a failed batch is spooled or kept). ``full_only``:
        deliver full batches only, and leave the records behind them lingering."""
        if self.spool is not None and self._state.retry_at > self._clock() and not self._state.spill_failed:
            records = list(self._buffer)
            self._buffer.clear()
            try:
                spilled = await self._spill(records)
            except asyncio.CancelledError:  # close() cancelled the flusher: it spools the buffer itself
                self._buffer.extendleft(reversed(records))
                raise
            if spilled:
                return
            self._buffer.extendleft(reversed(records))
            self._state.spill_failed = True
        await self._drain_safely(full_only)

    # delivery

    async def _drain_safely(self, full_only: bool) -> None:
        try:
            await self._drain(full_only)
        except Exception as exc:  # e.g. the spool cannot be read: back off instead of spinning
            logger.exception("usage sink flush failed")
            self._failed(f"{exc.__class__.__name__}: {exc}")

    async def _drain(self, full_only: bool = False) -> bool:
        """Send what is buffered now, then the spool, batch by batch; stop at the first failure. ``full_only``:
        send full batches only; the records behind them keep lingering."""
        state = self._state
        state.spill_failed = False
        budget = len(self._buffer)  # records emitted meanwhile wait for the next round: the spool gets its turn
        least = self.batch_max if full_only else 1
        while budget >= least and len(self._buffer) >= least:
            batch = [self._buffer.popleft() for _ in range(min(budget, self.batch_max, len(self._buffer)))]
            budget -= len(batch)
            state.before -= len(batch)
            try:
                sent = await self._send(batch)
            except asyncio.CancelledError:  # close() cancelled the flusher: the batch is not lost
                self._buffer.extendleft(reversed(batch))
                state.before += len(batch)
                raise
            if not sent:
                state.before += len(batch)
                await self._keep(batch)
                return False
        if state.before <= 0:  # every record left came after ``filled``: their linger starts there at the earliest
            state.since = max(state.since, state.filled)
        return await self._replay_spool()

    async def _replay_spool(self) -> bool:
        state = self._state
        if self.spool is None:
            return True
        if state.spool_dirty:
            state.spool_dirty = False
            state.claims += await asyncio.to_thread(self.spool.claim)
        while state.claims:
            claim = state.claims[0]
            batch = await asyncio.to_thread(self._read_claim, claim)
            if not batch:
                state.claims.pop(0)
                await asyncio.to_thread(claim.done)
                continue
            if not await self._send(batch):
                return False
            claim.commit()
        return True

    def _read_claim(self, claim: Segment) -> list[E]:
        return self._entries(claim.read(self.batch_max))

    async def _send(self, batch: list[E]) -> bool:
        """Deliver one batch; False (and backoff) on a failure worth retrying. Rejected batches count as sent."""
        try:
            await self._deliver_splitting(batch)
        except DeliveryError as exc:
            if not exc.retryable:
                logger.error("usage batch of %d records rejected, dropped: %s", len(batch), exc)
                self.stats.rejected += len(batch)
                return True
            self._failed(str(exc))
            return False
        except Exception as exc:
            logger.exception("usage delivery failed unexpectedly")
            self._failed(f"{exc.__class__.__name__}: {exc}")
            return False
        self._succeeded(len(batch))
        return True

    async def _deliver_splitting(self, batch: list[E]) -> None:
        try:
            await self._deliver(batch)
        except DeliveryError as exc:
            if not exc.too_large or len(batch) < 2:
                raise
            half = len(batch) // 2
            await self._deliver_splitting(batch[:half])
            await self._deliver_splitting(batch[half:])

    async def _keep(self, batch: list[E]) -> None:
        """After a failed delivery: spool the batch and the buffer, or put the batch back in memory."""
        if self.spool is not None:
            records = batch + list(self._buffer)
            self._buffer.clear()
            try:
                spilled = await self._spill(records)
            except asyncio.CancelledError:
                self._buffer.extendleft(reversed(records))
                raise
            if spilled:
                return
            batch = records
        self._buffer.extendleft(reversed(batch))
        self._state.since = self._clock() - self.flush_interval  # no more lingering: retry when the backoff ends
        excess = len(self._buffer) - self.buffer_max
        if excess > 0:
            for _ in range(excess):
                self._buffer.popleft()
            self._drop(excess, f"the buffer is full ({self.buffer_max} records), dropping the oldest")

    async def _spill(self, records: list[E]) -> bool:
        if not records:
            return True
        assert self.spool is not None
        try:
            await asyncio.to_thread(self._spool_entries, records)
        except OSError as exc:
            logger.error("cannot write %d usage records to the spool %s: %s", len(records), self.spool.path, exc)
            return False
        self._state.spool_dirty = True
        self.stats.spooled += len(records)
        return True

    def _spool_entries(self, entries: list[E]) -> None:
        assert self.spool is not None
        self.spool.append_lines(self._encode(entries))

    def _failed(self, reason: str) -> None:
        state = self._state
        delay = self._backoff.next_delay()
        state.retry_at = self._clock() + delay
        self._wakeup.set()  # the background flusher reschedules itself: retry after the backoff
        if state.failing is None:
            where = "spooling" if self.spool is not None else "buffering"
            logger.warning("usage delivery failing (%s), %s records and retrying: %s", self._peer(), where, reason)
        state.failing = reason

    def _succeeded(self, count: int) -> None:
        state = self._state
        self.stats.delivered += count
        if state.failing is not None:
            logger.info("usage delivery to %s recovered", self._peer())
            state.failing = None
        state.retry_at = 0.0
        state.dropping = False
        self._backoff.reset()

    def _drop(self, count: int, why: str) -> None:
        self.stats.dropped += count
        if not self._state.dropping:  # once per episode (until a delivery succeeds)
            self._state.dropping = True
            logger.error("usage records lost: %s", why)

    def _peer(self) -> str:
        return self.__class__.__name__


class LineSink(BufferedSink[bytes]):
    """A network sink that buffers each record as its JSON line (the journal's, when given) and delivers lists of
    lines: the record is encoded once, for the journal and the peer alike."""

    def _entry(self, record: UsageRecord, line: bytes | None) -> bytes:
        return line if line is not None else encode_line(record)

    def _encode(self, entries: list[bytes]) -> bytes:
        return b"".join(entries)

    def _entries(self, records: list[UsageRecord]) -> list[bytes]:
        return [encode_line(record) for record in records]


class RedisStreamSink(LineSink):
    """Appends records to a Redis stream, one pipelined round trip (``XADD ... MAXLEN ~``) per batch; each entry's
    one field, ``json``, is the record's line."""

    def __init__(
        self,
        redis_url: str,
        stream: str = DEFAULT_STREAM,
        *,
        batch_max: int = 500,
        flush_interval: float = 0.05,
        spool_path: str | None = None,
        buffer_max: int = 100_000,
        maxlen: int = DEFAULT_MAXLEN,
        timeout: float = 5.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            batch_max=batch_max,
            flush_interval=flush_interval,
            spool_path=spool_path,
            buffer_max=buffer_max,
            backoff=backoff,
            clock=clock,
        )
        self.redis_url = redis_url
        self.stream = stream
        self.maxlen = maxlen
        self.timeout = timeout
        self._redis: RespClient | None = None

    async def _deliver(self, batch: list[bytes]) -> None:
        if self._redis is None:
            # The project's pipelined RESP client: it does not retry, this sink backs off and spools on its own.
            self._redis = RespClient(self.redis_url, connect_timeout=self.timeout, timeout=self.timeout)
        prefix = _xadd_prefix(self.stream, self.maxlen)
        commands = _xadd_commands(prefix, batch)
        try:
            replies = await self._redis.call_batch(commands, len(batch))
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"{exc.__class__.__name__}: {exc}") from exc
        for reply in replies:
            if isinstance(reply, RespError):
                raise DeliveryError(f"ResponseError: {reply}")

    async def _close_transport(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def _peer(self) -> str:
        return f"Redis stream {self.stream}"


class HttpSink(LineSink):
    """POSTs batches of records to the management plane (the embedded default, which has no Redis): a batch's body
    is the records' lines joined, not the records encoded again."""

    def __init__(
        self,
        management_url: str,
        gateway_token: str,
        *,
        batch_max: int = 1000,
        flush_interval: float = 0.5,
        spool_path: str | None = None,
        buffer_max: int = 100_000,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            batch_max=batch_max,
            flush_interval=flush_interval,
            spool_path=spool_path,
            buffer_max=buffer_max,
            backoff=backoff or Backoff(maximum=10.0),
            clock=clock,
        )
        self.url = management_url.rstrip("/") + USAGE_PATH
        self.timeout = timeout
        self._headers = {"Authorization": f"Gateway {gateway_token}", "Content-Type": "application/json"}
        self._session = session
        self._own_session = session is None

    async def _deliver(self, batch: list[bytes]) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            # One connection, kept open between batches. It is let go after an idle second, before the server's
            # own keep-alive timeout (gunicorn's default is 2 s) can close it under a POST being sent.
            connector = aiohttp.TCPConnector(limit=1, keepalive_timeout=KEEPALIVE_SECONDS)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
            )
        # {"records": [to_json(), ...]}, each object followed by the newline that ends its line (JSON whitespace)
        body = b'{"records":[' + b",".join(batch) + b"]}"
        try:
            async with self._session.post(self.url, data=body, headers=self._headers) as response:
                status = response.status
                detail = (await response.text(errors="replace"))[:300]
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"{exc.__class__.__name__}: {exc}") from exc
        if 200 <= status < 300:
            return
        message = f"{self.url} answered {status}: {detail}"
        if status == 413:
            raise DeliveryError(message, retryable=False, too_large=True)
        raise DeliveryError(message, retryable=status not in (400, 422))

    async def _close_transport(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _peer(self) -> str:
        return self.url


def make_sink(
    redis_url: str | None,
    management_url: str,
    gateway_token: str,
    spool_path: str | None,
    *,
    stream: str = DEFAULT_STREAM,
) -> UsageSink:
    """The production sink: the Redis stream when a Redis URL is set, else HTTP to the management plane."""
    if redis_url:
        return RedisStreamSink(redis_url, stream, spool_path=spool_path)
    return HttpSink(management_url, gateway_token, spool_path=spool_path)
