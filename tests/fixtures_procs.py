"""Real child processes for tests: the mock model server, and later the gateway and the management plane.

Import the fixtures into a ``conftest.py`` (``from tests.fixtures_procs import mock_llm, process_factory``).
``process_factory(argv, ready_url)`` starts a process in its own group, waits (bounded) until ``ready_url`` answers
200 and stops the whole group at teardown; a child that dies or never gets ready fails the test with its log tail.
"""

import json
import sys
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway_admin.management.processes import ManagedProcess, ProcessError, free_port, http_status, start_process

__all__ = (
    "ManagedProcess",
    "MockLLM",
    "ProcessError",
    "free_port",
    "http_status",
    "mock_llm",
    "mock_llm_argv",
    "process_factory",
    "start_mock_llm",
    "start_process",
    "start_redis",
)

REPO_ROOT = Path(__file__).resolve().parent.parent

StartProcess = Callable[..., ManagedProcess]


def mock_llm_argv(port: int, *options: str) -> list[str]:
    return [sys.executable, "-m", "mockllm", "--host", "127.0.0.1", "--port", str(port), *options]


@dataclass
class MockLLM:
    """A running ``python -m mockllm``."""

    process: ManagedProcess
    port: int

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (with ``/v1``), as configured on an imported API."""
        return f"{self.root_url}/v1"

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.root_url}/mock/stats", timeout=5) as response:
            return json.load(response)

    def fail(self, mode: str, count: int | None = None, **options: object) -> None:
        """Make the next ``count`` model requests (all when None) fail in ``mode`` (see mockllm.app)."""
        data = json.dumps({"mode": mode, "count": count, **options}).encode()
        request = urllib.request.Request(
            f"{self.root_url}/mock/fail", data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5):
            pass

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.root_url}/mock/reset", method="POST")
        with urllib.request.urlopen(request, timeout=5):
            pass


def start_mock_llm(start: StartProcess, *options: str, name: str = "mockllm") -> MockLLM:
    port = free_port()
    process = start(mock_llm_argv(port, *options), f"http://127.0.0.1:{port}/health", name=name)
    return MockLLM(process=process, port=port)


def _factory(log_dir: Path) -> tuple[StartProcess, list[ManagedProcess]]:
    started: list[ManagedProcess] = []

    def start(
        argv: Sequence[str],
        ready_url: str | None = None,
        *,
        timeout: float = 30.0,
        name: str | None = None,
        **kwargs: object,
    ) -> ManagedProcess:
        label = name or Path(argv[0]).name
        log_path = log_dir / f"{label}-{len(started)}.log"
        kwargs.setdefault("cwd", str(REPO_ROOT))
        process = ManagedProcess(argv, name=label, log_path=log_path, **kwargs).start()  # type: ignore[arg-type]
        started.append(process)
        if ready_url is not None:
            process.wait_ready(ready_url, timeout=timeout)
        return process

    return start, started


def _stop(started: list[ManagedProcess]) -> None:
    for process in reversed(started):
        process.stop()


@pytest.fixture
def process_factory(tmp_path: Path) -> Iterator[StartProcess]:
    """``start(argv, ready_url=None, *, timeout=30, name=None, env=None, cpus=None)`` → ``ManagedProcess``."""
    start, started = _factory(tmp_path)
    yield start
    _stop(started)


@pytest.fixture(scope="module")
def mock_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockLLM]:
    """One mock model server (default options) shared by the tests of a module."""
    start, started = _factory(tmp_path_factory.mktemp("mockllm"))
    yield start_mock_llm(start)
    _stop(started)


REDIS_READY = "Ready to accept connections"


@dataclass
class RedisServer:
    """A ``redis-server`` of the test's own (not the shared CI Redis): it may be killed, stopped and restarted."""

    process: ManagedProcess
    port: int
    argv: list[str]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(
    start: StartProcess, data_dir: Path, *, port: int | None = None, name: str = "redis", wait: bool = True
) -> RedisServer:
    """``redis-server`` on a free loopback port (or ``port``, to restart one), its data in ``data_dir``.

    With ``wait=False`` the caller waits for ``server.process.wait_output(REDIS_READY)`` itself, from another thread
    say (start the process from the main thread: a child dies with the thread that started it). Every write is
    appended to the AOF and fsynced before the reply (``appendfsync always``), so a SIGKILLed server restarted on
    the same directory holds everything it acknowledged.
    """
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
            "--appendfsync", "always", "--dir", str(data_dir), "--logfile", ""]  # fmt: skip
    process = start(argv, name=name)
    if wait:
        process.wait_output(REDIS_READY, timeout=30)
    return RedisServer(process=process, port=port, argv=argv)
