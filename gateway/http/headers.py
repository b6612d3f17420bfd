"""Header name sets and small helpers shared by the HTTP server and the upstream client.

Header lists are ``list[tuple[bytes, bytes]]`` with lower-cased names, in wire order, repeats kept.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = (
    "CLIENT_OWNED",
    "FRAMING",
    "HOP_BY_HOP",
    "SERVER_OWNED",
    "connection_options",
    "find_header",
    "has_token",
    "strip_hop_by_hop",
)

#: Headers that describe one connection, never the message: a proxy drops them on both legs (RFC 9110 §7.6.1).
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

#: Headers that delimit the message body on the wire.
FRAMING: frozenset[bytes] = frozenset({b"content-length", b"transfer-encoding"})

#: Response headers the server writes itself; any given by a handler are dropped.
SERVER_OWNED: frozenset[bytes] = HOP_BY_HOP | FRAMING

#: Request headers the upstream client writes itself (``host`` from the origin, ``content-length`` from the body);
#: ``expect`` is dropped because the client always sends the body with the head.
CLIENT_OWNED: frozenset[bytes] = HOP_BY_HOP | FRAMING | {b"host", b"expect"}

# Tokens of a Connection header that are options, not header names.
_CONNECTION_KEYWORDS = frozenset({b"close", b"keep-alive"})


def find_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """Return the first value of ``name`` (given lower-case), or ``None``."""
    for key, value in headers:
        if key == name:
            return value
    return None


def has_token(value: bytes, token: bytes) -> bool:
    """Tell whether a comma-separated header value lists ``token`` (given lower-case), ignoring case and spaces."""
    if b"," not in value:
        return value.strip().lower() == token
    return any(part.strip().lower() == token for part in value.split(b","))


def connection_options(value: bytes) -> frozenset[bytes]:
    """Header names listed in a Connection header (the ``close`` and ``keep-alive`` keywords excluded)."""
    names = {part.strip().lower() for part in value.split(b",")}
    names -= _CONNECTION_KEYWORDS
    names.discard(b"")
    return frozenset(names)


def strip_hop_by_hop(
    headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes] = SERVER_OWNED
) -> list[tuple[bytes, bytes]]:
    """Copy ``headers`` without names in ``drop`` and without the names a Connection header lists.

    Names are lower-cased in the copy.
    """
    kept: list[tuple[bytes, bytes]] = []
    listed: set[bytes] = set()
    for name, value in headers:
        lname = name.lower()
        if lname == b"connection":
            listed |= connection_options(value)
        if lname not in drop:
            kept.append((lname, value))
    if listed:
        kept = [(name, value) for name, value in kept if name not in listed]
    return kept
