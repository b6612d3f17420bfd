"""``set-status``: sets the status code and reason of the response being built.

APIM reference: https://learn.microsoft.com/azure/api-management/set-status-policy
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from gateway.context import ResponseHead

from ..base import Attr, Policy, Section
from ..values import ExpressionRuntimeError, Value
from ..xml import Element

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response

__all__ = ("SetStatus",)


def _status_code(text: str) -> int | None:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or not 100 <= int(text) <= 599:
        return None
    return int(text)


def _default_reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


def _bad_reason(reason: str) -> bool:
    return any(c in reason for c in "\r\n\x00")


class SetStatus(Policy):
    """``<set-status code="401" reason="Unauthorized"/>``: changes the status of the response being built."""

    name = "set-status"
    sections = frozenset({Section.INBOUND, Section.BACKEND, Section.OUTBOUND, Section.ON_ERROR})
    attributes = {"code": Attr(required=True), "reason": Attr()}
    __slots__ = ("code", "code_value", "reason", "reason_value")

    def __init__(self, code: Value, reason: Value | None, el: Element) -> None:
        super().__init__()
        self.code_value = code
        self.reason_value = reason
        # literal fast path; None when evaluated per request
        self.code: int | None = None
        self.reason: bytes | None = None
        if code.is_literal:
            self.code = _status_code(code.literal)
            if self.code is None:
                raise el.error(
                    f"<{el.tag}>: attribute 'code' must be an HTTP status code (100-599), got {code.literal!r}"
                )
        if reason is not None and reason.is_literal:
            if _bad_reason(reason.literal):
                raise el.error("<set-status>: 'reason' must not contain CR, LF or NUL")
            self.reason = reason.literal.encode("utf-8")
        elif reason is None and self.code is not None:
            self.reason = _default_reason(self.code).encode("utf-8")

    @classmethod
    def from_element(cls, el: Element) -> SetStatus:
        attrs = cls.check_element(el)
        return cls(attrs["code"], attrs.get("reason"), el)

    def resolve(self, ctx: RequestContext | None) -> tuple[int, bytes]:
        """The (code, reason) for one request."""
        code, reason = self.code, self.reason
        if code is not None and reason is not None:
            return code, reason
        assert ctx is not None, "a statement with expressions needs the request context"
        if code is None:
            text = self.code_value.evaluate(ctx)
            code = _status_code(text)
            if code is None:
                raise ExpressionRuntimeError(f"The status code must be an integer from 100 to 599, got {text!r}.")
        if reason is None:
            if self.reason_value is None:
                return code, _default_reason(code).encode("utf-8")
            text = self.reason_value.evaluate(ctx)
            if _bad_reason(text):
                raise ExpressionRuntimeError("The status reason must not contain CR, LF or NUL.")
            reason = text.encode("utf-8")
        return code, reason

    async def apply(self, ctx: RequestContext) -> Response | None:
        code, reason = self.resolve(ctx)
        if ctx.response is None:
            ctx.response = ResponseHead(code, [], reason)
        else:
            ctx.response.status = code
            ctx.response.reason = reason
        return None

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        return {"code": self.code if self.code is not None else self.code_value.source}
