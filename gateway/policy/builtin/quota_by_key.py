"""``quota-by-key``: ``calls`` and/or ``bandwidth`` (kilobytes of request and response bodies) per key and period.

APIM reference: https://learn.microsoft.com/azure/api-management/quota-by-key-policy

The period is fixed (``renewal-period``: 0 = never renewed, else at least 300 s), counted from
``first-period-start``. Exceeded: 403, reason ``QuotaExceeded``, raised as a GatewayError so ``on-error`` runs.
Store outages: docs/redis-outage.md.

The statement hands the store the same one-window tuple for the calls of a counter key and period (kept per
subscription, or by the key's value: ``._remembered``), so the Redis store's leases apply to the calls
(docs/token-limits.md, "Leases"): never more than ``calls`` admitted in a period, an early refusal bounded as for
``rate-limit-by-key``. The bandwidth is not leased: its admission reserves 1 KB and the request's real kilobytes are
settled after the response, so a lease, a grant of 1 KB reservations, would let whole requests through after the
quota is used up; each bandwidth admission goes to Redis.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from gateway.errors import GatewayError
from gateway.limits.base import Window, counter_tag

from ..base import Attr, Section
from ..values import Value
from ..xml import Element
from ._counters import COUNTER_ATTRIBUTES, MSG_NO_STORE, Counter, Settle, format_timespan, literal_int, logger, reserve
from ._limiting import counter_store
from ._remembered import PeriodWindows, same_per_subscription

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response
    from gateway.limits import Reservation, TokenStore

__all__ = ("MSG_BANDWIDTH_QUOTA", "MSG_CALL_QUOTA", "QuotaByKey")

MSG_CALL_QUOTA: Final = "Out of call volume quota. Quota will be replenished in {}."
MSG_BANDWIDTH_QUOTA: Final = "Out of bandwidth quota. Quota will be replenished in {}."
MSG_QUOTA_FOREVER: Final = {"calls": "Out of call volume quota.", "bandwidth": "Out of bandwidth quota."}
MIN_QUOTA_PERIOD: Final = 300  # quota-by-key (0 = infinite)
FOREVER_END: Final = 253402300800.0  # 10000-01-01: the end of a quota that is never renewed
DEFAULT_FIRST_PERIOD_START: Final = "0001-01-01T00:00:00Z"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# a counter key's windows of one period: the calls' as the tuple handed to the store, the kilobytes' (None: not counted)
_Windows = tuple[tuple[Window] | None, Window | None]


class QuotaByKey(Counter):
    """``<quota-by-key calls="N" bandwidth="KB" renewal-period="s" counter-key="@(…)" …/>`` (calls and/or bandwidth)."""

    name = "quota-by-key"
    sections = frozenset({Section.INBOUND})
    attributes = {
        "calls": Attr(expressions=False),
        "bandwidth": Attr(expressions=False),
        "renewal-period": Attr(required=True, expressions=False),
        "first-period-start": Attr(default=DEFAULT_FIRST_PERIOD_START, expressions=False),
        **COUNTER_ATTRIBUTES,
    }
    __slots__ = ("bandwidth", "calls", "period", "start", "windows_kept")

    def __init__(self, attrs: dict[str, Value], el: Element) -> None:
        super().__init__(attrs, el)
        self.calls = literal_int(attrs.get("calls"), el, "calls", 1)
        self.bandwidth = literal_int(attrs.get("bandwidth"), el, "bandwidth", 1)
        if self.calls is None and self.bandwidth is None:
            raise el.error("<quota-by-key>: at least one of 'calls' or 'bandwidth' is required")
        period = literal_int(attrs["renewal-period"], el, "renewal-period", 0)
        if period is None or 0 < period < MIN_QUOTA_PERIOD:
            raise el.error(
                f"<quota-by-key>: 'renewal-period' must be 0 (never renewed) or at least {MIN_QUOTA_PERIOD} seconds"
            )
        self.period = period
        self.start = _first_period_start(attrs["first-period-start"].literal, el)
        # the windows of the current period by counter key, and per subscription when the counter key depends on the
        # subscription alone (``._remembered``)
        self.windows_kept: PeriodWindows[_Windows] = PeriodWindows(same_per_subscription(self.counter_key))

    @classmethod
    def from_element(cls, el: Element) -> QuotaByKey:
        return cls(cls.check_element(el), el)

    def windows(self, ctx: RequestContext, now: float) -> _Windows:
        """The (calls, kilobytes) windows of the request's counter key containing ``now``, the same for every request
        of the key and period (nobody changes them; the Redis store leases on the calls' tuple by its identity)."""
        start = self.start + (now - self.start) // self.period * self.period if self.period else self.start
        kept = self.windows_kept
        remembered = kept.by_subscription
        if remembered is not None:
            found = remembered.get_in_period(start, ctx.subscription)
            if found is not None:
                return found
        key = self.key(ctx)
        return kept.of_key(start, ctx.subscription, key, self.build_windows, key, start)

    def build_windows(self, key: str, start: float) -> _Windows:
        """The windows of ``key`` for the period starting at ``start``."""
        end = start + self.period if self.period else FOREVER_END
        base = f"qk:{{{counter_tag(key)}}}:{self.period}:{int(start)}"
        calls = (Window(base + ":c", self.calls, start, end),) if self.calls is not None else None
        kilobytes = Window(base + ":b", self.bandwidth, start, end) if self.bandwidth is not None else None
        return calls, kilobytes

    async def apply(self, ctx: RequestContext) -> Response | None:
        store = counter_store(ctx)
        if store is None:
            logger.warning(MSG_NO_STORE, self.name)
            return None
        now = store.now()
        calls, kilobytes = self.windows(ctx, now)
        deferred = self.condition is not None
        call_reservation = kb_reservation = None
        if calls is not None:
            admission = await reserve(ctx, store, calls, 1, now, self)
            if admission is not None and not admission.allowed:
                raise self.exceeded(ctx, "calls", admission.retry_after)
            call_reservation = admission.reservation if admission is not None else None
        if kilobytes is not None:
            # nothing to add yet (the size is known at the end); refused once the quota is used up. A new list each
            # time, so the Redis store never leases it: a lease would admit its whole grant of requests, each as 1 KB,
            # without seeing the kilobytes they settle (docs/token-limits.md, "Leases")
            try:
                admission = await reserve(ctx, store, [kilobytes], 1, now, self)
            except GatewayError:
                if call_reservation is not None:
                    store.settle(call_reservation, 0)
                raise
            if admission is not None and not admission.allowed:
                if call_reservation is not None:
                    store.settle(call_reservation, 0)
                raise self.exceeded(ctx, "bandwidth", admission.retry_after)
            kb_reservation = admission.reservation if admission is not None else None
            if kb_reservation is not None:
                ctx.chunk_filters.append(_ByteCounter(ctx, self, store, kb_reservation))
                kb_reservation = None
        if deferred and call_reservation is not None:
            ctx.on_finish.append(Settle(self, store, call_reservation, 1))
        return None

    def exceeded(self, ctx: RequestContext, what: str, retry_after: int) -> GatewayError:
        if not self.period:
            return self.refuse(ctx, 0, 403, MSG_QUOTA_FOREVER[what], "QuotaExceeded")
        template = MSG_CALL_QUOTA if what == "calls" else MSG_BANDWIDTH_QUOTA
        return self.refuse(ctx, retry_after, 403, template.format(format_timespan(retry_after)), "QuotaExceeded")

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        return {"counter-key": self.counter_key.source, "calls": self.calls, "bandwidth": self.bandwidth}


def _first_period_start(text: str, el: Element) -> float:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        message = f"<quota-by-key>: 'first-period-start' must be an ISO 8601 date and time, got {text!r}"
        raise el.error(message) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH).total_seconds()


class _ByteCounter:
    """Chunk filter of ``quota-by-key bandwidth``: counts the response body; settles request + response kilobytes."""

    __slots__ = ("ctx", "policy", "reservation", "size", "store")

    def __init__(self, ctx: RequestContext, policy: QuotaByKey, store: TokenStore, reservation: Reservation) -> None:
        self.ctx = ctx
        self.policy = policy
        self.store = store
        self.reservation = reservation
        self.size = len(ctx.request.body)

    def feed(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        return chunk

    def finish(self, complete: bool) -> bytes:
        try:
            counted = self.policy.kept(self.ctx, 1)
        except Exception:
            counted = 0
        self.store.settle(self.reservation, math.ceil(self.size / 1024) if counted else 0)
        return b""
