"""The local embeddings server (``python -m embeddings``) as a real process, and the model in this process.

Import the fixtures into a ``conftest.py`` (``from tests.fixtures_embeddings import embeddings_server, minilm``).
"""

import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.fixtures_procs import ManagedProcess, StartProcess, _factory, _stop, free_port

__all__ = ("EmbeddingsServer", "embeddings_argv", "embeddings_server", "minilm", "start_embeddings")


def embeddings_argv(port: int, *options: str) -> list[str]:
    return [sys.executable, "-m", "embeddings", "--host", "127.0.0.1", "--port", str(port), *options]


@dataclass
class EmbeddingsServer:
    process: ManagedProcess
    port: int

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (with ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def url(self) -> str:
        return f"{self.base_url}/embeddings"


def start_embeddings(start: StartProcess, *options: str, name: str = "embeddings") -> EmbeddingsServer:
    port = free_port()
    process = start(embeddings_argv(port, *options), f"http://127.0.0.1:{port}/health", timeout=60, name=name)
    return EmbeddingsServer(process=process, port=port)


@pytest.fixture(scope="module")
def embeddings_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddingsServer]:
    """One embeddings server (``--max-batch 8``) shared by the tests of a module."""
    start, started = _factory(tmp_path_factory.mktemp("embeddings"))
    yield start_embeddings(start, "--max-batch", "8")
    _stop(started)


@pytest.fixture(scope="session")
def minilm():
    """The model, loaded once per session, on one BLAS thread (as the server runs it)."""
    from threadpoolctl import threadpool_limits

    from embeddings.model import MiniLM

    threadpool_limits(limits=1, user_api="blas")
    return MiniLM.load()
