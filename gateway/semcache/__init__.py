"""The semantic cache behind ``llm-semantic-cache-lookup`` / ``-store`` (docs/semantic-cache.md).

* :mod:`.store`: where entries live: in process (the embedded default) or in Redis (shared by every replica), one
  partition per ``vary-by`` value, each searched by an exact cosine scan vectorised with numpy and capped in size
  with LRU eviction;
* :mod:`.embed`: the client of an OpenAI-compatible ``/embeddings`` backend;
* :mod:`.messages`: what is embedded, how a response is reduced to an entry, how an entry is replayed (JSON or SSE);
* :mod:`.service`: the per-app service the policies reach through ``ctx.services.semantic_cache``.
"""

from __future__ import annotations

from .service import CacheState, SemanticCache, create_semantic_cache
from .store import CacheStoreError, MemoryVectorStore, RedisVectorStore, VectorStore

__all__ = (
    "CacheState",
    "CacheStoreError",
    "MemoryVectorStore",
    "RedisVectorStore",
    "SemanticCache",
    "VectorStore",
    "create_semantic_cache",
)
