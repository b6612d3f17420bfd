"""Fixtures for the HTTP layer tests: every test runs on uvloop (production) and on the default asyncio loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop

from gateway.http.server import Handler, ServerLimits, serve
from tests.gateway.http.rawhttp import RawConnection


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


StartServer = Callable[..., Awaitable[int]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """``port = await start_server(handler, **limits)``: serve() on 127.0.0.1 and an ephemeral port."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler, **limits: Any) -> int:
        server = await serve(handler, "127.0.0.1", 0, limits=ServerLimits(**limits))
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[RawConnection]]]:
    """``conn = await connect(port)``: a raw client connection, closed at the end of the test."""
    conns: list[RawConnection] = []

    async def open_(port: int, **kwargs: Any) -> RawConnection:
        conn = await RawConnection.open(port, **kwargs)
        conns.append(conn)
        return conn

    yield open_
    for conn in conns:
        conn.abort()


@pytest.fixture
def future_loops(monkeypatch: pytest.MonkeyPatch) -> list[asyncio.AbstractEventLoop | None]:
    """The ``loop=`` of every ``asyncio.Future(...)`` made from now on (the server's and the client's per-request
    futures): on Python 3.11 a future made without one asks for the running loop, a getpid(2) per call."""
    loops: list[asyncio.AbstractEventLoop | None] = []
    real = asyncio.Future

    def future(*, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future[Any]:
        loops.append(loop)
        return real(loop=loop)

    monkeypatch.setattr(asyncio, "Future", future)
    return loops
