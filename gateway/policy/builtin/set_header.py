"""``set-header``: adds, replaces, appends or deletes a request header (inbound, backend) or response header.

APIM reference: https://learn.microsoft.com/azure/api-management/set-header-policy
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import ALL_SCOPES, Attr, Policy, Section, text_value
from ..values import ExpressionRuntimeError, Value
from ..xml import Element

if TYPE_CHECKING:
    from gateway.context import Headers, RequestContext
    from gateway.http.messages import Response

__all__ = ("ACTIONS", "SetHeader", "check_header_name", "check_header_value")

ACTIONS = ("override", "skip", "append", "delete")

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Values of these may contain commas, so several <value>s become repeated headers instead of one CSV list.
_REPEATED = frozenset(
    {
        b"user-agent",
        b"www-authenticate",
        b"proxy-authenticate",
        b"cookie",
        b"set-cookie",
        b"warning",
        b"date",
        b"expires",
        b"if-modified-since",
        b"if-unmodified-since",
        b"last-modified",
        b"retry-after",
    }
)
_PROTECTED = frozenset({b"connection", b"content-length", b"keep-alive", b"transfer-encoding"})


def check_header_name(name: str, el: Element) -> bytes:
    if not name or not set(name) <= _TOKEN_CHARS:
        raise el.error(f"<{el.tag}>: invalid header name {name!r}")
    raw = name.lower().encode("ascii")
    if raw in _PROTECTED:
        raise el.error(f"<{el.tag}>: header '{name}' cannot be changed or removed")
    return raw


def check_header_value(value: str, el: Element) -> bytes:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise el.error(f"<{el.tag}>: header value must not contain CR, LF or NUL")
    return value.encode("utf-8")


class SetHeader(Policy):
    """``<set-header name="X" exists-action="override|skip|append|delete"><value>v</value>…</set-header>``.

    All-literal statements are turned into header bytes once; any expression (name, action or a value) is evaluated
    per request and its result checked like a literal is at load time.
    """

    name = "set-header"
    sections = frozenset({Section.INBOUND, Section.BACKEND, Section.OUTBOUND, Section.ON_ERROR})
    scopes = ALL_SCOPES
    attributes = {
        "name": Attr(required=True),
        "exists-action": Attr(choices=ACTIONS, default="override"),
    }
    children = frozenset({"value"})
    __slots__ = ("action", "action_value", "entries", "header", "header_name", "values")

    def __init__(self, header_name: Value, action: Value, values: tuple[Value, ...], el: Element) -> None:
        super().__init__()
        self.header_name = header_name
        self.action_value = action
        self.values = values
        # literal fast path: the header entries as bytes; None when something must be evaluated per request
        self.header: bytes | None = check_header_name(header_name.literal, el) if header_name.is_literal else None
        self.action: str | None = action.literal if action.is_literal else None
        self.entries: tuple[tuple[bytes, bytes], ...] | None = None
        if self.header is not None and self.action is not None and all(v.is_literal for v in values):
            encoded = [check_header_value(v.literal, el) for v in values]
            self.entries = _entries(self.header, self.action, encoded)
        else:
            for value in values:
                if value.is_literal:
                    check_header_value(value.literal, el)

    @classmethod
    def from_element(cls, el: Element) -> SetHeader:
        attrs = cls.check_element(el)
        values = tuple(text_value(child) for child in el.children)
        return cls(attrs["name"], attrs["exists-action"], values, el)

    @property
    def is_literal(self) -> bool:
        return self.entries is not None

    def resolve(self, ctx: RequestContext | None) -> tuple[bytes, str, tuple[tuple[bytes, bytes], ...]]:
        """(header name, action, entries) of this statement for one request."""
        if self.entries is not None:
            assert self.header is not None and self.action is not None
            return self.header, self.action, self.entries
        assert ctx is not None, "a statement with expressions needs the request context"
        header = self.header if self.header is not None else _runtime_header_name(self.header_name.evaluate(ctx))
        action = self.action if self.action is not None else self.action_value.evaluate(ctx)
        if action not in ACTIONS:
            raise ExpressionRuntimeError(f"'exists-action' must be one of {', '.join(ACTIONS)}, got {action!r}.")
        encoded = [_runtime_header_value(v.evaluate(ctx)) for v in self.values]
        return header, action, _entries(header, action, encoded)

    def apply_to(self, headers: Headers, ctx: RequestContext | None = None) -> None:
        """Apply this statement to a header list in place (``ctx`` is needed only when it has expressions)."""
        name, action, entries = self.resolve(ctx)
        if action == "append":
            headers.extend(entries)
            return
        present = False
        for existing, _ in headers:
            if existing == name:
                present = True
                break
        if action == "skip":
            if not present:
                headers.extend(entries)
            return
        if present:
            headers[:] = [h for h in headers if h[0] != name]
        headers.extend(entries)  # empty for delete

    async def apply(self, ctx: RequestContext) -> Response | None:
        if self.section is Section.INBOUND or self.section is Section.BACKEND:
            self.apply_to(ctx.request_headers, ctx)
        elif ctx.response is not None:
            self.apply_to(ctx.response.headers, ctx)
        return None

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        if self.header is not None:
            return {"header": self.header.decode(), "action": self.action or self.action_value.source}
        return {"header": self.header_name.source, "action": self.action or self.action_value.source}


def _entries(header: bytes, action: str, encoded: list[bytes]) -> tuple[tuple[bytes, bytes], ...]:
    if action == "delete":
        return ()
    if header in _REPEATED:
        return tuple((header, v) for v in encoded)
    return ((header, b",".join(encoded)),) if encoded else ((header, b""),)


def _runtime_header_name(name: str) -> bytes:
    if not name or not set(name) <= _TOKEN_CHARS:
        raise ExpressionRuntimeError(f"{name!r} is not a valid header name.")
    raw = name.lower().encode("ascii")
    if raw in _PROTECTED:
        raise ExpressionRuntimeError(f"Header '{name}' cannot be changed or removed.")
    return raw


def _runtime_header_value(value: str) -> bytes:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ExpressionRuntimeError("A header value must not contain CR, LF or NUL.")
    return value.encode("utf-8")
