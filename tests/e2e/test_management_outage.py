"""Outage drill (issue #7): stop the management plane while a gateway serves traffic.

Everything is a real process: the management plane (gunicorn on its own SQLite file, as `runsluice` runs it), the
gateway (`python -m gateway`, usage over HTTP with a spool) and the mock model (Azure OpenAI deployment routes).
The API is made with the import wizard from an Azure-style URL carrying `api-version` (issue #7 item 1).

What must hold: traffic continues on the last snapshot while the management plane is gone; a gateway restarted
during the outage comes up from its disk cache; every usage record produced during the outage is counted, once,
after the management plane is back.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet

from gateway_admin.management.commands.runsluice import gunicorn_argv
from tests.fixtures_procs import REPO_ROOT, free_port, start_mock_llm

GATEWAY_TOKEN = "outage-drill-gateway-token-0123456789"
API_VERSION = "2024-10-21"
DELIVERY_DEADLINE = 60.0  # seconds: the usage sink backs off at most 10 s between attempts
MESSAGES = [{"role": "user", "content": "hello"}]


def management_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gateway_admin.settings.local",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'management.sqlite3'}",
        "REDIS_URL": "",  # usage over HTTP to the management plane, the path an outage interrupts
        "DJANGO_SECRET_KEY": "outage-drill-" + "x" * 40,
        "SLUICE_SECRET_KEYS": Fernet.generate_key().decode(),
        "SLUICE_GATEWAY_TOKEN": GATEWAY_TOKEN,
        "DJANGO_SUPERUSER_PASSWORD": "drill-password-0123456789",
    }


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class Drill:
    def __init__(self, process_factory, tmp_path: Path) -> None:
        self.start = process_factory
        self.tmp_path = tmp_path
        self.env = management_env(tmp_path)
        self.db_path = tmp_path / "management.sqlite3"
        self.management_port = free_port()
        self.management_url = f"http://127.0.0.1:{self.management_port}"
        self.gateway_port = free_port()
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.request_ids: list[str] = []

    def start_management(self):
        self.management = self.start(
            gunicorn_argv(f"127.0.0.1:{self.management_port}", 1),
            f"{self.management_url}/admin/login/",
            env=self.env,
            name="management",
        )

    def kill_management(self) -> None:
        self.management.signal_group(signal.SIGKILL)
        self.management.stop()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{self.management_url}/admin/login/", timeout=2)

    def start_gateway(self):
        env = {
            **self.env,
            "SLUICE_MANAGEMENT_URL": self.management_url,
            "SLUICE_GATEWAY_PORT": str(self.gateway_port),
            "SLUICE_SNAPSHOT_CACHE": str(self.tmp_path / "gateway" / "snapshot.json"),
            "SLUICE_USAGE_SPOOL": str(self.tmp_path / "gateway" / "usage.spool"),
            "SLUICE_POLL_INTERVAL": "0.2",
        }
        self.gateway = self.start(
            [sys.executable, "-m", "gateway"], f"{self.gateway_url}/__sluice/health", env=env, name="gateway"
        )

    def health(self) -> dict:
        return requests.get(f"{self.gateway_url}/__sluice/health", timeout=5).json()

    def chat(self, key: str, query: str = "") -> requests.Response:
        response = requests.post(
            f"{self.gateway_url}/az/chat/completions{query}",
            json={"model": "d", "messages": MESSAGES, "max_tokens": 3},
            headers={"Ocp-Apim-Subscription-Key": key},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        self.request_ids.append(response.headers["x-request-id"])
        return response

    def counted(self) -> tuple[set[str], int]:
        with sqlite3.connect(self.db_path) as db:
            seen = {uuid.UUID(row[0]).hex for row in db.execute("SELECT request_id FROM usage_usagerecordseen")}
            (requests_total,) = db.execute("SELECT COALESCE(SUM(requests), 0) FROM usage_usagerollup").fetchone()
        return seen, requests_total


def wait_until(predicate, deadline: float, what: str):
    """Poll ``predicate`` until it returns a truthy value, failing after ``deadline`` seconds."""
    started = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() - started > deadline:
            pytest.fail(f"timed out after {deadline:g} s waiting for {what}")
        time.sleep(0.1)  # the polling interval of a bounded wait


def test_gateway_keeps_serving_and_no_usage_is_lost_while_the_management_plane_is_down(process_factory, tmp_path):
    drill = Drill(process_factory, tmp_path)
    model = start_mock_llm(process_factory, name="model")
    manage(drill.env, "migrate", "--noinput")
    manage(drill.env, "createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    token = manage(drill.env, "drf_create_token", "admin").split()[2]
    drill.start_management()
    rest = requests.Session()
    rest.headers["Authorization"] = f"Token {token}"

    # the reported trigger: an Azure OpenAI URL with api-version, through the import wizard
    imported = rest.post(
        f"{drill.management_url}/api/apis/import-language-model/",
        json={
            "display_name": "Azure chat",
            "name": "az",
            "url": f"{model.root_url}/openai/deployments/d?api-version={API_VERSION}",
            "path": "az",
            "type": "openai",
        },
        timeout=30,
    )
    assert imported.status_code == 201, imported.text
    assert (
        rest.post(
            f"{drill.management_url}/api/subscriptions/",
            json={"name": "drill", "display_name": "drill", "scope": "/apis/az"},
            timeout=30,
        ).status_code
        == 201
    )
    key = rest.post(f"{drill.management_url}/api/subscriptions/drill/list-secrets/", timeout=30).json()["primary_key"]
    revision = requests.get(
        f"{drill.management_url}/api/gateway/snapshot/",
        headers={"Authorization": f"Gateway {GATEWAY_TOKEN}"},
        timeout=30,
    ).json()["revision"]

    drill.start_gateway()
    wait_until(lambda: drill.health().get("revision") == revision, 20, f"the gateway to load revision {revision}")
    assert drill.health()["status"] == "ok"

    # the backend URL's query reaches the model; a client's own api-version wins
    drill.chat(key)
    last = model.stats()["last_request"]
    assert (last["path"], last["query"]) == ("/openai/deployments/d/chat/completions", f"api-version={API_VERSION}")
    drill.chat(key, "?api-version=2025-01-01")
    assert model.stats()["last_request"]["query"] == "api-version=2025-01-01"

    # outage: the process serving snapshots (and receiving usage) is killed
    drill.kill_management()
    for _ in range(5):
        drill.chat(key)
    assert drill.health()["revision"] == revision

    # a gateway restarted during the outage comes up from its disk cache (ready = health 200 with a revision)
    drill.gateway.stop()
    drill.start_gateway()
    assert drill.health()["revision"] == revision
    for _ in range(5):
        drill.chat(key)

    # the management plane returns: every record of the outage is delivered, and counted once
    drill.start_management()
    expected = {uuid.UUID(rid).hex for rid in drill.request_ids}

    def all_counted():
        seen, total = drill.counted()
        return (seen, total) if expected <= seen else None

    seen, total = wait_until(all_counted, DELIVERY_DEADLINE, f"{len(expected)} usage records")
    assert seen == expected
    assert total == len(expected) == 12
