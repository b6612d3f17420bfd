"""Gateway fixtures; the helpers they use are in tests/gateway/helpers.py."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from .helpers import base_snapshot


@pytest.fixture
def snapshot_data() -> dict[str, Any]:
    return copy.deepcopy(base_snapshot())


@pytest.fixture
def running_loop_asks(monkeypatch: pytest.MonkeyPatch) -> list[asyncio.AbstractEventLoop]:
    """Each call of asyncio.get_running_loop() from now on (a getpid(2) per call on Python 3.11), by its loop."""
    asked: list[asyncio.AbstractEventLoop] = []
    real = asyncio.get_running_loop

    def get_running_loop() -> asyncio.AbstractEventLoop:
        asked.append(real())
        return asked[-1]

    monkeypatch.setattr(asyncio, "get_running_loop", get_running_loop)
    return asked
