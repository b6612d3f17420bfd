"""Reading the gateways' usage stream (Redis) into the rollups.

Workers read through one consumer group (`sluice-usage`), each under its own consumer name (`hostname-pid`).
An entry is acknowledged (`XACK`) only after the transaction that counted it has committed, so a worker that dies
between reading and acknowledging leaves its entries pending; `XAUTOCLAIM` hands entries pending for longer than
`CLAIM_MIN_IDLE_MS` to the next worker that runs. Counting them twice is harmless: ingestion is idempotent.
Entries are read by `UsageRecord.from_fields`, in either of their forms (the record's JSON line in one field, or a
field per record field from older gateways: docs/usage-and-metrics.md, "The stream's entries").
"""

import functools
import logging
import os
import socket
from dataclasses import dataclass

import orjson
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from gateway.usage.record import RecordError, UsageRecord

from .services import IngestResult, ingest_records

__all__ = ("CLAIM_MIN_IDLE_MS", "GROUP", "ConsumeResult", "StreamConsumer", "redis_client")

logger = logging.getLogger(__name__)

GROUP = "sluice-usage"
READ_COUNT = 500
# A batch is read, counted and acknowledged in well under a second; an entry pending for a minute is orphaned.
CLAIM_MIN_IDLE_MS = 60_000
# One run stops after this many entries so a backlog does not pin a worker; the next beat tick goes on.
MAX_ENTRIES_PER_RUN = 20_000
# Consumers (one per worker process ever started) with nothing pending are deleted after a day idle.
FORGET_CONSUMER_IDLE_MS = 24 * 3600 * 1000


@dataclass
class ConsumeResult(IngestResult):
    """`IngestResult` of a run, plus how many entries were taken over from other consumers."""

    claimed: int = 0


@functools.cache
def redis_client(url: str) -> redis.Redis:
    """One client (connection pool) per URL and process; redis-py resets the pool in a forked child."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 2),
    )


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class StreamConsumer:
    """One worker's view of the usage stream: claim stale entries, read new ones, count them, acknowledge them."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        *,
        group: str = GROUP,
        consumer: str | None = None,
        count: int = READ_COUNT,
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer or default_consumer_name()
        self.count = count

    def ensure_group(self) -> None:
        """Create the group (and the stream) if missing; from id 0, so entries added before any worker ran count."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run(self, *, min_idle_ms: int = CLAIM_MIN_IDLE_MS, max_entries: int = MAX_ENTRIES_PER_RUN) -> ConsumeResult:
        """Count what is waiting: first entries other consumers left pending too long, then new ones."""
        self.ensure_group()
        total = ConsumeResult()
        cursor = "0-0"
        while total.received < max_entries:
            cursor, entries = self.claim_stale(cursor, min_idle_ms)
            if entries:
                total += self.process(entries)
                total.claimed += len(entries)
            if cursor == "0-0":
                break
        while total.received < max_entries:
            entries = self.read_new()
            if not entries:
                break
            total += self.process(entries)
        return total

    def claim_stale(self, cursor: str, min_idle_ms: int) -> tuple[str, list]:
        """One `XAUTOCLAIM` page: entries idle for at least `min_idle_ms`, now pending for this consumer."""
        reply = self.client.xautoclaim(
            self.stream, self.group, self.consumer, min_idle_ms, start_id=cursor, count=self.count
        )
        return _text(reply[0]), reply[1]

    def read_new(self) -> list:
        """Up to `count` entries never delivered to any consumer (they become pending for this one)."""
        reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=self.count)
        return reply[0][1] if reply else []

    def process(self, entries: list) -> IngestResult:
        """Count the entries (one transaction), then acknowledge them, unreadable ones included."""
        records, invalid = [], 0
        for entry_id, fields in entries:
            try:
                if not fields:
                    raise RecordError("non_field_errors", "Empty entry.")
                records.append(UsageRecord.from_fields(fields, loads=orjson.loads))
            except RecordError as exc:
                invalid += 1
                logger.warning("dropping unreadable usage entry %s of %s: %s", _text(entry_id), self.stream, exc)
        result = ingest_records(records, canonical_ids=True)
        result.invalid += invalid
        result.received += invalid
        self.client.xack(self.stream, self.group, *(entry_id for entry_id, _ in entries))
        return result

    def forget_idle_consumers(self, idle_ms: int = FORGET_CONSUMER_IDLE_MS) -> int:
        """Delete consumers of stopped workers (nothing pending, idle for `idle_ms`); returns how many."""
        try:
            consumers = self.client.xinfo_consumers(self.stream, self.group)
        except redis.ResponseError:  # no stream or no group yet
            return 0
        forgotten = 0
        for consumer in consumers:
            if consumer["pending"] == 0 and consumer["idle"] >= idle_ms and consumer["name"] != self.consumer:
                self.client.xgroup_delconsumer(self.stream, self.group, consumer["name"])
                forgotten += 1
        return forgotten


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value
