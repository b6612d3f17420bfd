"""`manage.py runsluice`: the embedded default. One command gives a working Sluice on this machine.

It migrates the database, makes sure the `admin` user and its API token exist, collects static files, seeds a demo
API backed by the mock model server (unless `--no-demo` or `SLUICE_DEMO=0`), then runs the local embeddings server
(`python -m embeddings`, unless `--embeddings-port 0`), the management plane (gunicorn) and one gateway as child
processes and prints where everything is. With `REDIS_URL` set (a
production-like local run) it also runs a Celery worker with beat, which ingests the usage stream the gateway writes
to Redis; on the embedded default (no Redis) the gateway posts usage over HTTP and tasks run in-process. Ctrl-C or
SIGTERM stops all the children; when a child dies its last log lines are printed and the command exits non-zero.
"""

import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from gateway_admin.management.processes import ManagedProcess, ProcessError, http_status, served_revision

__all__ = (
    "Command",
    "celery_argv",
    "ensure_admin",
    "ensure_language_model_api",
    "ensure_subscription",
    "gunicorn_argv",
    "task_children",
)

ADMIN_USERNAME = "admin"
DEMO_API = "demo"
DEMO_PATH = "demo/v1"
DEMO_SUBSCRIPTION = "demo"
KEY_HEADER = "Ocp-Apim-Subscription-Key"
READY_TIMEOUT = 60.0
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - only used to pick the address to connect to


class _Stop(Exception):
    """Raised by the SIGINT / SIGTERM handler to unwind into the cleanup path."""


#
# Seeding helpers (also used by bench/run.py)
#


def ensure_admin(password_file: Path) -> tuple[str, str | None]:
    """Create the `admin` superuser with a random password when absent; return (username, password or None).

    The generated password is kept in ``password_file`` (mode 0600) so it can be shown again on every start.
    """
    user_model = get_user_model()
    if not user_model.objects.filter(username=ADMIN_USERNAME).exists():
        password = secrets.token_urlsafe(18)
        user_model.objects.create_superuser(ADMIN_USERNAME, email="", password=password)
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.unlink(missing_ok=True)
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        return ADMIN_USERNAME, password
    if password_file.exists():
        return ADMIN_USERNAME, password_file.read_text().strip()
    return ADMIN_USERNAME, None


def ensure_token(username: str) -> str:
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.get(username=username)
    return Token.objects.get_or_create(user=user)[0].key


def ensure_language_model_api(data: dict[str, Any]) -> bool:
    """Import the API described by ``data`` (the import endpoint's body) unless one with that name exists.

    Returns True when it was imported now.
    """
    from apis.models import API
    from apis.services import import_language_model

    if API.objects.filter(name=data["name"]).exists():
        return False
    import_language_model(data)
    return True


def ensure_subscription(name: str, scope: str, display_name: str = "") -> str:
    """Create the subscription when absent; return its primary key."""
    from subscriptions.models import Subscription
    from subscriptions.services import create_subscription, parse_scope

    subscription = Subscription.objects.filter(name=name).first()
    if subscription is None:
        subscription = create_subscription(name=name, scope=parse_scope(scope), display_name=display_name)
    return subscription.primary_key


def gunicorn_argv(bind: str, workers: int) -> list[str]:
    """gunicorn for the management plane, without the per-user control socket of gunicorn 24+ (two instances
    on one machine, e.g. `make run` and `make bench`, would fight over it)."""
    from gunicorn.config import KNOWN_SETTINGS

    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "gateway_admin.wsgi",
        "-b",
        bind,
        "-w",
        str(workers),
        "--graceful-timeout",
        "5",
        # threads (gthread): the test console's relay holds a thread while a streamed answer lasts, and a sync
        # worker busy longer than the 30 s timeout would be killed
        "--threads",
        "4",
    ]
    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        argv.append("--no-control-socket")
    return argv


def celery_argv(schedule_file: Path) -> list[str]:
    """A Celery worker with an embedded beat, one task at a time: the venv's `celery` next to this Python (else
    `python -m celery`). Beat's schedule state goes to ``schedule_file`` rather than the working directory."""
    celery = Path(sys.executable).with_name("celery")
    command = [str(celery)] if celery.exists() else [sys.executable, "-m", "celery"]
    return [
        *command,
        "-A",
        "gateway_admin",
        "worker",
        "-B",
        "--loglevel",
        "INFO",
        "--concurrency",
        "1",
        "--schedule",
        str(schedule_file),
    ]


def task_children(redis_url: str, var_dir: Path) -> list[tuple[str, list[str]]]:
    """The children that run tasks, as (name, argv): with Redis a worker + beat, which ingests the usage stream
    (`usage.tasks.ingest_usage_stream` every 2 s); without it none (tasks run eagerly in-process and the gateways
    deliver usage over HTTP)."""
    if not redis_url:
        return []
    return [("task worker", celery_argv(var_dir / "celerybeat-schedule"))]


def redact_url(url: str) -> str:
    """``url`` without its password, for printing."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def check_redis(url: str) -> None:
    """Fail fast when REDIS_URL does not answer (the worker would retry forever, the gateway fail open)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise CommandError(
            f"REDIS_URL is set but {redact_url(url)} does not answer ({exc}): start Redis, or unset REDIS_URL for the "
            "embedded default."
        ) from None
    finally:
        client.close()


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class Command(BaseCommand):
    help = "Run Sluice on this machine: management plane, one gateway and (by default) a demo model."

    requires_migrations_checks = False
    embeddings_url: str | None = None  # set once the embeddings server answers; shown in the banner
    mock_url: str | None = None  # the demo's mock model, once it answers; shown in the banner (a URL to import)

    def add_arguments(self, parser):
        parser.add_argument("--no-demo", action="store_true", help="do not start the mock model nor seed the demo")
        parser.add_argument("--host", default="127.0.0.1", help="address of the management plane and the gateway")
        parser.add_argument("--port", type=int, default=8000, help="management plane port (default 8000)")
        parser.add_argument("--gateway-port", type=int, default=8080, help="gateway port (default 8080)")
        parser.add_argument("--mock-port", type=int, default=18000, help="demo model port (default 18000)")
        parser.add_argument(
            "--embeddings-port",
            type=int,
            default=settings.SLUICE["EMBEDDINGS_PORT"],
            help="local embeddings server (all-MiniLM-L6-v2) on 127.0.0.1 (default SLUICE_EMBEDDINGS_PORT or 18100, "
            "0 = none)",
        )
        parser.add_argument(
            "--admin-port",
            type=int,
            default=9180,
            help="gateway admin listener on 127.0.0.1: Prometheus metrics and health (default 9180, 0 = none)",
        )
        parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
        parser.add_argument(
            "--var-dir",
            type=Path,
            default=None,
            help="where the admin password, logs and gateway snapshot cache go (default: VAR_DIR)",
        )

    def handle(self, *args, **options):
        self.children: list[ManagedProcess] = []
        # Installed explicitly: a process started in the background by a shell inherits SIGINT ignored.
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._run(options)
        except (KeyboardInterrupt, _Stop):
            self.stdout.write("\nStopping…")
            self.stdout.flush()
        finally:
            for sig in previous:  # a second Ctrl-C must not cut the cleanup short
                signal.signal(sig, signal.SIG_IGN)
            self._stop_children()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum, frame):
        raise _Stop

    #
    # Steps
    #

    def _run(self, options):
        host = options["host"]
        connect = "127.0.0.1" if host in WILDCARD_HOSTS else host
        demo = not options["no_demo"] and os.environ.get("SLUICE_DEMO", "1") != "0"
        gateway_token = settings.SLUICE.get("GATEWAY_TOKEN", "")
        if not gateway_token:
            raise CommandError("SLUICE_GATEWAY_TOKEN is not set: run `python scripts/ensure_env.py` (or `make run`).")
        ports = {"--port": options["port"], "--gateway-port": options["gateway_port"]}
        if demo:
            ports["--mock-port"] = options["mock_port"]
        if options["embeddings_port"]:
            ports["--embeddings-port"] = options["embeddings_port"]
        if options["admin_port"]:
            ports["--admin-port"] = options["admin_port"]
        for flag, port in ports.items():
            if port_in_use(connect, port):
                raise CommandError(f"port {port} on {connect} is in use: stop what runs there or pass {flag}.")
        if settings.REDIS_URL:
            check_redis(settings.REDIS_URL)

        var_dir = options["var_dir"] or Path(settings.VAR_DIR)
        log_dir = var_dir / "log"
        var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # admin password, logs, snapshot cache: private
        self.step("Applying database migrations")
        call_command("migrate", interactive=False, verbosity=0)
        username, password = ensure_admin(var_dir / "admin-password")
        token = ensure_token(username)
        self.step("Collecting static files")
        call_command("collectstatic", interactive=False, verbosity=0)

        management_url = f"http://{connect}:{options['port']}"
        gateway_url = f"http://{connect}:{options['gateway_port']}"
        metrics_url = f"http://127.0.0.1:{options['admin_port']}/metrics" if options["admin_port"] else None
        key = None
        if demo:
            mock_url = f"http://127.0.0.1:{options['mock_port']}"
            self.start(
                "mock model",
                [sys.executable, "-m", "mockllm", "--host", "127.0.0.1", "--port", str(options["mock_port"])],
                log_dir / "mock.log",
                f"{mock_url}/health",
            )
            key = self.seed_demo(f"{mock_url}/v1")
            self.mock_url = mock_url
        self.embeddings_url = self.start_embeddings(options["embeddings_port"], log_dir)
        connections.close_all()  # the children open their own

        self.start(
            "management plane",
            gunicorn_argv(f"{host}:{options['port']}", options["workers"]),
            log_dir / "management.log",
            f"{management_url}/admin/login/",
            # the import wizard's Test connection may probe the local mock model (docs/web-ui.md)
            # and the test console relays to the gateway started here
            env={
                **os.environ,
                "SLUICE_PROBE_ALLOW_LOOPBACK": os.environ.get("SLUICE_PROBE_ALLOW_LOOPBACK", "1"),
                "SLUICE_GATEWAY_URL": os.environ.get("SLUICE_GATEWAY_URL", gateway_url),
            },
        )
        redis_url = settings.REDIS_URL
        self.start(
            "gateway",
            [sys.executable, "-m", "gateway"],
            log_dir / "gateway.log",
            f"{gateway_url}/__sluice/health",
            env={
                **os.environ,
                "SLUICE_MANAGEMENT_URL": management_url,
                "SLUICE_GATEWAY_TOKEN": gateway_token,
                "SLUICE_GATEWAY_HOST": host,
                "SLUICE_GATEWAY_PORT": str(options["gateway_port"]),
                "SLUICE_ADMIN_HOST": "127.0.0.1",
                "SLUICE_ADMIN_PORT": str(options["admin_port"]),
                "SLUICE_SNAPSHOT_CACHE": str(var_dir / "gateway-snapshot.json"),
                # the same Redis and stream as the management plane, also when they come from .env
                "REDIS_URL": redis_url,
                "SLUICE_USAGE_STREAM": settings.SLUICE["USAGE_STREAM"],
            },
        )
        workers = [
            self.start_worker(name, argv, log_dir / "celery.log") for name, argv in task_children(redis_url, var_dir)
        ]
        if key is not None:
            self.wait_demo(gateway_url, key)
        self.banner(
            management_url, gateway_url, username, password, token, key, log_dir, redis_url, workers, metrics_url
        )
        self.supervise()

    def step(self, message: str) -> None:
        self.stdout.write(f"• {message}")
        self.stdout.flush()  # block-buffered when piped (`make run | tee`, the smoke test): show progress now

    def start(self, name: str, argv: list[str], log_path: Path, ready_url: str, env=None) -> ManagedProcess:
        self.step(f"Starting the {name} (log: {log_path})")
        process = ManagedProcess(argv, name=name, env=env, cwd=settings.BASE_DIR, log_path=log_path).start()
        self.children.append(process)
        try:
            process.wait_ready(ready_url, timeout=READY_TIMEOUT)
        except ProcessError as exc:
            raise CommandError(str(exc)) from exc
        return process

    def start_worker(self, name: str, argv: list[str], log_path: Path) -> ManagedProcess:
        """A child without an HTTP port (the Celery worker): ready once it logs that it is."""
        self.step(f"Starting the {name} (log: {log_path})")
        process = ManagedProcess(argv, name=name, cwd=settings.BASE_DIR, log_path=log_path).start()
        self.children.append(process)
        try:
            process.wait_output(" ready.", timeout=READY_TIMEOUT)
        except ProcessError as exc:
            raise CommandError(str(exc)) from exc
        return process

    def start_embeddings(self, port: int, log_dir: Path) -> str | None:
        """The local embeddings server on loopback (it loads the model before it answers); its endpoint URL."""
        if not port:
            return None
        self.start(
            "embeddings server",
            [sys.executable, "-m", "embeddings", "--host", "127.0.0.1", "--port", str(port)],
            log_dir / "embeddings.log",
            f"http://127.0.0.1:{port}/health",
        )
        # the management plane (started after this) derives the wizard's "local" embeddings backend from it
        os.environ["SLUICE_EMBEDDINGS_PORT"] = str(port)
        return f"http://127.0.0.1:{port}/v1/embeddings"

    def seed_demo(self, mock_base_url: str) -> str:
        imported = ensure_language_model_api(
            {
                "display_name": "Demo model",
                "name": DEMO_API,
                "url": mock_base_url,
                "path": DEMO_PATH,
                "type": "openai",
                "operations": ["POST /embeddings", "GET /models"],
                "subscription_required": True,
            }
        )
        self.step("Imported the demo API" if imported else "Demo API already present")
        return ensure_subscription(DEMO_SUBSCRIPTION, f"/apis/{DEMO_API}", "Demo")

    def wait_demo(self, gateway_url: str, key: str) -> None:
        """The gateway is healthy before its first snapshot lands; wait (bounded) until it serves the current
        configuration revision, then check that the demo answers. Asking the demo API itself before that would
        leave 401s in the usage (the home page's "Recent errors") for a subscription the gateway does not know yet."""
        from gateway_admin.models import ConfigRevision

        url = f"{gateway_url}/{DEMO_PATH}/models"
        current = ConfigRevision.current()
        deadline = time.monotonic() + 15
        status = None
        while time.monotonic() < deadline:
            served = served_revision(gateway_url)
            if served is not None and served >= current:
                status = http_status(url, headers={KEY_HEADER: key})
                if status == 200:
                    return
            time.sleep(0.25)
        self.stderr.write(f"warning: {url} still answers {status}; the demo may need a moment (see the gateway log)")

    def banner(
        self,
        management_url,
        gateway_url,
        username,
        password,
        token,
        key,
        log_dir,
        redis_url="",
        workers=(),
        metrics_url=None,
    ) -> None:
        style = self.style
        shown_password = password or "(not stored here; set one with `python manage.py changepassword admin`)"
        lines = [
            "",
            style.SUCCESS("Sluice is running."),
            f"  Web UI           {management_url}/ui/   (import wizard and object pages)",
            f"  Django admin     {management_url}/admin/",
            f"  API docs         {management_url}/api/docs/   (log in at /ui/ or /admin/ first)",
            f"  Admin login      {username} / {shown_password}",
            f"  API token        {token}   (header  Authorization: Token {token})",
            f"  Gateway          {gateway_url}",
        ]
        if metrics_url:
            lines.append(f"  Gateway metrics  {metrics_url}   (admin listener, loopback only)")
        if self.embeddings_url:
            lines.append(f"  Embeddings       {self.embeddings_url}   (all-MiniLM-L6-v2, local, OpenAI-compatible)")
        if redis_url:
            lines.append(f"  Redis            {redact_url(redis_url)}   (token counters, usage stream, Celery broker)")
        for worker in workers:
            lines.append(
                f"  Task worker      celery worker + beat, pid {worker.pid}   (ingests the usage stream into "
                f"/api/usage/; log {worker.log_path.name})"
            )
        lines.append(f"  Logs             {log_dir}/")
        if key is not None:
            base = f"{gateway_url}/{DEMO_PATH}"
            lines += [
                f"  Demo API         {base}   (mock model, subscription '{DEMO_SUBSCRIPTION}')",
                f"  Demo key         {key}",
            ]
            if self.mock_url:
                lines.append(
                    f"  Demo model       {self.mock_url}/v1   (the mock model, OpenAI-compatible: a URL to import)"
                )
            lines += [
                "",
                style.MIGRATE_HEADING("Try it with curl:"),
                f"  curl {base}/chat/completions \\",
                f"    -H '{KEY_HEADER}: {key}' -H 'Content-Type: application/json' \\",
                """    -d '{"model": "mock", "messages": [{"role": "user", "content": "Hello"}]}'""",
                "",
                style.MIGRATE_HEADING("Or with the openai SDK:"),
                "  from openai import OpenAI",
                f'  client = OpenAI(base_url="{base}", api_key="unused",',
                f'                  default_headers={{"{KEY_HEADER}": "{key}"}})',
                "  reply = client.chat.completions.create(",
                '      model="mock", messages=[{"role": "user", "content": "Hello"}])',
                "  print(reply.choices[0].message.content)",
            ]
        lines += ["", "Press Ctrl-C to stop."]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

    def supervise(self) -> None:
        while True:
            for child in self.children:
                if not child.alive:
                    self.stderr.write(
                        f"\nThe {child.name} exited with code {child.returncode}. Last lines of "
                        f"{child.log_path}:\n{child.tail(30)}"
                    )
                    raise CommandError(f"the {child.name} stopped unexpectedly", returncode=1)
            time.sleep(0.5)

    def _stop_children(self) -> None:
        while self.children:
            child = self.children.pop()
            child.stop(grace=10)
