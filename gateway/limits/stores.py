"""Choosing a token store by name: the built-in stores register themselves in ``base`` when imported here."""

from __future__ import annotations

from typing import Any

from . import memory, redis  # noqa: F401  (register the built-in stores)
from .base import TokenStore, registered_stores

__all__ = ("create_store", "store_names")


def store_names() -> tuple[str, ...]:
    return tuple(sorted(registered_stores()))


def create_store(name: str, **options: Any) -> TokenStore:
    """Build the store registered as ``name`` (``memory`` or ``redis``; ``redis`` needs ``url=``)."""
    stores = registered_stores()
    try:
        cls = stores[name]
    except KeyError:
        raise ValueError(f"unknown token store {name!r} (known: {', '.join(sorted(stores))})") from None
    return cls(**options)
