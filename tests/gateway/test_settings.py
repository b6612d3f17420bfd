"""GatewaySettings from the environment."""

from __future__ import annotations

import pytest

from gateway.settings import GatewaySettings, SettingsError


def test_defaults():
    config = GatewaySettings.from_env({"SLUICE_GATEWAY_TOKEN": "t", "SLUICE_GATEWAY_ID": "gw"})
    assert config == GatewaySettings(gateway_token="t", gateway_id="gw")
    assert config.snapshot_url == "http://127.0.0.1:8000/api/gateway/snapshot/"
    assert (config.host, config.port, config.poll_interval, config.max_body_bytes) == (
        "127.0.0.1",
        8080,
        1.0,
        16 * 1024 * 1024,
    )
    assert (config.upstream_connect_timeout, config.upstream_read_timeout, config.workers) == (10.0, 300.0, 1)
    assert config.snapshot_cache == "var/gateway-snapshot.json"


def test_values_from_env():
    config = GatewaySettings.from_env(
        {
            "SLUICE_GATEWAY_TOKEN": "t",
            "SLUICE_MANAGEMENT_URL": "http://mgmt:8000/",
            "SLUICE_GATEWAY_HOST": "10.1.2.3",
            "SLUICE_GATEWAY_PORT": "9000",
            "SLUICE_SNAPSHOT_CACHE": "/var/lib/sluice/snap.json",
            "SLUICE_POLL_INTERVAL": "2.5",
            "SLUICE_UPSTREAM_CONNECT_TIMEOUT": "3",
            "SLUICE_UPSTREAM_READ_TIMEOUT": "60",
            "SLUICE_MAX_BODY_BYTES": "1024",
            "SLUICE_GATEWAY_WORKERS": "4",
            "SLUICE_GATEWAY_ID": "edge-1",
        }
    )
    assert config.snapshot_url == "http://mgmt:8000/api/gateway/snapshot/"
    assert (config.port, config.poll_interval, config.workers, config.max_body_bytes) == (9000, 2.5, 4, 1024)
    assert (config.upstream_connect_timeout, config.upstream_read_timeout, config.gateway_id) == (3.0, 60.0, "edge-1")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SLUICE_GATEWAY_TOKEN is missing"),
        ({"SLUICE_GATEWAY_TOKEN": "t", "SLUICE_GATEWAY_PORT": "http"}, "SLUICE_GATEWAY_PORT: expected a number"),
        ({"SLUICE_GATEWAY_TOKEN": "t", "SLUICE_GATEWAY_WORKERS": "0"}, "SLUICE_GATEWAY_WORKERS: must be at least 1"),
    ],
)
def test_errors(env, message):
    with pytest.raises(SettingsError, match=message):
        GatewaySettings.from_env(env)


def test_admin_listener_and_connection_limit():
    defaults = GatewaySettings.from_env({"SLUICE_GATEWAY_TOKEN": "t"})
    assert (defaults.admin_host, defaults.admin_port, defaults.max_connections) == ("127.0.0.1", 9180, 10000)
    config = GatewaySettings.from_env(
        {
            "SLUICE_GATEWAY_TOKEN": "t",
            "SLUICE_ADMIN_HOST": "10.0.0.5",
            "SLUICE_ADMIN_PORT": "0",
            "SLUICE_MAX_CONNECTIONS": "500",
        }
    )
    assert (config.admin_host, config.admin_port, config.max_connections) == ("10.0.0.5", 0, 500)
    with pytest.raises(SettingsError, match="SLUICE_MAX_CONNECTIONS: must be at least 1"):
        GatewaySettings.from_env({"SLUICE_GATEWAY_TOKEN": "t", "SLUICE_MAX_CONNECTIONS": "0"})


def test_token_lease_seconds():
    """SLUICE_TOKEN_LEASE_SECONDS: the Redis token store's lease lifetime (docs/token-limits.md); 0 turns leases off."""
    from gateway.app import create_app
    from gateway.limits.redis import RedisTokenStore

    assert GatewaySettings.from_env({"SLUICE_GATEWAY_TOKEN": "t"}).token_lease_seconds == 0.5
    config = GatewaySettings.from_env(
        {"SLUICE_GATEWAY_TOKEN": "t", "SLUICE_TOKEN_LEASE_SECONDS": "0", "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    assert config.token_lease_seconds == 0.0
    with pytest.raises(SettingsError, match="SLUICE_TOKEN_LEASE_SECONDS: must be at least 0"):
        GatewaySettings.from_env({"SLUICE_GATEWAY_TOKEN": "t", "SLUICE_TOKEN_LEASE_SECONDS": "-1"})
    for seconds in (0.0, 0.25):
        store = create_app(
            GatewaySettings(gateway_token="t", redis_url="redis://127.0.0.1:1/0", token_lease_seconds=seconds)
        ).forwarder.limits
        assert isinstance(store, RedisTokenStore) and store.lease_seconds == seconds
