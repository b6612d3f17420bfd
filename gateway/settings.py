"""Gateway process settings, read from the environment (``SLUICE_*``)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ("GatewaySettings", "SettingsError")


class SettingsError(ValueError):
    """A required setting is missing or a value cannot be parsed."""


def _get(env: Mapping[str, str], key: str, default: str | None = None) -> str:
    value = env.get(key)
    if value is None or value == "":
        if default is None:
            raise SettingsError(f"{key} is missing, and has no default.")
        return default
    return value


def _number(env: Mapping[str, str], key: str, default: str, cast: type[int] | type[float], minimum: float) -> float:
    raw = _get(env, key, default)
    try:
        value = cast(raw)
    except ValueError:
        raise SettingsError(f"{key}: expected a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{key}: must be at least {minimum}, got {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    gateway_token: str
    management_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8080
    snapshot_cache: str = "var/gateway-snapshot.json"
    poll_interval: float = 1.0
    heartbeat_interval: float = 15.0  # seconds between heartbeats to the management plane (gateway.sync); 0 = none
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 300.0
    max_body_bytes: int = 16 * 1024 * 1024
    workers: int = 1
    gateway_id: str = ""
    region: str = ""  # the "Location" dimension of llm-emit-token-metric
    metrics_token: str = ""  # when set, scrapes must send "Authorization: Bearer <token>"
    metrics_max_label_sets: int = 1000  # per metric family; see gateway.metrics
    usage_spool: str = ""  # usage records not yet delivered; "" = next to the snapshot cache
    usage_journal: bool = True  # write each usage record to a local journal first, so a killed gateway loses none
    redis_url: str = ""  # REDIS_URL: usage records go to a Redis stream (else over HTTP to the management plane)
    usage_stream: str = "sluice:usage"  # the Redis stream of usage records (same setting as the management plane)
    max_connections: int = 10000  # open client connections per worker; beyond, 503 and close
    admin_host: str = "127.0.0.1"  # the admin listener: metrics and health, never routed to an API
    admin_port: int = 9180  # 0 = no admin listener
    max_retry_after: float = 3600.0  # cap on a backend's Retry-After as a circuit breaker trip time (seconds)
    semantic_cache_max_entries: int = 1000  # entries per semantic cache partition (LRU beyond): bounds a lookup
    semantic_cache_timeout: float = 5.0  # seconds the lookup waits for the embeddings backend, then goes on
    token_lease_seconds: float = 0.5  # lifetime of a Redis token-limit lease (docs/token-limits.md); 0 = no leases

    @property
    def usage_spool_path(self) -> str:
        """Where usage records wait for delivery: ``SLUICE_USAGE_SPOOL``, else next to the snapshot cache."""
        if self.usage_spool:
            return self.usage_spool
        return os.path.join(os.path.dirname(self.snapshot_cache) or ".", "gateway-usage.spool")

    @property
    def snapshot_url(self) -> str:
        return self.management_url.rstrip("/") + "/api/gateway/snapshot/"

    @property
    def heartbeat_url(self) -> str:
        return self.management_url.rstrip("/") + "/api/gateway/heartbeat/"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if env is None else env
        return cls(
            gateway_token=_get(env, "SLUICE_GATEWAY_TOKEN"),
            management_url=_get(env, "SLUICE_MANAGEMENT_URL", "http://127.0.0.1:8000"),
            host=_get(env, "SLUICE_GATEWAY_HOST", "127.0.0.1"),
            port=int(_number(env, "SLUICE_GATEWAY_PORT", "8080", int, 0)),
            snapshot_cache=_get(env, "SLUICE_SNAPSHOT_CACHE", "var/gateway-snapshot.json"),
            poll_interval=_number(env, "SLUICE_POLL_INTERVAL", "1.0", float, 0.05),
            heartbeat_interval=_number(env, "SLUICE_HEARTBEAT_INTERVAL", "15", float, 0),
            upstream_connect_timeout=_number(env, "SLUICE_UPSTREAM_CONNECT_TIMEOUT", "10", float, 0.001),
            upstream_read_timeout=_number(env, "SLUICE_UPSTREAM_READ_TIMEOUT", "300", float, 0.001),
            max_body_bytes=int(_number(env, "SLUICE_MAX_BODY_BYTES", str(16 * 1024 * 1024), int, 0)),
            workers=int(_number(env, "SLUICE_GATEWAY_WORKERS", "1", int, 1)),
            gateway_id=_get(env, "SLUICE_GATEWAY_ID", socket.gethostname()),
            region=env.get("SLUICE_GATEWAY_REGION", ""),
            metrics_token=env.get("SLUICE_METRICS_TOKEN", ""),
            metrics_max_label_sets=int(_number(env, "SLUICE_METRICS_MAX_LABEL_SETS", "1000", int, 1)),
            usage_spool=env.get("SLUICE_USAGE_SPOOL", ""),
            usage_journal=_get(env, "SLUICE_USAGE_JOURNAL", "1").lower() not in ("0", "false", "no", "off"),
            redis_url=env.get("REDIS_URL", ""),
            usage_stream=_get(env, "SLUICE_USAGE_STREAM", "sluice:usage"),
            max_connections=int(_number(env, "SLUICE_MAX_CONNECTIONS", "10000", int, 1)),
            max_retry_after=_number(env, "SLUICE_MAX_RETRY_AFTER", "3600", float, 0),
            admin_host=_get(env, "SLUICE_ADMIN_HOST", "127.0.0.1"),
            admin_port=int(_number(env, "SLUICE_ADMIN_PORT", "9180", int, 0)),
            semantic_cache_max_entries=int(_number(env, "SLUICE_SEMANTIC_CACHE_MAX_ENTRIES", "1000", int, 1)),
            semantic_cache_timeout=_number(env, "SLUICE_SEMANTIC_CACHE_TIMEOUT", "5", float, 0.001),
            token_lease_seconds=_number(env, "SLUICE_TOKEN_LEASE_SECONDS", "0.5", float, 0),
        )
