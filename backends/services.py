"""Backend behaviour: delete protection against policies that route to the backend."""

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_duration

from gateway_admin.exceptions import Conflict

from .models import Backend

__all__ = ("backend_state", "delete_backend", "duration_seconds", "find_referrers", "pools_containing")

# how gateways' views of one backend combine: the worst state any live gateway reports wins
_SEVERITY = {"unknown": 0, "closed": 1, "half-open": 2, "open": 3}


def backend_state(backend: Backend, now=None) -> dict:
    """What the live gateways (heartbeats that are not stale) last reported about ``backend``'s circuit breaker,
    and for a pool about each member."""
    from gateway_admin.models import GatewayHeartbeat

    now = now or timezone.now()
    live = [beat for beat in GatewayHeartbeat.objects.all() if not beat.is_stale(now)]

    def one(name: str, guarded: bool) -> dict:
        gateways = []
        for beat in live:
            entry = (beat.backends or {}).get(name)
            if isinstance(entry, dict):
                gateways.append({"gateway_id": beat.gateway_id, "last_seen": beat.last_seen, **entry})
        overall = max((g.get("state", "unknown") for g in gateways), key=lambda s: _SEVERITY.get(s, 0),
                      default="unknown")  # fmt: skip
        if not guarded:
            overall = "closed"  # no circuit breaker: it always takes traffic
        return {"backend": name, "state": overall, "circuit_breaker": guarded, "gateways": gateways}

    result = one(backend.name, bool(backend.circuit_breaker))
    if backend.type == "Pool":
        members = []
        services = (backend.pool or {}).get("services", [])
        breakers = dict(
            Backend.objects.filter(name__in=[s["backend"] for s in services]).values_list("name", "circuit_breaker")
        )
        for service in services:
            member = one(service["backend"], bool(breakers.get(service["backend"])))
            member.update(priority=service.get("priority", 1), weight=service.get("weight", 1))
            members.append(member)
        result["members"] = members
        states = [m["state"] for m in members]
        result["state"] = "open" if states and all(s == "open" for s in states) else (
            "degraded" if any(s in ("open", "half-open") for s in states) else
            "closed" if states and all(s == "closed" for s in states) else "unknown")  # fmt: skip
    return result


def duration_seconds(text: str) -> float | None:
    """Seconds of an ISO 8601 duration (``PT1M``, ``PT30S``, ``P1D``); None when it is not one."""
    if not isinstance(text, str) or not text.startswith("P"):
        return None
    value = parse_duration(text)
    return value.total_seconds() if value is not None else None


def pools_containing(name: str) -> list[str]:
    """Names of the Pool backends that list backend ``name``."""
    return [
        pool.name
        for pool in Backend.objects.filter(type="Pool")
        if any(entry.get("backend") == name for entry in (pool.pool or {}).get("services", []))
    ]


def find_referrers(name: str) -> list[str]:
    """Descriptions of the policy documents whose `set-backend-service backend-id` names this backend."""
    from policies.models import Policy
    from policies.references import backend_references

    return [
        str(policy)
        for policy in Policy.objects.select_related("product", "api", "operation__api")
        if any(ref.name == name for ref in backend_references(policy.value))
    ]


@transaction.atomic
def delete_backend(backend: Backend) -> None:
    referrers = find_referrers(backend.name) + [f"pool '{name}'" for name in pools_containing(backend.name)]
    if referrers:
        raise Conflict(f"Backend '{backend.name}' is referenced by {', '.join(referrers)}.")
    backend.delete()
