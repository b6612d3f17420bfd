"""Leases of the Redis token store (docs/token-limits.md, "Leases"): admissions from a per-process grant without a
Redis command, the leftover given back, the merge, the grant's size, two stores on one limit, orphans, the breaker,
and leases off. Against Redis (REDIS_URL); lease ends are driven by calling the lease's timer method."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.limits import StoreUnavailable, minute_window, quota_window
from gateway.limits.breaker import BreakerState, CircuitBreaker
from gateway.limits.redis import LEASE_DIVISOR, RESERVE_SCRIPT, RedisTokenStore

from .helpers import NO_REDIS, REDIS_URL, FakeClock, Sent, make_store

pytestmark = pytest.mark.skipif(not REDIS_URL, reason=NO_REDIS)


async def raw(store: RedisTokenStore, window) -> int:
    """The counter in Redis, leases included."""
    value = await store.client.call("GET", store.prefix + window.key)
    return int(value) if value is not None else 0


async def lease_of(store: RedisTokenStore, windows, amount: int, limit_rounds: int = 6) -> int:
    """Admit ``amount`` until the store holds a lease on ``windows`` (the first admissions of a tuple ask for none);
    return how many tokens were admitted."""
    admitted = 0
    for _ in range(limit_rounds):
        admission = await store.reserve(windows, amount, store.now())
        assert admission.allowed
        admitted += amount
        lease = store._leases.get(id(windows))
        if lease is not None and lease.left:
            return admitted
    raise AssertionError("no lease was granted")


@contextlib.asynccontextmanager
async def leased(
    prefix: str, clock: FakeClock, name: str, limit: int = 10**5, **options: Any
) -> AsyncIterator[tuple[RedisTokenStore, tuple, int, Any]]:
    """A store holding a lease on the minute window ``name``: (store, windows, tokens admitted, the lease)."""
    store = make_store(prefix, clock, **options)
    windows = (minute_window(name, clock(), limit),)
    try:
        admitted = await lease_of(store, windows, 10)
        yield store, windows, admitted, store._leases[id(windows)]
    finally:
        await store.aclose()


async def test_an_admission_within_the_lease_sends_no_command(redis_prefix, clock: FakeClock):
    store = make_store(redis_prefix, clock)
    windows = (quota_window("one", "Daily", clock(), 10**6), minute_window("one", clock(), 10**5))
    try:
        admitted = await lease_of(store, windows, 10)
        sent = Sent(store)
        lease = store._leases[id(windows)]
        for _ in range(lease.left // 10):
            admission = await store.reserve(windows, 10, clock())
            admitted += 10
            assert admission.allowed and admission.used == (admitted, admitted)  # this process's view: exact
            assert admission.reservation.amount == 10 and admission.reservation.keys == tuple(w.key for w in windows)
        assert sent.commands == []
        assert [await store.count(w) for w in windows] == [admitted, admitted]
        assert await raw(store, windows[1]) == admitted + lease.left
        await store.reserve(windows, 10, clock())  # the lease is spent: to Redis again
        assert len(sent.commands) == 1
    finally:
        await store.aclose()


async def test_reserve_now_admits_from_the_lease_only(redis_prefix, clock: FakeClock):
    """``reserve_now`` (what ``llm-token-limit`` calls before awaiting ``reserve``) admits exactly as ``reserve`` does
    from a live lease that holds the amount, with no Redis command; otherwise it returns None and changes nothing."""
    store = make_store(redis_prefix, clock)
    windows = (quota_window("now", "Daily", clock(), 10**6), minute_window("now", clock(), 10**5))
    try:
        assert store.reserve_now(windows, 10, clock()) is None  # no lease yet
        admitted = await lease_of(store, windows, 10)
        lease = store._leases[id(windows)]
        sent = Sent(store)
        assert lease.left >= 10  # a grant is at least one request
        admission = store.reserve_now(windows, 3, clock())
        admitted += 3
        assert admission is not None and admission.allowed and admission.used == (admitted, admitted)
        assert admission.reservation == (tuple(w.key for w in windows), 3, max(w.expires_at for w in windows))
        assert store.reserve_now(list(windows), 1, clock()) is None  # another sequence: not this lease's
        left = lease.left
        assert store.reserve_now(windows, left + 1, clock()) is None and lease.left == left  # more than it holds
        assert store.reserve_now(windows, left, clock()) is not None and lease.left == 0
        assert store.reserve_now(windows, 1, clock()) is None  # spent
        assert sent.commands == []
        assert [await store.count(w) for w in windows] == [admitted + left] * 2
    finally:
        await store.aclose()


async def test_reserve_now_defers_to_reserve_once_the_lease_ended(redis_prefix, clock: FakeClock):
    async with leased(redis_prefix, clock, "ended") as (store, windows, admitted, lease):
        lease.deadline = 0.0  # its lifetime is over, its timer has not run yet: the leftover is still held
        assert lease.left and store.reserve_now(windows, 1, clock()) is None
        assert (await store.reserve(windows, 1, clock())).used == (admitted + 1,)  # the merge, through Redis


async def test_the_leftover_goes_back_when_the_lease_ends_and_on_flush(redis_prefix, clock: FakeClock):
    async with leased(redis_prefix, clock, "end") as (store, windows, admitted, lease):
        assert lease.handle is not None  # one timer for the grant
        assert await raw(store, windows[0]) == admitted + lease.left > admitted
        assert (await store.reserve(windows, 10, clock())).allowed  # from the lease
        admitted += 10
        lease.handle.cancel()
        store._end_lease(lease)  # what the timer does at the lease's end
        assert lease.left == 0 and lease.demand == 10  # what was admitted during the lease sizes the next
        await store.flush()
        assert await raw(store, windows[0]) == admitted
        admitted += await lease_of(store, windows, 10)  # granted again (the ended lease asked for its demand)
        assert store._leases[id(windows)].left
        await store.flush()  # gives every leftover back first
        assert await raw(store, windows[0]) == admitted == await store.count(windows[0])
        assert all(not lease.left for lease in store._leases.values())


async def test_a_request_larger_than_the_leftover_merges_it_with_its_admission(redis_prefix, clock: FakeClock):
    async with leased(redis_prefix, clock, "merge") as (store, windows, admitted, lease):
        leftover = lease.left
        sent = Sent(store)
        amount = leftover + 7
        admission = await store.reserve(windows, amount, clock())
        admitted += amount
        assert admission.allowed and admission.reservation.amount == amount  # settled as one request of `amount`
        assert b"$1\r\n7\r\n" in sent.commands[0]  # Redis was asked for the difference only
        assert admission.used == (admitted,)
        assert await raw(store, windows[0]) == admitted + lease.left
        store.settle(admission.reservation, amount - 3)
        await store.flush()
        assert await raw(store, windows[0]) == admitted - 3


async def test_a_refused_merge_gives_the_leftover_back_to_the_lease(redis_prefix, clock: FakeClock):
    """Redis decides as if the leftover were not there: a request that would not fit without a lease is refused,
    and the leftover it took returns to the lease."""
    limit = 4000
    async with leased(redis_prefix, clock, "refused", limit) as (store, windows, admitted, lease):
        leftover = lease.left
        counted = await raw(store, windows[0])
        amount = limit - admitted + 1  # fits exactly one token too many
        admission = await store.reserve(windows, amount, clock())
        assert not admission.allowed and admission.refused == 0
        assert admission.used == (admitted,)  # this process's view
        assert lease.left == leftover and await raw(store, windows[0]) == counted
        assert (await store.reserve(windows, amount - 1, clock())).allowed  # exactly the limit
        assert await store.count(windows[0]) == limit


async def test_no_lease_is_granted_when_a_sixteenth_of_the_room_is_less_than_the_request(
    redis_prefix, clock: FakeClock
):
    store = make_store(redis_prefix, clock)
    windows = (minute_window("small", clock(), 100),)
    try:
        for used in (10, 20, 30, 40):  # room after each: 90 ... 60; // 16 < 10
            admission = await store.reserve(windows, 10, clock())
            assert admission.used == (used,)
            assert await raw(store, windows[0]) == used
        assert all(not lease.left for lease in store._leases.values())
    finally:
        await store.aclose()


async def test_the_reserve_script(redis_prefix, clock: FakeClock):
    """extra = 0 behaves as without leases; a grant is min(extra, room // 16), and 0 when below the request's size."""
    store = make_store(redis_prefix, clock)
    key = redis_prefix + "script"
    expiry = int((clock() + 120) * 1000)

    async def run(amount: int, extra: int, size: int, limit: int) -> list[int]:
        reply = await store.client.call("EVAL", RESERVE_SCRIPT, 1, key, amount, extra, size, limit, expiry)
        assert isinstance(reply, list)
        return reply

    try:
        assert await run(10, 0, 0, 100) == [0, 0, 10]  # no lease asked: exactly the amount
        assert await run(91, 5, 91, 100) == [1, 0, 10]  # refused exactly as without a lease: counts as found
        assert await run(10, 50, 10, 400) == [0, 23, 43]  # room after 10: 380; // 16 = 23 < 50
        assert await run(10, 50, 30, 400) == [0, 0, 53]  # room 347 // 16 = 21 < 30, the request's size: none
        assert await run(10, 5, 10, 400) == [0, 0, 63]  # asked for less than the size: none
        assert await run(10, 20, 10, 10**6) == [0, 20, 93]  # plenty of room: what was asked
    finally:
        await store.aclose()


async def test_two_stores_on_one_small_limit(redis_prefix, clock: FakeClock):
    """Two processes (two stores, their own connections) hammering one limit: the counter never passes the limit,
    and together they admit at least limit - stores x the largest lease."""
    stores = [make_store(redis_prefix, clock) for _ in range(2)]
    limit, amount = 3000, 10
    granted: list[int] = []
    for store in stores:
        grant = store._grant

        def recording(lease, tokens, counts, now, loop, grant=grant):
            granted.append(tokens)
            assert max(counts) <= limit
            grant(lease, tokens, counts, now, loop)

        store._grant = recording  # type: ignore[method-assign]
    window = minute_window("shared", clock(), limit)
    windows_of = {id(store): (window,) for store in stores}  # each process keeps its own tuple
    admitted = 0

    async def client(store: RedisTokenStore) -> None:
        nonlocal admitted
        windows = windows_of[id(store)]
        for _ in range(limit // amount):
            admission = await store.reserve(windows, amount, clock())
            if admission.allowed:
                admitted += amount
            assert await raw(store, window) <= limit

    try:
        await asyncio.gather(*(client(store) for store in stores for _ in range(4)))
        assert granted and max(granted) >= amount
        assert limit - len(stores) * max(granted) <= admitted <= limit
        for store in stores:
            await store.flush()
        assert await raw(stores[0], window) == admitted
    finally:
        for store in stores:
            await store.aclose()


async def test_an_orphaned_grant_is_given_back_whole(redis_prefix, clock: FakeClock):
    async with leased(redis_prefix, clock, "orphan") as (store, windows, admitted, lease):
        assert lease.left == 10  # the third admission of 10 asked for the 10 admitted before it
        for _ in range(2):  # two admissions of 4 from the lease: 2 left, 8 admitted since the grant
            assert (await store.reserve(windows, 4, clock())).allowed
        admitted += 8
        sent = Sent(store)
        task = asyncio.ensure_future(store.reserve(windows, 8, clock()))  # takes the 2, asks for 6 and a lease of 16
        await asyncio.sleep(0)  # the command is queued and written
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert b"$1\r\n6\r\n$2\r\n16\r\n$1\r\n8\r\n" in sent.commands[0]
        assert lease.left == 2  # the taken leftover is back in the lease
        await store.flush()  # the leftover goes back; then the orphan's reply: 6 + the 16 granted
        for _ in range(100):
            if await raw(store, windows[0]) == admitted:
                break
            await store.flush()
        assert await raw(store, windows[0]) == admitted


async def test_an_open_breaker_refuses_even_with_a_lease(redis_prefix, clock: FakeClock):
    hold = asyncio.Event()  # never set: the breaker stays open until the test ends

    async def held(_: float) -> None:
        await hold.wait()

    async def ping() -> None:  # never reached: the breaker's wait before its probe is held
        raise AssertionError("probed")

    breaker = CircuitBreaker(ping, threshold=1, sleep=held)
    async with leased(redis_prefix, clock, "breaker", breaker=breaker) as (store, windows, _, lease):
        assert lease.left >= 10
        store.breaker.failure()
        assert store.breaker.state is BreakerState.OPEN
        assert store.reserve_now(windows, 10, clock()) is None and lease.left >= 10  # to reserve, which refuses
        with pytest.raises(StoreUnavailable, match="circuit open"):
            await store.reserve(windows, 10, clock())
        lease.handle.cancel()
        store._end_lease(lease)  # its leftover cannot go back: counted like a dropped settlement
        assert store.dropped_settlements == 1


async def test_lease_seconds_zero_sends_every_admission_to_redis(redis_prefix, clock: FakeClock):
    store = make_store(redis_prefix, clock, lease_seconds=0)
    windows = (minute_window("off", clock(), 10**5),)
    sent = Sent(store)
    try:
        for used in range(10, 110, 10):
            assert (await store.reserve(windows, 10, clock())).used == (used,)
        assert len(sent.commands) == 10
        assert all(b"$1\r\n0\r\n$1\r\n0\r\n" in command for command in sent.commands)  # no lease asked
        assert store._leases == {}
        assert await raw(store, windows[0]) == 100
    finally:
        await store.aclose()


def test_the_divisor_is_the_scripts():
    assert f"room / {LEASE_DIVISOR})" in RESERVE_SCRIPT


async def test_a_lease_whose_windows_are_over_is_forgotten(redis_prefix, clock: FakeClock):
    async with leased(redis_prefix, clock, "over") as (store, windows, _, lease):
        assert (await store.reserve(windows, 10, clock())).allowed  # from the lease: it has a demand
        lease.handle.cancel()
        clock.advance(60)  # the minute is over: the policy hands the next minute's windows from now on
        store._end_lease(lease)
        assert id(windows) not in store._leases


async def test_windows_handed_as_a_new_list_each_time_get_no_lease(redis_prefix, clock: FakeClock):
    """What quota-by-key does with its bandwidth window (a new ``[window]`` per request): every admission goes to
    Redis."""
    store = make_store(redis_prefix, clock)
    window = minute_window("list", clock(), 10**5)
    sent = Sent(store)
    try:
        for used in range(10, 110, 10):
            assert (await store.reserve([window], 10, clock())).used == (used,)
        assert len(sent.commands) == 10
        assert store._leases == {}
        assert await raw(store, window) == 100
    finally:
        await store.aclose()


@pytest.mark.parametrize("ended", ["deadline passed, timer not run", "timer ran, leftover just given back"])
async def test_the_leftover_of_an_ended_lease_never_refuses_its_own_process(redis_prefix, clock: FakeClock, ended):
    """Found by bench/lease_refusals.py (docs/benchmarks.md, fourteenth session): a process whose lease had ended
    was refused by its own leftover, still counted in Redis (its timer not run yet, or its return waiting in the
    settlements' batch). Now the leftover is merged with the admission, or its return is sent before it."""
    limit = 4000
    async with leased(redis_prefix, clock, "ended", limit) as (store, windows, admitted, lease):
        leftover = lease.left
        assert leftover >= 10
        filler = make_store(redis_prefix, clock, lease_seconds=0)  # another process, without leases
        try:
            fill = limit - await raw(store, windows[0]) - 1  # Redis one token short of the limit, leftover counted
            assert (await filler.reserve((minute_window("ended", clock(), limit),), fill, clock())).allowed
        finally:
            await filler.aclose()
        admitted += fill
        assert limit - admitted == leftover + 1  # what was really admitted leaves room for one more request of 10
        lease.handle.cancel()
        if ended == "deadline passed, timer not run":
            lease.deadline = lease.time()  # its lifetime is over; its timer has not run yet
        else:
            store._end_lease(lease)  # what the timer does: the leftover goes back, this admission right after
        sent = Sent(store)
        admission = await store.reserve(windows, 10, clock())
        admitted += 10
        assert admission.allowed and admission.used == (admitted,)
        assert len(sent.commands) == 1
        await store.flush()
        assert await raw(store, windows[0]) == admitted == await store.count(windows[0])
