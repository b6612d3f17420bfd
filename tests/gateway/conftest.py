"""Gateway fixtures; the helpers they use are in tests/gateway/helpers.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from .helpers import base_snapshot


@pytest.fixture
def snapshot_data() -> dict[str, Any]:
    return copy.deepcopy(base_snapshot())
