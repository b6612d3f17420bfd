"""Prometheus metrics of the gateway: requests, latency, upstream errors and the token counters of
``llm-emit-token-metric``. Each family keeps at most ``max_label_sets`` label sets (the rest go to an ``__other__``
series) and caches its children by label values, so recording is a dict hit. With several workers,
``enable_multiprocess`` makes every scrape report the totals. Names and scraping: docs/usage-and-metrics.md.
"""

from __future__ import annotations

import asyncio
import os
import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = (
    "CONTENT_TYPE",
    "DEFAULT_MAX_LABEL_SETS",
    "DEFAULT_NAMESPACE",
    "DURATION_BUCKETS",
    "MAX_LABEL_VALUE",
    "MULTIPROC_ENV",
    "OVERFLOW_VALUE",
    "LabelledFamily",
    "Metrics",
    "TokenFamily",
    "enable_multiprocess",
    "label_name",
    "metric_prefix",
)

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4.encode("ascii")  # text/plain; version=0.0.4; charset=utf-8
DEFAULT_MAX_LABEL_SETS: Final = 1000
DEFAULT_NAMESPACE: Final = "API Management"  # the namespace of llm-emit-token-metric when none is given
OVERFLOW_VALUE: Final = "__other__"
MAX_LABEL_VALUE: Final = 256
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# 1 ms … 60 s: gateway overhead at the low end, long completions and streams at the high end.
DURATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS: Final = "sluice_requests"
SNAPSHOT_REJECTED: Final = "sluice_snapshot_rejected"  # exposed as sluice_snapshot_rejected_total
SNAPSHOT_QUARANTINED: Final = "sluice_snapshot_quarantined_items"
DURATION: Final = "sluice_request_duration_seconds"
UPSTREAM_ERRORS: Final = "sluice_upstream_errors"
DROPPED: Final = "sluice_metric_label_sets_dropped"
BREAKER_STATE: Final = "sluice_redis_breaker_state"
BREAKER_OPENED: Final = "sluice_redis_breaker_opened"
SEMANTIC_CACHE: Final = "sluice_semantic_cache"  # exposed as sluice_semantic_cache_total
TOKENS_SAVED: Final = "sluice_semantic_cache_tokens_saved"
CONTENT_SAFETY: Final = "sluice_content_safety_checks"
BACKEND_STATE: Final = "sluice_backend_state"
BACKEND_TRIPS: Final = "sluice_backend_trips"
TOKEN_KINDS: Final = ("prompt", "completion", "total")

_INVALID_RUN = re.compile(r"[^a-zA-Z0-9_]+")


def _sanitise(text: str) -> str:
    name = _INVALID_RUN.sub("_", text.strip()).strip("_").lower()
    name = re.sub("_{2,}", "_", name)
    if name[:1].isdigit():
        name = "_" + name
    return name


def metric_prefix(namespace: str) -> str:
    """The metric-name prefix of an emit-token-metric namespace: ``"API Management"`` → ``"api_management"``.

    Runs of characters outside ``[A-Za-z0-9_]`` become one ``_``, the result is lower-cased and trimmed of ``_``,
    and a leading digit gets a ``_`` in front. Raises ValueError when nothing is left.
    """
    name = _sanitise(namespace)
    if not name:
        raise ValueError(f"namespace {namespace!r} has no letter or digit to build a metric name from")
    return name


def label_name(dimension: str) -> str:
    """The Prometheus label name of a dimension: ``"API ID"`` → ``"api_id"`` (same rules as ``metric_prefix``)."""
    name = _sanitise(dimension)
    if not name:
        raise ValueError(f"dimension name {dimension!r} has no letter or digit to build a label name from")
    return name


def _clip(value: str) -> str:
    return value if len(value) <= MAX_LABEL_VALUE else value[:MAX_LABEL_VALUE]


def enable_multiprocess(path: str) -> None:
    """Switch prometheus_client to multiprocess mode, writing to ``path`` (created, stale files removed).

    Call it once in the parent before forking workers and before any metric is created. prometheus_client decides
    its value class when it is imported; this sets the documented environment variable and the value class it
    would have chosen with it.
    """
    os.makedirs(path, exist_ok=True)
    for entry in os.listdir(path):
        if entry.endswith(".db"):
            os.unlink(os.path.join(path, entry))
    os.environ[MULTIPROC_ENV] = path
    values.ValueClass = values.MultiProcessValue()


def _multiprocess_dir() -> str | None:
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and values.ValueClass is not values.MutexValue else None


#
# Bounded families
#


class LabelledFamily:
    """One labelled prometheus_client metric with cached children and a cap on its label sets."""

    __slots__ = ("_cap", "_children", "_dropped", "_metric", "_overflow", "_own", "name")

    def __init__(self, metric: MetricWrapperBase, cap: int, dropped: Counter) -> None:
        self._metric = metric
        self._cap = cap
        self._dropped = dropped.labels(metric._name)
        self._children: dict[tuple[str, ...], Any] = {}
        self._own = 0
        self._overflow: Any = None
        self.name = metric._name

    def child(self, labels: tuple[str, ...]) -> Any:
        """The child of ``labels`` (or the overflow child once the cap is reached)."""
        child = self._children.get(labels)
        if child is None:
            child = self._admit(labels)
        return child

    def _admit(self, labels: tuple[str, ...]) -> Any:
        if self._own < self._cap:
            child = self._metric.labels(*[_clip(v) for v in labels])
            self._own += 1
            self._children[labels] = child
            return child
        self._dropped.inc()
        overflow = self._overflow
        if overflow is None:
            overflow = self._overflow = self._metric.labels(*[OVERFLOW_VALUE] * len(self._metric._labelnames))
        if len(self._children) < 2 * self._cap:  # remember refusals (bounded) so a repeat is a dict hit
            self._children[labels] = overflow
        return overflow

    @property
    def label_sets(self) -> int:
        """Label sets with a series of their own (the overflow series not included)."""
        return self._own


class _RequestCells:
    """The values one request of an (api, operation, code) adds to: its requests counter, and its duration
    histogram's sum and buckets. ``record`` does what ``Counter.inc()`` and ``Histogram.observe()`` do on these values
    (locked additions, in-process or in multiprocess files alike), without their per-call checks and the linear
    search of the bucket: three additions where the two calls cost about 2.5 µs per request."""

    __slots__ = ("bounds", "buckets", "count", "sum")

    def __init__(self, counter: Any, histogram: Any) -> None:
        # prometheus_client's children keep their values in these attributes (the exposition reads them back)
        self.count = counter._value
        self.sum = histogram._sum
        self.buckets = histogram._buckets
        self.bounds = histogram._upper_bounds  # ascending, the last one +Inf

    def record(self, seconds: float) -> None:
        self.count.inc(1)
        self.sum.inc(seconds)
        self.buckets[bisect_left(self.bounds, seconds)].inc(1)  # the first bucket whose bound is >= seconds


class _InProcessCells(_RequestCells):
    """``_RequestCells`` whose values are in-process floats (``values.MutexValue``, no multiprocess files): ``record``
    adds to each float without taking its lock. The lock only orders writers, and these values have one, the event
    loop's thread (``record_request`` is called there only); a scrape in another thread reads each float whole
    (under the GIL), before or after an addition, as it did. The three lock round trips were most of the cost."""

    __slots__ = ()

    def record(self, seconds: float) -> None:
        self.count._value += 1
        self.sum._value += seconds
        self.buckets[bisect_left(self.bounds, seconds)]._value += 1


def _request_cells(counter: Any, histogram: Any) -> _RequestCells:
    """The cells of one series: lock-free in-process floats, else (multiprocess files) through the values' ``inc``."""
    plain = type(counter._value) is values.MutexValue and type(histogram._sum) is values.MutexValue
    return _InProcessCells(counter, histogram) if plain else _RequestCells(counter, histogram)


class TokenFamily:
    """The prompt, completion and total token counters of one namespace and dimension set (one cap for the three).

    Several ``llm-emit-token-metric`` statements with the same namespace and dimensions share one family.
    """

    __slots__ = ("_cap", "_children", "_counters", "_dropped", "_overflow", "_own", "_plain", "label_names", "prefix")

    def __init__(self, prefix: str, label_names: tuple[str, ...], cap: int, dropped: Counter) -> None:
        self.prefix = prefix
        self.label_names = label_names
        self._counters = tuple(
            Counter(
                f"{prefix}_{kind}_tokens",
                f"{kind.capitalize()} tokens counted by llm-emit-token-metric.",
                label_names,
                registry=None,
            )
            for kind in TOKEN_KINDS
        )
        self._cap = cap
        self._dropped = dropped.labels(f"{prefix}_tokens")
        self._children: dict[tuple[str, ...], tuple[Any, ...]] = {}
        self._own = 0
        self._overflow: tuple[Any, ...] | None = None
        self._plain = False  # the children's values are in-process floats (set when the first child is made)

    def record(self, labels: tuple[str, ...], prompt: int, completion: int, total: int) -> None:
        """Add one response's counts. Call it on the event loop's thread only (see ``_InProcessCells``)."""
        # the children's values are added to directly: what Counter.inc() does, without its per-call checks
        values = self._children.get(labels)
        if values is None:
            values = self._admit(labels)
        if prompt < 0 or completion < 0 or total < 0:
            raise ValueError("token counts cannot be negative")
        if self._plain:  # one writer, so the floats are added to without their locks, as _InProcessCells does
            values[0]._value += prompt
            values[1]._value += completion
            values[2]._value += total
            return
        if prompt:
            values[0].inc(prompt)
        if completion:
            values[1].inc(completion)
        if total:
            values[2].inc(total)

    def _admit(self, labels: tuple[str, ...]) -> tuple[Any, ...]:
        """The values (prompt, completion, total) of ``labels``' children, or of the overflow series'."""
        if self._own < self._cap:
            clipped = [_clip(v) for v in labels]
            children = tuple(c.labels(*clipped)._value for c in self._counters)
            self._plain = type(children[0]) is values.MutexValue
            self._own += 1
            self._children[labels] = children
            return children
        self._dropped.inc()
        overflow = self._overflow
        if overflow is None:
            others = [OVERFLOW_VALUE] * len(self.label_names)
            overflow = self._overflow = tuple(c.labels(*others)._value for c in self._counters)
            self._plain = type(overflow[0]) is values.MutexValue
        if len(self._children) < 2 * self._cap:
            self._children[labels] = overflow
        return overflow

    @property
    def label_sets(self) -> int:
        return self._own

    def collect(self) -> Iterator[Metric]:
        for counter in self._counters:
            yield from counter.collect()


class _TokenCollector:
    """Exposes every TokenFamily; families with the same metric name (and other dimensions) become one."""

    def __init__(self, families: dict[tuple[str, tuple[str, ...]], TokenFamily]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for family in list(self._families.values()):
            for metric in family.collect():
                known = merged.get(metric.name)
                if known is None:
                    merged[metric.name] = metric
                else:
                    known.samples.extend(metric.samples)
        return merged.values()


#
# The app's metrics
#


class Metrics:
    """The metrics of one gateway app. ``registry`` defaults to a new CollectorRegistry (never the global one)."""

    __slots__ = (
        "_request_cells",
        "_tokens",
        "backend_state",
        "backend_trips",
        "breaker_opened",
        "breaker_state",
        "content_safety",
        "dropped",
        "duration",
        "gateway_id",
        "location",
        "max_label_sets",
        "multiprocess_dir",
        "registry",
        "requests",
        "semantic_cache",
        "snapshot_quarantined",
        "snapshot_rejected",
        "tokens_saved",
        "upstream_errors",
    )  # fmt: skip

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_label_sets: int = DEFAULT_MAX_LABEL_SETS,
        gateway_id: str = "",
        location: str = "",
    ) -> None:
        if max_label_sets < 1:
            raise ValueError("max_label_sets must be at least 1")
        self.registry = registry if registry is not None else CollectorRegistry()
        self.max_label_sets = max_label_sets
        # the values of the built-in dimensions "Gateway ID" and "Location"
        self.gateway_id = gateway_id
        self.location = location
        self.multiprocess_dir = _multiprocess_dir()
        # No ``*_created`` series: they double the series count and the 0.0.4 format makes them plain gauges.
        # (prometheus_client's switch is process-wide; the gateway process has no other metrics.)
        disable_created_metrics()
        reg = self.registry
        self.dropped = Counter(
            DROPPED, "Label sets refused by the cardinality cap (recorded in the overflow series).", ["metric"],
            registry=reg,
        )  # fmt: skip
        self.requests = self._family(
            Counter(REQUESTS, "Requests answered by the gateway.", ["api", "operation", "code"], registry=reg)
        )
        self.duration = self._family(
            Histogram(
                DURATION,
                "Time from the request to the end of its response (last byte of a stream).",
                ["api", "operation"],
                buckets=DURATION_BUCKETS,
                registry=reg,
            )
        )
        self.upstream_errors = self._family(
            Counter(
                UPSTREAM_ERRORS,
                "Requests whose forwarding failed (connect, timeout, invalid response).",
                ["api", "backend", "reason"],
                registry=reg,
            )
        )
        self.snapshot_rejected = Counter(
            SNAPSHOT_REJECTED, "Snapshots refused as a whole (the previous revision kept serving).", registry=reg
        )
        self.snapshot_quarantined = Gauge(
            SNAPSHOT_QUARANTINED, "Items of the served snapshot set aside by the loader.", registry=reg,
            multiprocess_mode="max",
        )  # fmt: skip
        self._tokens: dict[tuple[str, tuple[str, ...]], TokenFamily] = {}
        self._request_cells: dict[tuple[str, str, int], _RequestCells] = {}
        reg.register(_TokenCollector(self._tokens))
        self.breaker_state = Gauge(
            BREAKER_STATE, "Counter store (Redis) circuit breaker: 0 closed, 1 open, 2 half-open.",
            registry=reg, multiprocess_mode="max",
        )  # fmt: skip
        self.breaker_opened = Counter(BREAKER_OPENED, "Times the counter store circuit breaker opened.", registry=reg)
        self.semantic_cache = self._family(
            Counter(
                SEMANTIC_CACHE,
                "Semantic cache events: hit, miss, skipped, lookup_error, stored, not_stored, store_error.",
                ["api", "operation", "result"],
                registry=reg,
            )
        )
        self.tokens_saved = self._family(
            Counter(
                TOKENS_SAVED,
                "Tokens the model did not spend: the usage of answers served from the semantic cache.",
                ["api"],
                registry=reg,
            )
        )
        self.content_safety = self._family(
            Counter(
                CONTENT_SAFETY,
                "Content-safety checks (llm-content-safety) of prompts and completions, by outcome: allowed, blocked, "
                "failed_open or failed_closed (the engine could not answer).",
                ["api", "direction", "outcome", "reason"],
                registry=reg,
            )
        )
        self.backend_state = self._family(
            Gauge(
                BACKEND_STATE, "Backend circuit breaker: 0 closed, 1 open (tripped), 2 half-open (probing).",
                ["backend"], registry=reg, multiprocess_mode="max",
            )
        )  # fmt: skip
        self.backend_trips = self._family(
            Counter(BACKEND_TRIPS, "Times a backend circuit breaker tripped.", ["backend"], registry=reg)
        )

    def record_backend_state(self, backend: str, state: int) -> None:
        """Listener of ``gateway.backends.BackendStates``."""
        self.backend_state.child((backend,)).set(int(state))
        if state == 1:
            self.backend_trips.child((backend,)).inc()

    def record_breaker(self, state: int, opened: bool) -> None:
        """Listener of ``gateway.limits.breaker.CircuitBreaker``."""
        self.breaker_state.set(int(state))
        if opened:
            self.breaker_opened.inc()

    def _family(self, metric: MetricWrapperBase) -> LabelledFamily:
        return LabelledFamily(metric, self.max_label_sets, self.dropped)

    def token_family(self, prefix: str, label_names: tuple[str, ...]) -> TokenFamily:
        """The token counters for a metric-name prefix (see ``metric_prefix``) and label names (created once)."""
        key = (prefix, label_names)
        family = self._tokens.get(key)
        if family is None:
            family = self._tokens[key] = TokenFamily(prefix, label_names, self.max_label_sets, self.dropped)
        return family

    def record_request(self, api: str, operation: str, status: int, seconds: float) -> None:
        """Count a request and observe its duration. Call it on the event loop's thread only (see _InProcessCells)."""
        key = (api, operation, status)
        cells = self._request_cells.get(key)
        if cells is None:
            cells = _request_cells(
                self.requests.child((api, operation, str(status))), self.duration.child((api, operation))
            )
            if len(self._request_cells) < 2 * self.max_label_sets:  # bounded, like the families' own caches
                self._request_cells[key] = cells
        cells.record(seconds)

    def record_upstream_error(self, api: str, backend: str, reason: str) -> None:
        self.upstream_errors.child((api, backend, reason)).inc()

    def record_semantic_cache(self, api: str, operation: str, result: str) -> None:
        self.semantic_cache.child((api, operation, result)).inc()

    def record_tokens_saved(self, api: str, tokens: int) -> None:
        self.tokens_saved.child((api,)).inc(tokens)

    def record_content_safety(self, api: str, direction: str, outcome: str, reason: str) -> None:
        self.content_safety.child((api, direction, outcome, reason)).inc()

    def exposition(self) -> bytes:
        """The text exposition (format 0.0.4) of this app, or of all workers in multiprocess mode."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, self.multiprocess_dir)
        return generate_latest(registry)

    async def exposition_async(self) -> bytes:
        """``exposition()`` off the event loop: a large registry takes milliseconds to render."""
        return await asyncio.to_thread(self.exposition)
