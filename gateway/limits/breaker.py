"""A circuit breaker for the counter store: a hung or dead Redis costs a request at most one short timeout.

States (``sluice_redis_breaker_state``: 0 closed, 1 open, 2 half-open):

* **closed**: calls go to Redis, each bounded by ``call_timeout`` (0.5 s by default). ``threshold`` consecutive
  failures (refused connection, timeout, error reply) open the breaker.
* **open**: calls fail at once with StoreUnavailable (no I/O, no wait); the limit policy then applies its
  ``sluice-on-store-error`` choice. A background task probes Redis with ``PING``: the first probe ``min_backoff``
  (0.5 s) after opening, then after each failed probe the wait doubles, up to ``max_backoff`` (15 s).
* **half-open**: a probe is in flight. Requests still fail fast: only the probe touches Redis, so a Redis that
  answers slowly is not flooded by every waiting request at once. A successful probe closes the breaker.

Time is injected (``clock``, monotonic seconds, and ``sleep``), so tests drive the breaker without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Final, TypeVar

from .base import StoreUnavailable

__all__ = ("DEFAULT_CALL_TIMEOUT", "BreakerState", "CircuitBreaker")

logger = logging.getLogger("gateway.limits.breaker")

DEFAULT_CALL_TIMEOUT: Final = 0.5
DEFAULT_THRESHOLD: Final = 3
DEFAULT_MIN_BACKOFF: Final = 0.5
DEFAULT_MAX_BACKOFF: Final = 15.0
MSG_OPEN: Final = "the counter store is unreachable (circuit open; next probe in {:.1f} s)"

T = TypeVar("T")
Listener = Callable[["BreakerState", bool], None]  # (new state, whether this change opened the breaker)


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Guards the calls of one store. ``probe`` is an awaitable factory that succeeds only when Redis answers.

    Attributes:
        state: the current BreakerState.
        opened: how many times the breaker has opened.
        next_probe_at: ``clock()`` time of the next probe while open.
    """

    def __init__(
        self,
        probe: Callable[[], Awaitable[object]],
        *,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        threshold: int = DEFAULT_THRESHOLD,
        min_backoff: float = DEFAULT_MIN_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if threshold < 1 or call_timeout <= 0 or not 0 < min_backoff <= max_backoff:
            raise ValueError("breaker: threshold >= 1, call_timeout > 0 and 0 < min_backoff <= max_backoff")
        self.probe = probe
        self.call_timeout = call_timeout
        self.threshold = threshold
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.clock = clock
        self.sleep = sleep
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened = 0
        self.backoff = min_backoff
        self.next_probe_at = 0.0
        self.listeners: list[Listener] = []
        self._prober: asyncio.Task[None] | None = None

    @property
    def is_closed(self) -> bool:
        return self.state is BreakerState.CLOSED

    def retry_after(self) -> int:
        """Whole seconds until the next probe (at least 1): the ``Retry-After`` of a request refused meanwhile."""
        return max(1, int(-(-(self.next_probe_at - self.clock()) // 1)))

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` within ``call_timeout``; raise StoreUnavailable at once while the breaker is not closed."""
        if self.state is not BreakerState.CLOSED:
            raise self.open_error()
        # What asyncio.timeout() does (a timer that cancels this task; a cancellation of ours becomes the timeout,
        # one from outside propagates), without its context-manager object and running-loop look-ups: this runs
        # once per request with a token limit, and the bench measured the difference (docs/benchmarks.md).
        task = asyncio.current_task()
        assert task is not None, "CircuitBreaker.call runs in a task"
        cancelling = task.cancelling()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = task.get_loop().call_later(self.call_timeout, expire)
        try:
            result = await make()
        except asyncio.CancelledError:
            if not expired or task.uncancel() > cancelling:
                raise
            self.failure()
            raise self.timed_out() from None
        except TimeoutError as exc:
            self.failure()
            raise self.timed_out() from exc
        except StoreUnavailable:
            self.failure()
            raise
        finally:
            timer.cancel()
        self.success()
        return result

    def open_error(self) -> StoreUnavailable:
        """What a call made while the breaker is not closed raises (at once, without I/O)."""
        return StoreUnavailable(MSG_OPEN.format(max(0.0, self.next_probe_at - self.clock())))

    def timed_out(self) -> StoreUnavailable:
        return StoreUnavailable(f"the counter store did not answer within {self.call_timeout:g} s")

    def success(self) -> None:
        self.failures = 0

    def failure(self) -> None:
        """Count one failed call; the ``threshold``-th in a row opens the breaker."""
        if self.state is not BreakerState.CLOSED:
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self._open()

    def _open(self) -> None:
        self.opened += 1
        self.backoff = self.min_backoff
        self.next_probe_at = self.clock() + self.backoff
        self._set(BreakerState.OPEN, opened=True)
        logger.warning("counter store: %d failures in a row, circuit open (probing with PING)", self.failures)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (shutdown): nothing can probe
            return
        if self._prober is None or self._prober.done():
            self._prober = loop.create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        while self.state is not BreakerState.CLOSED:
            await self.sleep(max(0.0, self.next_probe_at - self.clock()))
            await self.probe_once()

    async def probe_once(self) -> bool:
        """One probe: close on success, else wait twice as long (up to ``max_backoff``) before the next."""
        self._set(BreakerState.HALF_OPEN)
        try:
            async with asyncio.timeout(self.call_timeout):
                await self.probe()
        except Exception as exc:  # any failure of the probe keeps the circuit open
            self.backoff = min(self.max_backoff, self.backoff * 2)
            self.next_probe_at = self.clock() + self.backoff
            self._set(BreakerState.OPEN)
            logger.info("counter store probe failed (%s); next in %.1f s", exc or type(exc).__name__, self.backoff)
            return False
        self.failures = 0
        self._set(BreakerState.CLOSED)
        logger.warning("counter store answers again; circuit closed")
        return True

    def _set(self, state: BreakerState, *, opened: bool = False) -> None:
        self.state = state
        for listener in self.listeners:
            try:
                listener(state, opened)
            except Exception:
                logger.exception("breaker listener failed")

    async def aclose(self) -> None:
        prober, self._prober = self._prober, None
        if prober is not None and not prober.done():
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober
