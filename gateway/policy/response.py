"""``return-response`` (ends the request with a response) and ``set-status``."""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from gateway.context import ResponseHead

from .base import Attr, Policy, Section, register
from .headers import SetHeader
from .values import Value, parse_value
from .xml import Element

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.server import Response

__all__ = ("ReturnResponse", "SetStatus")


def _status_code(value: Value, el: Element) -> int:
    text = value.literal.strip()
    if not text.isdigit() or not 100 <= int(text) <= 599:
        raise el.error(f"<{el.tag}>: attribute 'code' must be an HTTP status code (100-599), got {value.literal!r}")
    return int(text)


def _default_reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


@register
class SetStatus(Policy):
    """``<set-status code="401" reason="Unauthorized"/>``: changes the status of the response being built."""

    name = "set-status"
    sections = frozenset({Section.INBOUND, Section.BACKEND, Section.OUTBOUND, Section.ON_ERROR})
    attributes = {"code": Attr(required=True), "reason": Attr()}
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: bytes) -> None:
        super().__init__()
        self.code = code
        self.reason = reason

    @classmethod
    def from_element(cls, el: Element) -> SetStatus:
        attrs = cls.check_element(el)
        code = _status_code(attrs["code"], el)
        reason = attrs["reason"].literal if "reason" in attrs else _default_reason(code)
        if any(c in reason for c in "\r\n\x00"):
            raise el.error("<set-status>: 'reason' must not contain CR, LF or NUL")
        return cls(code, reason.encode("utf-8"))

    async def apply(self, ctx: RequestContext) -> Response | None:
        if ctx.response is None:
            ctx.response = ResponseHead(self.code, [], self.reason)
        else:
            ctx.response.status = self.code
            ctx.response.reason = self.reason
        return None

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        return {"code": self.code}


@register
class ReturnResponse(Policy):
    """``<return-response>``: optional ``<set-status/>``, ``<set-header/>``s and ``<set-body>``; ends the request."""

    name = "return-response"
    sections = frozenset({Section.INBOUND, Section.BACKEND, Section.OUTBOUND, Section.ON_ERROR})
    attributes = {"response-variable-name": Attr()}
    children = frozenset({"set-status", "set-header", "set-body"})
    __slots__ = ("body", "headers", "status", "variable")

    def __init__(self, status: int, headers: tuple[SetHeader, ...], body: bytes, variable: str | None) -> None:
        super().__init__()
        self.status = status
        self.variable = variable
        self.body = body
        built: list[tuple[bytes, bytes]] = []
        for statement in headers:
            statement.apply_to(built)
        self.headers = tuple(built)

    @classmethod
    def from_element(cls, el: Element) -> ReturnResponse:
        attrs = cls.check_element(el)
        status = 200
        headers: list[SetHeader] = []
        body: bytes | None = None
        seen_status = False
        for child in el.children:
            if child.tag == "set-status":
                if seen_status:
                    raise child.error("<return-response> takes at most one <set-status>")
                seen_status = True
                status = SetStatus.from_element(child).code
            elif child.tag == "set-header":
                headers.append(SetHeader.from_element(child))
            else:
                if body is not None:
                    raise child.error("<return-response> takes at most one <set-body>")
                if child.attrs:
                    raise child.error("<set-body> attributes are not supported yet")
                if child.children:
                    raise child.error("<set-body> must contain text only")
                body = parse_value(child.text, where="<set-body>", line=child.line, column=child.column).literal.encode(
                    "utf-8"
                )
        variable = attrs["response-variable-name"].literal if "response-variable-name" in attrs else None
        return cls(status, tuple(headers), body or b"", variable)

    async def apply(self, ctx: RequestContext) -> Response | None:
        from gateway.http.server import Response

        return Response(self.status, list(self.headers), self.body)

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        return {"status": self.status}
