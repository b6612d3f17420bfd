"""``limit-concurrency``: at most ``max-count`` requests per key run the child policies at once; 429 beyond.

APIM reference: https://learn.microsoft.com/azure/api-management/limit-concurrency-policy

The count is kept in memory, per gateway process: with several workers or replicas each admits ``max-count``. A
slot is held until the response is over (the last byte of a stream), not only while the children run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from gateway.errors import GatewayError

from ..base import ALL_SECTIONS, Attr, ParseChild, Policy, check_element
from ..values import Value
from ..xml import Element
from .retry import Wrapper, run_steps

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response

__all__ = ("LimitConcurrency",)

MSG_FULL: Final = "Too many concurrent requests for this key; try again later."
_ATTRS: Final = {"key": Attr(required=True), "max-count": Attr(required=True, expressions=False)}


class LimitConcurrency(Wrapper):
    """``<limit-concurrency key="@(…)" max-count="3">…</limit-concurrency>``."""

    name = "limit-concurrency"
    sections = ALL_SECTIONS
    __slots__ = ("in_flight", "key", "max_count")

    def __init__(self, key: Value, max_count: int, steps: tuple[Policy, ...]) -> None:
        super().__init__(steps)
        self.key = key
        self.max_count = max_count
        self.in_flight: dict[str, int] = {}  # key -> requests holding a slot (keys at 0 are removed)

    @classmethod
    def build(cls, el: Element, parse_child: ParseChild) -> LimitConcurrency:
        attrs = check_element(el, _ATTRS, {c.tag for c in el.children}, False)
        text = attrs["max-count"].literal
        if not text.isdigit() or int(text) < 1:
            raise el.error(f"<limit-concurrency>: 'max-count' must be a positive integer, got {text!r}")
        return cls(attrs["key"], int(text), tuple(parse_child(child) for child in el.children))

    async def apply(self, ctx: RequestContext) -> Response | None:
        key = self.key.evaluate(ctx)
        in_flight = self.in_flight
        if in_flight.get(key, 0) >= self.max_count:
            raise GatewayError(429, MSG_FULL, source=self.name, reason="ConcurrencyLimitExceeded")
        in_flight[key] = in_flight.get(key, 0) + 1
        released = False

        def release(_ctx: RequestContext, _complete: bool) -> None:
            nonlocal released
            if released:
                return
            released = True
            left = in_flight.get(key, 1) - 1
            if left > 0:
                in_flight[key] = left
            else:
                in_flight.pop(key, None)

        ctx.on_finish.append(release)  # runs once the response is over, or when the request fails
        return await run_steps(ctx, self.steps)

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        return {"max-count": self.max_count}
