"""Token counters for ``llm-token-limit``: one small store interface, chosen by name (``memory`` or ``redis``).

See ``base.py`` for the contract and docs/token-limits.md for the admission guarantee.
"""

from __future__ import annotations

from .base import (
    PERIODS,
    Admission,
    Reservation,
    StoreUnavailable,
    TokenStore,
    Window,
    minute_start,
    minute_window,
    period_bounds,
    quota_window,
)
from .stores import create_store, store_names

__all__ = (
    "PERIODS",
    "Admission",
    "Reservation",
    "StoreUnavailable",
    "TokenStore",
    "Window",
    "create_store",
    "minute_start",
    "minute_window",
    "period_bounds",
    "quota_window",
    "store_names",
)
