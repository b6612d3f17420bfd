"""The admin listener of a real gateway process (#7 item 12): metrics there, not on the client listener; a second
gateway whose admin port is taken logs it and serves its clients anyway."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

import orjson

from tests.fixtures_procs import free_port, http_status, process_factory  # noqa: F401  (fixture)

from .helpers import TOKEN, base_snapshot


def gateway_env(tmp_path, name: str, port: int, admin_port: int) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")},
        "SLUICE_GATEWAY_TOKEN": TOKEN,
        "SLUICE_GATEWAY_PORT": str(port),
        "SLUICE_ADMIN_PORT": str(admin_port),
        "SLUICE_SNAPSHOT_CACHE": str(tmp_path / "snapshot.json"),
        "SLUICE_USAGE_SPOOL": str(tmp_path / f"usage-{name}.spool"),
        "SLUICE_MANAGEMENT_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens: serve from the cache
        "SLUICE_POLL_INTERVAL": "5",
        "SLUICE_LOG_LEVEL": "INFO",
    }


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_metrics_on_the_admin_listener_only_and_a_taken_admin_port_does_not_stop_the_gateway(
    tmp_path,
    process_factory,  # noqa: F811
):
    (tmp_path / "snapshot.json").write_bytes(orjson.dumps(base_snapshot()))
    port, other_port, admin_port = free_port(), free_port(), free_port()
    process_factory(
        [sys.executable, "-m", "gateway"],
        f"http://127.0.0.1:{port}/__sluice/health",
        env=gateway_env(tmp_path, "first", port, admin_port),
        name="gateway",
    )
    status, body = get(f"http://127.0.0.1:{admin_port}/metrics")
    assert status == 200 and b"sluice_requests" in body
    assert get(f"http://127.0.0.1:{admin_port}/__sluice/health")[0] == 200
    for path in ("/metrics", "/__sluice/metrics"):
        status, body = get(f"http://127.0.0.1:{port}{path}")
        assert status == 404 and b"sluice_" not in body

    second = process_factory(  # the same admin port: taken
        [sys.executable, "-m", "gateway"],
        f"http://127.0.0.1:{other_port}/__sluice/health",
        env=gateway_env(tmp_path, "second", other_port, admin_port),
        name="gateway-2",
    )
    second.wait_output(f"admin listener not started on 127.0.0.1:{admin_port}", timeout=10)
    assert second.alive
    assert http_status(f"http://127.0.0.1:{other_port}/__sluice/health") == 200
