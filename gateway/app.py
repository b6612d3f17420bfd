"""The gateway request handler: route -> subscription check -> policy pipeline -> forward.

``create_app`` wires the dependencies (upstream pool, clock) into a ``GatewayApp``, the handler given to
``gateway.http.server.serve``. The configuration it serves is swapped by ``gateway.sync`` with one attribute
assignment (``app.snapshot = config``); each request reads it once, so a swap never mixes two snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import orjson

from gateway.backends import BackendStates, RedisBreakers
from gateway.context import Headers, RequestContext
from gateway.errors import (
    MSG_API_UNAVAILABLE,
    MSG_INVALID_KEY,
    MSG_MISSING_KEY,
    MSG_NOT_CONFIGURED,
    MSG_OPERATION_NOT_FOUND,
)
from gateway.forward import Forwarder
from gateway.http.client import UpstreamPool
from gateway.http.headers import connection_options
from gateway.http.messages import Request, RequestBodyError, Response, StreamingResponse
from gateway.ids import next_request_id
from gateway.limits import TokenStore, create_store
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.metrics import Metrics
from gateway.pipeline import JSON_HEADERS, Pipeline, error_body, error_response, run_pipeline
from gateway.redis import RespClient
from gateway.request_checks import path_problem
from gateway.secrets import trace_key, verify_trace_token
from gateway.semcache import SemanticCache, create_semantic_cache
from gateway.subscription import check_subscription, split_query_param
from gateway.telemetry import Telemetry
from gateway.tokens import get_tokenizer

if TYPE_CHECKING:
    from datetime import datetime

    from gateway.model import Access
    from gateway.routing import RouteMatch
    from gateway.settings import GatewaySettings
    from gateway.snapshot import Snapshot
    from gateway.types import Deployment
    from gateway.usage.journal import UsageJournal
    from gateway.usage.sinks import UsageSink

__all__ = ("HEALTH_PATH", "METRICS_PATH", "PUBLIC_METRICS_PATH", "REQUEST_ID_HEADER", "TRACE_HEADER", "AdminApp",
           "GatewayApp", "create_app")  # fmt: skip

REQUEST_ID_HEADER = b"x-request-id"
# Debug tracing: a request carrying this header with a valid trace token for its API (signed by the management
# plane, short-lived: gateway.secrets.sign_trace_token) gets the pipeline trace back as JSON in the same response
# header. The management plane's test console asks for one; the gateway token itself no longer enables it.
TRACE_HEADER = b"x-sluice-trace"
RESERVED_PREFIX = "/__sluice/"
HEALTH_PATH = "/__sluice/health"
# Prometheus exposition: on the admin listener at both paths (AdminApp); on the client listener only at METRICS_PATH
# and only with the metrics token (without one configured the path is not found there).
METRICS_PATH = "/__sluice/metrics"
PUBLIC_METRICS_PATH = "/metrics"

_BODY_404 = error_body(404, MSG_OPERATION_NOT_FOUND)
_BODY_UNAVAILABLE = error_body(503, MSG_API_UNAVAILABLE)
_BODY_401 = {MSG_MISSING_KEY: error_body(401, MSG_MISSING_KEY), MSG_INVALID_KEY: error_body(401, MSG_INVALID_KEY)}
_CONTENT_TYPE = JSON_HEADERS[0]
_XFF = b"x-forwarded-for"
_METRICS_HEADERS = ((b"content-type", METRICS_CONTENT_TYPE),)
# what GatewayApp._admit found for a request that goes on: route, access, query to forward, start, pipeline
_Admitted = tuple["RouteMatch", "Access", str, float, Pipeline]


class _Services(Forwarder):
    """The app's ``ctx.services``: the forwarder, plus the metrics policies record into and the counter store of
    the limit policies (``limits``: gateway.limits, in memory or Redis)."""

    __slots__ = ("deployment", "limits", "metrics", "now", "semantic_cache")

    def __init__(
        self,
        pool: UpstreamPool,
        clock: Callable[[], float],
        metrics: Metrics | None,
        limits: TokenStore | None = None,
        backends: BackendStates | None = None,
        semantic_cache: SemanticCache | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(pool, clock, backends=backends, sleep=sleep)
        self.metrics = metrics
        self.limits = limits
        self.semantic_cache = semantic_cache
        self.now: Callable[[], datetime] | None = None  # expressions use the system's wall clock
        self.deployment: Deployment | None = None


class GatewayApp:
    """The request handler. ``snapshot`` is the Snapshot being served (None until one is loaded)."""

    __slots__ = ("_backend_sync", "_metrics_auth", "_trace_key", "clock", "config", "forwarder", "pool", "rejected",
                 "snapshot", "telemetry", "wall_clock")  # fmt: skip

    def __init__(
        self,
        config: GatewaySettings,
        pool: UpstreamPool,
        clock: Callable[[], float],
        telemetry: Telemetry | None = None,
        limits: TokenStore | None = None,
        wall_clock: Callable[[], float] = time.time,
        backends: BackendStates | None = None,
        semantic_cache: SemanticCache | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.wall_clock = wall_clock  # Unix time: the expiry of trace tokens
        self.pool = pool
        self.clock = clock
        self.telemetry = telemetry
        metrics = telemetry.metrics if telemetry is not None else None
        if backends is None:
            # REDIS_URL: circuit breakers shared by every replica; else per process
            shared = RedisBreakers(RespClient(config.redis_url)) if config.redis_url else None
            backends = BackendStates(clock, wall_clock=wall_clock, max_trip=config.max_retry_after, shared=shared)
        self._backend_sync: asyncio.Task[None] | None = None
        if metrics is not None:
            backends.listeners.append(metrics.record_backend_state)
        self.forwarder = _Services(pool, clock, metrics, limits, backends, semantic_cache, sleep)
        self.snapshot: Snapshot | None = None
        # the last snapshot refused as a whole and why ({"revision": ..., "reason": ...}); set by gateway.sync
        self.rejected: dict[str, object] | None = None
        self._trace_key = trace_key(config.gateway_token)
        self._metrics_auth = b"Bearer " + config.metrics_token.encode("utf-8") if config.metrics_token else None

    @property
    def revision(self) -> int | None:
        return self.snapshot.revision if self.snapshot is not None else None

    def __call__(self, request: Request) -> Coroutine[Any, Any, Response | StreamingResponse]:
        # not a coroutine of its own: the server awaits handle() directly, one frame less on every resumption
        return self.handle(request, next_request_id().encode("ascii"))

    async def handle(self, request: Request, request_id: bytes) -> Response | StreamingResponse:
        """Answer ``request``; every answer carries ``request_id`` (``x-request-id``)."""
        found = self._admit(request, request_id)
        if isinstance(found, Response):
            found.headers.append((REQUEST_ID_HEADER, request_id))
            return found
        if found is None:  # the metrics path: the exposition renders off the event loop
            metrics = await self.metrics_response(request)
            metrics.headers.append((REQUEST_ID_HEADER, request_id))
            return metrics
        match, access, query, started, pipeline = found
        api = match.api
        if not request.body_complete:  # only now, past the subscription check, is the body worth reading
            try:
                await request.read_body()
            except RequestBodyError as exc:
                if self.telemetry is not None:
                    self.telemetry.finish_early(request_id, api, match.operation.name, exc.status, started)
                error = Response(exc.status, [_CONTENT_TYPE], error_body(exc.status, exc.message))
                error.headers.append((REQUEST_ID_HEADER, request_id))
                return error
        product = access.product
        headers, trace_value = _forward_headers(request, api.drop_headers)
        ctx = RequestContext(
            request,
            request_id,
            api,
            match.operation,
            product,
            access.subscription,
            self.forwarder,
            api.backend,
            match.forward_path,
            query,
            headers,
            match.params,
        )
        ctx.started = started
        traced = trace_value is not None and verify_trace_token(
            self._trace_key, trace_value, api.name, self.wall_clock()
        )
        if traced:
            ctx.trace = [_access_entry(api.subscription_required, access)]
        # Run the pipeline and record the request once it is over: after the policies' finish callbacks, before
        # the end of the response reaches the client (see gateway.telemetry).
        telemetry = self.telemetry
        try:
            response = await run_pipeline(pipeline, ctx)
        except BaseException:
            if telemetry is not None:
                telemetry.finish(ctx, False)
            raise
        if telemetry is not None:
            if isinstance(response, StreamingResponse):
                telemetry.finish_with_body(ctx)
            else:
                telemetry.finish(ctx, True)
        if traced:
            try:
                trace = orjson.dumps(ctx.trace, default=str, option=orjson.OPT_NON_STR_KEYS)
            except TypeError:  # a step's details would not serialise: say so rather than lose the response
                trace = b'[{"error": "trace could not be serialised"}]'
            response.headers.append((TRACE_HEADER, trace))
        response.headers.append((REQUEST_ID_HEADER, request_id))
        return response

    def _admit(self, request: Request, request_id: bytes) -> Response | _Admitted | None:
        """Everything before the body: the answer when it ends here (a reserved path, no route, a refused key), None
        for the metrics path, else the route, the access decided by the subscription check, the query to forward,
        the start time and the pipeline (all from one snapshot: a swap meanwhile never mixes two)."""
        snapshot = self.snapshot
        path = request.path
        if path.startswith(RESERVED_PREFIX):
            if path == METRICS_PATH and self._metrics_auth is not None:  # tokenless scrapes: the admin listener
                return None
            return self._internal(path)
        if snapshot is None:
            return error_response(503, MSG_NOT_CONFIGURED)
        started = self.clock()
        problem = path_problem(path)
        if problem is not None:  # dot and empty segments: refused before routing, never normalised
            if self.telemetry is not None:
                self.telemetry.finish_early(request_id, None, "", 400, started)
            return error_response(400, problem)
        match = snapshot.router.match(request.method, path)
        if match is None:
            if self.telemetry is not None:
                self.telemetry.finish_early(request_id, None, "", 404, started)
            return Response(404, [_CONTENT_TYPE], _BODY_404)
        api = match.api
        if api.unavailable:
            if self.telemetry is not None:
                self.telemetry.finish_early(request_id, api, match.operation.name, 503, started)
            return Response(503, [_CONTENT_TYPE], _BODY_UNAVAILABLE)
        query = request.query
        if api.subscription_required:
            key = request.header(api.key_header)
            if key:
                if query:
                    query = split_query_param(query, api.key_query)[1]
            else:
                value, query = split_query_param(query, api.key_query)
                key = value.encode("utf-8") if value else None
            decision = check_subscription(api, key, snapshot.subscriptions)
            if isinstance(decision, str):
                if self.telemetry is not None:
                    self.telemetry.finish_early(request_id, api, match.operation.name, 401, started)
                return Response(401, [_CONTENT_TYPE], _BODY_401[decision])
            access = decision
        else:
            if query:  # the key never reaches the backend, even where it is not checked
                query = split_query_param(query, api.key_query)[1]
            no_key_access = api.no_key_access
            assert no_key_access is not None  # always set for APIs that do not require a subscription
            access = no_key_access
        product = access.product
        pipeline = snapshot.pipelines[match.operation][product.name if product is not None else None]
        return match, access, query, started, pipeline

    async def metrics_response(self, request: Request) -> Response:
        """The Prometheus exposition; with ``SLUICE_METRICS_TOKEN`` set, only for ``Authorization: Bearer <it>``."""
        metrics = self.telemetry.metrics if self.telemetry is not None else None
        if metrics is None:
            return Response(404, [_CONTENT_TYPE], error_body(404, "Not found."))
        auth = self._metrics_auth
        if auth is not None:
            given = request.header(b"authorization")
            if given is None or not hmac.compare_digest(given, auth):
                return Response(401, [_CONTENT_TYPE], error_body(401, "A metrics token is required."))
        return Response(200, list(_METRICS_HEADERS), await metrics.exposition_async())

    def _internal(self, path: str) -> Response:
        if path == HEALTH_PATH:
            return self.health_response()
        return Response(404, [_CONTENT_TYPE], error_body(404, "Not found."))

    def health_response(self) -> Response:
        health = self.health()
        return Response(200 if health["revision"] is not None else 503, [_CONTENT_TYPE], orjson.dumps(health))

    def health(self) -> dict[str, object]:
        """What ``/__sluice/health`` answers and the heartbeat reports (gateway.sync)."""
        revision = self.revision
        health: dict[str, object] = {
            "status": "ok" if revision is not None else "starting",
            "revision": revision,
            "gateway_id": self.config.gateway_id,
        }
        quarantined = self.snapshot.quarantined if self.snapshot is not None else ()
        if self.rejected is not None or quarantined:
            # still serving (200), but not the configuration the management plane published
            if revision is not None:
                health["status"] = "degraded"
            health["rejected"] = self.rejected
            health["quarantined"] = [problem.as_dict() for problem in quarantined]
        guarded = self.guarded_backends()
        if guarded:
            health["backends"] = self.forwarder.backends.snapshot(guarded)
        return health

    def guarded_backends(self) -> list[str]:
        """Names of the served backends that have a circuit breaker."""
        snapshot = self.snapshot
        if snapshot is None:
            return []
        return [name for name, target in snapshot.backends.items() if target.breaker is not None]

    def start(self) -> None:
        """Start the background work: polling the circuit breaker state other replicas share (Redis)."""
        shared = self.forwarder.backends.shared
        if isinstance(shared, RedisBreakers) and self._backend_sync is None:
            interval = self.config.poll_interval
            self._backend_sync = asyncio.create_task(
                shared.run(self.forwarder.backends, self.guarded_backends, interval)
            )

    async def aclose(self) -> None:
        if self._backend_sync is not None:
            self._backend_sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._backend_sync
            self._backend_sync = None
        shared = self.forwarder.backends.shared
        if isinstance(shared, RedisBreakers):
            await shared.aclose()
        if self.forwarder.limits is not None:
            await self.forwarder.limits.aclose()
        if self.forwarder.semantic_cache is not None:
            await self.forwarder.semantic_cache.aclose()
        await self.pool.close()


class AdminApp:
    """The handler of the admin listener (``SLUICE_ADMIN_HOST``:``SLUICE_ADMIN_PORT``): metrics at ``/metrics`` and
    ``/__sluice/metrics``, health at ``/__sluice/health``; nothing else, and never an API."""

    __slots__ = ("app",)

    def __init__(self, app: GatewayApp) -> None:
        self.app = app

    async def __call__(self, request: Request) -> Response:
        path = request.path
        if path in (METRICS_PATH, PUBLIC_METRICS_PATH):
            if request.method not in ("GET", "HEAD"):
                return Response(405, [_CONTENT_TYPE, (b"allow", b"GET, HEAD")], error_body(405, "Use GET."))
            return await self.app.metrics_response(request)
        if path == HEALTH_PATH:
            return self.app.health_response()
        return Response(404, [_CONTENT_TYPE], error_body(404, "Not found."))


def _access_entry(required: bool, access: Access) -> dict[str, object]:
    """The first trace entry: what the subscription check decided."""
    subscription = access.subscription
    return {
        "section": "inbound",
        "policy": "subscription-check",
        "scope": None,
        "elapsed_ms": 0.0,
        "key-required": required,
        "key-matched": subscription is not None,
        "subscription": subscription.name if subscription is not None else None,
        "product": access.product.name if access.product is not None else None,
    }


def _forward_headers(request: Request, drop: frozenset[bytes]) -> tuple[Headers, bytes | None]:
    """Copy the request headers to forward: without ``drop`` names (nor those a Connection header lists),
    with the client address appended to X-Forwarded-For. Also returns the trace header's value, if any."""
    headers: Headers = []
    xff: bytes | None = None
    trace: bytes | None = None
    connection: list[bytes] | None = None
    for header in request.headers:
        name = header[0]
        if name in drop:
            if name == b"connection":
                connection = [header[1]] if connection is None else [*connection, header[1]]
            continue
        if name == _XFF:
            xff = header[1] if xff is None else xff + b", " + header[1]
        elif name == TRACE_HEADER:
            trace = header[1]
        else:
            headers.append(header)
    if connection is not None:
        listed = frozenset().union(*(connection_options(value) for value in connection))
        if listed:
            headers = [h for h in headers if h[0] not in listed]
    client = request.client_ip.encode("ascii", "replace")
    headers.append((_XFF, xff + b", " + client if xff else client))
    return headers, trace


def create_app(
    config: GatewaySettings,
    *,
    pool: UpstreamPool | None = None,
    clock: Callable[[], float] = time.monotonic,
    metrics: Metrics | None = None,
    usage_sink: UsageSink | None = None,
    wall_clock: Callable[[], float] = time.time,
    usage_journal: UsageJournal | None = None,
    token_store: TokenStore | None = None,
    backends: BackendStates | None = None,
    semantic_cache: SemanticCache | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> GatewayApp:
    """Build the request handler; a default UpstreamPool is created from the config's timeouts.

    ``metrics`` (with its own CollectorRegistry) enables request metrics, the token counters of
    llm-emit-token-metric and the ``/metrics`` exposition. ``usage_sink`` receives a usage record for every request
    that matched an operation, written first to ``usage_journal`` when given (sink and journal are started and
    closed by the caller). Without either, both are off.
    ``token_store`` holds the counters of the limit policies: by default Redis when ``config.redis_url`` is set
    (shared by every replica), else in memory (per process). ``clock`` (monotonic seconds) and ``sleep`` are the
    time of the request path (``sleep``: the waits of policies, such as ``retry`` intervals), injected by tests.
    """
    if pool is None:
        pool = UpstreamPool(connect_timeout=config.upstream_connect_timeout, read_timeout=config.upstream_read_timeout)
    telemetry = None
    if metrics is not None:  # the values of the built-in dimensions "Gateway ID" and "Location"
        metrics.gateway_id = metrics.gateway_id or config.gateway_id
        metrics.location = metrics.location or config.region
    if metrics is not None or usage_sink is not None:
        telemetry = Telemetry(
            metrics=metrics,
            sink=usage_sink,
            clock=clock,
            wall_clock=wall_clock,
            gateway_id=config.gateway_id,
            journal=usage_journal,
        )
    if token_store is None:  # REDIS_URL: counters shared by every replica; else per process
        token_store = (
            create_store("redis", url=config.redis_url, lease_seconds=config.token_lease_seconds)
            if config.redis_url
            else create_store("memory")
        )
    breaker = getattr(token_store, "breaker", None)  # the Redis store's circuit breaker (docs/redis-outage.md)
    if metrics is not None and breaker is not None:
        breaker.listeners.append(metrics.record_breaker)
    if semantic_cache is None:  # REDIS_URL: entries shared by every replica; else per process
        semantic_cache = create_semantic_cache(
            pool,
            clock,
            redis_url=config.redis_url,
            max_entries=config.semantic_cache_max_entries,
            timeout=config.semantic_cache_timeout,
            metrics=metrics,
        )
    get_tokenizer()  # load the BPE tables now, not on the first request
    return GatewayApp(config, pool, clock, telemetry, token_store, wall_clock, backends, semantic_cache, sleep)
