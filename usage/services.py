"""Usage ingestion (idempotent, concurrency-safe per-minute rollups), dedupe purge, and the usage report.

Ingestion is exactly-once on top of the gateways' at-least-once delivery: in one transaction the request ids of a
batch are inserted into `UsageRecordSeen` with `INSERT ... ON CONFLICT DO NOTHING` (its count of inserted rows tells
when all were new; when not, the ids it inserted are read: `RETURNING` on PostgreSQL, by rowid on SQLite), and only
the records whose ids it inserted are added to `UsageRollup`, with one upsert that adds to the counters. A few
statements per batch, whatever its size, and no model instance per record. Rows are touched in sorted order, so two
workers ingesting overlapping batches wait for each other instead of deadlocking; the one that waited on a request
id finds it counted (PostgreSQL's `ON CONFLICT` waits for the other transaction to commit).
"""

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, CharField, F, Q, Sum, Value, When
from django.db.models.functions import Coalesce, Concat, Trunc
from django.utils import timezone

from gateway.usage.record import UsageRecord, canonical_guid

from .choices import UsageGroupByChoices, UsageIntervalChoices
from .models import ROLLUP_DIMENSIONS, UsageRecordSeen, UsageRollup

__all__ = (
    "GROUP_BY_FIELDS",
    "INTERVAL_STEPS",
    "IngestResult",
    "dedupe_window",
    "ingest_records",
    "purge_seen",
    "purge_seen_if_due",
    "usage_report",
    "usage_series",
    "usage_top",
)

logger = logging.getLogger(__name__)

# Rows per INSERT statement (fewer when the database allows fewer bound parameters: `_chunks`).
IN_CHUNK = 500
# Purging keeps ids a little longer than ingestion accepts records, so hosts with slightly different clocks agree.
PURGE_MARGIN = timedelta(hours=1)
PURGE_EVERY_SECONDS = 3600.0

GROUP_BY_FIELDS = {
    UsageGroupByChoices.API: ("api",),
    UsageGroupByChoices.SUBSCRIPTION: ("subscription",),
    UsageGroupByChoices.PRODUCT: ("product",),
    UsageGroupByChoices.OPERATION: ("api", "operation"),
}
INTERVAL_STEPS = {
    UsageIntervalChoices.MINUTE: timedelta(minutes=1),
    UsageIntervalChoices.HOUR: timedelta(hours=1),
    UsageIntervalChoices.DAY: timedelta(days=1),
}


#
# Ingestion
#


@dataclass
class IngestResult:
    """What happened to a batch: `counted` were added to the rollups; `duplicates` were counted before (or twice in
    the batch); `expired` started before the dedupe window and were refused (they could be duplicates of purged
    ids); `invalid` could not be read (stream entries only)."""

    received: int = 0
    counted: int = 0
    duplicates: int = 0
    expired: int = 0
    invalid: int = 0

    def __iadd__(self, other: "IngestResult") -> "IngestResult":
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)
        return self

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))  # the fields, as `asdict` gives them, without its deep copy of each int


def dedupe_window() -> timedelta:
    return timedelta(hours=settings.SLUICE["USAGE_DEDUPE_HOURS"])


def ingest_records(
    records: Iterable[UsageRecord], *, now: datetime | None = None, canonical_ids: bool = False
) -> IngestResult:
    """Add the records not counted yet to the per-minute rollups, in one transaction; safe to call again with the
    same records, and from several workers at once. `canonical_ids`: the records were read by `UsageRecord.from_json`
    (or `from_fields`) or by the ingestion endpoint's parser, which give request ids in the canonical form; they are
    not checked again (a regular expression per record)."""
    now = now or timezone.now()
    oldest_ms = int((now - dedupe_window()).timestamp() * 1000)
    result = IngestResult()
    batch: dict[str, UsageRecord] = {}  # by request id in the canonical form (`canonical_guid`)
    for record in records:
        result.received += 1
        request_id = record.request_id if canonical_ids else canonical_guid(record.request_id)
        if record.ts_ms < oldest_ms:
            result.expired += 1
        elif request_id in batch:
            result.duplicates += 1
        else:
            batch[request_id] = record
    if result.expired:
        logger.warning("refused %d usage records older than the %s dedupe window", result.expired, dedupe_window())
    if not batch:
        return result
    with transaction.atomic():
        fresh = _mark_seen(batch)
        _add_to_rollups(fresh)
    result.counted += len(fresh)
    result.duplicates += len(batch) - len(fresh)
    return result


def _mark_seen(batch: Mapping[str, UsageRecord]) -> list[UsageRecord]:
    """Insert the ids not seen yet and return their records (the ones to count), in sorted order: one
    `INSERT ... ON CONFLICT DO NOTHING`, on PostgreSQL with `RETURNING` the rows it inserted. The rows come to the
    database as one JSON text (SQLite) or two comma-separated texts (PostgreSQL), which it splits itself: bound as
    two parameters per row, they cost the driver (and Django's placeholder rewriting) more than the rest of the
    batch. The statement's count of inserted rows tells when all are new (the usual case); only otherwise are the
    inserted ids read: `RETURNING`'s rows on PostgreSQL, and on SQLite, where fetching a row of `RETURNING` costs
    more than inserting it, the rows `_inserted_on_sqlite` reads back."""
    ids = sorted(batch)
    on_postgresql = connection.vendor == "postgresql"
    opts = UsageRecordSeen._meta
    quote = connection.ops.quote_name
    table, id_column = quote(opts.db_table), quote(opts.get_field("request_id").column)
    columns = f"{table} ({id_column}, {quote(opts.get_field('ts').column)})"
    if on_postgresql:
        # The ids are uuids, canonical text both ways; `ts` the instant of the epoch milliseconds (whole seconds and
        # milliseconds apart: exact, where milliseconds times an interval go through a float).
        # Table and column names come from the model; every value is a bound parameter (S608 here and below).
        sql = (
            f"INSERT INTO {columns} SELECT id, to_timestamp(ts / 1000) + ts %% 1000 * interval '1 millisecond' "  # noqa: S608
            "FROM unnest(string_to_array(%s, ',')::uuid[], string_to_array(%s, ',')::bigint[]) "
            "WITH ORDINALITY AS r(id, ts, n) ORDER BY n "
            f"ON CONFLICT DO NOTHING RETURNING {id_column}::text"
        )
        params = [",".join(ids), ",".join([str(batch[request_id].ts_ms) for request_id in ids])]
    else:
        # SQLite: a char(32) column holds the hex digits, `ts` the text Django stores (`_timestamp_adapter`). Each
        # row is one string of a JSON array, the canonical id (36 characters) followed by that text: SQLite cuts it
        # and drops the id's dashes itself (`json_extract` of a pair per row cost it twice as much).
        # `WHERE true` tells SQLite the ON CONFLICT is the upsert's, not a join's.
        sql = (
            f"INSERT INTO {columns} SELECT replace(substr(value, 1, 36), '-', ''), substr(value, 37) "  # noqa: S608
            "FROM json_each(%s) WHERE true ON CONFLICT DO NOTHING"
        )
        adapt_ts = _timestamp_adapter()
        params = [orjson.dumps([request_id + adapt_ts(batch[request_id].ts_ms) for request_id in ids])]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if cursor.rowcount == len(ids):  # all new, the usual case (the ids of a batch are distinct)
            return [batch[request_id] for request_id in ids]
        inserted = (
            [row[0] for row in cursor.fetchall()] if on_postgresql else _inserted_on_sqlite(cursor, table, id_column)
        )
    fresh = set(inserted)  # the ids as the database returns them: canonical text, or the hex digits on SQLite
    keys = ids if on_postgresql else [request_id.replace("-", "") for request_id in ids]
    return [batch[request_id] for key, request_id in zip(keys, ids, strict=True) if key in fresh]


def _inserted_on_sqlite(cursor, table: str, id_column: str) -> list[str]:
    """The ids (hex digits) of the rows that the `INSERT` just executed on `cursor` added to `UsageRecordSeen`: the
    rows with the largest rowids, as many as it added. SQLite gives a new row of a table without AUTOINCREMENT the
    largest rowid plus one (until the largest possible, 2**63 - 1, is taken), and no other connection writes to
    the database until this transaction ends."""
    added = cursor.rowcount
    if not added:
        return []
    cursor.execute(f"SELECT {id_column} FROM {table} WHERE rowid > %s", [cursor.lastrowid - added])  # noqa: S608
    return [row[0] for row in cursor.fetchall()]


# How `str(datetime)` ends for each millisecond: nothing for a whole second, else the six digits of the microseconds
# (a look-up in place of formatting the number: half the cost of the seen rows' text per record).
_MICROSECONDS_TEXT = ("", *(f".{millisecond:03d}000" for millisecond in range(1, 1000)))


def _timestamp_adapter() -> Callable[[int], Any]:
    """Epoch milliseconds to the value DateTimeField.get_db_prep_value gives for that instant. SQLite stores text
    (the naive time in the connection's zone, `str(datetime)`); when that zone is UTC the text is written here,
    with its date and time formatted once per second of the batch."""
    adapt = connection.ops.adapt_datetimefield_value
    if connection.vendor != "sqlite" or connection.timezone is not UTC:
        return lambda ts_ms: adapt(datetime.fromtimestamp(ts_ms / 1000, tz=UTC))
    seconds: dict[int, str] = {}

    def text(ts_ms: int) -> str:
        second, millisecond = divmod(ts_ms, 1000)
        head = seconds.get(second)
        if head is None:
            head = seconds[second] = str(datetime.fromtimestamp(second, tz=UTC).replace(tzinfo=None))
        return head + _MICROSECONDS_TEXT[millisecond]

    return text


@dataclass
class _Counters:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms_sum: float = 0.0
    latency_ms_max: float = 0.0
    retried_requests: int = 0
    failed_attempts: int = 0


# The counter columns of a rollup row: an upsert adds the batch's sums to the stored ones and keeps the larger of the
# maxima (`GREATEST` is PostgreSQL's spelling of SQLite's two-argument `MAX`).
_SUMS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "latency_ms_sum",
    "retried_requests",
    "failed_attempts",
)
_MAXIMA = ("latency_ms_max",)


def _add_to_rollups(records: list[UsageRecord]) -> None:
    """Add the records to their rows with one upsert per chunk of rows (`INSERT ... ON CONFLICT (dimensions) DO
    UPDATE SET counter = counter + excluded.counter`): atomic per row whatever else is writing. Rows go in sorted
    order, so two workers wait for each other instead of deadlocking."""
    totals: dict[tuple, _Counters] = {}
    for record in records:
        counters = totals.get(key := _rollup_key(record))
        if counters is None:
            counters = totals[key] = _Counters()
        counters.requests += 1
        counters.prompt_tokens += record.prompt_tokens
        counters.completion_tokens += record.completion_tokens
        counters.latency_ms_sum += record.latency_ms
        if record.latency_ms > counters.latency_ms_max:
            counters.latency_ms_max = record.latency_ms
        if record.failed_attempts:  # "ptu:429 ptu2:Timeout": one entry per failed attempt
            counters.retried_requests += 1
            counters.failed_attempts += len(record.failed_attempts.split())
    if not totals:
        return
    opts = UsageRollup._meta
    quote = connection.ops.quote_name
    table = quote(opts.db_table)
    columns = [opts.get_field(name).column for name in (*ROLLUP_DIMENSIONS, *_SUMS, *_MAXIMA)]
    dimensions = ", ".join(quote(opts.get_field(name).column) for name in ROLLUP_DIMENSIONS)
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
    updates = [f"{quote(name)} = {table}.{quote(name)} + EXCLUDED.{quote(name)}" for name in _SUMS]
    updates += [f"{quote(name)} = {greatest}({table}.{quote(name)}, EXCLUDED.{quote(name)})" for name in _MAXIMA]
    head = f"INSERT INTO {table} ({', '.join(quote(column) for column in columns)}) VALUES "  # noqa: S608 (as above)
    tail = f" ON CONFLICT ({dimensions}) DO UPDATE SET {', '.join(updates)}"
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    # The values go to the database as they are, but for the minute: the dimensions are the record's strings,
    # integers and boolean, the counters integers and floats, which the fields' `get_db_prep_save` (five calls deep
    # per value) would only pass on; the minute is a datetime, adapted as DateTimeField adapts it.
    adapt_minute = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        for chunk in _chunks(sorted(totals), len(columns)):
            params: list[Any] = []
            for key in chunk:
                c = totals[key]
                params += (
                    adapt_minute(_minute(key[0])),
                    *key[1:],
                    c.requests,
                    c.prompt_tokens,
                    c.completion_tokens,
                    c.prompt_tokens + c.completion_tokens,
                    c.latency_ms_sum,
                    c.retried_requests,
                    c.failed_attempts,
                    c.latency_ms_max,
                )
            cursor.execute(head + ", ".join([row] * len(chunk)) + tail, params)


def _chunks(items: list, params_per_item: int) -> Iterator[list]:
    """`items` in chunks of at most `IN_CHUNK`, and of at most the database's bound parameters per statement."""
    limit = connection.features.max_query_params or 65535
    size = max(1, min(IN_CHUNK, limit // params_per_item))
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _rollup_key(record: UsageRecord) -> tuple:
    """The record's values of `ROLLUP_DIMENSIONS`, in that order, with the minute as minutes since the epoch
    (`_minute` makes it a datetime once per row rather than once per record)."""
    return (
        record.ts_ms // 60_000,
        record.api,
        record.operation,
        record.subscription or "",
        record.product or "",
        record.backend or "",
        record.model or "",
        record.status,
        record.cache_hit,
        record.block_reason or "",
    )


def _minute(minutes: int) -> datetime:
    """The start of the minute `minutes` after the epoch, UTC (epoch minutes are UTC minutes: no leap seconds)."""
    return datetime.fromtimestamp(minutes * 60, tz=UTC)


#
# Dedupe table cleanup
#


def purge_seen(*, now: datetime | None = None) -> int:
    """Forget the request ids too old to be accepted again; returns how many were deleted."""
    cutoff = (now or timezone.now()) - dedupe_window() - PURGE_MARGIN
    deleted, _ = UsageRecordSeen.objects.filter(ts__lt=cutoff).delete()
    return deleted


_last_purge: float | None = None


def purge_seen_if_due(*, clock=time.monotonic) -> int | None:
    """`purge_seen()` at most once an hour per process: the embedded default runs no Celery beat."""
    global _last_purge
    now = clock()
    if _last_purge is not None and now - _last_purge < PURGE_EVERY_SECONDS:
        return None
    _last_purge = now
    return purge_seen()


#
# Report
#


def usage_report(
    *,
    group_by: str,
    interval: str,
    start: datetime,
    end: datetime,
    filters: Mapping[str, str] | None = None,
) -> list[dict]:
    """Totals per period (`interval`) and group, for the minutes in [start, end), aggregated by the database.

    The key of a row is the API, subscription or product name (None for requests without one), or
    `<api>/<operation>` (names cannot hold '/').
    """
    dimensions = GROUP_BY_FIELDS[group_by]
    rows = (
        UsageRollup.objects.filter(minute__gte=start, minute__lt=end, **(filters or {}))
        .annotate(period=Trunc("minute", interval, tzinfo=UTC))
        .values("period", *dimensions)
        .annotate(
            requests_sum=Sum("requests"),
            # tokens the models spent; a cache hit's record carries the tokens its answer saved (docs/semantic-cache.md)
            prompt_tokens_sum=Sum("prompt_tokens", filter=Q(cache_hit=False)),
            completion_tokens_sum=Sum("completion_tokens", filter=Q(cache_hit=False)),
            total_tokens_sum=Sum("total_tokens", filter=Q(cache_hit=False)),
            latency_sum=Sum("latency_ms_sum"),
            cache_hits=Sum("requests", filter=Q(cache_hit=True)),
            tokens_saved=Sum("total_tokens", filter=Q(cache_hit=True)),
            blocked=Sum("requests", filter=~Q(block_reason="")),
            retried_sum=Sum("retried_requests"),
            failed_attempts_sum=Sum("failed_attempts"),
        )
        .order_by("period", *dimensions)
    )
    return [
        {
            "key": "/".join(row[name] for name in dimensions) or None,
            "period": row["period"],
            "requests": row["requests_sum"],
            "prompt_tokens": row["prompt_tokens_sum"] or 0,
            "completion_tokens": row["completion_tokens_sum"] or 0,
            "total_tokens": row["total_tokens_sum"] or 0,
            "avg_latency_ms": round(row["latency_sum"] / row["requests_sum"], 3) if row["requests_sum"] else 0.0,
            "cache_hits": row["cache_hits"] or 0,
            "tokens_saved": row["tokens_saved"] or 0,
            "blocked": row["blocked"] or 0,
            "retried_requests": row["retried_sum"] or 0,
            "failed_attempts": row["failed_attempts_sum"] or 0,
        }
        for row in rows
    ]


# The dashboard's two aggregates (webui.usage): with many keys (a thousand APIs) the full report has a row per key
# and period, while a chart shows ten keys and "the rest"; these let the database do the ranking and the summing.

# a cache hit's rollup carries the tokens its answer saved: not spent, so counted apart (as in usage_report)
_SPENT = Q(cache_hit=False)
_TOTALS = {
    "requests_sum": Sum("requests"),
    "prompt_tokens_sum": Coalesce(Sum("prompt_tokens", filter=_SPENT), 0),
    "completion_tokens_sum": Coalesce(Sum("completion_tokens", filter=_SPENT), 0),
    "total_tokens_sum": Coalesce(Sum("total_tokens", filter=_SPENT), 0),
    "tokens_saved_sum": Coalesce(Sum("total_tokens", filter=~_SPENT), 0),
    "blocked_sum": Coalesce(Sum("requests", filter=~Q(block_reason="")), 0),
}


def _rollups(start: datetime, end: datetime, filters: Mapping[str, str] | None):
    return UsageRollup.objects.filter(minute__gte=start, minute__lt=end, **(filters or {}))


def _key_of(row: Mapping, dimensions: tuple[str, ...]) -> str | None:
    return "/".join(row[name] for name in dimensions) or None


def _is_key(key: str | None, dimensions: tuple[str, ...]) -> Q:
    values = (key or "").split("/", len(dimensions) - 1) if key else [""] * len(dimensions)
    return Q(**dict(zip(dimensions, values, strict=True)))


def usage_top(
    *,
    group_by: str,
    start: datetime,
    end: datetime,
    filters: Mapping[str, str] | None = None,
    limit: int = 10,
) -> list[dict]:
    """Totals per key over [start, end) of the `limit` keys with the most tokens (then requests, then key),
    keys as in `usage_report`."""
    dimensions = GROUP_BY_FIELDS[group_by]
    rows = (
        _rollups(start, end, filters)
        .values(*dimensions)
        .annotate(**_TOTALS)
        .order_by("-total_tokens_sum", "-requests_sum", *dimensions)[:limit]
    )
    return [
        {
            "key": _key_of(row, dimensions),
            "requests": row["requests_sum"],
            "prompt_tokens": row["prompt_tokens_sum"],
            "completion_tokens": row["completion_tokens_sum"],
            "total_tokens": row["total_tokens_sum"],
            "tokens_saved": row["tokens_saved_sum"],
            "blocked": row["blocked_sum"],
        }
        for row in rows
    ]


def usage_series(
    *,
    group_by: str,
    interval: str,
    start: datetime,
    end: datetime,
    keys: Iterable[str | None],
    filters: Mapping[str, str] | None = None,
) -> list[dict]:
    """Requests and total tokens (spent ones: not a cache hit's saved) per period for each of `keys`; every other
    key is summed in rows whose `other` is True (and `key` None). At most (periods x (len(keys) + 1)) rows, in one
    query."""
    dimensions = GROUP_BY_FIELDS[group_by]
    chosen = Q(pk__in=[])  # matches nothing
    for key in keys:
        chosen |= _is_key(key, dimensions)
    joined = F(dimensions[0]) if len(dimensions) == 1 else Concat(F(dimensions[0]), Value("/"), F(dimensions[1]))
    bucket = Case(When(chosen, then=joined), default=Value(None), output_field=CharField())
    rows = (
        _rollups(start, end, filters)
        .annotate(period=Trunc("minute", interval, tzinfo=UTC), bucket=bucket)
        .values("period", "bucket")
        .annotate(requests_sum=Sum("requests"), total_tokens_sum=Coalesce(Sum("total_tokens", filter=_SPENT), 0))
        .order_by("period", "bucket")
    )
    return [
        {
            "period": row["period"],
            "key": row["bucket"] or None,
            "other": row["bucket"] is None,
            "requests": row["requests_sum"],
            "total_tokens": row["total_tokens_sum"],
        }
        for row in rows
    ]
