"""Usage test fixtures: a Redis stream per test, closed ports, a TCP relay (REST clients: tests/conftest.py)."""

import asyncio
import contextlib
import glob
import socket
import uuid

import pytest
import redis

from usage.models import UsageRollup

NO_REDIS = "needs Redis: set REDIS_URL (e.g. redis://127.0.0.1:6379/15); CI sets it"


@pytest.fixture
def redis_url(settings) -> str:
    if not settings.REDIS_URL:
        pytest.skip(NO_REDIS)
    return settings.REDIS_URL


@pytest.fixture
def redis_conn(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def stream_key(redis_conn) -> str:
    """A stream of its own for each test, deleted afterwards."""
    key = f"sluice:test:usage:{uuid.uuid4().hex}"
    yield key
    redis_conn.delete(key)


def totals() -> dict[str, int]:
    """Sums over every rollup row."""
    rows = UsageRollup.objects.all()
    return {
        "requests": sum(r.requests for r in rows),
        "prompt_tokens": sum(r.prompt_tokens for r in rows),
        "completion_tokens": sum(r.completion_tokens for r in rows),
        "total_tokens": sum(r.total_tokens for r in rows),
    }


class FakeClock:
    """A monotonic clock that moves only when told to (`clock.now += seconds`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spool_lines(path) -> int:
    """Records waiting in the spool files of `path` (0 when there are none)."""
    count = 0
    for name in glob.glob(glob.escape(str(path)) + ".spool-*"):
        with open(name, "rb") as f:
            count += sum(1 for _ in f)
    return count


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released: connecting gets 'connection refused')."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Relay:
    """A TCP relay on a fixed loopback port to a target, started on demand: "the server comes back"."""

    def __init__(self, port: int, target_host: str, target_port: int) -> None:
        self.port = port
        self.target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()
