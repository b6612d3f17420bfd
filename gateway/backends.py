"""Backend pools and circuit breakers: which backend a request goes to, and which backends get no traffic.

* A **pool** (a backend of type ``Pool``) lists member backends with a priority and a weight. The best priority
  group (lowest number) with an available member is used; within it members are chosen by smooth weighted
  round-robin (equal weights: plain round-robin). Lower groups get traffic only when every member of the better
  groups is tripped (or already tried by this request).
* A **circuit breaker rule** on a backend counts failures (status codes in ``status_ranges``, or gateway error
  reasons in ``error_reasons``) in a sliding window of ``interval`` seconds. ``count`` failures, or ``percentage``
  of at least ``min_samples`` answers, trip it for ``trip_duration`` seconds (or the backend's ``Retry-After``
  when ``accept_retry_after``, capped by ``max_trip``). A tripped backend gets no traffic.
* **Half-open**: once the trip time is over, one request (the probe) is let through; it closes the breaker when it
  succeeds and trips it again when it fails. Other requests are kept away while the probe is in flight (a probe
  that never reports, its client gone, frees the slot after ``probe_timeout``).
* **Shared state**: with a ``SharedBreakers`` (Redis), a trip is published with its expiry and polled by every
  replica, and the half-open probe is claimed with ``SET NX``, so one probe decides for all replicas.

Time is injected: ``clock`` (monotonic seconds) and ``wall_clock`` (Unix seconds, for state shared across hosts).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Final, Protocol

from gateway.model import BackendPool, BreakerRule, PoolMember
from gateway.redis import RespClient

if TYPE_CHECKING:
    from gateway.model import BackendTarget

__all__ = (
    "BackendPool",
    "BackendState",
    "BackendStates",
    "BreakerRule",
    "PoolMember",
    "RedisBreakers",
    "SharedBreakers",
    "parse_retry_after",
)

logger = logging.getLogger("gateway.backends")

BUCKETS: Final = 10  # the failure window is kept as this many buckets (memory does not grow with traffic)
DEFAULT_MAX_TRIP: Final = 3600.0
DEFAULT_PROBE_TIMEOUT: Final = 60.0

StateListener = Callable[[str, "BackendState"], None]


class BackendState(IntEnum):
    """What ``sluice_backend_state`` reports: 0 closed (taking traffic), 1 open (tripped), 2 half-open (probing)."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


def parse_retry_after(value: bytes | None, wall_now: float) -> float | None:
    """Seconds from a ``Retry-After`` value (delta seconds, or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return float(text)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - wall_now)


class SharedBreakers(Protocol):
    """Breaker state shared by the replicas (``gateway.backend_sync.RedisBreakers``)."""

    def publish_trip(self, name: str, until_wall: float, duration: float) -> None: ...

    def publish_close(self, name: str) -> None: ...

    async def claim_probe(self, name: str, ttl: float) -> bool: ...

    async def poll(self, states: BackendStates, names: list[str]) -> None: ...


@dataclass(slots=True)
class _Breaker:
    state: BackendState = BackendState.CLOSED
    open_until: float = 0.0  # clock() time the trip ends
    probe_started: float | None = None
    buckets: dict[int, list[int]] = field(default_factory=dict)  # bucket index -> [failures, answers]
    trips: int = 0
    last_trip_reason: str = ""
    probe_elsewhere: bool = False  # another replica holds the half-open probe (shared state)


class BackendStates:
    """The circuit breakers of one gateway process (shared through ``shared`` when given) and the round-robin
    positions of its pools."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall_clock: Callable[[], float] = time.time,
        max_trip: float = DEFAULT_MAX_TRIP,
        probe_timeout: float = DEFAULT_PROBE_TIMEOUT,
        shared: SharedBreakers | None = None,
    ) -> None:
        self.clock = clock
        self.wall_clock = wall_clock
        self.max_trip = max_trip
        self.probe_timeout = probe_timeout
        self.shared = shared
        self.listeners: list[StateListener] = []
        self._breakers: dict[str, _Breaker] = {}
        self._current: dict[tuple[str, str], int] = {}  # (pool, member) -> smooth weighted round-robin weight

    # state

    def _breaker(self, name: str) -> _Breaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = self._breakers[name] = _Breaker()
        return breaker

    def _set(self, name: str, breaker: _Breaker, state: BackendState) -> None:
        if breaker.state == state:
            return
        breaker.state = state
        for listener in self.listeners:
            try:
                listener(name, state)
            except Exception:
                logger.exception("backend state listener failed")

    def state(self, name: str) -> BackendState:
        """The current state of backend ``name`` (an open breaker whose trip is over reads as half-open)."""
        breaker = self._breakers.get(name)
        if breaker is None:
            return BackendState.CLOSED
        if breaker.state == BackendState.OPEN and self.clock() >= breaker.open_until:
            return BackendState.HALF_OPEN
        return breaker.state

    def retry_in(self, name: str) -> float:
        """Seconds until a tripped backend may be probed (0 when it is not tripped)."""
        breaker = self._breakers.get(name)
        if breaker is None or breaker.state != BackendState.OPEN:
            return 0.0
        return max(0.0, breaker.open_until - self.clock())

    def snapshot(self, names: Iterable[str]) -> dict[str, dict[str, object]]:
        """The state of each backend of ``names`` (for /__sluice/health and the heartbeat)."""
        out: dict[str, dict[str, object]] = {}
        for name in names:
            breaker = self._breakers.get(name)
            entry: dict[str, object] = {"state": self.state(name).label}
            if breaker is not None:
                entry["trips"] = breaker.trips
                if breaker.state == BackendState.OPEN:  # wall time, whole seconds: the heartbeat compares health
                    entry["open_until"] = int(self.wall_clock() + self.retry_in(name) + 0.5)
                    entry["reason"] = breaker.last_trip_reason
            out[name] = entry
        return out

    def apply_shared_trip(self, name: str, until_wall: float) -> None:
        """A trip published by another replica (``until_wall``: Unix time it ends)."""
        remaining = until_wall - self.wall_clock()
        if remaining <= 0:
            return
        breaker = self._breaker(name)
        until = self.clock() + remaining
        if breaker.state == BackendState.OPEN and breaker.open_until >= until:
            return
        breaker.open_until = until
        breaker.probe_started = None
        breaker.probe_elsewhere = False
        breaker.last_trip_reason = "tripped by another gateway"
        self._set(name, breaker, BackendState.OPEN)

    def apply_shared_close(self, name: str) -> None:
        breaker = self._breakers.get(name)
        if breaker is not None and breaker.state != BackendState.CLOSED:
            breaker.buckets.clear()
            breaker.probe_started = None
            breaker.probe_elsewhere = False
            self._set(name, breaker, BackendState.CLOSED)

    def forget_probe_elsewhere(self, name: str) -> None:
        """The other replica's probe left no verdict (it died): the next request here may probe."""
        breaker = self._breakers.get(name)
        if breaker is not None and breaker.probe_elsewhere:
            breaker.probe_elsewhere = False
            breaker.probe_started = None

    def waits_for_shared_probe(self, name: str) -> bool:
        breaker = self._breakers.get(name)
        return breaker is not None and breaker.probe_elsewhere

    # admission

    async def admit(self, target: BackendTarget) -> bool:
        """Whether a request may go to ``target`` now; claims the half-open probe when the trip is over."""
        if target.breaker is None:
            return True
        breaker = self._breakers.get(target.name or "")
        if breaker is None or breaker.state == BackendState.CLOSED:
            return True
        now = self.clock()
        if breaker.state == BackendState.OPEN and now < breaker.open_until:
            return False
        if breaker.probe_started is not None and now - breaker.probe_started < self.probe_timeout:
            return False  # a probe is in flight
        breaker.probe_started = now
        name = target.name or ""
        if self.shared is not None:
            try:
                claimed = await self.shared.claim_probe(name, self.probe_timeout)
            except Exception:  # the shared store is down: decide locally
                claimed = True
            if not claimed:  # another replica probes; keep away until it reports (RedisBreakers.poll)
                breaker.probe_started = now
                breaker.probe_elsewhere = True
                return False
        self._set(name, breaker, BackendState.HALF_OPEN)
        return True

    async def choose(
        self, pool_name: str, pool: BackendPool, tried: Iterable[str] = ()
    ) -> tuple[PoolMember | None, str]:
        """The member to send to, and why (for the trace); None when every member is tripped."""
        excluded = set(tried)
        for rank, group in enumerate(pool.groups):
            candidates = [m for m in group if m.target.name not in excluded]
            while candidates:
                member = self._next(pool_name, candidates)
                if await self.admit(member.target):
                    why = "round-robin" if len({m.weight for m in group}) == 1 else "weighted"
                    if len(group) == 1:
                        why = "only member"
                    if rank:
                        why += f" in priority group {member.priority} (better groups unavailable)"
                    return member, why
                candidates.remove(member)
        if excluded:  # everything untried is tripped: a declared retry may go back to a tried member
            again, why = await self.choose(pool_name, pool)
            return again, why + " (already tried by this request)" if again is not None else why
        return None, "every member is tripped"

    def _next(self, pool_name: str, candidates: list[PoolMember]) -> PoolMember:
        """Smooth weighted round-robin among ``candidates`` (weights of 0 count as 1 when all are 0)."""
        weights = [m.weight for m in candidates]
        if not any(weights):
            weights = [1] * len(candidates)
        total = sum(weights)
        best: PoolMember | None = None
        best_weight = 0
        current = self._current
        for member, weight in zip(candidates, weights, strict=True):
            key = (pool_name, member.target.name or "")
            value = current.get(key, 0) + weight
            current[key] = value
            if best is None or value > best_weight:
                best, best_weight = member, value
        assert best is not None
        current[(pool_name, best.target.name or "")] = best_weight - total
        return best

    # outcomes

    def record(
        self, target: BackendTarget, status: int | None, reason: str | None, retry_after: float | None = None
    ) -> bool:
        """Count one answer (``status``) or transport failure (``reason``) of ``target``; True when it tripped."""
        rule = target.breaker
        if rule is None:
            return False
        name = target.name or ""
        breaker = self._breaker(name)
        now = self.clock()
        failed = rule.is_failure(status, reason)
        if breaker.state != BackendState.CLOSED and breaker.probe_started is not None:  # the probe's answer
            breaker.probe_started = None
            if failed:
                return self._trip(name, breaker, rule, retry_after, now, f"probe failed ({status or reason})")
            breaker.buckets.clear()
            self._set(name, breaker, BackendState.CLOSED)
            if self.shared is not None:
                self.shared.publish_close(name)
            return False
        if breaker.state == BackendState.OPEN:
            return False  # an answer to a request sent before the trip
        width = rule.interval / BUCKETS
        index = int(now // width) if width > 0 else 0
        buckets = breaker.buckets
        for old in [i for i in buckets if i <= index - BUCKETS]:
            del buckets[old]
        counts = buckets.get(index)
        if counts is None:
            counts = buckets[index] = [0, 0]
        counts[1] += 1
        if not failed:
            return False
        counts[0] += 1
        failures = sum(c[0] for c in buckets.values())
        if rule.count is not None and failures >= rule.count:
            why = f"{failures} failure(s) within {rule.interval:g} s"
            return self._trip(name, breaker, rule, retry_after, now, why)
        if rule.percentage is not None:
            answers = sum(c[1] for c in buckets.values())
            if answers >= rule.min_samples and failures * 100 >= rule.percentage * answers:
                why = f"{failures}/{answers} failures within {rule.interval:g} s"
                return self._trip(name, breaker, rule, retry_after, now, why)
        return False

    def _trip(
        self, name: str, breaker: _Breaker, rule: BreakerRule, retry_after: float | None, now: float, why: str
    ) -> bool:
        duration = rule.trip_duration
        if rule.accept_retry_after and retry_after is not None:
            duration = min(retry_after, self.max_trip)
        breaker.open_until = now + duration
        breaker.probe_started = None
        breaker.buckets.clear()
        breaker.trips += 1
        breaker.last_trip_reason = why
        self._set(name, breaker, BackendState.OPEN)
        if self.shared is not None:
            self.shared.publish_trip(name, self.wall_clock() + duration, duration)
        return True

    def release_probe(self, target: BackendTarget) -> None:
        """A probe that got no answer worth judging (the client went away): let the next request probe."""
        breaker = self._breakers.get(target.name or "")
        if breaker is not None and breaker.state != BackendState.CLOSED:
            breaker.probe_started = None


_CLOSED: Final = b"closed"


class RedisBreakers:
    """Circuit breaker state shared by every replica through Redis.

    * ``{prefix}{name}:open`` holds the Unix time a trip ends, and expires then. A replica that trips a backend
      sets it; the others read it on their next ``poll`` (every ``SLUICE_POLL_INTERVAL``) and stop sending too.
    * ``{prefix}{name}:probe`` is the half-open probe: claimed with ``SET NX`` (only one replica probes), then set
      to ``closed`` for a few poll intervals when the probe succeeded, so the other replicas close as well. A
      failed probe sets ``:open`` again.

    Writes are sent without waiting for the reply; a Redis that is down only makes each replica decide alone.
    """

    def __init__(self, client: RespClient, *, prefix: str = "sluice:backend:", closed_ttl: float = 10.0) -> None:
        self.client = client
        self.prefix = prefix
        self.closed_ttl = closed_ttl

    def _key(self, name: str, what: str) -> str:
        return f"{self.prefix}{name}:{what}"

    def publish_trip(self, name: str, until_wall: float, duration: float) -> None:
        ttl_ms = max(1, int(duration * 1000))
        self.client.send("SET", self._key(name, "open"), repr(until_wall), "PX", ttl_ms, on_reply=_ignore)
        self.client.send("DEL", self._key(name, "probe"), on_reply=_ignore)

    def publish_close(self, name: str) -> None:
        self.client.send("DEL", self._key(name, "open"), on_reply=_ignore)
        ttl_ms = int(self.closed_ttl * 1000)
        self.client.send("SET", self._key(name, "probe"), _CLOSED, "PX", ttl_ms, on_reply=_ignore)

    async def claim_probe(self, name: str, ttl: float) -> bool:
        reply = await self.client.call("SET", self._key(name, "probe"), "probing", "NX", "PX", max(1, int(ttl * 1000)))
        return reply is not None

    async def poll(self, states: BackendStates, names: list[str]) -> None:
        """Apply what the other replicas published about ``names``."""
        if not names:
            return
        keys = [self._key(name, what) for name in names for what in ("open", "probe")]
        values = await self.client.call("MGET", *keys)
        for index, name in enumerate(names):
            until, probe = values[2 * index], values[2 * index + 1]
            if until is not None:
                try:
                    states.apply_shared_trip(name, float(until))
                except ValueError:
                    continue
            elif probe == _CLOSED:
                states.apply_shared_close(name)
            elif probe is None and states.waits_for_shared_probe(name):
                states.forget_probe_elsewhere(name)

    async def run(self, states: BackendStates, names: Callable[[], list[str]], interval: float) -> None:
        """Poll forever (a task of the gateway); errors are logged at debug level and retried."""
        while True:
            try:
                await self.poll(states, names())
            except (ConnectionError, TimeoutError, OSError) as exc:
                logger.debug("backend state poll failed: %s", exc)
            except Exception:
                logger.exception("backend state poll failed")
            await asyncio.sleep(interval)

    async def aclose(self) -> None:
        await self.client.aclose()


def _ignore(reply: object) -> None:
    return None
