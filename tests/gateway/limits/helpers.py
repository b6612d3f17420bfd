"""Store test helpers: the Redis URL of the run, a clock that moves only when told to, Redis stores for the lease
tests (one, or several processes on one prefix), the admissions a Redis store sends, its counters and unspent leases."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.limits.redis import RedisTokenStore

REDIS_URL = os.environ.get("REDIS_URL", "")
NO_REDIS = "REDIS_URL is not set (CI sets redis://127.0.0.1:6379/0)"
DAY = 86400
LONG = 30.0  # lease seconds long enough that no lease ends by itself during a test: the tests end them


class FakeClock:
    """Epoch seconds that only move when a test says so. Starts near the real time, 1 s into a minute, so that
    Redis expiries (real time) agree with the windows. Within the last hour of a UTC day it starts just after
    midnight instead (later, never earlier, than the real time), so a test's daily window never ends mid-test."""

    def __init__(self, real: Callable[[], float] = time.time) -> None:
        now = real()
        start = now - now % 60 + 61.0
        if start % DAY > DAY - 3600:
            start = start - start % DAY + DAY + 1.0
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def delete_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def make_store(prefix: str, clock: FakeClock, **options: Any) -> RedisTokenStore:
    """A Redis store on ``prefix`` that sends its settlements at once, with leases of ``LONG`` seconds unless
    ``options`` say otherwise."""
    from gateway.limits import create_store
    from gateway.limits.redis import RedisTokenStore

    options.setdefault("lease_seconds", LONG)
    store = create_store("redis", url=REDIS_URL, clock=clock, prefix=prefix, settle_interval=0, **options)
    assert isinstance(store, RedisTokenStore)
    return store


@contextlib.asynccontextmanager
async def stores(count: int, clock: FakeClock, **options: Any) -> AsyncIterator[list[RedisTokenStore]]:
    """``count`` Redis stores (processes, see ``make_store``) on one prefix, their keys deleted afterwards."""
    prefix = f"sluice-test:{uuid.uuid4().hex[:12]}:"
    made = [make_store(prefix, clock, **options) for _ in range(count)]
    try:
        yield made
    finally:
        for store in made:
            await store.aclose()
        delete_prefix(REDIS_URL, prefix)


async def counted(store: RedisTokenStore, pattern: str) -> int:
    """The one counter whose key (without the prefix) matches ``pattern``, once every lease of ``store`` has given
    its leftover back and its settlements are applied."""
    await store.flush()
    keys = await store.client.call("KEYS", store.prefix + pattern)
    assert isinstance(keys, list) and len(keys) == 1
    value = await store.client.call("GET", keys[0])
    return int(value)


def leased(store: RedisTokenStore) -> int:
    """The tokens of the store's leases not spent yet."""
    return sum(lease.left for lease in store._leases.values())


class Sent:
    """The admissions' commands a store sends to Redis (its client's ``submit_encoded``)."""

    def __init__(self, store: RedisTokenStore) -> None:
        self.commands: list[bytes] = []
        submit = store.client.submit_encoded

        def counting(command: bytes, orphan: Any = None) -> asyncio.Future[Any]:
            self.commands.append(command)
            return submit(command, orphan)

        store.client.submit_encoded = counting  # type: ignore[method-assign]
