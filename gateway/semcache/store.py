"""Where semantic cache entries live: in process or in Redis, one partition per ``vary-by`` value.

An entry is a unit vector (float32) and an opaque payload (the response, :mod:`.messages`). A lookup is an exact
scan of the partition: one matrix-vector product over its ``n`` vectors of ``d`` dimensions, ``O(n·d)``, and the
nearest entry wins when its cosine distance (``1 - cos``) is at most the threshold. Each partition is capped at
``max_entries`` (least recently used entries are evicted first), which bounds the cost of every lookup: with the
default cap of 1,000 entries and 384 dimensions that is 384 k multiply-adds, and in Redis 1.5 MB of vectors read.

Redis 7.0 has no vector index, so :class:`RedisVectorStore` reads the partition's vectors (one hash) and scans them
here, with numpy. Entries expire ``duration`` seconds after they are stored (server time, ``TIME``), and every key of
a partition expires with its newest entry, so an idle partition leaves nothing behind.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from gateway.redis import RespClient, RespError, encode_command

__all__ = (
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_PARTITIONS",
    "CacheStoreError",
    "Match",
    "MemoryVectorStore",
    "RedisVectorStore",
    "Vector",
    "VectorStore",
)

Vector = npt.NDArray[np.float32]

DEFAULT_MAX_ENTRIES: Final = 1000  # per partition
DEFAULT_MAX_PARTITIONS: Final = 10_000  # in process only (Redis keys expire on their own)
DEFAULT_PREFIX: Final = "sluice:semcache"
DEFAULT_MIRROR_BYTES: Final = 64 << 20  # the Redis store's copy of recently searched partitions, per process


class CacheStoreError(Exception):
    """The store could not answer (Redis down, a reply it does not understand)."""


@dataclass(frozen=True, slots=True)
class Match:
    entry_id: str
    score: float  # cosine distance, 1 - cos: 0 is the same direction
    payload: bytes


class VectorStore(Protocol):
    kind: str

    async def search(self, partition: str, vector: Vector, threshold: float) -> Match | None:
        """The nearest live entry of ``partition`` within ``threshold`` (cosine distance), else None."""
        ...

    async def add(self, partition: str, vector: Vector, payload: bytes, ttl: float) -> None:
        """Store an entry for ``ttl`` seconds, evicting the least recently used entries beyond the cap."""
        ...

    async def aclose(self) -> None: ...


def _entry_id(vector: Vector) -> str:
    return hashlib.blake2b(vector.tobytes(), digest_size=12).hexdigest()


class _Partition:
    __slots__ = ("entries", "expiry", "ids", "matrix")

    def __init__(self) -> None:
        self.entries: OrderedDict[str, tuple[Vector, float, bytes]] = OrderedDict()  # oldest use first
        self.matrix: Vector | None = None  # the entries' vectors, rebuilt after a change
        self.expiry: npt.NDArray[np.float64] | None = None
        self.ids: list[str] = []

    def index(self) -> tuple[Vector, npt.NDArray[np.float64], list[str]]:
        if self.matrix is None or self.expiry is None:
            self.ids = list(self.entries)
            values = list(self.entries.values())
            self.matrix = np.stack([v[0] for v in values]) if values else np.zeros((0, 1), np.float32)
            self.expiry = np.array([v[1] for v in values], dtype=np.float64)
        return self.matrix, self.expiry, self.ids

    def changed(self) -> None:
        self.matrix = self.expiry = None


class MemoryVectorStore:
    """The embedded default: entries in this process (each gateway worker has its own)."""

    kind = "memory"

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_partitions: int = DEFAULT_MAX_PARTITIONS,
    ) -> None:
        if max_entries < 1 or max_partitions < 1:
            raise ValueError("max_entries and max_partitions must be at least 1")
        self.clock = clock
        self.max_entries = max_entries
        self.max_partitions = max_partitions
        self._partitions: OrderedDict[str, _Partition] = OrderedDict()

    def size(self, partition: str) -> int:
        part = self._partitions.get(partition)
        return len(part.entries) if part is not None else 0

    async def search(self, partition: str, vector: Vector, threshold: float) -> Match | None:
        part = self._partitions.get(partition)
        if part is None or not part.entries:
            return None
        self._partitions.move_to_end(partition)
        matrix, expiry, ids = part.index()
        now = self.clock()
        scores = matrix @ vector
        scores[expiry <= now] = -2.0  # expired: never the nearest live entry
        best = int(np.argmax(scores))
        distance = float(1.0 - scores[best])
        if scores[best] < -1.5 or distance > threshold:
            return None
        entry_id = ids[best]
        part.entries.move_to_end(entry_id)
        return Match(entry_id, max(distance, 0.0), part.entries[entry_id][2])

    async def add(self, partition: str, vector: Vector, payload: bytes, ttl: float) -> None:
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = _Partition()
            while len(self._partitions) > self.max_partitions:
                self._partitions.popitem(last=False)
        else:
            self._partitions.move_to_end(partition)
        now = self.clock()
        for entry_id in [k for k, v in part.entries.items() if v[1] <= now]:
            del part.entries[entry_id]
        entry_id = _entry_id(vector)
        part.entries[entry_id] = (vector, now + ttl, payload)
        part.entries.move_to_end(entry_id)
        while len(part.entries) > self.max_entries:
            part.entries.popitem(last=False)
        part.changed()

    async def aclose(self) -> None:
        self._partitions.clear()


# KEYS: 1 vectors (one string: row i at byte i * width), 2 payloads (hash id -> bytes), 3 expiry (zset id -> ms),
# 4 lru (zset id -> use sequence number), 5 sequence (the partition's counter), 6 version (changes whenever the set
# of entries changes), 7 slots (hash id -> row; the field "" holds the row width in bytes), 8 free rows (list).
# A dropped entry's row is zeroed and reused by the next entry, so the vectors string never outgrows the cap.
_PURGE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function drop(ids)
  local width = tonumber(redis.call('HGET', KEYS[7], '') or '0')
  for _, id in ipairs(ids) do
    local row = redis.call('HGET', KEYS[7], id)
    if row then
      redis.call('SETRANGE', KEYS[1], tonumber(row) * width, string.rep('\\0', width))
      redis.call('RPUSH', KEYS[8], row)
      redis.call('HDEL', KEYS[7], id)
    end
  end
  redis.call('HDEL', KEYS[2], unpack(ids))
  redis.call('ZREM', KEYS[3], unpack(ids))
  redis.call('ZREM', KEYS[4], unpack(ids))
end
local function bump()
  redis.call('SET', KEYS[6], now .. '-' .. redis.call('INCR', KEYS[5]), 'KEEPTTL')
end
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
if #dead > 0 then
  drop(dead)
  bump()
end
"""

# Returns the partition's version, or nil when it has no entries. The caller then reads the vectors and the rows
# (GET and HGETALL in one MULTI) when its copy is older.
_SEARCH_SCRIPT: Final = (
    _PURGE
    + """
if redis.call('ZCARD', KEYS[4]) == 0 then return false end
return redis.call('GET', KEYS[6])
"""
)

# ARGV: id, vector, payload, ttl ms, max entries. Returns the partition size.
_ADD_SCRIPT: Final = (
    _PURGE
    + """
local width = string.len(ARGV[2])
local known = redis.call('HGET', KEYS[7], '')
if known and tonumber(known) ~= width then  -- another embeddings model: start the partition again
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[7], KEYS[8])
end
redis.call('HSET', KEYS[7], '', width)
local row = redis.call('HGET', KEYS[7], ARGV[1])
if not row then
  row = redis.call('LPOP', KEYS[8]) or math.floor(redis.call('STRLEN', KEYS[1]) / width)
  redis.call('HSET', KEYS[7], ARGV[1], row)
end
redis.call('SETRANGE', KEYS[1], tonumber(row) * width, ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[5]), ARGV[1])
local over = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[5])
if over > 0 then drop(redis.call('ZRANGE', KEYS[4], 0, over - 1)) end
bump()
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
local keep = tonumber(last[2]) - now + 1000
for i = 1, 8 do redis.call('PEXPIRE', KEYS[i], keep) end
return redis.call('ZCARD', KEYS[4])
"""
)

# ARGV: id. A hit: the payload (nil when it expired in between), and the entry becomes the most recently used.
_HIT_SCRIPT: Final = """
local payload = redis.call('HGET', KEYS[2], ARGV[1])
if payload then
  redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[5]), ARGV[1])
end
return payload
"""


def _sha1(script: str) -> str:
    return hashlib.sha1(script.encode("utf-8"), usedforsecurity=False).hexdigest()


_Copy = tuple[bytes, list[Any], Vector, npt.NDArray[np.bool_]]  # version, id of each row (None: free), vectors, free


class RedisVectorStore:
    """Entries in Redis, shared by every gateway replica. Eight keys per partition, under one hash tag.

    Each process keeps a copy of the vectors of the partitions it searched lately (``mirror_bytes`` at most, least
    recently searched dropped first), with the partition's version: a lookup is one script call that purges expired
    entries and sends the vectors only when the version changed (an entry was added, evicted or expired). The scan
    itself runs here.
    """

    kind = "redis"

    def __init__(
        self,
        client: RespClient,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        prefix: str = DEFAULT_PREFIX,
        mirror_bytes: int = DEFAULT_MIRROR_BYTES,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.client = client
        self.max_entries = max_entries
        self.prefix = prefix
        self.mirror_bytes = mirror_bytes
        self.vector_index: str | None = None  # what detect_index() found (not used: see docs/semantic-cache.md)
        self._mirror: OrderedDict[str, _Copy] = OrderedDict()
        self._mirrored = 0  # bytes of vectors held in _mirror

    def keys(self, partition: str) -> tuple[str, ...]:
        tag = hashlib.sha256(partition.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        base = f"{self.prefix}:{{{tag}}}"
        return tuple(f"{base}:{name}" for name in ("vec", "res", "exp", "lru", "seq", "ver", "row", "free"))

    async def _eval(self, script: str, keys: tuple[str, ...], *args: Any) -> Any:
        try:
            try:
                return await self.client.call("EVALSHA", _sha1(script), len(keys), *keys, *args)
            except RespError as exc:
                if exc.code != "NOSCRIPT":
                    raise
                return await self.client.call("EVAL", script, len(keys), *keys, *args)
        except (RespError, OSError, TimeoutError, ConnectionError) as exc:
            raise CacheStoreError(f"redis: {exc}") from exc

    def _forget(self, partition: str) -> None:
        old = self._mirror.pop(partition, None)
        if old is not None:
            self._mirrored -= old[2].nbytes

    def _remember(self, partition: str, copy: _Copy) -> None:
        self._forget(partition)
        matrix = copy[2]
        if matrix.nbytes > self.mirror_bytes:
            return
        self._mirror[partition] = copy
        self._mirrored += matrix.nbytes
        while self._mirrored > self.mirror_bytes:
            dropped = self._mirror.popitem(last=False)[1][2]
            self._mirrored -= dropped.nbytes

    async def _vectors(self, partition: str, keys: tuple[str, ...]) -> _Copy | None:
        version = await self._eval(_SEARCH_SCRIPT, keys)
        if version is None:
            self._forget(partition)
            return None
        held = self._mirror.get(partition)
        if held is not None and held[0] == version:
            self._mirror.move_to_end(partition)
            return held
        # Read after the version: an entry added in between makes this copy newer than its version says, and the
        # next lookup reads the partition again (never the other way round).
        commands = b"".join(encode_command(c) for c in (("MULTI",), ("GET", keys[0]), ("HGETALL", keys[6]), ("EXEC",)))
        try:
            replies = await self.client.call_batch(commands, 4)
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise CacheStoreError(f"redis: {exc}") from exc
        result = replies[-1]
        if not isinstance(result, list) or len(result) != 2:
            raise CacheStoreError(f"redis: unexpected reply to the vectors read: {result!r}"[:200])
        blob, flat = result
        if not isinstance(blob, bytes) or not isinstance(flat, list):
            return None
        rows = dict(zip(flat[0::2], flat[1::2], strict=True))
        width = int(rows.pop(b"", b"0") or 0)
        if width <= 0 or width % 4 or len(blob) % width:
            raise CacheStoreError("redis: the partition's vectors are inconsistent")
        matrix = np.frombuffer(blob, dtype="<f4").reshape(len(blob) // width, width // 4).astype(np.float32)
        ids: list[Any] = [None] * len(matrix)
        for entry_id, row in rows.items():
            index = int(row)
            if 0 <= index < len(ids):
                ids[index] = entry_id
        copy = (version, ids, matrix, np.array([entry_id is None for entry_id in ids], dtype=bool))
        self._remember(partition, copy)
        return copy

    async def search(self, partition: str, vector: Vector, threshold: float) -> Match | None:
        keys = self.keys(partition)
        found = await self._vectors(partition, keys)
        if found is None:
            return None
        _, ids, matrix, free = found
        if matrix.shape[1] != vector.size:  # another embeddings model wrote this partition: no match possible
            return None
        scores = matrix @ vector
        scores[free] = -2.0  # rows of dropped entries
        best = int(np.argmax(scores))
        distance = float(1.0 - scores[best])
        entry_id = ids[best]
        if entry_id is None or distance > threshold:
            return None
        payload = await self._eval(_HIT_SCRIPT, keys, entry_id)
        if payload is None:
            return None
        text_id = entry_id.decode("ascii", "replace") if isinstance(entry_id, bytes) else str(entry_id)
        return Match(text_id, max(distance, 0.0), bytes(payload))

    async def add(self, partition: str, vector: Vector, payload: bytes, ttl: float) -> None:
        blob = vector.astype("<f4").tobytes()
        ttl_ms = max(1, int(ttl * 1000))
        await self._eval(_ADD_SCRIPT, self.keys(partition), _entry_id(vector), blob, payload, ttl_ms, self.max_entries)

    async def detect_index(self) -> str | None:
        """Whether the server offers a vector index (Redis 8 vector sets, or the query engine's ``FT.*``)."""
        try:
            info = await self.client.call("COMMAND", "INFO", "VADD", "FT.SEARCH")
        except (RespError, OSError, TimeoutError, ConnectionError):
            return None
        found = [name for name, reply in zip(("vector sets", "query engine"), info or [], strict=False) if reply]
        self.vector_index = ", ".join(found) or None
        return self.vector_index

    async def aclose(self) -> None:
        self._mirror.clear()
        self._mirrored = 0
        await self.client.aclose()
