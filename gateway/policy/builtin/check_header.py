"""``check-header``: refuses a request that lacks a header, or whose header has none of the allowed values.

APIM reference: https://learn.microsoft.com/azure/api-management/check-header-policy

The refusal is a GatewayError with the statement's status and message (reasons ``HeaderNotFound`` and
``HeaderValueNotAllowed``, as APIM's error-handling page lists them), so ``on-error`` runs. Several header lines of
the name pass when any of them is an allowed value. Added by following docs/adding-a-policy.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from gateway.errors import GatewayError

from ..base import Attr, Policy, Section, check_boolean, text_value, truth
from ..values import ExpressionRuntimeError, Value
from ..xml import Element
from ._limiting import parse_count
from .set_header import check_header_name

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response

__all__ = ("REASON_NOT_ALLOWED", "REASON_NOT_FOUND", "CheckHeader")

REASON_NOT_FOUND: Final = "HeaderNotFound"
REASON_NOT_ALLOWED: Final = "HeaderValueNotAllowed"
MSG_BAD_STATUS: Final = "<check-header>: 'failed-check-httpcode' must be an HTTP status (100-599), got {}"


def _status(text: str) -> int | None:
    return parse_count(text, 100, 599)


class CheckHeader(Policy):
    """``<check-header name="h" failed-check-httpcode="401" failed-check-error-message="…" ignore-case="false">``
    with optional ``<value>``s: the header must be present and, when values are given, equal to one of them."""

    name = "check-header"
    sections = frozenset({Section.INBOUND})
    attributes = {
        "name": Attr(required=True),
        "failed-check-httpcode": Attr(required=True),
        "failed-check-error-message": Attr(required=True),
        "ignore-case": Attr(required=True),
    }
    children = frozenset({"value"})
    __slots__ = ("allowed", "header", "header_value", "ignore_case", "message", "status", "status_value", "values")

    def __init__(self, attrs: dict[str, Value], values: tuple[Value, ...], el: Element) -> None:
        super().__init__()
        self.header_value = attrs["name"]
        self.header = check_header_name(self.header_value.literal, el) if self.header_value.is_literal else None
        self.status_value = attrs["failed-check-httpcode"]
        self.status: int | None = None
        if self.status_value.is_literal:
            self.status = _status(self.status_value.literal)
            if self.status is None:
                literal = self.status_value.literal
                raise el.error(
                    f"<check-header>: 'failed-check-httpcode' must be an HTTP status (100-599), got {literal!r}"
                )
        self.message = attrs["failed-check-error-message"]
        self.ignore_case = attrs["ignore-case"]
        check_boolean(self.ignore_case, el, "ignore-case")
        self.values = values
        # literal fast path: the allowed values, folded when the case is ignored
        self.allowed: frozenset[str] | None = None
        if self.ignore_case.is_literal and all(v.is_literal for v in values):
            fold = self.ignore_case.literal.strip().lower() == "true"  # check_boolean let only true/false through
            self.allowed = frozenset(v.literal.lower() if fold else v.literal for v in values)

    @classmethod
    def from_element(cls, el: Element) -> CheckHeader:
        attrs = cls.check_element(el)
        return cls(attrs, tuple(text_value(child) for child in el.children), el)

    async def apply(self, ctx: RequestContext) -> Response | None:
        header = self.header
        if header is None:
            header = self.header_value.evaluate(ctx).lower().encode("latin-1", "replace")
        present = [value.decode("latin-1").strip() for name, value in ctx.request_headers if name == header]
        if not present:
            raise self._refuse(ctx, REASON_NOT_FOUND)
        if not self.values:
            return None
        fold = truth(self.ignore_case, ctx)
        allowed = self.allowed
        if allowed is None:
            allowed = frozenset(v.evaluate(ctx).lower() if fold else v.evaluate(ctx) for v in self.values)
        if any((value.lower() if fold else value) in allowed for value in present):
            return None
        raise self._refuse(ctx, REASON_NOT_ALLOWED)

    def _refuse(self, ctx: RequestContext, reason: str) -> GatewayError:
        status = self.status
        if status is None:
            text = self.status_value.evaluate(ctx)
            status = _status(text)
            if status is None:
                raise ExpressionRuntimeError(MSG_BAD_STATUS.format(repr(text)) + ".")
        return GatewayError(status, self.message.evaluate(ctx), source=self.name, reason=reason)

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        return {"name": self.header_value.source, "values": [v.source for v in self.values]}
