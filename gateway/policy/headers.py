"""``set-header``: add, replace, append or delete a request header (inbound/backend) or response header."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import ALL_SCOPES, Attr, Policy, Section, register
from .values import Value, parse_value
from .xml import Element

if TYPE_CHECKING:
    from gateway.context import Headers, RequestContext
    from gateway.http.server import Response

__all__ = ("SetHeader",)

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


@register
class SetHeader(Policy):
    """``<set-header name="X" exists-action="override|skip|append|delete"><value>v</value>…</set-header>``."""

    name = "set-header"
    sections = frozenset({Section.INBOUND, Section.BACKEND, Section.OUTBOUND, Section.ON_ERROR})
    scopes = ALL_SCOPES
    attributes = {
        "name": Attr(required=True),
        "exists-action": Attr(choices=("override", "skip", "append", "delete"), default="override"),
    }
    children = frozenset({"value"})
    __slots__ = ("action", "entries", "header", "header_name", "values")

    def __init__(self, header_name: Value, action: str, values: tuple[Value, ...], el: Element) -> None:
        super().__init__()
        self.header_name = header_name
        self.action = action
        self.values = values
        # literal-only for now: precompute the header entries as bytes
        self.header = check_header_name(header_name.literal, el)
        encoded = [check_header_value(v.literal, el) for v in values]
        if action == "delete":
            self.entries: tuple[tuple[bytes, bytes], ...] = ()
        elif self.header in _REPEATED:
            self.entries = tuple((self.header, v) for v in encoded)
        else:
            self.entries = ((self.header, b",".join(encoded)),) if encoded else ((self.header, b""),)

    @classmethod
    def from_element(cls, el: Element) -> SetHeader:
        attrs = cls.check_element(el)
        values: list[Value] = []
        for child in el.children:
            if child.attrs:
                raise child.error("<value> takes no attributes")
            if child.children:
                raise child.error("<value> must contain text only")
            values.append(parse_value(child.text, where="<value>", line=child.line, column=child.column))
        return cls(attrs["name"], attrs["exists-action"].literal, tuple(values), el)

    def apply_to(self, headers: Headers) -> None:
        """Apply this statement to a header list in place."""
        name = self.header
        action = self.action
        if action == "append":
            headers.extend(self.entries)
            return
        present = False
        for existing, _ in headers:
            if existing == name:
                present = True
                break
        if action == "skip":
            if not present:
                headers.extend(self.entries)
            return
        if present:
            headers[:] = [h for h in headers if h[0] != name]
        headers.extend(self.entries)  # empty for delete

    async def apply(self, ctx: RequestContext) -> Response | None:
        if self.section is Section.INBOUND or self.section is Section.BACKEND:
            self.apply_to(ctx.request_headers)
        elif ctx.response is not None:
            self.apply_to(ctx.response.headers)
        return None

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        return {"header": self.header.decode(), "action": self.action}
