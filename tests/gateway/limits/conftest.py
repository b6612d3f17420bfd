"""Store fixtures: every contract test runs against the memory store and, when REDIS_URL is set, against Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.limits import TokenStore, create_store

from .helpers import NO_REDIS, REDIS_URL, FakeClock, delete_prefix


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
    # The contract is about counting, not the breaker's 0.5 s per call (tests/gateway/limits/test_breaker.py): on a
    # loaded CI machine 300 concurrent admissions could outlast it (seen once: StoreUnavailable in the gather test).
    instance = create_store("redis", url=REDIS_URL, clock=clock, prefix=prefix, call_timeout=10.0)
    yield instance
    await instance.aclose()


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict:
    """Every store test runs on uvloop (production) and on the default asyncio loop."""
    import asyncio

    import uvloop

    return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
