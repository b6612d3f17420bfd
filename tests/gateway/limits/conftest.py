"""Store fixtures: every contract test runs against the memory store and, when REDIS_URL is set, against Redis."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from gateway.limits import TokenStore, create_store

REDIS_URL = os.environ.get("REDIS_URL", "")
NO_REDIS = "REDIS_URL is not set (CI sets redis://127.0.0.1:6379/0)"
DAY = 86400


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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    if not REDIS_URL:
        pytest.skip(NO_REDIS)
    prefix = f"sluice-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_prefix(REDIS_URL, prefix)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[TokenStore]:
    if request.param == "memory":
        instance = create_store("memory", clock=clock)
        yield instance
        await instance.aclose()
        return
    prefix = request.getfixturevalue("redis_prefix")
    instance = create_store("redis", url=REDIS_URL, clock=clock, prefix=prefix)
    yield instance
    await instance.aclose()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict:
    """Every store test runs on uvloop (production) and on the default asyncio loop."""
    import asyncio

    import uvloop

    return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
