"""``return-response``: ends the request with the response it builds.

APIM reference: https://learn.microsoft.com/azure/api-management/return-response-policy
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import Attr, Policy, Section, text_value
from ..values import Value
from ..xml import Element
from .set_header import SetHeader
from .set_status import SetStatus

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response

__all__ = ("ReturnResponse",)


class ReturnResponse(Policy):
    """``<return-response>``: optional ``<set-status/>``, ``<set-header/>``s and ``<set-body>``; ends the request.

    Everything literal is built once; a status, header or body given by an expression is evaluated per request.
    """

    name = "return-response"
    sections = frozenset({Section.INBOUND, Section.BACKEND, Section.OUTBOUND, Section.ON_ERROR})
    attributes = {"response-variable-name": Attr(expressions=False)}
    children = frozenset({"set-status", "set-header", "set-body"})
    __slots__ = ("body", "body_value", "dynamic_headers", "headers", "set_status", "status", "variable")

    def __init__(
        self, status: SetStatus | None, headers: tuple[SetHeader, ...], body: Value | None, variable: str | None
    ) -> None:
        super().__init__()
        self.set_status = status
        self.variable = variable
        self.body_value = body
        self.status: int | None = 200 if status is None else status.code
        self.body: bytes | None = b"" if body is None else body.literal.encode("utf-8") if body.is_literal else None
        # literal headers applied once; if any header statement has an expression, all are applied per request
        self.dynamic_headers = any(not h.is_literal for h in headers)
        built: list[tuple[bytes, bytes]] = []
        if not self.dynamic_headers:
            for statement in headers:
                statement.apply_to(built)
        self.headers: tuple[tuple[bytes, bytes], ...] | tuple[SetHeader, ...] = (
            headers if self.dynamic_headers else tuple(built)
        )

    @classmethod
    def from_element(cls, el: Element) -> ReturnResponse:
        attrs = cls.check_element(el)
        status: SetStatus | None = None
        headers: list[SetHeader] = []
        body: Value | None = None
        for child in el.children:
            if child.tag == "set-status":
                if status is not None:
                    raise child.error("<return-response> takes at most one <set-status>")
                status = SetStatus.from_element(child)
            elif child.tag == "set-header":
                headers.append(SetHeader.from_element(child))
            else:
                if body is not None:
                    raise child.error("<return-response> takes at most one <set-body>")
                if child.attrs:
                    raise child.error("<set-body> attributes are not supported yet")
                body = text_value(child)
        variable = attrs["response-variable-name"].literal if "response-variable-name" in attrs else None
        return cls(status, tuple(headers), body, variable)

    async def apply(self, ctx: RequestContext) -> Response | None:
        from gateway.http.messages import Response

        status = self.status
        if status is None:
            assert self.set_status is not None
            status = self.set_status.resolve(ctx)[0]
        if self.dynamic_headers:
            headers: list[tuple[bytes, bytes]] = []
            for statement in self.headers:
                assert isinstance(statement, SetHeader)
                statement.apply_to(headers, ctx)
        else:
            headers = list(self.headers)  # type: ignore[arg-type]  # without dynamic headers every entry is a (name, value) pair
        body = self.body
        if body is None:
            assert self.body_value is not None
            body = self.body_value.evaluate(ctx).encode("utf-8")
        return Response(status, headers, body)

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        return {"status": self.status if self.status is not None else "expression"}
