"""What the gateway records about each request when it is over: request metrics and the usage record.

``Telemetry.finish`` runs once per request that matched an operation, after the policies' own finish callbacks (so
``ctx.usage`` is final): it records ``sluice_requests_total`` / ``sluice_request_duration_seconds`` (and
``sluice_upstream_errors_total``) and hands a ``UsageRecord`` to the sink (``emit`` buffers, it does no I/O).

**Usage records survive a killed gateway** (:class:`UsageJournal`). The sink holds records in memory for up to its
flush interval, and a SIGKILLed process loses its memory. So before a record is handed to the sink it is appended
to this process's journal (``gateway.usage.journal``: one ``write(2)``, no fsync: the data is in the kernel once the
call returns, and outlives the process). ``finish`` runs before the last bytes of the response leave: before a complete
response is handed to the server, and for a streamed one before its end (the chunked terminator, or the last chunk of
a body with a known length, which is held back until the body is over). Every ``CHECKPOINT_INTERVAL`` the journal
starts a new file and calls ``sink.flush()``, after which every record emitted before is delivered or in the sink's
spool (fsynced); the older files are then deleted. A gateway that starts on the same spool path re-emits the files of
journals no live process holds. Delivery is at least once; the management plane counts each request id once. See
docs/usage-and-metrics.md for the exact guarantee.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from gateway.usage.record import UsageRecord

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.metrics import Metrics
    from gateway.model import ApiEntry
    from gateway.usage.journal import UsageJournal
    from gateway.usage.sinks import UsageSink

__all__ = ("CLIENT_CLOSED", "Telemetry")

logger = logging.getLogger("gateway.telemetry")

CLIENT_CLOSED: Final = 499  # the status recorded for a request whose client went away before the response began
FORWARD_SOURCE: Final = "forward-request"


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
        operation = ctx.operation.name
        backend = ctx.backend
        backend_name = backend.name if backend is not None else None
        failed = None
        attempts = ctx.attempts
        if attempts:  # a pool member, or the backend itself; retried attempts before it
            last = attempts[-1]
            if backend_name is not None:
                backend_name = last["backend"]
            if len(attempts) > 1:
                failed = " ".join(f"{a['backend']}:{a.get('status') or a.get('error')}" for a in attempts[:-1])
        metrics = self.metrics
        if metrics is not None:
            metrics.record_request(api, operation, status, elapsed)
            error = ctx.last_error
            if error is not None and error.source == FORWARD_SOURCE:
                target = (backend.name or backend.url) if backend is not None else ""
                if attempts:
                    target = attempts[-1]["backend"]
                metrics.record_upstream_error(api, target, error.reason)
        sink = self.sink
        if sink is not None:
            usage = ctx.usage
            product = ctx.product
            subscription = ctx.subscription
            cache = ctx.semantic_cache
            hit = cache is not None and cache.hit  # the record then carries the tokens the cached answer saved
            if hit:
                prompt, completion = cache.prompt_tokens, cache.completion_tokens
                backend_name = None
            elif usage is not None:
                prompt, completion = usage.prompt_tokens, usage.completion_tokens
            else:
                prompt = completion = 0
            # the model the backend reported, else the one the request asked for
            model: str | None
            if usage is not None and usage.model:
                model = str(usage.model)
            else:
                exchange = ctx.llm
                model = exchange.model if exchange is not None else None
            record = UsageRecord(  # positional, in the field order: a third of the keyword call's cost
                ctx.request_id.decode("ascii"),
                int((self.wall_clock() - elapsed) * 1000),
                api,
                operation,
                subscription.name if subscription is not None else None,
                product.name if product is not None else None,
                backend_name,
                model,
                prompt,
                completion,
                status,
                elapsed * 1000.0,
                hit,
                self.gateway_id,
                ctx.block_reason,
                failed,
            )
            self._emit(record, sink)

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
        sink = self.sink
        if sink is not None and api is not None:
            record = UsageRecord(
                request_id=request_id.decode("ascii"),
                ts_ms=int((self.wall_clock() - elapsed) * 1000),
                api=api.name,
                operation=operation,
                subscription=None,
                product=None,
                backend=api.backend.name if api.backend is not None else None,
                model=None,
                prompt_tokens=0,
                completion_tokens=0,
                status=status,
                latency_ms=elapsed * 1000.0,
                cache_hit=False,
                gateway_id=self.gateway_id,
            )
            self._emit(record, sink)

    def _emit(self, record: UsageRecord, sink: UsageSink) -> None:
        """Hand ``record`` to the journal first (when there is one), then to the sink, with the journal's line."""
        journal = self.journal
        if journal is not None:
            sink.emit(record, journal.append(record))
        else:
            sink.emit(record)

    def finish_with_body(self, ctx: RequestContext) -> None:
        """Record the request of a streamed response when its body is over, before the end reaches the client: the
        last of ``ctx.on_finish``, which the streamed body (``gateway.forward.UpstreamBody``) runs when it ends,
        fails or is closed, after the policies' callbacks and before it reports its end (or returns the last bytes
        of a body of known length)."""
        ctx.on_finish.append(self.finish)
