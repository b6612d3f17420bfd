"""The configuration as plain data: frozen, slotted objects built once per snapshot by ``gateway.snapshot``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    from gateway.http.client import Origin

__all__ = (
    "MAX_POOL_MEMBERS",
    "Access",
    "ApiEntry",
    "BackendPool",
    "BackendTarget",
    "BreakerRule",
    "KeyRecord",
    "OperationEntry",
    "PoolMember",
    "ProductEntry",
    "SubscriptionEntry",
)


MAX_POOL_MEMBERS = 30


@dataclass(frozen=True, slots=True)
class BreakerRule:
    """One circuit breaker rule (APIM ``circuitBreaker.rules[0]``), durations in seconds."""

    name: str
    interval: float
    trip_duration: float
    count: int | None = None
    percentage: int | None = None
    status_ranges: tuple[tuple[int, int], ...] = ()
    error_reasons: frozenset[str] = frozenset()
    accept_retry_after: bool = False
    min_samples: int = 10  # percentage rules: answers needed in the window

    def is_failure(self, status: int | None, reason: str | None) -> bool:
        """Whether an answer (``status``) or a gateway error (``reason``, no status) counts as a failure."""
        if status is not None:
            return any(low <= status <= high for low, high in self.status_ranges)
        return reason is not None and (reason in self.error_reasons or "*" in self.error_reasons)


@dataclass(frozen=True, slots=True)
class PoolMember:
    target: BackendTarget
    priority: int
    weight: int


@dataclass(frozen=True, slots=True)
class BackendPool:
    """The members of a ``Pool`` backend, grouped by priority (best group first)."""

    members: tuple[PoolMember, ...]
    groups: tuple[tuple[PoolMember, ...], ...] = ()

    @classmethod
    def of(cls, members: Iterable[PoolMember]) -> BackendPool:
        members = tuple(members)
        priorities = sorted({m.priority for m in members})
        groups = tuple(tuple(m for m in members if m.priority == p) for p in priorities)
        return cls(members, groups)


@dataclass(frozen=True, slots=True)
class BackendTarget:
    """Where requests are forwarded: an origin, a base path, and credentials to inject (as bytes).

    A ``Pool`` backend has no origin of its own (``origin`` None, ``url`` ""): the forwarder picks one of
    ``pool.members`` (gateway.backends).
    """

    name: str | None  # backend entity name; None for an API service URL or a set-backend-service base-url
    url: str
    origin: Origin | None
    base_path: str  # no trailing slash
    headers: tuple[tuple[bytes, bytes], ...] = ()
    header_names: frozenset[bytes] = frozenset()
    query: str = ""  # encoded credential query parameters, appended to the forwarded query
    # the URL's own query parameters as (decoded name, encoded "name=value"): sent unless the client sends the name
    url_query: tuple[tuple[str, str], ...] = ()
    kind: str = "Single"  # "Single" or "Pool" (context.Backend.Type)
    pool: BackendPool | None = None
    breaker: BreakerRule | None = None

    def url_for(self, forward_path: str, query: str) -> str:
        """The request target (path + query) sent upstream."""
        path = self.base_path + forward_path or "/"
        if self.url_query:
            query = _merge_query(query, self.url_query)
        if self.query:
            query = f"{query}&{self.query}" if query else self.query
        return f"{path}?{query}" if query else path


@dataclass(frozen=True, slots=True)
class ProductEntry:
    name: str
    published: bool
    subscription_required: bool
    apis: tuple[str, ...]

    @property
    def is_open(self) -> bool:
        return self.published and not self.subscription_required


@dataclass(frozen=True, slots=True)
class SubscriptionEntry:
    name: str
    scope: str  # "/apis", "/apis/{api}" or "/products/{product}"
    active: bool
    product: ProductEntry | None  # the product of a product-scoped subscription (published or not)


@dataclass(frozen=True, slots=True)
class Access:
    """The outcome of a successful subscription check: the product context and the subscription (if any)."""

    product: ProductEntry | None
    subscription: SubscriptionEntry | None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One subscription key (by its SHA-256 hex) and the subscription holding it."""

    key_hash: str
    subscription: SubscriptionEntry
    access: Access  # precomputed: the product context (for product scopes) and the subscription


@dataclass(frozen=True, slots=True, eq=False)
class OperationEntry:
    name: str
    display_name: str
    method: str
    url_template: str

    def __repr__(self) -> str:
        return f"<OperationEntry {self.name} {self.method} {self.url_template}>"


@dataclass(frozen=True, slots=True, eq=False)
class ApiEntry:
    name: str
    path: str  # without leading/trailing slash; "" for the root
    api_type: str
    service_url: str
    subscription_required: bool
    key_header: bytes  # lower-case
    key_query: str
    backend: BackendTarget | None  # the API's service URL (default target); None when it has none
    operations: tuple[OperationEntry, ...]
    drop_headers: frozenset[bytes]  # request headers never forwarded (hop-by-hop, host, key header, ...)
    allowed_scopes: frozenset[str]  # subscription scopes that grant access to this API
    products: Mapping[str, ProductEntry]  # published products containing this API
    open_access: Access | None  # context of the open product containing the API, if any
    no_key_access: Access | None  # access without key: open product, else API context when not required
    unavailable: bool = False  # quarantined at load (gateway.snapshot): every request answers 503

    def __repr__(self) -> str:
        return f"<ApiEntry {self.name} /{self.path}>"


def _merge_query(query: str, defaults: tuple[tuple[str, str], ...]) -> str:
    """The client's query plus each default parameter whose name the client did not send (APIM: the client wins)."""
    sent = {unquote_plus(part.partition("=")[0]) for part in query.split("&")} if query else set()
    extra = "&".join(pair for name, pair in defaults if name not in sent)
    if not extra:
        return query
    return f"{query}&{extra}" if query else extra
