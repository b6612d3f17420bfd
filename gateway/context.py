"""The per-request context shared by the pipeline steps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from datetime import datetime

    from gateway.backends import BackendStates
    from gateway.errors import GatewayError
    from gateway.http.client import UpstreamPool, UpstreamResponse
    from gateway.http.messages import Request
    from gateway.limits import TokenStore
    from gateway.metrics import Metrics
    from gateway.model import ApiEntry, BackendTarget, OperationEntry, ProductEntry, SubscriptionEntry
    from gateway.semcache import SemanticCache
    from gateway.types import Deployment, Section

__all__ = (
    "ChunkFilter",
    "FinishCallback",
    "Headers",
    "LlmState",
    "RequestContext",
    "ResponseCheck",
    "ResponseHead",
    "Services",
    "StreamStage",
)

Headers = list[tuple[bytes, bytes]]


FinishCallback = Callable[["RequestContext", bool], None]
"""Called once when a request is over: ``complete`` is False when the client went away or the stream broke."""


class ChunkFilter(Protocol):
    """Sees the response body chunk by chunk without buffering it (added by outbound steps).

    ``feed`` returns the bytes to send in place of ``chunk`` (``b""`` to hold back). ``finish`` is called
    once at the end: ``complete`` is False when the stream was aborted (its return value is then dropped).
    """

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self, complete: bool) -> bytes: ...


StreamStage = Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]]
"""Wraps a streamed response body before the chunk filters see it (added by outbound steps). Unlike a ChunkFilter a
stage may await (a content-safety check of each window), hold chunks back, and end the body early."""

ResponseCheck = Callable[["RequestContext"], Awaitable[None]]
"""Registered by an inbound step: runs once the backend section has produced its response, before outbound (and
before a streamed body is built). Raises GatewayError to fail the request; may add stream stages."""


class LlmState(Protocol):
    """What the context shows of the request's LLM exchange (``gateway.llm_accounting.LlmExchange``, which sits
    above this module); ``llm_accounting.current_exchange`` gives the whole object."""

    raw: bytes
    admissions: list[Any]  # what token-limit policies decided (for traces)
    response_hooks: list[Callable[[RequestContext], None]]  # run when the backend's response head is in

    @property
    def body(self) -> dict[str, Any] | None:
        """The parsed JSON object body, None when the request has none (parsed on first read)."""

    @property
    def model(self) -> str | None:
        """The model the request body names."""


class Services(Protocol):
    """Per-app dependencies reachable from policies and expressions (``ctx.services``, injected by ``create_app``)."""

    clock: Callable[[], float]  # monotonic seconds
    sleep: Callable[[float], Awaitable[None]]  # waits of policies (retry intervals); injected so tests need not wait
    now: Callable[[], datetime] | None  # the wall clock of expressions (DateTime.UtcNow); None: the system's
    deployment: Deployment | None  # what context.Deployment reports; None: empty strings
    metrics: Metrics | None  # where llm-emit-token-metric records; None: metrics are off
    limits: TokenStore | None  # the counters of the limit policies (gateway.limits); None: no store configured
    pool: UpstreamPool  # the upstream connection pool, for policies that call a service (content safety)
    backends: BackendStates  # circuit breakers and pool positions (gateway.backends)
    semantic_cache: SemanticCache | None  # the store and embeddings client of the semantic cache policies

    def forward(self, ctx: RequestContext, timeout: float | None) -> Awaitable[None]:
        """Send the request to ``ctx.backend`` and set ``ctx.response``; raises GatewayError."""
        ...


@dataclass(slots=True)
class ResponseHead:
    """The response being built: from the backend, from on-error, or inbound ``set-status``.

    Exactly one of ``body`` (buffered) or ``upstream`` (still to be streamed) carries the body.
    """

    status: int
    headers: Headers
    reason: bytes = b""
    body: bytes = b""
    upstream: UpstreamResponse | None = None
    content_length: int | None = None


@dataclass(slots=True, init=False)
class RequestContext:
    """Everything a policy may read or change for one request (APIM's ``context``).

    ``__init__`` is written out (the fields and defaults below): the generated one calls a factory for each of the
    seven containers and, given keywords, matches them against thirty parameters, on every request. The app
    passes the first twelve by position.
    """

    request: Request
    request_id: bytes
    api: ApiEntry
    operation: OperationEntry
    product: ProductEntry | None
    subscription: SubscriptionEntry | None
    services: Services
    backend: BackendTarget | None
    # what goes upstream: the operation part of the path, the query (key parameter removed), the headers
    forward_path: str
    query: str
    request_headers: Headers
    matched_parameters: Mapping[str, str]
    variables: dict[str, Any] = field(default_factory=dict)
    response: ResponseHead | None = None
    last_error: GatewayError | None = None
    section: Section | None = None
    trace: list[dict[str, Any]] | None = None
    usage: Any = None  # gateway.tokens.TokenUsage once known (set before on_finish callbacks run)
    llm: LlmState | None = None  # the parsed LLM request and its usage accounting (gateway.llm_accounting)
    chunk_filters: list[ChunkFilter] = field(default_factory=list)
    stream_stages: list[StreamStage] = field(default_factory=list)
    response_checks: list[ResponseCheck] = field(default_factory=list)
    # why a policy refused the request or cut its response ("ContentSafety.Hate", ...): in the usage record; a
    # response with a block reason is never complete (a cache must not store it)
    block_reason: str | None = None
    # added to whatever response the client gets (backend, return-response or error): Retry-After, remaining calls
    response_headers: Headers = field(default_factory=list)
    # run once when the response is over (after the last chunk of a stream); token settlement, metrics, usage
    on_finish: list[FinishCallback] = field(default_factory=list)
    status: int = 0  # the status sent to the client, set before ``on_finish`` runs
    # one entry per forwarding attempt (gateway.forward): backend, why it was chosen, status or error reason
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # Set by an inbound step that answered from a cache (llm-semantic-cache-lookup) along with ``ctx.response``:
    # the backend is skipped, and outbound resumes after the first top-level step with one of these names.
    resume_outbound_after: frozenset[str] | None = None
    semantic_cache: Any = None  # the lookup's state for the store and the usage record (gateway.semcache.CacheState)
    started: float = 0.0
    # the request body and the JSON object the pipeline's body check parsed from it (``requires_json_body``): the
    # LLM exchange takes the object instead of parsing the same bytes again
    json_body: tuple[bytes, dict[str, Any]] | None = None

    def __init__(
        self,
        request: Request,
        request_id: bytes,
        api: ApiEntry,
        operation: OperationEntry,
        product: ProductEntry | None,
        subscription: SubscriptionEntry | None,
        services: Services,
        backend: BackendTarget | None,
        forward_path: str,
        query: str,
        request_headers: Headers,
        matched_parameters: Mapping[str, str],
        variables: dict[str, Any] | None = None,
        response: ResponseHead | None = None,
        last_error: GatewayError | None = None,
        section: Section | None = None,
        trace: list[dict[str, Any]] | None = None,
        usage: Any = None,
        llm: LlmState | None = None,
        chunk_filters: list[ChunkFilter] | None = None,
        stream_stages: list[StreamStage] | None = None,
        response_checks: list[ResponseCheck] | None = None,
        block_reason: str | None = None,
        response_headers: Headers | None = None,
        on_finish: list[FinishCallback] | None = None,
        status: int = 0,
        attempts: list[dict[str, Any]] | None = None,
        resume_outbound_after: frozenset[str] | None = None,
        semantic_cache: Any = None,
        started: float = 0.0,
        json_body: tuple[bytes, dict[str, Any]] | None = None,
    ) -> None:
        self.request = request
        self.request_id = request_id
        self.api = api
        self.operation = operation
        self.product = product
        self.subscription = subscription
        self.services = services
        self.backend = backend
        self.forward_path = forward_path
        self.query = query
        self.request_headers = request_headers
        self.matched_parameters = matched_parameters
        self.variables = {} if variables is None else variables
        self.response = response
        self.last_error = last_error
        self.section = section
        self.trace = trace
        self.usage = usage
        self.llm = llm
        self.chunk_filters = [] if chunk_filters is None else chunk_filters
        self.stream_stages = [] if stream_stages is None else stream_stages
        self.response_checks = [] if response_checks is None else response_checks
        self.block_reason = block_reason
        self.response_headers = [] if response_headers is None else response_headers
        self.on_finish = [] if on_finish is None else on_finish
        self.status = status
        self.attempts = [] if attempts is None else attempts
        self.resume_outbound_after = resume_outbound_after
        self.semantic_cache = semantic_cache
        self.started = started
        self.json_body = json_body
