"""``forward-request``: the backend section's step that forwards the request to the chosen backend.

APIM reference: https://learn.microsoft.com/azure/api-management/forward-request-policy
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError

from ..base import Attr, Policy, Section
from ..values import ExpressionRuntimeError, Value
from ..xml import Element
from .retry import REASON_ERROR_STATUS

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response

__all__ = ("ForwardRequest",)


class ForwardRequest(Policy):
    """``<forward-request timeout="seconds" buffer-response="…" buffer-request-body="…"
    fail-on-error-status-code="…"/>``: the backend section's forwarding step.

    ``buffer-request-body`` is accepted for APIM compatibility: the gateway always holds the request body whole
    (``SLUICE_MAX_BODY_BYTES``), so it can be sent again by ``retry``. ``fail-on-error-status-code="true"`` turns a
    backend answer of 400 or more into an error (``on-error`` runs, ``context.LastError.Reason`` is
    ``BackendErrorStatusCode``) after the circuit breaker has counted it.
    """

    name = "forward-request"
    sections = frozenset({Section.BACKEND})
    attributes = {
        "timeout": Attr(),
        "buffer-response": Attr(choices=("true", "false"), expressions=False),
        "buffer-request-body": Attr(choices=("true", "false"), expressions=False),
        "fail-on-error-status-code": Attr(choices=("true", "false"), expressions=False),
    }
    __slots__ = ("fail_on_error", "timeout", "timeout_value")

    def __init__(self, timeout: float | None, timeout_value: Value | None = None, *, fail_on_error: bool = False):
        super().__init__()
        self.timeout = timeout
        self.timeout_value = timeout_value  # an expression, evaluated per request
        self.fail_on_error = fail_on_error

    @classmethod
    def from_element(cls, el: Element) -> ForwardRequest:
        attrs = cls.check_element(el)
        fail = attrs.get("fail-on-error-status-code")
        fail_on_error = fail is not None and fail.literal == "true"
        value = attrs.get("timeout")
        if value is None:
            return cls(None, fail_on_error=fail_on_error)
        if not value.is_literal:
            return cls(None, value, fail_on_error=fail_on_error)
        timeout = _seconds(value.literal)
        if timeout is None:
            raise el.error(f"<forward-request>: 'timeout' must be a positive number of seconds, got {value.literal!r}")
        return cls(timeout, fail_on_error=fail_on_error)

    async def apply(self, ctx: RequestContext) -> Response | None:
        timeout = self.timeout
        if self.timeout_value is not None:
            text = self.timeout_value.evaluate(ctx)
            timeout = _seconds(text)
            if timeout is None:
                raise ExpressionRuntimeError(f"'timeout' must be a positive number of seconds, got {text!r}.")
        await ctx.services.forward(ctx, timeout)
        response = ctx.response
        if self.fail_on_error and response is not None and response.status >= 400:
            status = response.status
            raise GatewayError(status, f"The backend answered {status}.", source=self.name, reason=REASON_ERROR_STATUS)
        return None

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        details: dict[str, Any] = {}
        if ctx.backend is not None:
            details["backend"] = ctx.backend.name or ctx.backend.url
            details["target"] = ctx.backend.url_for(ctx.forward_path, ctx.query)
        if ctx.response is not None:
            details["status"] = ctx.response.status
        if ctx.attempts:
            last = ctx.attempts[-1]
            details["member"] = last["backend"]
            if "chosen" in last:
                details["chosen"] = last["chosen"]
            if len(ctx.attempts) > 1:
                details["attempts"] = list(ctx.attempts)
        return details


_DECIMAL_RE = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


def _seconds(text: str) -> float | None:
    text = text.strip()
    if not _DECIMAL_RE.fullmatch(text):  # float() also takes "1_000", fullwidth digits, "inf" and "nan"
        return None
    try:
        timeout = float(text)
    except ValueError:
        return None
    if not timeout > 0 or timeout == float("inf"):  # also refuses NaN
        return None
    return timeout
