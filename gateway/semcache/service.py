"""The semantic cache service of one gateway app (``ctx.services.semantic_cache``).

It holds the store (Redis when ``REDIS_URL`` is set, else in process), embeds prompts over the app's upstream pool,
and counts what happens. A failure of the embeddings backend or of the store never fails the request: the policy
treats it as a miss (lookup) or skips the store, ``record`` counts it, and ``failed`` logs it at most once every
``LOG_EVERY`` seconds per stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from gateway.redis import RespClient

from .embed import embed
from .store import DEFAULT_MAX_ENTRIES, MemoryVectorStore, RedisVectorStore, Vector, VectorStore

if TYPE_CHECKING:
    from gateway.http.client import UpstreamPool
    from gateway.metrics import Metrics
    from gateway.model import BackendTarget

__all__ = ("DEFAULT_EMBEDDINGS_TIMEOUT", "LOG_EVERY", "CacheState", "SemanticCache", "create_semantic_cache")

logger = logging.getLogger("gateway.semantic_cache")

DEFAULT_EMBEDDINGS_TIMEOUT: Final = 5.0
LOG_EVERY: Final = 10.0


@dataclass(slots=True)
class CacheState:
    """One request's dealings with the cache (``ctx.semantic_cache``): what the lookup found, for the store, the
    trace and the usage record."""

    result: str  # hit, miss, skipped, lookup_error
    partition: str = ""
    kind: str = ""
    vector: Vector | None = None  # the prompt's embedding (a miss: the store files the answer under it)
    score: float | None = None  # a hit: the cosine distance to the stored prompt
    prompt_tokens: int = 0  # a hit: what the stored answer cost when the model made it (the tokens saved)
    completion_tokens: int = 0
    stored: str | None = None  # what the store did: stored, not_stored, store_error

    @property
    def hit(self) -> bool:
        return self.result == "hit"


class SemanticCache:
    __slots__ = ("_last_log", "clock", "metrics", "pool", "store", "timeout")

    def __init__(
        self,
        store: VectorStore,
        pool: UpstreamPool,
        clock: Callable[[], float],
        *,
        metrics: Metrics | None = None,
        timeout: float = DEFAULT_EMBEDDINGS_TIMEOUT,
    ) -> None:
        self.store = store
        self.pool = pool
        self.clock = clock
        self.metrics = metrics
        self.timeout = timeout
        self._last_log: dict[str, float] = {}

    async def embed(self, target: BackendTarget, text: str, model: str) -> Vector:
        """Raises ``EmbeddingsError``."""
        return await embed(self.pool, target, text, model, self.timeout)

    def record(self, api: str, operation: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.record_semantic_cache(api, operation, result)

    def saved(self, api: str, tokens: int) -> None:
        if self.metrics is not None and tokens > 0:
            self.metrics.record_tokens_saved(api, tokens)

    def failed(self, stage: str, api: str, error: BaseException) -> None:
        """Log a cache failure (rate-limited per stage); the caller goes on without the cache."""
        now = self.clock()
        last = self._last_log.get(stage)
        if last is None or now - last >= LOG_EVERY:
            self._last_log[stage] = now
            logger.warning("semantic cache %s failed for API %s (the request goes on without it): %s",
                           stage, api, error)  # fmt: skip

    async def aclose(self) -> None:
        await self.store.aclose()


def create_semantic_cache(
    pool: UpstreamPool,
    clock: Callable[[], float],
    *,
    redis_url: str = "",
    max_entries: int = DEFAULT_MAX_ENTRIES,
    timeout: float = DEFAULT_EMBEDDINGS_TIMEOUT,
    metrics: Metrics | None = None,
) -> SemanticCache:
    """Redis when ``redis_url`` is given (shared by every replica), else in process."""
    store: VectorStore
    if redis_url:
        store = RedisVectorStore(RespClient(redis_url), max_entries=max_entries)
    else:
        store = MemoryVectorStore(clock, max_entries=max_entries)
    return SemanticCache(store, pool, clock, metrics=metrics, timeout=timeout)
