"""``rate-limit-by-key`` and ``quota-by-key``: call counting per key value (apim-spec §3.8).

Counters live in the gateway's counter store (``gateway.limits``: in memory, or Redis shared by every replica), the
same store ``llm-token-limit`` uses; ``reserve`` checks and adds in one atomic step, ``settle`` corrects later.

* ``rate-limit-by-key``: at most ``calls`` per ``renewal-period`` seconds (1-300) per counter key. APIM documents a
  sliding window; Sluice counts in fixed windows aligned to the epoch (like the token limit's minute), so the
  admission is exact per window and ``Retry-After`` is the time to the window's end. Exceeded: 429
  ``Rate limit is exceeded. Try again in N seconds.``, reason ``RateLimitExceeded``.
* ``quota-by-key``: ``calls`` and/or ``bandwidth`` (kilobytes of request and response bodies) per fixed
  ``renewal-period`` (0 = never renewed, else at least 300 s) counted from ``first-period-start``. Exceeded: 403
  ``Out of call volume quota. Quota will be replenished in hh:mm:ss.`` (or the bandwidth message), reason
  ``QuotaExceeded``.

Both raise a GatewayError, so ``on-error`` runs with ``context.LastError`` set, and put ``Retry-After`` (or the
configured header) on the response. When the counter store cannot answer, ``sluice-on-store-error`` decides:
``allow`` (the default) lets the call through uncounted, ``deny`` answers 503 with ``Retry-After``
(docs/redis-outage.md). With ``increment-condition`` the call is reserved when it arrives and kept only
if the condition holds once the response is known (it may read ``context.Response``).
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from gateway.errors import GatewayError
from gateway.limits.base import StoreUnavailable, Window, counter_tag

from .base import Attr, Policy, Section, register
from .control import check_boolean, truth
from .limiting import (
    STORE_ERROR_ATTR,
    STORE_ERROR_CHOICES,
    counter_key,
    counter_store,
    denies_on_store_error,
    optional_header_name,
    parse_count,
    set_retry_after,
    store_unavailable,
)
from .values import ExpressionRuntimeError, Value
from .xml import Element

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response
    from gateway.limits import Admission, Reservation, TokenStore

__all__ = (
    "MSG_BANDWIDTH_QUOTA",
    "MSG_CALL_QUOTA",
    "MSG_RATE_LIMIT",
    "QuotaByKey",
    "RateLimitByKey",
    "format_timespan",
)

logger = logging.getLogger("gateway.policy.ratelimit")

MSG_RATE_LIMIT: Final = "Rate limit is exceeded. Try again in {} seconds."
MSG_CALL_QUOTA: Final = "Out of call volume quota. Quota will be replenished in {}."
MSG_BANDWIDTH_QUOTA: Final = "Out of bandwidth quota. Quota will be replenished in {}."
MSG_QUOTA_FOREVER: Final = {"calls": "Out of call volume quota.", "bandwidth": "Out of bandwidth quota."}
MSG_NO_STORE: Final = "no counter store is configured; %s is not enforced"
MSG_STORE_DOWN: Final = "the counter store is unavailable; %s lets the request through"

MAX_RENEWAL_PERIOD: Final = 300  # rate-limit-by-key
MIN_QUOTA_PERIOD: Final = 300  # quota-by-key (0 = infinite)
FOREVER_END: Final = 253402300800.0  # 10000-01-01: the end of a quota that is never renewed
DEFAULT_FIRST_PERIOD_START: Final = "0001-01-01T00:00:00Z"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def format_timespan(seconds: int) -> str:
    """``hh:mm:ss`` (``d.hh:mm:ss`` from one day), as .NET prints a TimeSpan."""
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}.{clock}" if days else clock


def _literal_int(value: Value | None, el: Element, attr: str, low: int, high: int | None = None) -> int | None:
    if value is None or not value.is_literal:
        return None
    number = parse_count(value.literal, low, high)
    if number is None:
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise el.error(f"<{el.tag}>: attribute '{attr}' must be an integer {bound}, got {value.literal!r}")
    return number


def _runtime_int(value: Value, ctx: RequestContext, attr: str, low: int, high: int | None = None) -> int:
    text = value.evaluate(ctx)
    number = parse_count(text, low, high)
    if number is None:
        raise ExpressionRuntimeError(f"'{attr}' must be an integer of at least {low}, got {text!r}.")
    return number


def _variable(name: Value | None) -> str | None:
    return name.literal if name is not None else None


class _Counter(Policy):
    """What both policies share: the counter key, the increment condition and the outcome headers/variables."""

    __slots__ = ("condition", "counter_key", "fail_closed", "retry_header", "retry_variable")

    def __init__(self, attrs: dict[str, Value], el: Element) -> None:
        super().__init__()
        self.counter_key = attrs["counter-key"]
        self.condition = attrs.get("increment-condition")
        if self.condition is not None:
            check_boolean(self.condition, el, "increment-condition")
        self.retry_header = optional_header_name(attrs.get("retry-after-header-name"), el) or b"retry-after"
        self.retry_variable = _variable(attrs.get("retry-after-variable-name"))
        self.fail_closed = denies_on_store_error(attrs.get(STORE_ERROR_ATTR))

    def key(self, ctx: RequestContext) -> str:
        return counter_key(self.counter_key, ctx)

    def refuse(self, ctx: RequestContext, retry_after: int, status: int, message: str, reason: str) -> GatewayError:
        set_retry_after(ctx, retry_after, self.retry_header, self.retry_variable)
        return GatewayError(status, message, source=self.name, reason=reason)


@register
class RateLimitByKey(_Counter):
    """``<rate-limit-by-key calls="N" renewal-period="s" counter-key="@(…)" [increment-condition="@(…)"] …/>``."""

    name = "rate-limit-by-key"
    sections = frozenset({Section.INBOUND})
    attributes = {
        "calls": Attr(required=True),
        "renewal-period": Attr(required=True),
        "counter-key": Attr(required=True),
        "increment-condition": Attr(),
        "increment-count": Attr(),
        "retry-after-header-name": Attr(expressions=False),
        "retry-after-variable-name": Attr(expressions=False),
        "remaining-calls-header-name": Attr(expressions=False),
        "remaining-calls-variable-name": Attr(expressions=False),
        "total-calls-header-name": Attr(expressions=False),
        STORE_ERROR_ATTR: Attr(choices=STORE_ERROR_CHOICES, expressions=False),  # Sluice extension
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
    )

    def __init__(self, attrs: dict[str, Value], el: Element) -> None:
        super().__init__(attrs, el)
        self.calls_value = attrs["calls"]
        self.calls = _literal_int(self.calls_value, el, "calls", 1)
        self.period_value = attrs["renewal-period"]
        self.period = _literal_int(self.period_value, el, "renewal-period", 1, MAX_RENEWAL_PERIOD)
        self.count_value = attrs.get("increment-count")
        self.count = 1 if self.count_value is None else _literal_int(self.count_value, el, "increment-count", 1)
        self.remaining_header = optional_header_name(attrs.get("remaining-calls-header-name"), el)
        self.remaining_variable = _variable(attrs.get("remaining-calls-variable-name"))
        self.total_header = optional_header_name(attrs.get("total-calls-header-name"), el)

    @classmethod
    def from_element(cls, el: Element) -> RateLimitByKey:
        return cls(cls.check_element(el), el)

    def window(self, ctx: RequestContext, now: float) -> Window:
        calls = self.calls if self.calls is not None else _runtime_int(self.calls_value, ctx, "calls", 1)
        period = self.period
        if period is None:
            period = _runtime_int(self.period_value, ctx, "renewal-period", 1, MAX_RENEWAL_PERIOD)
        start = now - now % period
        return Window(f"rk:{{{counter_tag(self.key(ctx))}}}:{period}:{int(start)}", calls, start, start + period)

    async def apply(self, ctx: RequestContext) -> Response | None:
        store = counter_store(ctx)
        if store is None:
            logger.warning(MSG_NO_STORE, self.name)
            return None
        now = store.now()
        window = self.window(ctx, now)
        # with a condition the call is reserved now and kept (or given back) when the response is known
        deferred = self.condition is not None
        count = self.count
        if count is None:
            count = 1 if deferred else _runtime_int(self.count_value, ctx, "increment-count", 1)  # type: ignore[arg-type]
        admission = await _reserve(ctx, store, [window], count, now, self)
        if admission is None:
            return None
        remaining = max(0, window.limit - admission.used[0]) if admission.allowed else 0
        self.report(ctx, window.limit, remaining)
        if not admission.allowed:
            retry = admission.retry_after
            raise self.refuse(ctx, retry, 429, MSG_RATE_LIMIT.format(retry), "RateLimitExceeded")
        if deferred and admission.reservation is not None:
            ctx.on_finish.append(_Settle(self, store, admission.reservation, count))
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
            return _runtime_int(self.count_value, ctx, "increment-count", 1)
        return reserved

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        return {"counter-key": self.counter_key.source, "calls": self.calls_value.source}


@register
class QuotaByKey(_Counter):
    """``<quota-by-key calls="N" bandwidth="KB" renewal-period="s" counter-key="@(…)" …/>`` (calls and/or bandwidth)."""

    name = "quota-by-key"
    sections = frozenset({Section.INBOUND})
    attributes = {
        "calls": Attr(expressions=False),
        "bandwidth": Attr(expressions=False),
        "renewal-period": Attr(required=True, expressions=False),
        "counter-key": Attr(required=True),
        "increment-condition": Attr(),
        "first-period-start": Attr(default=DEFAULT_FIRST_PERIOD_START, expressions=False),
        "retry-after-header-name": Attr(expressions=False),
        "retry-after-variable-name": Attr(expressions=False),
        STORE_ERROR_ATTR: Attr(choices=STORE_ERROR_CHOICES, expressions=False),  # Sluice extension
    }
    __slots__ = ("bandwidth", "calls", "period", "start")

    def __init__(self, attrs: dict[str, Value], el: Element) -> None:
        super().__init__(attrs, el)
        self.calls = _literal_int(attrs.get("calls"), el, "calls", 1)
        self.bandwidth = _literal_int(attrs.get("bandwidth"), el, "bandwidth", 1)
        if self.calls is None and self.bandwidth is None:
            raise el.error("<quota-by-key>: at least one of 'calls' or 'bandwidth' is required")
        period = _literal_int(attrs["renewal-period"], el, "renewal-period", 0)
        if period is None or 0 < period < MIN_QUOTA_PERIOD:
            raise el.error(
                f"<quota-by-key>: 'renewal-period' must be 0 (never renewed) or at least {MIN_QUOTA_PERIOD} seconds"
            )
        self.period = period
        self.start = _first_period_start(attrs["first-period-start"].literal, el)

    @classmethod
    def from_element(cls, el: Element) -> QuotaByKey:
        return cls(cls.check_element(el), el)

    def windows(self, key: str, now: float) -> tuple[Window | None, Window | None]:
        """The (calls, kilobytes) windows of ``key`` containing ``now``."""
        if self.period:
            start = self.start + (now - self.start) // self.period * self.period
            end = start + self.period
        else:
            start, end = self.start, FOREVER_END
        base = f"qk:{{{counter_tag(key)}}}:{self.period}:{int(start)}"
        calls = Window(base + ":c", self.calls, start, end) if self.calls is not None else None
        kilobytes = Window(base + ":b", self.bandwidth, start, end) if self.bandwidth is not None else None
        return calls, kilobytes

    async def apply(self, ctx: RequestContext) -> Response | None:
        store = counter_store(ctx)
        if store is None:
            logger.warning(MSG_NO_STORE, self.name)
            return None
        now = store.now()
        calls, kilobytes = self.windows(self.key(ctx), now)
        deferred = self.condition is not None
        call_reservation = kb_reservation = None
        if calls is not None:
            admission = await _reserve(ctx, store, [calls], 1, now, self)
            if admission is not None and not admission.allowed:
                raise self.exceeded(ctx, "calls", admission.retry_after)
            call_reservation = admission.reservation if admission is not None else None
        if kilobytes is not None:
            # nothing to add yet (the size is known at the end); refused once the quota is used up
            try:
                admission = await _reserve(ctx, store, [kilobytes], 1, now, self)
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
            ctx.on_finish.append(_Settle(self, store, call_reservation, 1))
        return None

    def exceeded(self, ctx: RequestContext, what: str, retry_after: int) -> GatewayError:
        if not self.period:
            return self.refuse(ctx, 0, 403, MSG_QUOTA_FOREVER[what], "QuotaExceeded")
        template = MSG_CALL_QUOTA if what == "calls" else MSG_BANDWIDTH_QUOTA
        return self.refuse(ctx, retry_after, 403, template.format(format_timespan(retry_after)), "QuotaExceeded")

    def kept(self, ctx: RequestContext, reserved: int) -> int:
        if self.condition is not None and not truth(self.condition, ctx):
            return 0
        return reserved

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


async def _reserve(
    ctx: RequestContext, store: TokenStore, windows: list[Window], amount: int, now: float, policy: _Counter
) -> Admission | None:
    """The admission; None when the store cannot answer and the policy fails open (503 when it fails closed)."""
    try:
        return await store.reserve(windows, amount, now)
    except StoreUnavailable as exc:
        if policy.fail_closed:
            raise store_unavailable(ctx, store, policy.name, policy.retry_header) from exc
        logger.warning(MSG_STORE_DOWN, policy.name)
        return None


class _Settle:
    """Finish callback: keep or give back a reserved call once the response is known (``increment-condition``)."""

    __slots__ = ("policy", "reservation", "reserved", "store")

    def __init__(
        self, policy: RateLimitByKey | QuotaByKey, store: TokenStore, reservation: Reservation, reserved: int
    ) -> None:
        self.policy = policy
        self.store = store
        self.reservation = reservation
        self.reserved = reserved

    def __call__(self, ctx: RequestContext, complete: bool) -> None:
        try:
            kept = self.policy.kept(ctx, self.reserved)
        except Exception:  # the condition failed to evaluate: do not count the call
            logger.warning("increment-condition of %s failed; the call is not counted", self.policy.name)
            kept = 0
        self.store.settle(self.reservation, kept)


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
