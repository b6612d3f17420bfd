"""The Redis token store: counters shared by every gateway process and replica.

An admission is one atomic ``EVALSHA`` of ``RESERVE_SCRIPT`` over all its windows (one hash tag, so one Redis
Cluster slot); settlements are batched off the request path (``SETTLE_SCRIPT``, never re-creating an expired
window); every call goes through the circuit breaker (``breaker.py``). See docs/token-limits.md and
docs/redis-outage.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final

from gateway.redis import RespClient, RespError, encode_args

from .base import Admission, Reservation, StoreUnavailable, TokenStore, Window, register_store, reservation_for
from .breaker import DEFAULT_CALL_TIMEOUT, BreakerState, CircuitBreaker

__all__ = ("RESERVE_SCRIPT", "SETTLE_SCRIPT", "RedisTokenStore")

logger = logging.getLogger("gateway.limits.redis")

# KEYS: the windows' counters. ARGV[1]: amount; ARGV[2]: extra tokens asked for a lease; ARGV[3]: the smallest lease
# worth granting (the request's size); ARGV[2i+2], ARGV[2i+3]: limit and expiry (unix ms) of KEYS[i].
# Refuses exactly as without a lease (``used + amount > limit`` for some window): {i, 0, used_1, …} (counts as found).
# Else grants extra' = min(extra, min room after amount // LEASE_DIVISOR), 0 when below ARGV[3], adds amount + extra'
# to every counter and returns {0, extra', used_1, …} (the counts after adding). extra = 0: exactly one amount added.
RESERVE_SCRIPT: Final = """
local amount = tonumber(ARGV[1])
local extra = tonumber(ARGV[2])
local used = {}
for i = 1, #KEYS do
  used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
end
local room = nil
for i = 1, #KEYS do
  local left = tonumber(ARGV[2 * i + 2]) - used[i] - amount
  if left < 0 then
    local out = {i, 0}
    for j = 1, #KEYS do out[j + 2] = used[j] end
    return out
  end
  if room == nil or left < room then room = left end
end
if extra > 0 then
  local grant = math.floor(room / 16)
  if grant < extra then extra = grant end
  if extra < tonumber(ARGV[3]) then extra = 0 end
end
local total = amount + extra
local out = {0, extra}
for i = 1, #KEYS do
  local value = redis.call('INCRBY', KEYS[i], total)
  if value == total then redis.call('PEXPIREAT', KEYS[i], ARGV[2 * i + 3]) end
  out[i + 2] = value
end
return out
"""

# KEYS: the counters of one reservation; ARGV[1]: the correction (actual - reserved).
SETTLE_SCRIPT: Final = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[1]) end
end
return 0
"""

LOG_EVERY: Final = 10.0  # seconds between two log lines about failing settlements
# Settlements are gathered for this long and sent as one command per counter set: under load many requests share
# a counter (one subscription, one minute), so this turns hundreds of writes a second into a few. Delaying a
# correction does not weaken the admission bound (docs/token-limits.md); it only keeps a request "in flight" a few
# milliseconds longer.
SETTLE_INTERVAL: Final = 0.005
# Admissions encoded per window set (the policies hand the same windows to every request of a counter key and minute):
# forgotten all at once when this many are kept.
ENCODED_MAX: Final = 4096
# The breaker's closed state, read by every admission and settlement: on Python 3.11 an enum member read through its
# class (``BreakerState.CLOSED``) costs about 900 machine instructions, a module global about a tenth of that.
_CLOSED: Final = BreakerState.CLOSED
# A lease (docs/token-limits.md, "Leases") takes at most this share of the room left in the tightest window, so the
# processes sharing a counter can strand at most (processes - 1) / LEASE_DIVISOR of it.
LEASE_DIVISOR: Final = 16  # the divisor written in RESERVE_SCRIPT
LEASE_SECONDS: Final = 0.5  # the default lifetime of a lease (SLUICE_TOKEN_LEASE_SECONDS)


# What the admissions of one window set share: the EVALSHA before and after the amount, the reservation's keys, expiry.
_Encoded = tuple[bytes, bytes, tuple[str, ...], float]


class _Lease:
    """This process's lease on one window tuple: tokens reserved in Redis and not yet spent (``left``), admitted here
    without a Redis command until ``deadline`` (loop clock); the counts Redis returned at the grant; what was admitted
    since the grant (the next lease's size); ``asking``: an admission asking for a lease is in flight."""

    __slots__ = (
        "admitted",
        "asking",
        "counts",
        "deadline",
        "demand",
        "end",
        "expires_at",
        "handle",
        "keys",
        "left",
        "time",
        "windows",
    )

    def __init__(self, windows: tuple[Window, ...], keys: tuple[str, ...], expires_at: float) -> None:
        self.windows = windows  # kept, so its id stays its own while the lease is known by it
        self.keys = keys
        self.expires_at = expires_at
        self.end = min(window.end for window in windows)  # no lease lives past the first window's end
        self.left = 0
        self.counts: tuple[int, ...] = ()
        self.deadline = 0.0
        self.time: Callable[[], float] = _no_loop  # the clock of the loop of the last grant
        self.handle: asyncio.TimerHandle | None = None
        self.admitted = 0  # tokens admitted since the last grant (or since the lease ended)
        self.demand = 0  # tokens admitted during the last lifetime that ended by time
        self.asking = False

    def live(self) -> bool:
        return self.time() < self.deadline


def _no_loop() -> float:
    """The clock of a lease never granted: always past its deadline."""
    return math.inf


def _sha1(script: str) -> str:
    return hashlib.sha1(script.encode("utf-8"), usedforsecurity=False).hexdigest()


@register_store
class RedisTokenStore(TokenStore):
    name = "redis"

    def __init__(
        self,
        *,
        url: str,
        clock: Callable[[], float] | None = None,
        prefix: str = "sluice:",
        connect_timeout: float = 2.0,
        timeout: float = 2.0,
        client: RespClient | None = None,
        settle_interval: float = SETTLE_INTERVAL,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        breaker: CircuitBreaker | None = None,
        lease_seconds: float = LEASE_SECONDS,
        **_: Any,
    ) -> None:
        if clock is None:
            super().__init__(prefix=prefix)
        else:
            super().__init__(clock=clock, prefix=prefix)
        self.url = url
        self.client = client or RespClient(url, connect_timeout=connect_timeout, timeout=timeout)
        self._reserve_sha = _sha1(RESERVE_SCRIPT)
        self._settle_sha = _sha1(SETTLE_SCRIPT)
        self._pending: dict[tuple[str, ...], int] = {}
        self._heads: dict[tuple[str, int, int], bytes] = {}
        # windows -> (EVALSHA head and keys, the limits and expiries after the amount, the reservation's keys, expiry)
        self._encoded: dict[tuple[Window, ...], _Encoded] = {}
        # id(windows) -> (windows, their encoding), for a tuple of windows handed in again (the token-limit policy
        # keeps its windows): found without hashing the windows; the entry keeps the tuple, so its id stays its own
        self._by_identity: dict[int, tuple[tuple[Window, ...], _Encoded]] = {}
        # counter set -> (its settlement's EVALSHA before the correction, its keys with the prefix): a counter set is
        # settled every settle_interval while its requests last, with the same keys each time
        self._settle_heads: dict[tuple[str, ...], tuple[bytes, tuple[str, ...]]] = {}
        self._flush_scheduled = False
        self._last_log = 0.0
        # (deadline, reply future) of each admission in flight, in the order sent; the loop whose timer (one for
        # them all, ``_expire_due``) is armed, None when none is
        self._deadlines: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._deadline_loop: asyncio.AbstractEventLoop | None = None
        self.settle_interval = settle_interval
        self.breaker = breaker or CircuitBreaker(self._ping, call_timeout=call_timeout)
        self.dropped_settlements = 0
        # id(windows) -> this process's lease on them (``_Lease``); 0 seconds: no leases, every admission to Redis
        self.lease_seconds = lease_seconds
        self._leases: dict[int, _Lease] = {}

    def unavailable_retry_after(self) -> int:
        return self.breaker.retry_after()

    async def _ping(self) -> None:
        await self.client.call("PING")

    def _evalsha_head(self, sha: str, keys: int, args: int) -> bytes:
        """``EVALSHA sha numkeys`` in RESP, with the array count for ``keys`` keys and ``args`` args (cached)."""
        head = self._heads.get((sha, keys, args))
        if head is None:
            head = b"*%d\r\n" % (3 + keys + args) + encode_args(("EVALSHA", sha, keys))
            self._heads[(sha, keys, args)] = head
        return head

    def reserve_now(self, windows: Sequence[Window], amount: int, now: float) -> Admission | None:
        """The admission from this process's lease on ``windows`` (the same tuple) when the lease lives, holds
        ``amount`` and the breaker is closed: no Redis command (docs/token-limits.md, "Leases"); None otherwise."""
        if self.breaker.state is _CLOSED:
            lease = self._leases.get(id(windows))
            if lease is not None and lease.windows is windows:
                left = lease.left
                if amount <= left and left and lease.deadline > lease.time():
                    return self._from_lease(lease, amount)
        return None

    async def reserve(self, windows: Sequence[Window], amount: int, now: float) -> Admission:
        # What ``breaker.call`` does, in this one frame: the admission runs once per request, and each coroutine level
        # between the policy and the reply's future cost a resume when Redis answers (docs/benchmarks.md, redis6).
        # Refuse at once while the breaker is not closed; bound the wait by its call timeout (a timer fails the
        # reply's future with the breaker's timeout error; the reply, when it comes, goes to ``orphan``); count the
        # failure or the success. A cancellation from outside propagates and counts as neither, as in ``call``.
        admission = self.reserve_now(windows, amount, now)
        if admission is not None:
            return admission
        breaker = self.breaker
        if breaker.state is not _CLOSED:
            raise breaker.open_error()
        lease = self._leases.get(id(windows))
        if lease is not None and lease.windows is not windows:
            lease = None
        known = self._by_identity.get(id(windows))
        encoded = known[1] if known is not None and known[0] is windows else self._encoding(windows)
        head, tail, keys, expires_at = encoded
        # the named tuples through tuple.__new__: their generated __new__ is a Python call each
        reservation = tuple.__new__(Reservation, (keys, amount, expires_at))
        taken = extra = 0
        if self.lease_seconds > 0 and known is not None and known[0] is windows:
            if lease is None:
                lease = self._new_lease(windows, keys, expires_at)
            else:
                # the leftover, ours alone: Redis is asked for the rest. Also once the lease has ended and its timer
                # has not given the leftover back yet: it is still counted in Redis, so it must not refuse this
                taken, lease.left = lease.left, 0
                if not lease.asking:  # live: it ran out before its end (the demand outran it); else it ended
                    extra = 2 * lease.admitted if lease.live() else max(lease.demand, lease.admitted)
            if extra and now < lease.end:
                lease.asking = True
            else:
                extra = 0

        def orphan(reply: Any) -> None:  # the caller went away after Redis reserved: give the tokens back
            if isinstance(reply, list) and reply and reply[0] == 0:
                self.settle(tuple.__new__(Reservation, (keys, amount - taken + reply[1], expires_at)), 0)

        data = b"%d" % (amount - taken)
        command = b"%s$%d\r\n%s\r\n%s%s" % (head, len(data), data, self._lease_args(extra, amount), tail)
        future = self.client.submit_encoded(command, orphan)
        loop = future.get_loop()
        deadline = loop.time() + breaker.call_timeout
        deadlines = self._deadlines
        deadlines.append((deadline, future))
        if self._deadline_loop is not loop:  # no timer armed on this loop: arm one for this deadline
            self._deadline_loop = loop
            loop.call_at(deadline, self._expire_due)
        reply: Any = None
        try:
            reply = await future
            if isinstance(reply, RespError):
                if reply.code != "NOSCRIPT":
                    raise reply
                reply = await self._load_and_reserve(command, orphan, deadline)
        except StoreUnavailable:  # the call timed out
            breaker.failure()
            raise
        except (RespError, ConnectionError, OSError, TimeoutError) as exc:
            breaker.failure()
            raise StoreUnavailable(str(exc)) from exc
        finally:
            if deadlines and deadlines[0][1] is future:  # replies come in order: this one is nearly always first
                deadlines.popleft()
            if lease is not None:
                if extra:
                    lease.asking = False
                if taken and not (type(reply) is list and reply[0] == 0):  # not admitted: the leftover goes back
                    self._give_back(lease, taken)
        breaker.failures = 0  # breaker.success()
        refused = reply[0]
        if lease is None:
            used = tuple(reply[2:])  # the script's integer replies: ints already
        else:
            if refused == 0:
                lease.admitted += amount
                if reply[1]:
                    self._grant(lease, reply[1], tuple(reply[2:]), now, loop)
                unspent = lease.left
            elif amount <= lease.left and lease.live():
                # refused by Redis, which counts this process's lease: granted to another admission while this one
                # was in flight (or its own leftover, given back): admitted from the lease, never refused by it
                return self._from_lease(lease, amount)
            else:
                unspent = lease.left + (0 if lease.live() else taken)  # (a leftover given back to Redis: unapplied)
            used = tuple([u - unspent for u in reply[2:]])  # this process's view: its unspent lease not counted
        if refused == 0:
            return tuple.__new__(Admission, (True, used, reservation, -1, 0))
        window = windows[refused - 1]
        return Admission(False, used, None, refused - 1, max(1, int(-(-(window.end - now) // 1))))

    @staticmethod
    def _from_lease(lease: _Lease, amount: int) -> Admission:
        """Admit ``amount`` from the lease's leftover (at least ``amount``): no Redis command."""
        left = lease.left - amount
        lease.left = left
        lease.admitted += amount
        counts = lease.counts  # this process's view: its unspent lease not counted
        # one window (a per-minute limit alone) without a comprehension: on 3.11 that is a function call (~1.6 k
        # machine instructions more)
        used = (counts[0] - left,) if len(counts) == 1 else tuple([u - left for u in counts])
        reservation = tuple.__new__(Reservation, (lease.keys, amount, lease.expires_at))
        return tuple.__new__(Admission, (True, used, reservation, -1, 0))

    @staticmethod
    def _lease_args(extra: int, size: int) -> bytes:
        """The script's ARGV[2] and ARGV[3] in RESP: the extra tokens asked for a lease and the smallest worth it."""
        if not extra:
            return b"$1\r\n0\r\n$1\r\n0\r\n"
        first, second = b"%d" % extra, b"%d" % size
        return b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(first), first, len(second), second)

    def _new_lease(self, windows: tuple[Window, ...], keys: tuple[str, ...], expires_at: float) -> _Lease:
        """The lease state of a window tuple seen for the first time (nothing granted: its first admission asks for
        none). Forgotten all at once, with the leases that hold nothing, when too many are kept."""
        leases = self._leases
        if len(leases) >= ENCODED_MAX:
            for key in [key for key, lease in leases.items() if not lease.left and not lease.asking]:
                self._drop_lease(leases.pop(key))
        lease = leases[id(windows)] = _Lease(windows, keys, expires_at)
        return lease

    def _grant(
        self, lease: _Lease, granted: int, counts: tuple[int, ...], now: float, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Redis granted ``granted`` tokens: they are the lease until ``lease_seconds`` pass (loop clock) or the first
        window ends, whichever comes first; one timer per grant gives back what is left then."""
        if lease.left:  # a leftover given back by a refused admission while this one was asking: to Redis
            self._return(lease, lease.left)
        lease.left = granted
        lease.counts = counts
        lease.admitted = 0
        lease.time = loop.time
        lease.deadline = loop.time() + min(self.lease_seconds, lease.end - now)
        if lease.handle is not None:
            lease.handle.cancel()
        lease.handle = loop.call_at(lease.deadline, self._end_lease, lease)

    def _end_lease(self, lease: _Lease) -> None:
        """The lease's timer: give its leftover back to Redis (through the settlements); what was admitted during its
        lifetime sizes the next."""
        lease.handle = None
        lease.deadline = 0.0
        if lease.left:
            self._return(lease, lease.left)
            lease.left = 0
        lease.demand, lease.admitted = lease.admitted, 0
        if lease.asking or self._leases.get(id(lease.windows)) is not lease:
            return
        if not lease.demand or self.clock() >= lease.end:  # idle, or its windows are over (the policy moved on)
            del self._leases[id(lease.windows)]  # the next admission of these windows starts afresh

    def _give_back(self, lease: _Lease, tokens: int) -> None:
        """A leftover taken by an admission that was not admitted: to the lease while it lives, else to Redis."""
        if lease.live():
            lease.left += tokens
        else:
            self._return(lease, tokens)

    def _return(self, lease: _Lease, tokens: int) -> None:
        """Give ``tokens`` of the lease back to Redis, through the settlements (dropped, and counted, while the
        breaker is not closed; left alone once its counters expired), sent at once rather than after
        ``settle_interval``: this process's next admission, sent after it on the same connection, finds them back
        (a leftover waiting in the batch would refuse it early)."""
        self.settle(tuple.__new__(Reservation, (lease.keys, tokens, lease.expires_at)), 0)
        if self._pending:
            self._send_settlements()

    def _drop_lease(self, lease: _Lease) -> None:
        if lease.handle is not None:
            lease.handle.cancel()
        self._end_lease(lease)

    def _expire_due(self) -> None:
        """The admissions' timer: fail every admission whose deadline has passed and that has no reply yet with the
        breaker's timeout error, drop those answered, and arm again for the first deadline still to come. One timer
        for all the admissions in flight instead of one each (a ``call_later`` and its ``cancel`` cost about 2 µs
        per admission under uvloop); all have the same call timeout, so deadlines come in the order they were set."""
        loop, self._deadline_loop = self._deadline_loop, None
        if loop is None:
            return
        deadlines = self._deadlines
        now = loop.time()
        while deadlines:
            deadline, future = deadlines[0]
            if not future.done() and future.get_loop() is loop:  # (another loop's: a loop closed while waiting)
                if deadline > now:
                    self._deadline_loop = loop
                    loop.call_at(deadline, self._expire_due)
                    return
                future.set_exception(self.breaker.timed_out())
            deadlines.popleft()

    async def _load_and_reserve(self, command: bytes, orphan: Callable[[Any], None], deadline: float) -> Any:
        """Redis does not know the script (restarted, flushed): load it and send the admission again, by the first
        attempt's deadline."""
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                await self.client.call("SCRIPT", "LOAD", RESERVE_SCRIPT)
                return await self.client.call_encoded(command, orphan)
        except TimeoutError:
            if scope.expired():
                raise self.breaker.timed_out() from None
            raise

    def _encode_windows(self, windows: tuple[Window, ...]) -> _Encoded:
        """What the admissions of ``windows`` share: the command before and after the amount, the reservation's
        keys and expiry."""
        limits: list[int] = []
        for window in windows:
            limits.append(window.limit)
            limits.append(int(window.expires_at * 1000))
        head = self._evalsha_head(self._reserve_sha, len(windows), 3 + len(limits))
        reservation = reservation_for(windows, 0)
        encoded = (
            head + encode_args([self.prefix + key for key in reservation.keys]),
            encode_args(limits),
            reservation.keys,
            reservation.expires_at,
        )
        if len(self._encoded) >= ENCODED_MAX:
            self._encoded.clear()
        self._encoded[windows] = encoded
        return encoded

    def _encoding(self, windows: Sequence[Window]) -> _Encoded:
        """The encoding of ``windows`` (see ``_encode_windows``) when ``reserve`` did not find it by identity."""
        key = windows if type(windows) is tuple else tuple(windows)
        encoded = self._encoded.get(key)
        if encoded is None:
            encoded = self._encode_windows(key)
        if key is windows:
            if len(self._by_identity) >= ENCODED_MAX:
                self._by_identity.clear()
            self._by_identity[id(key)] = (key, encoded)
        return encoded

    def settle(self, reservation: Reservation, actual: int) -> None:
        delta = actual - reservation.amount
        if delta == 0 or self.clock() >= reservation.expires_at:
            return
        # breaker not closed: nothing would answer, so do not pile commands on a dead connection
        if self.breaker.state is not _CLOSED:
            self.dropped_settlements += 1
            return
        pending = self._pending
        pending[reservation.keys] = pending.get(reservation.keys, 0) + delta
        if not self._flush_scheduled:
            self._flush_scheduled = True
            try:
                # the connection's loop: the admission before this settlement opened it on the running one
                self.client.running_loop().call_later(self.settle_interval, self._send_settlements)
            except RuntimeError:  # no running loop, or the connection's is closed (shutdown): nothing can be sent
                self._flush_scheduled = False
                self._pending.clear()

    def _send_settlements(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        heads = self._settle_heads
        for keys, delta in pending.items():
            if delta == 0:
                continue
            encoded = heads.get(keys)
            if encoded is None:
                encoded = self._settle_head(keys)
            head, full = encoded
            self.client.send_encoded(head + encode_args((delta,)), partial(self._settled, full, delta))

    def _settle_head(self, keys: tuple[str, ...]) -> tuple[bytes, tuple[str, ...]]:
        """The settlement of ``keys`` up to its correction (``EVALSHA sha numkeys keys…``), and the keys with the
        prefix; kept for the next settlements of the same counters (forgotten all at once when too many)."""
        full = tuple(self.prefix + key for key in keys)
        encoded = self._evalsha_head(self._settle_sha, len(full), 1) + encode_args(full), full
        if len(self._settle_heads) >= ENCODED_MAX:
            self._settle_heads.clear()
        self._settle_heads[keys] = encoded
        return encoded

    def _settled(self, keys: tuple[str, ...], delta: int, reply: Any) -> None:
        if isinstance(reply, RespError) and reply.code == "NOSCRIPT":
            self.client.send("EVAL", SETTLE_SCRIPT, len(keys), *keys, delta, on_reply=self._log_failure)
            return
        self._log_failure(reply)

    def _log_failure(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            now = time.monotonic()
            if now - self._last_log >= LOG_EVERY:
                self._last_log = now
                logger.warning("token settlement not applied: %s", reply)

    async def count(self, window: Window) -> int:
        """Redis's count less this process's unspent leases on ``window`` (a lone process sees what it admitted)."""
        count = await self.breaker.call(lambda: self._count(window))
        return count - sum(lease.left for lease in self._leases.values() if window.key in lease.keys)

    def _return_leases(self) -> None:
        """End every lease now (``flush``, ``aclose``): their leftovers go back with the settlements."""
        for lease in list(self._leases.values()):
            if lease.left:
                self._drop_lease(lease)

    async def _count(self, window: Window) -> int:
        try:
            value = await self.client.call("GET", self.prefix + window.key)
        except (RespError, ConnectionError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        return int(value) if value is not None else 0

    async def flush(self) -> None:
        self._return_leases()
        if self._pending:
            self._send_settlements()
        try:
            await self.client.call("PING")  # replies come in order: the settlements before it are applied
        except (RespError, ConnectionError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def aclose(self) -> None:
        self._return_leases()
        try:
            if self.breaker.is_closed and (self._pending or self.client.pending):
                await self.flush()
        except StoreUnavailable:
            pass
        await self.breaker.aclose()
        await self.client.aclose()
