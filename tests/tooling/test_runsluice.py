"""`manage.py runsluice`: the seeding helpers on the test database, and the whole command as a real process."""

import json
import os
import re
import secrets
import signal
import stat
import sys
import time
import urllib.request
from pathlib import Path

import openai
import pytest
from cryptography.fernet import Fernet

from gateway_admin.management.commands.runsluice import (
    celery_argv,
    check_redis,
    ensure_admin,
    ensure_language_model_api,
    ensure_subscription,
    ensure_token,
    redact_url,
    task_children,
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


def test_no_task_worker_on_the_embedded_default(tmp_path):
    assert task_children("", tmp_path) == []


def test_a_celery_worker_with_beat_when_redis_is_set(tmp_path):
    [(name, argv)] = task_children("redis://127.0.0.1:6379/0", tmp_path)
    assert name == "task worker"
    celery = Path(sys.executable).with_name("celery")
    assert argv[: 1 if celery.exists() else 3] == (
        [str(celery)] if celery.exists() else [sys.executable, "-m", "celery"]
    )
    assert argv[-10:] == [
        "-A",
        "gateway_admin",
        "worker",
        "-B",
        "--loglevel",
        "INFO",
        "--concurrency",
        "1",
        "--schedule",
        str(tmp_path / "celerybeat-schedule"),  # in the var dir, not the working directory
    ]
    assert celery_argv(tmp_path / "celerybeat-schedule") == argv


def test_check_redis_fails_fast_with_a_clear_message():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=r"REDIS_URL is set but redis://:\*\*\*@127\.0\.0\.1:\d+/0 does not answer"):
        check_redis(f"redis://:pw@127.0.0.1:{free_port()}/0")


def test_redact_url():
    assert redact_url("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


#
# The command as a process
#


def runsluice_env(tmp_path: Path) -> dict[str, str]:
    # Without PYTHONUNBUFFERED, as under `make run` in a clean shell: the banner must reach a pipe or file anyway.
    inherited = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    return {
        **inherited,
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


def start_runsluice(
    tmp_path: Path, *options: str, env: dict[str, str] | None = None
) -> tuple[ManagedProcess, dict[str, int]]:
    ports = {name: free_port() for name in ("port", "gateway", "mock", "admin", "embeddings")}
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
        "--admin-port",
        str(ports["admin"]),
        "--embeddings-port",
        str(ports["embeddings"]),
        "--workers",
        "1",
        "--var-dir",
        str(tmp_path / "var"),
        *options,
    ]
    process = ManagedProcess(
        argv,
        name="runsluice",
        env={**runsluice_env(tmp_path), **(env or {})},
        cwd=REPO_ROOT,
        log_path=tmp_path / "runsluice.log",
    ).start()
    return process, ports


def assert_the_wizard_caches_semantically_with_the_local_engine(
    management: str, token: str, ports: dict[str, int], embeddings: str
) -> None:
    """The embedded default caches semantically with no external service: an API imported with
    ``"semantic_cache": {"embeddings_backend": "local"}`` gets a backend on the embeddings server ``make run`` started,
    and a paraphrase of a prompt is answered from the cache."""
    body = {
        "display_name": "Cached",
        "url": f"http://127.0.0.1:{ports['mock']}/v1",
        "path": "cached/v1",
        "type": "openai",
        "subscription_required": False,  # the demo key is for the demo API only
        "semantic_cache": {"embeddings_backend": "local"},
    }
    request = urllib.request.Request(
        f"{management}/api/apis/import-language-model/",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
    request = urllib.request.Request(
        f"{management}/api/backends/local-embeddings/", headers={"Authorization": f"Token {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["url"] == embeddings
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{ports['gateway']}/cached/v1", api_key="unused", max_retries=0)
    deadline = time.monotonic() + 20
    while True:  # the gateway serves the new API once it has polled the new snapshot
        try:
            first = client.chat.completions.with_raw_response.create(
                model="mock", messages=[{"role": "user", "content": "How do I reset my password?"}]
            )
            break
        except openai.NotFoundError:
            assert time.monotonic() < deadline, "the gateway did not serve the imported API"
            time.sleep(0.2)
    assert first.headers["x-semantic-cache"] == "miss"
    again = client.chat.completions.with_raw_response.create(
        model="mock", messages=[{"role": "user", "content": "How can I reset my password?"}]
    )
    assert again.headers["x-semantic-cache"].startswith("hit; score=")
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content


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
        model = re.search(r"Demo model\s+(\S+)", output).group(1)  # the URL a newcomer imports in the wizard
        assert model == f"http://127.0.0.1:{ports['mock']}/v1" and http_status(f"{model}/models") == 200
        assert f"Gateway metrics  http://127.0.0.1:{ports['admin']}/metrics" in output
        assert http_status(f"http://127.0.0.1:{ports['admin']}/metrics") == 200  # the admin listener
        assert http_status(f"http://127.0.0.1:{ports['gateway']}/__sluice/metrics") == 404  # not the client one

        management = f"http://127.0.0.1:{ports['port']}"
        assert http_status(f"{management}/admin/login/") == 200
        assert f"Web UI           {management}/ui/" in output
        assert http_status(f"{management}/ui/login/") == 200
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

        embeddings = f"http://127.0.0.1:{ports['embeddings']}/v1/embeddings"
        assert f"Embeddings       {embeddings}" in output
        vectors = openai.OpenAI(base_url=embeddings.removesuffix("/embeddings"), api_key="unused", max_retries=0)
        assert len(vectors.embeddings.create(model="all-MiniLM-L6-v2", input="Hello").data[0].embedding) == 384
        assert_the_wizard_caches_semantically_with_the_local_engine(management, token, ports, embeddings)

        children = child_pids(process.pid)
        assert len(children) == 4, children  # mock model, embeddings server, management plane, gateway
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


REDIS_URL = os.environ.get("REDIS_URL", "")


@pytest.mark.skipif(not REDIS_URL, reason="REDIS_URL is not set (CI sets redis://127.0.0.1:6379/0)")
def test_runsluice_with_redis_runs_a_worker_that_ingests_the_usage_stream(tmp_path):
    import redis

    stream = f"sluice:test-runsluice:{secrets.token_hex(4)}"
    process, ports = start_runsluice(tmp_path, env={"REDIS_URL": REDIS_URL, "SLUICE_USAGE_STREAM": stream})
    client = redis.Redis.from_url(REDIS_URL)
    try:
        output = wait_for_text(process, "Press Ctrl-C to stop.", timeout=120)
        assert "Task worker      celery worker + beat" in output
        assert "Redis            redis://" in output
        key = re.search(r"Demo key\s+(\S+)", output).group(1)
        token = re.search(r"API token\s+(\S+)", output).group(1)
        worker = next(pid for pid, cmd in child_pids(process.pid).items() if "gateway_admin worker -B" in cmd)

        client_ = openai.OpenAI(
            base_url=f"http://127.0.0.1:{ports['gateway']}/demo/v1",
            api_key="unused",
            default_headers={"Ocp-Apim-Subscription-Key": key},
            max_retries=0,
        )
        client_.chat.completions.create(model="mock", messages=[{"role": "user", "content": "Hello"}])
        request = urllib.request.Request(
            f"http://127.0.0.1:{ports['port']}/api/usage/?group_by=subscription&interval=minute",
            headers={"Authorization": f"Token {token}"},
        )
        deadline = time.monotonic() + 30  # the gateway sends every 50 ms, beat ingests every 2 s
        counted = 0
        while time.monotonic() < deadline and not counted:
            with urllib.request.urlopen(request, timeout=5) as response:
                rows = json.load(response)["results"]
            counted = sum(row["requests"] for row in rows if row["key"] == "demo")
            time.sleep(0.5)
        assert counted >= 1, process.tail(40) + (tmp_path / "var" / "log" / "celery.log").read_text()[-3000:]
        assert client.xlen(stream) >= 1  # it went through Redis, not over HTTP

        os.kill(process.pid, signal.SIGTERM)
        process.popen.wait(timeout=40)
        assert process.returncode == 0, process.tail(40)
        assert not Path(f"/proc/{worker}").exists()
        assert (tmp_path / "var" / "celerybeat-schedule").exists() or any((tmp_path / "var").glob("celerybeat-*"))
    finally:
        process.stop()
        client.delete(stream)
        client.close()
