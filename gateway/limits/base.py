"""The token-counter store interface and the counter windows.

``reserve`` checks and adds an amount to every window of an admission in one atomic step; ``settle`` corrects them
later by ``actual - amount``. Windows are fixed and aligned in UTC: the minute and the quota periods (``Hourly`` …
``Yearly``). Every store passes the contract tests in tests/gateway/limits/; the clock is injected. See
docs/token-limits.md.
"""

from __future__ import annotations

import hashlib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final, NamedTuple

__all__ = (
    "GRACE_SECONDS",
    "PERIODS",
    "Admission",
    "Reservation",
    "StoreUnavailable",
    "TokenStore",
    "Window",
    "counter_tag",
    "minute_start",
    "minute_window",
    "period_bounds",
    "quota_window",
    "register_store",
    "registered_stores",
)

PERIODS: Final = ("Hourly", "Daily", "Weekly", "Monthly", "Yearly")
# Counters live this long past their window's end, so a settlement that arrives late still finds its counter and
# replicas whose clocks differ by less than this agree on the counter to use.
GRACE_SECONDS: Final = 5.0
MAX_KEY_LENGTH: Final = 200  # longer counter keys are replaced by their SHA-256


class StoreUnavailable(Exception):
    """The store could not answer (connection refused, timeout, error reply)."""


@dataclass(frozen=True, slots=True)
class Window:
    """One fixed counter window ``[start, end)`` (epoch seconds) of one counter key, with its limit."""

    key: str  # the store key without the store's prefix; ``{…}`` is the counter key (one Redis Cluster slot)
    limit: int
    start: float
    end: float

    @property
    def expires_at(self) -> float:
        return self.end + GRACE_SECONDS


class Reservation(NamedTuple):
    """What an admission added (``amount`` to each of ``keys``), needed to settle it. A named tuple (immutable, like
    ``Window``): one is built for every admission, and a tuple is built in a third of a frozen dataclass's
    instructions (sixth session, docs/benchmarks.md)."""

    keys: tuple[str, ...]
    amount: int
    expires_at: float  # after this no counter of the reservation exists any more


class Admission(NamedTuple):
    """The outcome of ``reserve`` (a named tuple, like ``Reservation``).

    ``used`` holds each window's count: after adding the reservation when ``allowed``, as found when refused.
    ``refused`` is the index of the first window that refused (-1 when allowed) and ``retry_after`` the whole
    seconds until that window ends (at least 1).
    """

    allowed: bool
    used: tuple[int, ...]
    reservation: Reservation | None = None
    refused: int = -1
    retry_after: int = 0

    def remaining(self, windows: Sequence[Window], index: int) -> int:
        return max(0, windows[index].limit - self.used[index])


def decide(windows: Sequence[Window], used: Sequence[int], amount: int, now: float) -> Admission | None:
    """The refusal for ``used`` counts (before reserving), or None when ``amount`` fits every window."""
    for index, window in enumerate(windows):
        if used[index] + amount > window.limit:
            return Admission(False, tuple(used), None, index, max(1, math.ceil(window.end - now)))
    return None


def reservation_for(windows: Sequence[Window], amount: int) -> Reservation:
    return Reservation(tuple(w.key for w in windows), amount, max(w.expires_at for w in windows))


#
# Windows
#


def counter_tag(counter_key: str) -> str:
    """The counter key as it goes inside a store key: itself, or its SHA-256 when longer than ``MAX_KEY_LENGTH``."""
    if len(counter_key) > MAX_KEY_LENGTH:
        return hashlib.sha256(counter_key.encode("utf-8", "surrogatepass")).hexdigest()
    return counter_key


def minute_start(now: float) -> float:
    """The start of the minute containing ``now``; every window starts on one (quota periods on whole UTC minutes)."""
    return now - now % 60.0


def minute_window(counter_key: str, now: float, limit: int) -> Window:
    start = minute_start(now)
    return Window(f"tl:{{{counter_tag(counter_key)}}}:m:{int(start)}", limit, start, start + 60.0)


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """``[start, end)`` of the UTC period containing ``now``."""
    t = datetime.fromtimestamp(now, UTC)
    if period == "Hourly":
        start = t.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif period == "Daily":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif period == "Weekly":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=t.weekday())
        end = start + timedelta(days=7)
    elif period == "Monthly":
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    elif period == "Yearly":
        start = t.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1)
    else:
        raise ValueError(f"unknown quota period {period!r} (expected one of {', '.join(PERIODS)})")
    return start.timestamp(), end.timestamp()


def quota_window(counter_key: str, period: str, now: float, limit: int) -> Window:
    start, end = period_bounds(period, now)
    return Window(f"tl:{{{counter_tag(counter_key)}}}:{period[0]}:{int(start)}", limit, start, end)


#
# Stores
#


class TokenStore(ABC):
    """Counters shared by the requests of one process (``memory``) or of every replica (``redis``).

    Attributes:
        name: the store's name in configuration.
        clock: epoch seconds; policies read the time from here (``now()``), so tests can move it.
        prefix: prepended to every key (tests use a unique one).
    """

    name: ClassVar[str] = ""

    def __init__(self, *, clock: Callable[[], float] = time.time, prefix: str = "sluice:") -> None:
        self.clock = clock
        self.prefix = prefix

    def now(self) -> float:
        return self.clock()

    @abstractmethod
    async def reserve(self, windows: Sequence[Window], amount: int, now: float) -> Admission:
        """Atomically: refuse if ``used + amount > limit`` for any window, else add ``amount`` to every window.

        Raises StoreUnavailable when the store cannot answer.
        """

    def reserve_now(self, windows: Sequence[Window], amount: int, now: float) -> Admission | None:
        """``reserve`` when the store can decide without waiting (the memory store always; the Redis store from this
        process's lease), with the same outcome; None when ``reserve`` must be awaited. Never raises
        ``StoreUnavailable``: a store that cannot answer returns None, and ``reserve`` raises."""
        return None

    @abstractmethod
    def settle(self, reservation: Reservation, actual: int) -> None:
        """Move the reservation's counters by ``actual - amount`` (counters already expired are left alone).

        Never blocks and never raises: a store may apply it later, batched with others.
        """

    @abstractmethod
    async def count(self, window: Window) -> int:
        """The current count of ``window`` (0 when absent); for tests and diagnostics."""

    def unavailable_retry_after(self) -> int:
        """Whole seconds (at least 1) a client refused because the store cannot answer should wait."""
        return 1

    async def flush(self) -> None:
        """Wait until every settlement made so far is applied."""
        return None

    async def aclose(self) -> None:
        """Release connections; pending settlements are flushed first when possible."""
        return None


_STORES: dict[str, type[TokenStore]] = {}


def register_store(cls: type[TokenStore]) -> type[TokenStore]:
    if not cls.name or cls.name in _STORES:
        raise ValueError(f"token store name {cls.name!r} is missing or already registered")
    _STORES[cls.name] = cls
    return cls


def registered_stores() -> Mapping[str, type[TokenStore]]:
    return _STORES
