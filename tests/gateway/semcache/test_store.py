"""The vector stores: the same contract in process and in Redis (when REDIS_URL is set)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from gateway.redis import RespClient
from gateway.semcache import CacheStoreError, MemoryVectorStore, RedisVectorStore, VectorStore
from tests.gateway.limits.helpers import NO_REDIS, REDIS_URL, delete_prefix


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unit(seed: int, dim: int = 16) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def near(vector: np.ndarray, distance: float, seed: int = 99) -> np.ndarray:
    """A unit vector at cosine distance ``distance`` from ``vector``."""
    other = unit(seed, vector.size)
    other = other - vector * float(other @ vector)
    other /= np.linalg.norm(other)
    cos = 1.0 - distance
    result = cos * vector + np.sqrt(1 - cos * cos) * other
    return (result / np.linalg.norm(result)).astype(np.float32)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    if not REDIS_URL:
        pytest.skip(NO_REDIS)
    prefix = f"sluice-test:semcache:{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_prefix(REDIS_URL, prefix)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[VectorStore]:
    instance: VectorStore
    if request.param == "memory":
        instance = MemoryVectorStore(clock, max_entries=3)
    else:
        prefix = request.getfixturevalue("redis_prefix")
        instance = RedisVectorStore(RespClient(REDIS_URL), max_entries=3, prefix=prefix)
    yield instance
    await instance.aclose()


async def test_the_nearest_entry_within_the_threshold_wins(store: VectorStore) -> None:
    a, b = unit(1), unit(2)
    await store.add("p", a, b"answer a", 60)
    await store.add("p", b, b"answer b", 60)
    match = await store.search("p", near(a, 0.03), 0.05)
    assert match is not None and match.payload == b"answer a"
    assert match.score == pytest.approx(0.03, abs=1e-4)
    assert await store.search("p", near(a, 0.08), 0.05) is None  # farther than the threshold
    assert await store.search("other", a, 0.05) is None  # partitions are apart


async def test_the_partition_is_capped_least_recently_used_first(store: VectorStore) -> None:
    vectors = [unit(10 + i) for i in range(4)]
    for i, vector in enumerate(vectors[:3]):
        await store.add("p", vector, b"%d" % i, 60)
    assert (await store.search("p", vectors[0], 0.01)) is not None  # 0 is now the most recently used
    await store.add("p", vectors[3], b"3", 60)  # over the cap of 3: the least recently used (1) goes
    found = [await store.search("p", v, 0.01) for v in vectors]
    assert [m.payload if m else None for m in found] == [b"0", None, b"2", b"3"]


async def test_entries_expire_after_their_duration(clock: Clock) -> None:
    store = MemoryVectorStore(clock)
    a = unit(1)
    await store.add("p", a, b"x", 30)
    clock.now += 29.9
    assert await store.search("p", a, 0.01) is not None
    clock.now += 0.2
    assert await store.search("p", a, 0.01) is None
    await store.add("p", unit(2), b"y", 30)  # adding drops the expired entry
    assert store.size("p") == 1


async def test_redis_entries_expire_and_their_keys_too(redis_prefix: str) -> None:
    import redis

    store = RedisVectorStore(RespClient(REDIS_URL), prefix=redis_prefix)
    try:
        a = unit(1)
        await store.add("p", a, b"x", 0.2)
        assert await store.search("p", a, 0.01) is not None
        client = redis.Redis.from_url(REDIS_URL)
        ttls = [client.pttl(key) for key in store.keys("p")]
        # every key of the partition expires with its entries (-2: a key not written yet, such as the free rows)
        assert all(0 < ttl <= 1200 or ttl == -2 for ttl in ttls) and ttls.count(-2) <= 1, ttls
        deadline = time.monotonic() + 5
        while await store.search("p", a, 0.01) is not None:
            assert time.monotonic() < deadline, "the entry did not expire"
            time.sleep(0.05)
    finally:
        await store.aclose()


async def test_a_redis_outage_is_a_store_error() -> None:
    from tests.fixtures_procs import free_port

    store = RedisVectorStore(RespClient(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5, timeout=0.5))
    with pytest.raises(CacheStoreError):
        await store.search("p", unit(1), 0.05)
    with pytest.raises(CacheStoreError):
        await store.add("p", unit(1), b"x", 60)
    await store.aclose()


async def test_redis_detects_whether_the_server_has_a_vector_index(redis_prefix: str) -> None:
    store = RedisVectorStore(RespClient(REDIS_URL), prefix=redis_prefix)
    try:
        found = await store.detect_index()
        assert found is None or found in ("vector sets", "query engine", "vector sets, query engine")
    finally:
        await store.aclose()


async def test_a_replica_sees_what_another_one_stored_after_its_copy_was_made(redis_prefix: str) -> None:
    first = RedisVectorStore(RespClient(REDIS_URL), prefix=redis_prefix)
    second = RedisVectorStore(RespClient(REDIS_URL), prefix=redis_prefix)
    try:
        a, b = unit(1), unit(2)
        await first.add("p", a, b"a", 60)
        assert (await first.search("p", a, 0.01)).payload == b"a"  # first now holds a copy of the partition
        assert await first.search("p", b, 0.01) is None
        await second.add("p", b, b"b", 60)
        assert (await first.search("p", b, 0.01)).payload == b"b"  # the version changed: the copy is refreshed
        held = first._mirror["p"][2]
        assert (await first.search("p", a, 0.01)).payload == b"a"
        assert first._mirror["p"][2] is held  # unchanged partition: no vectors were read again
    finally:
        await first.aclose()
        await second.aclose()


async def test_redis_reuses_the_rows_of_dropped_entries(redis_prefix: str) -> None:
    import redis

    store = RedisVectorStore(RespClient(REDIS_URL), prefix=redis_prefix, max_entries=2)
    try:
        vectors = [unit(20 + i) for i in range(6)]
        for i, vector in enumerate(vectors):
            await store.add("p", vector, b"%d" % i, 60)
        client = redis.Redis.from_url(REDIS_URL)
        assert client.strlen(store.keys("p")[0]) <= 3 * vectors[0].nbytes  # rows are reused, the string stays small
        found = [await store.search("p", v, 0.01) for v in vectors]
        assert [m.payload if m else None for m in found] == [None, None, None, None, b"4", b"5"]
        anything = await store.search("p", unit(3), 2.0)  # the widest threshold still never answers from a free row
        assert anything is not None and anything.payload in (b"4", b"5")
    finally:
        await store.aclose()
