"""The in-process token store: the embedded default (no ``REDIS_URL``) and the reference for the contract tests.

Each process has its own counters, so with several gateway workers or replicas every one of them enforces the limit
on its own; use the ``redis`` store to share them. Reservation and settlement run synchronously on the event loop,
which makes them atomic without locks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .base import Admission, Reservation, TokenStore, Window, decide, register_store, reservation_for

__all__ = ("MemoryTokenStore",)

SWEEP_EVERY = 4096  # admissions between two sweeps of expired counters


@register_store
class MemoryTokenStore(TokenStore):
    name = "memory"

    def __init__(self, *, clock: Callable[[], float] | None = None, prefix: str = "sluice:", **_: Any) -> None:
        if clock is None:
            super().__init__(prefix=prefix)
        else:
            super().__init__(clock=clock, prefix=prefix)
        self._counters: dict[str, list[float]] = {}  # key -> [count, expires_at]
        self._until_sweep = SWEEP_EVERY

    async def reserve(self, windows: Sequence[Window], amount: int, now: float) -> Admission:
        return self.reserve_now(windows, amount, now)

    def reserve_now(self, windows: Sequence[Window], amount: int, now: float) -> Admission:
        """``reserve`` without awaiting (the memory store never waits)."""
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self._sweep(now)
        counters = self._counters
        prefix = self.prefix
        entries: list[list[float] | None] = []
        used: list[int] = []
        for window in windows:
            entry = counters.get(prefix + window.key)
            if entry is not None and entry[1] <= now:
                entry = None
            entries.append(entry)
            used.append(int(entry[0]) if entry is not None else 0)
        refusal = decide(windows, used, amount, now)
        if refusal is not None:
            return refusal
        for index, window in enumerate(windows):
            entry = entries[index]
            if entry is None:
                counters[prefix + window.key] = [amount, window.expires_at]
                used[index] = amount
            else:
                entry[0] += amount
                used[index] = int(entry[0])
        return Admission(True, tuple(used), reservation_for(windows, amount))

    def settle(self, reservation: Reservation, actual: int) -> None:
        delta = actual - reservation.amount
        if delta == 0:
            return
        now = self.clock()
        for key in reservation.keys:
            entry = self._counters.get(self.prefix + key)
            if entry is not None and entry[1] > now:
                entry[0] += delta

    async def count(self, window: Window) -> int:
        entry = self._counters.get(self.prefix + window.key)
        if entry is None or entry[1] <= self.clock():
            return 0
        return int(entry[0])

    def _sweep(self, now: float) -> None:
        self._until_sweep = SWEEP_EVERY
        expired = [key for key, entry in self._counters.items() if entry[1] <= now]
        for key in expired:
            del self._counters[key]
