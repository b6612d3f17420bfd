"""The live management plane driven over REST, and a ``python -m gateway`` pulling its snapshot over HTTP."""

import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import requests

from tests.fixtures_procs import StartProcess, free_port

PROPAGATION_DEADLINE = 2.0  # seconds: a REST change reaches every running gateway within this


class Sluice:
    """REST client for the live management plane plus the gateway process under test."""

    def __init__(self, management_url: str, token: str, gateway_url: str, gateway_token: str) -> None:
        self.management_url = management_url
        self.gateway_url = gateway_url
        self.gateway_token = gateway_token
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def post(self, path: str, body: dict | None = None) -> requests.Response:
        return self.session.post(f"{self.management_url}/api/{path}", json=body, timeout=10)

    def put(self, path: str, body: dict) -> requests.Response:
        return self.session.put(f"{self.management_url}/api/{path}", json=body, timeout=10)

    def patch(self, path: str, body: dict) -> requests.Response:
        return self.session.patch(f"{self.management_url}/api/{path}", json=body, timeout=10)

    def snapshot(self) -> dict:
        """The snapshot the gateways pull (with the gateway token)."""
        response = requests.get(
            f"{self.management_url}/api/gateway/snapshot/",
            headers={"Authorization": f"Gateway {self.gateway_token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def revision(self) -> int:
        return self.snapshot()["revision"]

    def wait_for_gateway(self) -> float:
        """Poll the gateway's health until it serves the management plane's current revision; return the wait."""
        wanted = self.revision()
        started = time.monotonic()
        while True:
            health = requests.get(f"{self.gateway_url}/__sluice/health", timeout=5)
            if health.status_code == 200 and health.json()["revision"] >= wanted:
                return time.monotonic() - started
            if time.monotonic() - started > 10 * PROPAGATION_DEADLINE:
                pytest.fail(f"gateway still at {health.text} after waiting for revision {wanted}")
            time.sleep(0.02)  # polling interval of a bounded wait, not a stand-in for synchronisation


def start_sluice(
    start: StartProcess,
    tmp_path: Path,
    management_url: str,
    token: str,
    gateway_token: str,
    extra_env: Mapping[str, str] | None = None,
) -> Sluice:
    """Start a gateway on ``management_url``; its environment is only ours plus ``extra_env``."""
    port = free_port()
    env = {
        "SLUICE_GATEWAY_TOKEN": gateway_token,
        "SLUICE_MANAGEMENT_URL": management_url,
        "SLUICE_GATEWAY_PORT": str(port),
        "SLUICE_ADMIN_PORT": "0",  # no admin listener: gateways of parallel tests would share 9180
        "SLUICE_SNAPSHOT_CACHE": str(tmp_path / "snapshot.json"),
        "SLUICE_POLL_INTERVAL": "0.25",
        "SLUICE_USAGE_SPOOL": str(tmp_path / "usage.spool"),
        **(extra_env or {}),
    }
    gateway = start(
        [sys.executable, "-m", "gateway"], f"http://127.0.0.1:{port}/__sluice/health", env=env, name="gateway"
    )
    client = Sluice(management_url, token, f"http://127.0.0.1:{port}", gateway_token)
    client.gateway_process = gateway
    client.snapshot_path = tmp_path / "snapshot.json"
    return client


def subscribe(sluice: Sluice, name: str, scope: str) -> str:
    response = sluice.post("subscriptions/", {"name": name, "display_name": name, "scope": scope})
    assert response.status_code == 201, response.text
    secrets = sluice.post(f"subscriptions/{name}/list-secrets/")
    assert secrets.status_code == 200, secrets.text
    return secrets.json()["primary_key"]
