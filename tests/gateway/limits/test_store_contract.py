"""The token-store contract: the same tests for every store (memory always; Redis when REDIS_URL is set)."""

from __future__ import annotations

import asyncio
import random

from gateway.limits import Admission, TokenStore, minute_window, quota_window

from .helpers import FakeClock


def windows_for(clock: FakeClock, tpm: int = 100, quota: int | None = None, key: str = "sub-1"):
    now = clock()
    windows = []
    if quota is not None:
        windows.append(quota_window(key, "Daily", now, quota))
    windows.append(minute_window(key, now, tpm))
    return windows


async def test_reserves_within_the_limit(store: TokenStore, clock: FakeClock):
    windows = windows_for(clock, tpm=100)
    first = await store.reserve(windows, 60, clock())
    assert first.allowed and first.used == (60,) and first.refused == -1
    assert first.reservation is not None and first.reservation.amount == 60
    second = await store.reserve(windows, 40, clock())  # exactly up to the limit
    assert second.allowed and second.used == (100,)
    assert await store.count(windows[0]) == 100


async def test_refuses_over_the_limit_without_counting(store: TokenStore, clock: FakeClock):
    windows = windows_for(clock, tpm=100)
    await store.reserve(windows, 70, clock())
    clock.advance(18.4)  # 19.4 s into the minute: 40.6 s left
    refused = await store.reserve(windows, 31, clock())
    assert not refused.allowed and refused.reservation is None
    assert refused.refused == 0 and refused.used == (70,)
    assert refused.retry_after == 41
    assert refused.remaining(windows, 0) == 30
    assert await store.count(windows[0]) == 70
    assert (await store.reserve(windows, 30, clock())).allowed


async def test_every_window_must_fit_and_the_first_refusal_is_reported(store: TokenStore, clock: FakeClock):
    windows = windows_for(clock, tpm=100, quota=150)  # [quota, minute]
    assert (await store.reserve(windows, 90, clock())).allowed
    refused = await store.reserve(windows, 20, clock())  # the minute refuses (110 > 100); the quota would fit
    assert not refused.allowed and refused.refused == 1 and refused.used == (90, 90)
    clock.advance(60)  # next minute: the quota still has 60 left
    windows = windows_for(clock, tpm=100, quota=150)
    assert (await store.reserve(windows, 60, clock())).used == (150, 60)
    refused = await store.reserve(windows, 1, clock())
    assert not refused.allowed and refused.refused == 0  # the quota: 403, retry at midnight
    assert refused.retry_after > 60
    # nothing was added to the minute by the refused admission
    assert await store.count(windows[1]) == 60


async def test_zero_amount_is_admitted_until_the_counter_is_over(store: TokenStore, clock: FakeClock):
    windows = windows_for(clock, tpm=10)
    reservation = (await store.reserve(windows, 10, clock())).reservation
    assert (await store.reserve(windows, 0, clock())).allowed
    store.settle(reservation, 15)  # overshoot detected on the response
    await store.flush()
    refused = await store.reserve(windows, 0, clock())
    assert not refused.allowed and refused.used == (15,)


async def test_settle_moves_the_counters_by_actual_minus_reserved(store: TokenStore, clock: FakeClock):
    windows = windows_for(clock, tpm=1000, quota=5000)
    admission = await store.reserve(windows, 300, clock())
    other = await store.reserve(windows, 200, clock())
    store.settle(admission.reservation, 120)  # used less than reserved
    store.settle(other.reservation, 260)  # used more
    await store.flush()
    assert [await store.count(w) for w in windows] == [380, 380]
    store.settle(admission.reservation, 300)  # a no-op correction is not sent
    await store.flush()
    assert await store.count(windows[1]) == 380


async def test_settle_after_the_window_is_over_changes_nothing(store: TokenStore, clock: FakeClock):
    windows = windows_for(clock, tpm=100)
    admission = await store.reserve(windows, 50, clock())
    clock.advance(120)  # two minutes later, past the grace period
    store.settle(admission.reservation, 10)
    await store.flush()
    fresh = windows_for(clock, tpm=100)
    assert fresh[0].key != windows[0].key
    assert (await store.reserve(fresh, 100, clock())).used == (100,)


async def test_a_new_minute_starts_from_zero(store: TokenStore, clock: FakeClock):
    windows = windows_for(clock, tpm=100)
    await store.reserve(windows, 100, clock())
    refused = await store.reserve(windows, 1, clock())
    assert refused.retry_after == 59
    clock.advance(59)
    windows = windows_for(clock, tpm=100)
    assert (await store.reserve(windows, 100, clock())).allowed


async def test_counter_keys_are_independent(store: TokenStore, clock: FakeClock):
    a, b = windows_for(clock, tpm=10, key="a"), windows_for(clock, tpm=10, key="b")
    assert (await store.reserve(a, 10, clock())).allowed
    assert (await store.reserve(b, 10, clock())).allowed
    assert not (await store.reserve(a, 1, clock())).allowed


async def test_concurrent_admissions_never_exceed_the_limit(store: TokenStore, clock: FakeClock):
    windows = windows_for(clock, tpm=1000, quota=1500)
    rng = random.Random(7)
    amounts = [rng.randint(1, 60) for _ in range(300)]
    results: list[Admission] = await asyncio.gather(*(store.reserve(windows, n, clock()) for n in amounts))
    admitted = sum(n for n, r in zip(amounts, results, strict=True) if r.allowed)
    assert admitted <= 1000
    assert admitted > 1000 - 60  # refusals only once the next one would not fit
    assert await store.count(windows[1]) == admitted
    assert any(not r.allowed for r in results)


async def test_large_counter_keys_are_hashed(store: TokenStore, clock: FakeClock):
    key = "k" * 5000
    windows = windows_for(clock, tpm=10, key=key)
    assert len(windows[0].key) < 120
    assert (await store.reserve(windows, 10, clock())).allowed
    assert not (await store.reserve(windows_for(clock, tpm=10, key=key), 1, clock())).allowed


def test_the_test_clock_never_starts_in_the_last_hour_of_a_day():
    midnight = 1_800_000_000 - 1_800_000_000 % 86400
    late = FakeClock(real=lambda: midnight - 1800.5)
    assert late() == midnight + 1.0  # the next day, 1 s in
    early = FakeClock(real=lambda: midnight + 7200.5)
    assert early() == midnight + 7200 + 61.0  # the next minute, 1 s in
