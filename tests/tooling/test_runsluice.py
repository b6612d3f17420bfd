"""`manage.py runsluice`: the seeding helpers on the test database, and the whole command as a real process."""

import os
import re
import signal
import stat
import sys
import time
from pathlib import Path

import openai
import pytest
from cryptography.fernet import Fernet

from gateway_admin.management.commands.runsluice import (
    ensure_admin,
    ensure_language_model_api,
    ensure_subscription,
    ensure_token,
)
from tests.fixtures_procs import REPO_ROOT, ManagedProcess, free_port, http_status

DEMO_LIKE = {
    "display_name": "Demo model",
    "name": "demo",
    "url": "http://127.0.0.1:9/v1",
    "path": "demo/v1",
    "type": "openai",
    "operations": ["POST /embeddings", "GET /models"],
    "subscription_required": True,
}


#
# Helpers, in-process
#


@pytest.mark.django_db
def test_ensure_admin_creates_once_and_keeps_the_password_private(tmp_path):
    password_file = tmp_path / "var" / "admin-password"
    username, password = ensure_admin(password_file)
    assert username == "admin"
    assert password and len(password) >= 20
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert ensure_admin(password_file) == ("admin", password)
    password_file.unlink()
    assert ensure_admin(password_file) == ("admin", None)


@pytest.mark.django_db
def test_ensure_token_is_stable(tmp_path):
    ensure_admin(tmp_path / "pw")
    assert ensure_token("admin") == ensure_token("admin")


@pytest.mark.django_db
def test_demo_seeding_is_idempotent():
    from apis.models import API

    assert ensure_language_model_api(DEMO_LIKE) is True
    assert ensure_language_model_api(DEMO_LIKE) is False
    api = API.objects.get(name="demo")
    assert sorted(op.url_template for op in api.operations.all()) == ["/chat/completions", "/embeddings", "/models"]
    key = ensure_subscription("demo", "/apis/demo", "Demo")
    assert ensure_subscription("demo", "/apis/demo", "Demo") == key
    from subscriptions.models import Subscription

    assert Subscription.objects.get(name="demo").scope == "/apis/demo"


#
# The command as a process
#


def runsluice_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gateway_admin.settings.local",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'sluice.sqlite3'}",
        "REDIS_URL": "",
        "DJANGO_SECRET_KEY": "runsluice-test-" + "x" * 40,
        "SLUICE_SECRET_KEYS": Fernet.generate_key().decode(),
        "SLUICE_GATEWAY_TOKEN": "runsluice-test-gateway-token",
        "SLUICE_DEMO": "1",
    }


def wait_for_text(process: ManagedProcess, text: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = process.log_path.read_text(errors="replace")
        if text in output:
            return output
        assert process.alive, f"runsluice exited with {process.returncode}:\n{process.tail(60)}"
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not printed within {timeout}s:\n{process.tail(60)}")


def child_pids(parent: int) -> dict[int, str]:
    children = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children[int(entry.name)] = cmdline
    return children


def start_runsluice(tmp_path: Path, *options: str) -> tuple[ManagedProcess, dict[str, int]]:
    ports = {"port": free_port(), "gateway": free_port(), "mock": free_port()}
    argv = [
        sys.executable,
        "manage.py",
        "runsluice",
        "--port",
        str(ports["port"]),
        "--gateway-port",
        str(ports["gateway"]),
        "--mock-port",
        str(ports["mock"]),
        "--workers",
        "1",
        "--var-dir",
        str(tmp_path / "var"),
        *options,
    ]
    process = ManagedProcess(
        argv, name="runsluice", env=runsluice_env(tmp_path), cwd=REPO_ROOT, log_path=tmp_path / "runsluice.log"
    ).start()
    return process, ports


def test_runsluice_serves_the_demo_and_stops_everything_on_sigterm(tmp_path):
    process, ports = start_runsluice(tmp_path)
    try:
        output = wait_for_text(process, "Press Ctrl-C to stop.")
        key = re.search(r"Demo key\s+(\S+)", output).group(1)
        token = re.search(r"API token\s+(\S+)", output).group(1)
        password = re.search(r"Admin login\s+admin / (\S+)", output).group(1)
        assert (tmp_path / "var" / "admin-password").read_text().strip() == password
        assert f"http://127.0.0.1:{ports['port']}/api/docs/" in output
        assert "curl http://127.0.0.1:" in output
        assert "from openai import OpenAI" in output

        management = f"http://127.0.0.1:{ports['port']}"
        assert http_status(f"{management}/admin/login/") == 200
        assert http_status(f"{management}/api/schema/", headers={"Authorization": f"Token {token}"}) == 200
        assert http_status(f"{management}/api/schema/") in (401, 403)

        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{ports['gateway']}/demo/v1",
            api_key="unused",
            default_headers={"Ocp-Apim-Subscription-Key": key},
            max_retries=0,
        )
        reply = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "Hello"}])
        assert reply.choices[0].message.content.startswith("word0 word1")
        assert [m.id for m in client.models.list()]
        with pytest.raises(openai.APIStatusError):
            openai.OpenAI(
                base_url=f"http://127.0.0.1:{ports['gateway']}/demo/v1", api_key="unused", max_retries=0
            ).models.list()

        children = child_pids(process.pid)
        assert len(children) == 3, children
        os.kill(process.pid, signal.SIGTERM)  # the command itself, not its group: it must stop its children
        process.popen.wait(timeout=30)
        assert process.returncode == 0, process.tail(40)
        for port in ports.values():
            assert http_status(f"http://127.0.0.1:{port}/", timeout=0.5) is None
        assert not any(Path(f"/proc/{pid}").exists() for pid in children)
    finally:
        process.stop()


def test_runsluice_exits_non_zero_with_the_log_tail_when_a_child_dies(tmp_path):
    process, _ = start_runsluice(tmp_path, "--no-demo")
    try:
        output = wait_for_text(process, "Press Ctrl-C to stop.")
        assert "Demo key" not in output
        gateway = next(pid for pid, cmd in child_pids(process.pid).items() if "-m gateway" in cmd)
        os.killpg(gateway, signal.SIGKILL)
        process.popen.wait(timeout=30)
        assert process.returncode == 1
        assert "The gateway exited with code" in process.log_path.read_text()
    finally:
        process.stop()


def test_runsluice_stops_on_ctrl_c(tmp_path):
    process, ports = start_runsluice(tmp_path, "--no-demo")
    try:
        wait_for_text(process, "Press Ctrl-C to stop.")
        os.kill(process.pid, signal.SIGINT)
        process.popen.wait(timeout=30)
        assert process.returncode == 0, process.tail(40)
        assert "Stopping" in process.log_path.read_text()
        assert http_status(f"http://127.0.0.1:{ports['gateway']}/__sluice/health", timeout=0.5) is None
    finally:
        process.stop()
