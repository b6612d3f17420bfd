"""``rate-limit-by-key``: at most ``calls`` per ``renewal-period`` seconds (1-300) per counter key.

APIM reference: https://learn.microsoft.com/azure/api-management/rate-limit-by-key-policy

APIM documents a sliding window; Sluice counts in fixed windows aligned to the epoch (like the token limit's
minute), so the admission is exact per window and ``Retry-After`` is the time to the window's end. Exceeded: 429,
reason ``RateLimitExceeded``, raised as a GatewayError so ``on-error`` runs. Store outages: docs/redis-outage.md.

The statement hands the store the same one-window tuple for a counter key and period (kept per subscription, or by
the key's value: ``._remembered``), so the Redis store's leases apply (docs/token-limits.md, "Leases"): never more
than ``calls`` admitted in a period, an early refusal bounded as for the token limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from gateway.limits.base import Window, counter_tag

from ..base import Attr, Section, truth
from ..values import Value
from ..xml import Element
from ._counters import (
    COUNTER_ATTRIBUTES,
    MSG_NO_STORE,
    Counter,
    Settle,
    literal_int,
    logger,
    reserve,
    runtime_int,
    variable_name,
)
from ._limiting import counter_store, optional_header_name
from ._remembered import PeriodWindows, same_per_subscription

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response

__all__ = ("MSG_RATE_LIMIT", "RateLimitByKey")

MSG_RATE_LIMIT: Final = "Rate limit is exceeded. Try again in {} seconds."
MAX_RENEWAL_PERIOD: Final = 300


class RateLimitByKey(Counter):
    """``<rate-limit-by-key calls="N" renewal-period="s" counter-key="@(…)" [increment-condition="@(…)"] …/>``."""

    name = "rate-limit-by-key"
    sections = frozenset({Section.INBOUND})
    attributes = {
        "calls": Attr(required=True),
        "renewal-period": Attr(required=True),
        "increment-count": Attr(),
        "remaining-calls-header-name": Attr(expressions=False),
        "remaining-calls-variable-name": Attr(expressions=False),
        "total-calls-header-name": Attr(expressions=False),
        **COUNTER_ATTRIBUTES,
    }
    __slots__ = (
        "calls",
        "calls_value",
        "count",
        "count_value",
        "period",
        "period_value",
        "remaining_header",
        "remaining_variable",
        "total_header",
        "windows_kept",
    )

    def __init__(self, attrs: dict[str, Value], el: Element) -> None:
        super().__init__(attrs, el)
        self.calls_value = attrs["calls"]
        self.calls = literal_int(self.calls_value, el, "calls", 1)
        self.period_value = attrs["renewal-period"]
        self.period = literal_int(self.period_value, el, "renewal-period", 1, MAX_RENEWAL_PERIOD)
        self.count_value = attrs.get("increment-count")
        self.count = 1 if self.count_value is None else literal_int(self.count_value, el, "increment-count", 1)
        self.remaining_header = optional_header_name(attrs.get("remaining-calls-header-name"), el)
        self.remaining_variable = variable_name(attrs.get("remaining-calls-variable-name"))
        self.total_header = optional_header_name(attrs.get("total-calls-header-name"), el)
        # the window of the current period by (counter key, calls, period), and per subscription when the counter key
        # depends on the subscription alone and the calls and period are literals (``._remembered``)
        per_subscription = same_per_subscription(self.counter_key) and None not in (self.calls, self.period)
        self.windows_kept: PeriodWindows[tuple[Window]] = PeriodWindows(per_subscription)

    @classmethod
    def from_element(cls, el: Element) -> RateLimitByKey:
        return cls(cls.check_element(el), el)

    def windows(self, ctx: RequestContext, now: float) -> tuple[Window]:
        """The one window of the request's counter key and period containing ``now``, as the same tuple for every
        request of the key and period (nobody changes it; the Redis store leases by the tuple's identity)."""
        kept = self.windows_kept
        remembered = kept.by_subscription
        period = self.period
        if remembered is not None and period is not None:  # the period is a literal whenever windows are remembered
            found = remembered.get_in_period(now - now % period, ctx.subscription)
            if found is not None:
                return found
        calls = self.calls if self.calls is not None else runtime_int(self.calls_value, ctx, "calls", 1)
        if period is None:
            period = runtime_int(self.period_value, ctx, "renewal-period", 1, MAX_RENEWAL_PERIOD)
        start = now - now % period
        key = self.key(ctx)
        return kept.of_key(start, ctx.subscription, (key, calls, period), _window, key, calls, period, start)

    async def apply(self, ctx: RequestContext) -> Response | None:
        store = counter_store(ctx)
        if store is None:
            logger.warning(MSG_NO_STORE, self.name)
            return None
        now = store.now()
        windows = self.windows(ctx, now)
        # with a condition the call is reserved now and kept (or given back) when the response is known
        deferred = self.condition is not None
        count = self.count
        if count is None:
            count = 1 if deferred else runtime_int(self.count_value, ctx, "increment-count", 1)  # type: ignore[arg-type]  # count_value is set whenever count is None (checked at load)
        admission = await reserve(ctx, store, windows, count, now, self)
        if admission is None:
            return None
        limit = windows[0].limit
        remaining = max(0, limit - admission.used[0]) if admission.allowed else 0
        self.report(ctx, limit, remaining)
        if not admission.allowed:
            retry = admission.retry_after
            raise self.refuse(ctx, retry, 429, MSG_RATE_LIMIT.format(retry), "RateLimitExceeded")
        if deferred and admission.reservation is not None:
            ctx.on_finish.append(Settle(self, store, admission.reservation, count))
        return None

    def report(self, ctx: RequestContext, total: int, remaining: int) -> None:
        if self.remaining_variable is not None:
            ctx.variables[self.remaining_variable] = remaining
        if self.remaining_header is not None:
            ctx.response_headers.append((self.remaining_header, str(remaining).encode("ascii")))
        if self.total_header is not None:
            ctx.response_headers.append((self.total_header, str(total).encode("ascii")))

    def kept(self, ctx: RequestContext, reserved: int) -> int:
        """How many calls to keep of ``reserved`` once the response is known (the increment condition)."""
        if self.condition is not None and not truth(self.condition, ctx):
            return 0
        if self.count_value is not None and not self.count_value.is_literal:
            return runtime_int(self.count_value, ctx, "increment-count", 1)
        return reserved

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        return {"counter-key": self.counter_key.source, "calls": self.calls_value.source}


def _window(key: str, calls: int, period: int, start: float) -> tuple[Window]:
    """The one window of ``key`` for the period starting at ``start``."""
    return (Window(f"rk:{{{counter_tag(key)}}}:{period}:{int(start)}", calls, start, start + period),)
