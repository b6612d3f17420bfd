"""Load a configuration snapshot (docs/architecture.md) into a compiled, immutable ``Snapshot``.

Everything is validated and compiled here, once: named values decrypted and substituted, every policy
parsed and bound, routes and per-(product context, operation) pipelines built, header lists turned into
bytes. Nothing on the request path parses configuration.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape

from cryptography.fernet import InvalidToken

from gateway.blocklists import Blocklist, BlocklistError, BlocklistItem
from gateway.http.client import Origin
from gateway.http.headers import CLIENT_OWNED
from gateway.model import (
    MAX_POOL_MEMBERS,
    Access,
    ApiEntry,
    BackendPool,
    BackendTarget,
    BreakerRule,
    KeyRecord,
    OperationEntry,
    PoolMember,
    ProductEntry,
    SubscriptionEntry,
)
from gateway.pipeline import Pipeline, compile_pipeline
from gateway.policy import BindEnv, PolicyDocument, PolicyError, Scope, bind_steps, parse_document, walk
from gateway.routing import Router, RoutingError
from gateway.secrets import snapshot_fernet

__all__ = (
    "SNAPSHOT_VERSION",
    "Problem",
    "Snapshot",
    "SnapshotError",
    "check_snapshot",
    "load_snapshot",
    "substitute_named_values",
)

logger = logging.getLogger("gateway.snapshot")

SNAPSHOT_VERSION = 1
REFERENCE_RE = re.compile(r"\{\{([A-Za-z0-9\-._]+)\}\}")
_NAME_RE = re.compile(r"^[A-Za-z0-9\-._~]+$")
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"})
_XML_QUOTES = {'"': "&quot;", "'": "&apos;"}

OriginFactory = Callable[[str], tuple[Origin, str]]


class SnapshotError(ValueError):
    """The snapshot is invalid; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One item the loader could not load: ``kind`` is ``snapshot`` (the whole snapshot), ``named_value``,
    ``backend``, ``product``, ``api`` or ``subscription``; ``name`` the item's name ("" when it has none)."""

    kind: str
    name: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "message": self.message}


@dataclass(frozen=True, slots=True, eq=False)
class Snapshot:
    """One loaded configuration, with its compiled pipelines. Swapped atomically as a whole; never mutated."""

    revision: int
    generated_at: str
    router: Router
    apis: Mapping[str, ApiEntry]
    products: Mapping[str, ProductEntry]
    backends: Mapping[str, BackendTarget]
    subscriptions: Mapping[str, KeyRecord]  # key hash (sha256 hex) -> key record
    # compiled pipelines of each operation by product context (None = no product; only published products
    # containing the API); operations of an API quarantined at load have none
    pipelines: Mapping[OperationEntry, Mapping[str | None, Pipeline]]
    quarantined: tuple[Problem, ...] = ()  # items the loader set aside (quarantine mode)

    def __repr__(self) -> str:
        return f"<Snapshot revision={self.revision} apis={len(self.apis)}>"


def substitute_named_values(text: str, values: Mapping[str, str], where: str, *, xml: bool) -> str:
    """Replace ``{{name}}`` references; unknown names raise SnapshotError. XML-escape values for policies."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise SnapshotError(f"{where}: unknown named value '{name}'")
        value = values[name]
        return escape(value, _XML_QUOTES) if xml else value

    return REFERENCE_RE.sub(replace, text)


def load_snapshot(
    data: Any, *, gateway_token: str, origin_factory: OriginFactory = Origin.from_url, quarantine: bool = False
) -> Snapshot:
    """Validate and compile a snapshot dict.

    Strict (the default): raises SnapshotError on anything wrong. With ``quarantine=True`` an item that cannot be
    loaded is set aside (``Snapshot.quarantined``) together with what depends on it, and everything else loads; an
    API that cannot be compiled stays routable and answers 503. Only what cannot be isolated still raises: the
    format version, the revision, the global policy, an undecryptable secret, a top-level shape error.
    """
    loader = _Loader(gateway_token, origin_factory)
    config = loader.load(data)
    if loader.problems and not quarantine:
        raise SnapshotError(loader.problems[0].message)
    return config


def check_snapshot(data: Any, *, gateway_token: str) -> list[Problem]:
    """Every problem the gateway would meet loading ``data`` (the management plane's write-time check)."""
    loader = _Loader(gateway_token, Origin.from_url, warn=False)
    try:
        loader.load(data)
    except SnapshotError as exc:
        return [*loader.problems, Problem("snapshot", "", str(exc))]
    return loader.problems


def bind_document(document: PolicyDocument, env: BindEnv) -> None:
    """Resolve the references of every policy of ``document``; errors get the policy's position."""
    for steps in document.sections.values():
        bind_steps(steps, env)


def log_load_warnings(document: PolicyDocument, where: str) -> None:
    """Log the ``load_warnings`` of every policy of ``document`` (a valid statement that is likely a mistake)."""
    for steps in document.sections.values():
        for step in walk(steps):
            for warning in step.load_warnings():
                logger.warning("%s: line %s: <%s>: %s", where, step.line, step.name, warning)


#
# Field readers
#


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SnapshotError(f"{where}: expected an object")
    return value


def _list(data: dict[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise SnapshotError(f"{where}.{key}: expected a list")
    return value


def _str(data: dict[str, Any], key: str, where: str, *, optional: bool = False, empty: bool = True) -> str:
    value = data.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str) or (not empty and not value):
        raise SnapshotError(f"{where}.{key}: expected a {'non-empty ' if not empty else ''}string")
    return value


def _opt_str(data: dict[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise SnapshotError(f"{where}.{key}: expected a string or null")
    return value


def _bool(data: dict[str, Any], key: str, where: str, default: bool | None = None) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise SnapshotError(f"{where}.{key}: expected true or false")
    return value


def _name(data: dict[str, Any], where: str, seen: set[str]) -> str:
    name = _str(data, "name", where, empty=False)
    if not _NAME_RE.match(name):
        raise SnapshotError(f"{where}.name: invalid name {name!r}")
    if name in seen:
        raise SnapshotError(f"{where}: duplicate name {name!r}")
    seen.add(name)
    return name


class _Loader:
    def __init__(self, gateway_token: str, origin_factory: OriginFactory, *, warn: bool = True) -> None:
        self.token = gateway_token
        self.origin_factory = origin_factory
        self.warn = warn  # log the policies' load warnings (a gateway); the management plane's check does not
        self.values: dict[str, str] = {}
        self.backends: dict[str, BackendTarget] = {}
        self.blocklists: dict[str, Blocklist] = {}
        self.backends_by_url: dict[str, BackendTarget] = {}
        self.url_targets: dict[str, BackendTarget] = {}  # literal base URLs, filled while loading only
        self.loaded = False
        # compiled pipelines by (product with a policy of its own, or None; API name; operation name): names are
        # stable for the whole load, unlike the identity of the short-lived documents they are compiled from
        self.pipelines: dict[tuple[str | None, str, str], Pipeline] = {}
        self.operation_pipelines: dict[OperationEntry, dict[str | None, Pipeline]] = {}
        self.problems: list[Problem] = []
        self.quarantined_urls: set[str] = set()

    def _quarantine(self, kind: str, name: str, message: str) -> None:
        self.problems.append(Problem(kind, name, message))

    def load(self, data: Any) -> Snapshot:
        data = _obj(data, "snapshot")
        if data.get("version") != SNAPSHOT_VERSION:
            raise SnapshotError(f"snapshot.version: unsupported version {data.get('version')!r} (expected 1)")
        revision = data.get("revision")
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
            raise SnapshotError("snapshot.revision: expected a non-negative integer")
        self._named_values(_list(data, "named_values", "snapshot"))
        self._backends(_list(data, "backends", "snapshot"))
        self._blocklists(data.get("blocklists", []))
        global_doc = self._policy(_opt_str(data, "global_policy", "snapshot"), Scope.GLOBAL, "global policy")
        raw_apis = [_obj(a, f"snapshot.apis[{i}]") for i, a in enumerate(_list(data, "apis", "snapshot"))]
        api_names = {a.get("name") for a in raw_apis}
        products = self._products(_list(data, "products", "snapshot"), api_names)
        apis = self._apis(raw_apis, products, global_doc)
        keys = self._subscriptions(_list(data, "subscriptions", "snapshot"), apis, products)
        router = self._router(apis)
        self.loaded = True
        return Snapshot(
            revision=revision,
            generated_at=_str(data, "generated_at", "snapshot", optional=True),
            router=router,
            apis=apis,
            products=products,
            backends=dict(self.backends),
            subscriptions=keys,
            pipelines=self.operation_pipelines,
            quarantined=tuple(self.problems),
        )

    def _router(self, apis: dict[str, ApiEntry]) -> Router:
        try:
            return Router(apis.values())
        except RoutingError:
            pass
        # isolate the APIs that cannot be routed: add them one by one (only on this error path)
        routable: list[ApiEntry] = []
        for api in apis.values():
            try:
                Router([*routable, api])
            except RoutingError as exc:
                self._quarantine("api", api.name, str(exc))
                continue
            routable.append(api)
        return Router(routable)

    # named values and backends

    def _named_values(self, items: list[Any]) -> None:
        fernet = None
        seen: set[str] = set()
        for i, item in enumerate(items):
            where = f"snapshot.named_values[{i}]"
            try:
                item = _obj(item, where)
                name = _name(item, where, seen)
                secret = _bool(item, "secret", where, default=False)
                token = _str(item, "encrypted_value", where, empty=False) if secret else ""
            except SnapshotError as exc:
                self._quarantine("named_value", _item_name(item), str(exc))
                continue
            if secret:
                fernet = fernet or snapshot_fernet(self.token)
                try:
                    self.values[name] = fernet.decrypt(token.encode("ascii")).decode("utf-8")
                except (InvalidToken, UnicodeError):
                    raise SnapshotError(
                        f"named value '{name}': cannot decrypt the secret (wrong gateway token?)"
                    ) from None
            else:
                try:
                    self.values[name] = _str(item, "value", where)
                except SnapshotError as exc:
                    self._quarantine("named_value", name, str(exc))

    def _target(self, name: str | None, url: str, where: str) -> BackendTarget:
        if not url.startswith(("http://", "https://")):
            raise SnapshotError(f"{where}: expected an http(s) URL, got {url!r}")
        # APIM: the URL's query parameters are sent with every request (the client's own value wins)
        base, _, query = url.partition("?")
        try:
            origin, base_path = self.origin_factory(base)
            params = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), errors="strict")
        except Exception as exc:  # the factory's own validation error types
            raise SnapshotError(f"{where}: invalid URL {url!r}: {exc}") from None
        return BackendTarget(name, url, origin, base_path.rstrip("/"), url_query=_encode_defaults(params))

    def _backends(self, items: list[Any]) -> None:
        seen: set[str] = set()
        pools: list[tuple[int, Any]] = []
        for i, item in enumerate(items):
            if isinstance(item, dict) and item.get("type") == "Pool":
                pools.append((i, item))  # after the single backends they list
                continue
            try:
                self._backend(item, f"snapshot.backends[{i}]", seen)
            except SnapshotError as exc:
                self._quarantine("backend", _item_name(item), str(exc))
                if isinstance(item, dict) and isinstance(item.get("url"), str):
                    self.quarantined_urls.add(item["url"].rstrip("/"))
        for i, item in pools:
            try:
                self._pool(item, f"snapshot.backends[{i}]", seen)
            except SnapshotError as exc:
                self._quarantine("backend", _item_name(item), str(exc))

    def _pool(self, item: dict[str, Any], where: str, seen: set[str]) -> None:
        name = _name(item, where, seen)
        where = f"backend '{name}'"
        services = _list(item, "pool_services", where)
        if not 1 <= len(services) <= MAX_POOL_MEMBERS:
            raise SnapshotError(f"{where}.pool_services: expected 1 to {MAX_POOL_MEMBERS} members")
        members = []
        for j, entry in enumerate(services):
            entry = _obj(entry, f"{where}.pool_services[{j}]")
            member_name = _str(entry, "backend", f"{where}.pool_services[{j}]", empty=False)
            target = self.backends.get(member_name)
            if target is None:
                raise SnapshotError(f"{where}: member '{member_name}' is not a loaded single backend")
            priority, weight = entry.get("priority", 0), entry.get("weight", 1)
            for key, value in (("priority", priority), ("weight", weight)):
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
                    raise SnapshotError(f"{where}.pool_services[{j}].{key}: expected an integer from 0 to 100")
            members.append(PoolMember(target, priority, weight))
        if len({m.target.name for m in members}) != len(members):
            raise SnapshotError(f"{where}.pool_services: a backend is listed twice")
        self.backends[name] = BackendTarget(name, "", None, "", kind="Pool", pool=BackendPool.of(members))

    def _breaker(self, value: Any, where: str) -> BreakerRule | None:
        if value is None:
            return None
        rule = _obj(value, where)

        def number(key: str, *, integer: bool = False, optional: bool = False) -> Any:
            found = rule.get(key)
            if found is None and optional:
                return None
            kind = int if integer else (int, float)
            if not isinstance(found, kind) or isinstance(found, bool) or not found > 0:
                raise SnapshotError(f"{where}.{key}: expected a positive number")
            return found

        ranges = []
        for pair in _list(rule, "status_code_ranges", where):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) for v in pair)):
                raise SnapshotError(f"{where}.status_code_ranges: expected [min, max] pairs")
            ranges.append((pair[0], pair[1]))
        reasons = _list(rule, "error_reasons", where)
        if not all(isinstance(r, str) for r in reasons):
            raise SnapshotError(f"{where}.error_reasons: expected strings")
        count = number("failure_count", integer=True, optional=True)
        percentage = number("failure_percentage", integer=True, optional=True)
        if (count is None) == (percentage is None):
            raise SnapshotError(f"{where}: exactly one of failure_count or failure_percentage is required")
        return BreakerRule(
            name=_str(rule, "name", where, optional=True),
            interval=float(number("interval_seconds")),
            trip_duration=float(number("trip_duration_seconds")),
            count=count,
            percentage=percentage,
            status_ranges=tuple(ranges),
            error_reasons=frozenset(reasons),
            accept_retry_after=_bool(rule, "accept_retry_after", where, default=False),
        )

    def _backend(self, item: Any, where: str, seen: set[str]) -> None:
        item = _obj(item, where)
        name = _name(item, where, seen)
        where = f"backend '{name}'"
        target = self._target(name, _str(item, "url", where, empty=False), where + " url")
        headers = []
        for key, value in _obj(item.get("credentials_header") or {}, where + " credentials_header").items():
            if not isinstance(value, str) or not _TOKEN_RE.match(key):
                raise SnapshotError(f"{where}: invalid credential header {key!r}")
            value = substitute_named_values(value, self.values, where, xml=False)
            if any(c in value for c in "\r\n\x00"):
                raise SnapshotError(f"{where}: credential header {key!r} contains CR, LF or NUL")
            headers.append((key.lower().encode("ascii"), value.encode("utf-8")))
        query = []
        for key, value in _obj(item.get("credentials_query") or {}, where + " credentials_query").items():
            if not isinstance(value, str) or not key:
                raise SnapshotError(f"{where}: invalid credential query parameter {key!r}")
            value = substitute_named_values(value, self.values, where, xml=False)
            query.append(f"{quote(key, safe='')}={quote(value, safe='')}")
        target = BackendTarget(
            name,
            target.url,
            target.origin,
            target.base_path,
            tuple(headers),
            frozenset(h[0] for h in headers),
            "&".join(query),
            target.url_query,
            breaker=self._breaker(item.get("circuit_breaker"), where + " circuit_breaker"),
        )
        self.backends[name] = target
        self.backends_by_url.setdefault(target.url.rstrip("/"), target)

    def _blocklists(self, items: Any) -> None:
        """Content-safety blocklists (optional key: snapshots without it have none). A bad one is quarantined; a
        policy naming it then fails to bind, as for an unknown name."""
        if not isinstance(items, list):
            raise SnapshotError("snapshot.blocklists: expected a list")
        seen: set[str] = set()
        for i, item in enumerate(items):
            where = f"snapshot.blocklists[{i}]"
            try:
                item = _obj(item, where)
                name = _name(item, where, seen)
                entries = []
                for j, entry in enumerate(_list(item, "items", f"blocklist '{name}'")):
                    entry = _obj(entry, f"blocklist '{name}' items[{j}]")
                    kind = _str(entry, "kind", f"blocklist '{name}' items[{j}]")
                    entries.append(BlocklistItem(kind, _str(entry, "value", f"blocklist '{name}' items[{j}]")))
                self.blocklists[name] = Blocklist(name, entries)
            except (SnapshotError, BlocklistError) as exc:
                self._quarantine("blocklist", _item_name(item), str(exc))

    # BindEnv for policies

    def blocklist(self, name: str) -> Blocklist | None:
        return self.blocklists.get(name)

    def backend(self, backend_id: str) -> BackendTarget:
        try:
            return self.backends[backend_id]
        except KeyError:
            raise PolicyError(f"set-backend-service: unknown backend '{backend_id}'") from None

    def target_for_url(self, url: str) -> BackendTarget:
        # APIM: a URL equal to a backend entity's URL uses that entity (and its credentials)
        entity = self.backends_by_url.get(url.rstrip("/"))
        if entity is not None:
            return entity
        if url.rstrip("/") in self.quarantined_urls:
            # never reach a quarantined backend's URL without its credentials
            raise PolicyError(f"the backend with URL {url!r} could not be loaded")
        target = self.url_targets.get(url)
        if target is None:
            try:
                target = self._target(None, url, "URL")
            except SnapshotError as exc:
                raise PolicyError(str(exc)) from None
            # After the load, URLs come from base-url expressions (request data): the policy's own bounded
            # cache keeps them, this dict does not grow with traffic.
            if not self.loaded:
                self.url_targets[url] = target
        return target

    # policies, products, APIs, subscriptions

    def _policy(self, text: str | None, scope: Scope, where: str) -> PolicyDocument | None:
        if text is None or not text.strip():
            return None
        text = substitute_named_values(text, self.values, where, xml=True)
        try:
            document = parse_document(text, scope)
            bind_document(document, self)
        except PolicyError as exc:
            raise SnapshotError(f"{where}: {exc}") from None
        if self.warn:
            log_load_warnings(document, where)
        return document

    def _pipeline(self, api: str, operation: str, product: str | None, *docs: PolicyDocument | None) -> Pipeline:
        """The pipeline of one operation in one product context (``product`` None: no product).

        Product contexts without a product policy share the API context's pipeline. The cache key is made of
        names, never of ``id()`` of a document: a document is freed once its API is loaded, and a later
        document could be given the same id and so another API's pipeline (backend, credentials and all).
        """
        key = (product if product is not None and self.product_docs.get(product) is not None else None, api, operation)
        pipeline = self.pipelines.get(key)
        if pipeline is None:
            pipeline = self.pipelines[key] = compile_pipeline(docs)
        return pipeline

    def _products(self, items: list[Any], api_names: set[Any]) -> dict[str, ProductEntry]:
        products: dict[str, ProductEntry] = {}
        self.product_docs: dict[str, PolicyDocument | None] = {}
        seen: set[str] = set()
        for i, item in enumerate(items):
            try:
                self._product(item, f"snapshot.products[{i}]", seen, api_names, products)
            except SnapshotError as exc:
                self._quarantine("product", _item_name(item), str(exc))
        return products

    def _product(
        self, item: Any, where: str, seen: set[str], api_names: set[Any], products: dict[str, ProductEntry]
    ) -> None:
        item = _obj(item, where)
        name = _name(item, where, seen)
        where = f"product '{name}'"
        apis = _list(item, "apis", where)
        for api in apis:
            if api not in api_names:
                raise SnapshotError(f"{where}: unknown API {api!r}")
        entry = ProductEntry(
            name=name,
            published=_str(item, "state", where) == "published",
            subscription_required=_bool(item, "subscription_required", where, default=True),
            apis=tuple(apis),
        )
        self.product_docs[name] = self._policy(_opt_str(item, "policy", where), Scope.PRODUCT, where + " policy")
        products[name] = entry

    def _apis(
        self, items: list[dict[str, Any]], products: dict[str, ProductEntry], global_doc: PolicyDocument | None
    ) -> dict[str, ApiEntry]:
        apis: dict[str, ApiEntry] = {}
        seen: set[str] = set()
        for i, item in enumerate(items):
            try:
                name = _name(item, f"snapshot.apis[{i}]", seen)
            except SnapshotError as exc:  # without a name it cannot even answer 503
                self._quarantine("api", _item_name(item), str(exc))
                continue
            try:
                apis[name] = self._api(item, name, products, global_doc)
            except SnapshotError as exc:
                self._quarantine("api", name, str(exc))
                unavailable = self._unavailable_api(item, name)
                if unavailable is not None:
                    apis[name] = unavailable
        return apis

    def _unavailable_api(self, item: dict[str, Any], name: str) -> ApiEntry | None:
        """A stand-in for an API that cannot be compiled: same path and operations, answering 503."""
        path = item.get("path")
        if not isinstance(path, str):
            return None
        operations = []
        for raw in item.get("operations") or ():
            if isinstance(raw, dict) and all(isinstance(raw.get(k), str) for k in ("name", "method", "url_template")):
                method = raw["method"].upper()
                if method in _METHODS:
                    operations.append(OperationEntry(raw["name"], "", method, raw["url_template"]))
        try:
            Router([_stand_in(name, path.strip("/"), tuple(operations))])
        except RoutingError:
            operations = []
        return _stand_in(name, path.strip("/"), tuple(operations))

    def _api(
        self, item: dict[str, Any], name: str, products: dict[str, ProductEntry], global_doc: PolicyDocument | None
    ) -> ApiEntry:
        where = f"API '{name}'"
        path = _str(item, "path", where).strip("/")
        service_url = _str(item, "service_url", where, optional=True)
        backend = None
        if service_url:
            try:
                backend = self.target_for_url(service_url)
            except PolicyError as exc:
                raise SnapshotError(f"{where} service_url: {exc.message}") from None
        key_header = _str(item, "subscription_key_header", where, empty=False)
        if not _TOKEN_RE.match(key_header):
            raise SnapshotError(f"{where}: invalid subscription_key_header {key_header!r}")
        key_query = _str(item, "subscription_key_query", where, empty=False)
        api_doc = self._policy(_opt_str(item, "policy", where), Scope.API, where + " policy")
        published = {p.name: p for p in products.values() if p.published and name in p.apis}
        open_product = next((p for p in published.values() if not p.subscription_required), None)
        operations = []
        api_pipelines: dict[OperationEntry, dict[str | None, Pipeline]] = {}  # kept only if the whole API loads
        seen: set[str] = set()
        for j, raw in enumerate(_list(item, "operations", where)):
            op_where = f"{where} operations[{j}]"
            raw = _obj(raw, op_where)
            op_name = _name(raw, op_where, seen)
            op_where = f"operation '{name}/{op_name}'"
            method = _str(raw, "method", op_where).upper()
            if method not in _METHODS:
                raise SnapshotError(f"{op_where}: unsupported method {method!r}")
            op_doc = self._policy(_opt_str(raw, "policy", op_where), Scope.OPERATION, op_where + " policy")
            pipelines: dict[str | None, Pipeline] = {
                None: self._pipeline(name, op_name, None, global_doc, None, api_doc, op_doc)
            }
            for product in published.values():
                pipelines[product.name] = self._pipeline(
                    name, op_name, product.name, global_doc, self.product_docs[product.name], api_doc, op_doc
                )
            operation = OperationEntry(
                name=op_name,
                display_name=_str(raw, "display_name", op_where, optional=True),
                method=method,
                url_template=_str(raw, "url_template", op_where, empty=False),
            )
            operations.append(operation)
            api_pipelines[operation] = pipelines
        subscription_required = _bool(item, "subscription_required", where, default=True)
        open_access = Access(open_product, None) if open_product is not None else None
        key_header_b = key_header.lower().encode("ascii")
        self.operation_pipelines.update(api_pipelines)
        return ApiEntry(
            name=name,
            path=path,
            api_type=_str(item, "api_type", where, optional=True),
            service_url=service_url,
            subscription_required=subscription_required,
            key_header=key_header_b,
            key_query=key_query,
            backend=backend,
            operations=tuple(operations),
            drop_headers=CLIENT_OWNED | {key_header_b},  # the key is never forwarded, checked or not
            allowed_scopes=frozenset({"/apis", f"/apis/{name}", *(f"/products/{p}" for p in published)}),
            products=published,
            open_access=open_access,
            no_key_access=open_access or (None if subscription_required else Access(None, None)),
        )

    def _subscriptions(
        self, items: list[Any], apis: Mapping[str, ApiEntry], products: Mapping[str, ProductEntry]
    ) -> dict[str, KeyRecord]:
        keys: dict[str, KeyRecord] = {}
        seen: set[str] = set()
        for i, item in enumerate(items):
            try:
                self._subscription(item, f"snapshot.subscriptions[{i}]", seen, apis, products, keys)
            except SnapshotError as exc:
                self._quarantine("subscription", _item_name(item), str(exc))
        return keys

    def _subscription(
        self,
        item: Any,
        where: str,
        seen: set[str],
        apis: Mapping[str, ApiEntry],
        products: Mapping[str, ProductEntry],
        keys: dict[str, KeyRecord],
    ) -> None:
        item = _obj(item, where)
        name = _name(item, where, seen)
        where = f"subscription '{name}'"
        scope = _str(item, "scope", where)
        product = None
        kind, _, target = scope.lstrip("/").partition("/")
        if scope == "/apis" or (kind == "apis" and target in apis):
            pass
        elif kind == "products" and target in products:
            product = products[target]
        else:
            raise SnapshotError(f"{where}: invalid or unknown scope {scope!r}")
        entry = SubscriptionEntry(name, scope, _str(item, "state", where) == "active", product)
        records: dict[str, KeyRecord] = {}
        for key_hash in _list(item, "key_hashes", where):
            if not isinstance(key_hash, str) or not _HASH_RE.match(key_hash):
                raise SnapshotError(f"{where}: key_hashes must be lower-case SHA-256 hex digests")
            if key_hash in keys:
                other = keys[key_hash].subscription.name
                raise SnapshotError(f"{where}: a key is shared with subscription '{other}'")
            records[key_hash] = KeyRecord(key_hash, entry, Access(product, entry))
        keys.update(records)  # all of its keys or none


def _item_name(item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return name if isinstance(name, str) else ""


def _encode_defaults(params: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """A backend URL's query as (decoded name, encoded ``name=value``) pairs."""
    return tuple((k, f"{quote(k, safe='')}={quote(v, safe='')}") for k, v in params)


def _stand_in(name: str, path: str, operations: tuple[OperationEntry, ...]) -> ApiEntry:
    return ApiEntry(
        name=name,
        path=path,
        api_type="",
        service_url="",
        subscription_required=False,
        key_header=b"",
        key_query="",
        backend=None,
        operations=operations,
        drop_headers=CLIENT_OWNED,
        allowed_scopes=frozenset(),
        products={},
        open_access=None,
        no_key_access=None,
        unavailable=True,
    )
