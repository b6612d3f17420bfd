"""The subscription check: find the key, decide access and the product context
(https://learn.microsoft.com/azure/api-management/api-management-subscriptions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from urllib.parse import unquote_plus

from gateway.errors import MSG_INVALID_KEY, MSG_MISSING_KEY
from gateway.model import Access, ApiEntry, KeyRecord

__all__ = ("check_subscription", "split_query_param")


def split_query_param(query: str, name: str) -> tuple[str | None, str]:
    """Return (first value of ``name`` or None, the query without any ``name`` parameter).

    The name is compared as sent (not percent-decoded); the value is decoded. The other parameters are kept
    byte-for-byte, in order.
    """
    if not query or name not in query:
        return None, query
    value: str | None = None
    kept: list[str] = []
    found = False
    for part in query.split("&"):
        key, _, raw = part.partition("=")
        if key == name:
            found = True
            if value is None:
                value = unquote_plus(raw)
        else:
            kept.append(part)
    if not found:
        return None, query
    return value, "&".join(kept)


def check_subscription(api: ApiEntry, key: bytes | None, subscriptions: Mapping[str, KeyRecord]) -> Access | str:
    """Decide access for a request to ``api`` presenting ``key`` (already extracted; None or b"" = no key).

    Returns the Access (product context + subscription) or the 401 message. Callers pass ``key=None`` for
    APIs that do not require a subscription: their keys are ignored.
    """
    if key:
        digest = hashlib.sha256(key).hexdigest()  # == gateway.secrets.hash_key for UTF-8 keys
        # The lookup compares SHA-256 digests, not keys: its timing says nothing usable about the key itself.
        record = subscriptions.get(digest)
        if record is not None and record.subscription.active and record.subscription.scope in api.allowed_scopes:
            return record.access
        if api.open_access is not None:
            return api.open_access
        return MSG_INVALID_KEY
    if api.no_key_access is not None:
        return api.no_key_access
    return MSG_MISSING_KEY
