"""The configuration snapshot served to gateways (docs/architecture.md, "The snapshot (version 1)").

Consistency: the rows must all belong to the revision in the body. `build_snapshot` reads the revision first and then
every table inside one transaction. On PostgreSQL, when it opens the transaction itself, that transaction is
REPEATABLE READ (READ COMMITTED, the default, would let each query see a different set of commits). On SQLite a read
transaction already sees one database state. When called inside an outer transaction (tests, a management command)
the outer isolation level applies; as the revision is read first and every writer bumps it in its own transaction,
a snapshot may then hold changes newer than its revision, never older ones, and the gateway fetches again at the
next poll because the revision moved on.
"""

from contextlib import contextmanager
from datetime import UTC, datetime

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction

from apis.models import API
from backends.models import Backend
from backends.services import duration_seconds
from content_safety.models import Blocklist
from gateway.contract import snapshot_fernet
from named_values.models import NamedValue
from policies.choices import PolicyScopeChoices
from policies.models import Policy
from policies.services import DEFAULT_GLOBAL_POLICY
from subscriptions.models import Product, Subscription

from .models import ConfigRevision

__all__ = ("SNAPSHOT_VERSION", "build_snapshot")

SNAPSHOT_VERSION = 1


def build_snapshot(gateway_token: str | None = None) -> dict:
    """The snapshot as a JSON-ready dict. Secrets are re-encrypted under the snapshot key derived from
    `gateway_token` (default: settings.SLUICE["GATEWAY_TOKEN"]); subscription keys appear only as SHA-256 digests."""
    token = settings.SLUICE.get("GATEWAY_TOKEN") if gateway_token is None else gateway_token
    if not token:
        raise ImproperlyConfigured("SLUICE_GATEWAY_TOKEN is not set: the snapshot key cannot be derived.")
    fernet = snapshot_fernet(token)
    with _read_transaction():
        revision = ConfigRevision.current()
        policies = _policies_by_owner()
        return {
            "version": SNAPSHOT_VERSION,
            "revision": revision,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "global_policy": policies.get((PolicyScopeChoices.GLOBAL, None), DEFAULT_GLOBAL_POLICY),
            "named_values": [_named_value(nv, fernet) for nv in NamedValue.objects.order_by("name")],
            "backends": [_backend(backend) for backend in Backend.objects.order_by("name")],
            "blocklists": [
                {"name": blocklist.name, "items": blocklist.items} for blocklist in Blocklist.objects.order_by("name")
            ],
            "products": [
                _product(product, policies) for product in Product.objects.prefetch_related("apis").order_by("name")
            ],
            "apis": [_api(api, policies) for api in API.objects.prefetch_related("operations").order_by("name")],
            "subscriptions": [
                _subscription(subscription)
                for subscription in Subscription.objects.select_related("api", "product").order_by("name")
            ],
        }


@contextmanager
def _read_transaction():
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def _policies_by_owner() -> dict:
    owner_ids = {
        PolicyScopeChoices.GLOBAL: lambda p: None,
        PolicyScopeChoices.PRODUCT: lambda p: p.product_id,
        PolicyScopeChoices.API: lambda p: p.api_id,
        PolicyScopeChoices.OPERATION: lambda p: p.operation_id,
    }
    return {(p.scope, owner_ids[p.scope](p)): p.value for p in Policy.objects.all()}


def _named_value(nv: NamedValue, fernet) -> dict:
    if nv.secret:
        encrypted = fernet.encrypt(nv.value.encode()).decode()
        return {"name": nv.name, "secret": True, "value": None, "encrypted_value": encrypted}
    return {"name": nv.name, "secret": False, "value": nv.plain_value, "encrypted_value": None}


def _backend(backend: Backend) -> dict:
    pool = backend.pool or {}
    return {
        "name": backend.name,
        "type": backend.type,
        "url": backend.url or None,
        "credentials_header": backend.credentials_header,
        "credentials_query": backend.credentials_query,
        "pool_services": [
            {"backend": s["backend"], "priority": s.get("priority", 1), "weight": s.get("weight", 1)}
            for s in pool.get("services", [])
        ],
        "circuit_breaker": _breaker_rule(backend.circuit_breaker),
    }


def _breaker_rule(breaker: dict | None) -> dict | None:
    """The snapshot form of a backend's (first and only) circuit breaker rule: durations in seconds."""
    rules = (breaker or {}).get("rules") or []
    if not rules:
        return None
    rule = rules[0]
    condition = rule.get("failureCondition") or {}
    return {
        "name": rule.get("name", ""),
        "failure_count": condition.get("count"),
        "failure_percentage": condition.get("percentage"),
        "interval_seconds": duration_seconds(condition.get("interval", "")),
        "status_code_ranges": [[r["min"], r["max"]] for r in condition.get("statusCodeRanges") or []],
        "error_reasons": list(condition.get("errorReasons") or []),
        "trip_duration_seconds": duration_seconds(rule.get("tripDuration", "")),
        "accept_retry_after": bool(rule.get("acceptRetryAfter", False)),
    }


def _product(product: Product, policies: dict) -> dict:
    return {
        "name": product.name,
        "state": product.state,
        "subscription_required": product.subscription_required,
        "apis": sorted(api.name for api in product.apis.all()),
        "policy": policies.get((PolicyScopeChoices.PRODUCT, product.pk)),
    }


def _api(api: API, policies: dict) -> dict:
    return {
        "name": api.name,
        "path": api.path,
        "service_url": api.service_url,
        "api_type": api.api_type,
        "subscription_required": api.subscription_required,
        "subscription_key_header": api.subscription_key_header,
        "subscription_key_query": api.subscription_key_query,
        "policy": policies.get((PolicyScopeChoices.API, api.pk)),
        "operations": [
            {
                "name": operation.name,
                "display_name": operation.display_name,
                "method": operation.method,
                "url_template": operation.url_template,
                "policy": policies.get((PolicyScopeChoices.OPERATION, operation.pk)),
            }
            for operation in sorted(api.operations.all(), key=lambda op: op.name)
        ],
    }


def _subscription(subscription: Subscription) -> dict:
    return {
        "name": subscription.name,
        "scope": subscription.scope,
        "state": subscription.state,
        "key_hashes": [subscription.primary_key_hash, subscription.secondary_key_hash],
    }
