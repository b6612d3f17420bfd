"""What the gateway records about each request when it is over: request metrics and the usage record.

``Telemetry.finish`` runs once per request that matched an operation, after the policies' own finish callbacks (so
``ctx.usage`` is final): it records ``sluice_requests_total`` / ``sluice_request_duration_seconds`` (and
``sluice_upstream_errors_total``) and hands a ``UsageRecord`` to the sink (``emit`` buffers, it does no I/O).

**Usage records survive a killed gateway** (:class:`UsageJournal`). The sink holds records in memory for up to its
flush interval, and a SIGKILLed process loses its memory. So before a record is handed to the sink it is appended
to this process's journal, a plain file (one ``write(2)``, no fsync: the data is in the kernel once the call
returns, and outlives the process). ``finish`` runs before the last bytes of the response leave: before a complete
response is handed to the server, and for a streamed one before its end (the chunked terminator, or the last chunk of
a body with a known length, which is held back until the body is over). Every ``CHECKPOINT_INTERVAL`` the journal
starts a new file and calls ``sink.flush()``, after which every record emitted before is delivered or in the sink's
spool (fsynced); the older files are then deleted. A gateway that starts on the same spool path re-emits the files of
journals no live process holds. Delivery is at least once; the management plane counts each request id once. See
docs/usage-and-metrics.md for the exact guarantee.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Final

import orjson

from gateway.usage import RecordError, UsageRecord

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.server import StreamingResponse
    from gateway.metrics import Metrics
    from gateway.model import ApiEntry
    from gateway.usage import UsageSink

__all__ = ("CHECKPOINT_INTERVAL", "CLIENT_CLOSED", "Telemetry", "UsageJournal")

logger = logging.getLogger("gateway.telemetry")

CLIENT_CLOSED: Final = 499  # the status recorded for a request whose client went away before the response began
CHECKPOINT_INTERVAL: Final = 1.0
FORWARD_SOURCE: Final = "forward-request"
LOG_EVERY: Final = 10.0


class Telemetry:
    """Request metrics and usage records of one app; ``metrics``, ``sink`` and ``journal`` are each optional."""

    __slots__ = ("clock", "gateway_id", "journal", "metrics", "sink", "wall_clock")

    def __init__(
        self,
        *,
        metrics: Metrics | None,
        sink: UsageSink | None,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        gateway_id: str = "",
        journal: UsageJournal | None = None,
    ) -> None:
        self.metrics = metrics
        self.sink = sink
        self.clock = clock
        self.wall_clock = wall_clock
        self.gateway_id = gateway_id
        self.journal = journal if sink is not None else None

    def finish(self, ctx: RequestContext, complete: bool) -> None:
        """Record a request that went through the pipeline (``ctx.status`` 0: the client left before the head).
        Never raises: recording must not break the response."""
        try:
            self._finish(ctx)
        except Exception:
            logger.exception("recording the request failed")

    def _finish(self, ctx: RequestContext) -> None:
        elapsed = self.clock() - ctx.started
        status = ctx.status or CLIENT_CLOSED
        api = ctx.api.name
        backend = ctx.backend
        metrics = self.metrics
        if metrics is not None:
            metrics.record_request(api, ctx.operation.name, status, elapsed)
            error = ctx.last_error
            if error is not None and error.source == FORWARD_SOURCE:
                target = (backend.name or backend.url) if backend is not None else ""
                metrics.record_upstream_error(api, target, error.reason)
        if self.sink is not None:
            usage = ctx.usage
            product = ctx.product
            subscription = ctx.subscription
            self._emit(
                ctx.request_id,
                api,
                ctx.operation.name,
                status,
                elapsed,
                subscription=subscription.name if subscription is not None else None,
                product=product.name if product is not None else None,
                backend=backend.name if backend is not None else None,
                model=_model(ctx),
                prompt_tokens=usage.prompt_tokens if usage is not None else 0,
                completion_tokens=usage.completion_tokens if usage is not None else 0,
            )

    def finish_early(
        self, request_id: bytes, api: ApiEntry | None, operation: str, status: int, started: float
    ) -> None:
        """Record a request answered before the pipeline: no operation matched (``api`` None, metrics only), or
        the subscription check refused it (a usage record too: the request matched an operation)."""
        try:
            self._finish_early(request_id, api, operation, status, started)
        except Exception:
            logger.exception("recording the request failed")

    def _finish_early(
        self, request_id: bytes, api: ApiEntry | None, operation: str, status: int, started: float
    ) -> None:
        elapsed = self.clock() - started
        if self.metrics is not None:
            self.metrics.record_request(api.name if api is not None else "", operation, status, elapsed)
        if self.sink is not None and api is not None:
            backend = api.backend.name if api.backend is not None else None
            self._emit(request_id, api.name, operation, status, elapsed, backend=backend)

    def _emit(
        self,
        request_id: bytes,
        api: str,
        operation: str,
        status: int,
        elapsed: float,
        *,
        subscription: str | None = None,
        product: str | None = None,
        backend: str | None = None,
        model: str | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """Build the request's usage record and hand it to the journal and the sink."""
        record = UsageRecord(
            request_id=request_id.decode("ascii"),
            ts_ms=int((self.wall_clock() - elapsed) * 1000),
            api=api,
            operation=operation,
            subscription=subscription,
            product=product,
            backend=backend,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            status=status,
            latency_ms=elapsed * 1000.0,
            cache_hit=False,
            gateway_id=self.gateway_id,
        )
        if self.journal is not None:
            self.journal.append(record)
        assert self.sink is not None
        self.sink.emit(record)

    def wrap_stream(self, response: StreamingResponse, ctx: RequestContext) -> None:
        """Make ``response`` record the request when its body ends, before the end reaches the client."""
        response.body_iter = _RecordedBody(response.body_iter, self, ctx, response.content_length)


def _model(ctx: RequestContext) -> str | None:
    """The model the backend reported, else the one the request asked for."""
    usage = ctx.usage
    if usage is not None and usage.model:
        return str(usage.model)
    exchange = ctx.llm
    return exchange.model if exchange is not None else None


class _RecordedBody:
    """The body iterator of a streamed response, wrapped: when the body ends (or is closed early) the inner
    iterator is closed first (running the policies' finish callbacks), then the request is recorded. For a body of
    known length the last chunk is held back until the inner iterator has ended, so the record is written before
    the client has the whole body."""

    __slots__ = ("_ctx", "_done", "_inner", "_remaining", "_telemetry")

    def __init__(
        self, inner: AsyncIterator[bytes], telemetry: Telemetry, ctx: RequestContext, length: int | None
    ) -> None:
        self._inner = inner
        self._telemetry = telemetry
        self._ctx = ctx
        self._remaining = length
        self._done = False

    def __aiter__(self) -> _RecordedBody:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        chunk = await self._next()
        if self._remaining is not None:
            self._remaining -= len(chunk)
            if self._remaining <= 0:  # the last bytes of the body: let the inner iterator end first
                self._remaining = None
                try:
                    extra = await self._next()
                except StopAsyncIteration:
                    return chunk
                chunk += extra  # more than announced: the server refuses the excess and closes
        return chunk

    async def _next(self) -> bytes:
        try:
            return await self._inner.__anext__()
        except StopAsyncIteration:
            await self._end(True)
            raise
        except BaseException:
            await self._end(False)
            raise

    async def aclose(self) -> None:
        if not self._done:
            await self._end(False)

    async def _end(self, complete: bool) -> None:
        self._done = True
        aclose = getattr(self._inner, "aclose", None)
        try:
            if aclose is not None:
                await aclose()
        finally:
            self._telemetry.finish(self._ctx, complete)


#
# Journal
#


class UsageJournal:
    """This process's append-only files of the usage records handed to the sink and not yet known to be safe.

    Files are named ``<spool path>.journal-<pid>-<random>-<n>``; each is ``flock``-ed by its process while it is
    in use, so a gateway starting on the same spool path takes over (``recover``) exactly the files of processes
    that are gone. ``append`` is synchronous (one ``write(2)`` on the event loop's thread, a few microseconds on a
    local disk); ``checkpoint`` seals the current file, flushes the sink and deletes the sealed files.
    """

    def __init__(self, spool_path: str, *, interval: float = CHECKPOINT_INTERVAL) -> None:
        self.prefix = f"{spool_path}.journal-"
        self.interval = interval
        self._name = f"{self.prefix}{os.getpid()}-{secrets.token_hex(4)}-"
        self._seq = 0
        self._fd = -1
        self._path = ""
        self._written = False  # the current file has records
        self._sealed: list[tuple[str, int]] = []  # (path, locked fd) of files to delete after the next flush
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_error = 0.0

    def open(self) -> list[UsageRecord]:
        """Start this process's journal; return the records of journals left by processes that are gone (re-emit
        them to the sink: their files are deleted by the next checkpoint)."""
        os.makedirs(os.path.dirname(self.prefix) or ".", mode=0o700, exist_ok=True)
        recovered: list[UsageRecord] = []
        for path in sorted(glob.glob(glob.escape(self.prefix) + "*")):
            fd = _lock(path, os.O_RDONLY)
            if fd < 0:
                continue  # a live process holds it (or it is gone already)
            recovered += _read_records(path, fd)
            self._sealed.append((path, fd))
        self._new_file()
        if recovered:
            logger.warning("re-sending %d usage records from the journal of a gateway that stopped", len(recovered))
        return recovered

    def append(self, record: UsageRecord) -> None:
        if self._fd < 0:
            return
        data = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)  # a dataclass: to_json()'s object
        try:
            written = os.write(self._fd, data)
            if written != len(data):  # a regular file takes it all unless the disk is full
                raise OSError(f"short write ({written} of {len(data)} bytes)")
        except OSError as exc:
            now = time.monotonic()
            if now - self._last_error >= LOG_EVERY:
                self._last_error = now
                logger.error("cannot write the usage journal %s: %s", self._path, exc)
            return
        self._written = True

    async def checkpoint(self, sink: UsageSink) -> None:
        """Seal the current file, flush the sink, delete the sealed files (kept when the flush raises)."""
        if self._written and not self._closed:
            self._sealed.append((self._path, self._fd))
            self._new_file()
        if not self._sealed:
            return
        sealed, self._sealed = self._sealed, []
        try:
            await sink.flush()  # after this, what was emitted before is delivered or in the fsynced spool
        except BaseException:
            self._sealed = sealed + self._sealed
            raise
        for path, fd in sealed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)

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
        """Stop; a last checkpoint, then the current file is deleted when empty (else the next start re-sends it).
        Call it before closing the sink."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.checkpoint(sink)
        self._closed = True
        fd, self._fd = self._fd, -1
        if fd >= 0:
            if not self._written:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path)
            os.close(fd)
        for _, sealed_fd in self._sealed:  # a failed last checkpoint: left for the next start
            os.close(sealed_fd)
        self._sealed = []

    def _new_file(self) -> None:
        self._seq += 1
        path = f"{self._name}{self._seq}"
        fd = _lock(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        if fd < 0:
            raise OSError(f"cannot lock the new usage journal {path}")
        self._path, self._fd, self._written = path, fd, False


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


def _read_records(path: str, fd: int) -> list[UsageRecord]:
    records: list[UsageRecord] = []
    with os.fdopen(os.dup(fd), "rb") as file:
        for line in file:
            if not line.strip():
                continue
            try:
                records.append(UsageRecord.from_json(orjson.loads(line)))
            except (orjson.JSONDecodeError, RecordError) as exc:  # a torn last line: the process died mid-write
                logger.warning("skipping an unreadable line in the usage journal %s: %s", path, exc)
    return records
