"""What ``rate-limit-by-key`` and ``quota-by-key`` share: the counter key, the increment condition, the reservation.

Counters live in the gateway's counter store (``gateway.limits``), the same store ``llm-token-limit`` uses; ``reserve``
checks and adds in one atomic step, ``settle`` corrects later. See docs/redis-outage.md for ``sluice-on-store-error``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from gateway.errors import GatewayError
from gateway.limits.base import StoreUnavailable, Window

from ..base import Attr, Policy, check_boolean, truth
from ..values import ExpressionRuntimeError, Value
from ..xml import Element
from ._limiting import (
    STORE_ERROR_ATTR,
    STORE_ERROR_CHOICES,
    counter_key,
    denies_on_store_error,
    optional_header_name,
    parse_count,
    set_retry_after,
    store_unavailable,
)

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.limits import Admission, Reservation, TokenStore

__all__ = (
    "COUNTER_ATTRIBUTES",
    "Counter",
    "Settle",
    "format_timespan",
    "literal_int",
    "reserve",
    "runtime_int",
    "variable_name",
)

logger = logging.getLogger("gateway.policy.ratelimit")

MSG_NO_STORE: Final = "no counter store is configured; %s is not enforced"
MSG_STORE_DOWN: Final = "the counter store is unavailable; %s lets the request through"

# the attributes both policies take, and read in Counter.__init__
COUNTER_ATTRIBUTES: Final = {
    "counter-key": Attr(required=True),
    "increment-condition": Attr(),
    "retry-after-header-name": Attr(expressions=False),
    "retry-after-variable-name": Attr(expressions=False),
    STORE_ERROR_ATTR: Attr(choices=STORE_ERROR_CHOICES, expressions=False),  # Sluice extension
}


def format_timespan(seconds: int) -> str:
    """``hh:mm:ss`` (``d.hh:mm:ss`` from one day), as .NET prints a TimeSpan."""
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}.{clock}" if days else clock


def literal_int(value: Value | None, el: Element, attr: str, low: int, high: int | None = None) -> int | None:
    if value is None or not value.is_literal:
        return None
    number = parse_count(value.literal, low, high)
    if number is None:
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise el.error(f"<{el.tag}>: attribute '{attr}' must be an integer {bound}, got {value.literal!r}")
    return number


def runtime_int(value: Value, ctx: RequestContext, attr: str, low: int, high: int | None = None) -> int:
    text = value.evaluate(ctx)
    number = parse_count(text, low, high)
    if number is None:
        raise ExpressionRuntimeError(f"'{attr}' must be an integer of at least {low}, got {text!r}.")
    return number


def variable_name(name: Value | None) -> str | None:
    return name.literal if name is not None else None


class Counter(Policy):
    """What both policies share: the counter key, the increment condition and the outcome headers/variables."""

    __slots__ = ("condition", "counter_key", "fail_closed", "retry_header", "retry_variable")

    def __init__(self, attrs: dict[str, Value], el: Element) -> None:
        super().__init__()
        self.counter_key = attrs["counter-key"]
        self.condition = attrs.get("increment-condition")
        if self.condition is not None:
            check_boolean(self.condition, el, "increment-condition")
        self.retry_header = optional_header_name(attrs.get("retry-after-header-name"), el) or b"retry-after"
        self.retry_variable = variable_name(attrs.get("retry-after-variable-name"))
        self.fail_closed = denies_on_store_error(attrs.get(STORE_ERROR_ATTR))

    def key(self, ctx: RequestContext) -> str:
        return counter_key(self.counter_key, ctx)

    def refuse(self, ctx: RequestContext, retry_after: int, status: int, message: str, reason: str) -> GatewayError:
        set_retry_after(ctx, retry_after, self.retry_header, self.retry_variable)
        return GatewayError(status, message, source=self.name, reason=reason)

    def kept(self, ctx: RequestContext, reserved: int) -> int:
        """How many of ``reserved`` to keep once the response is known: none when the increment condition is false."""
        if self.condition is not None and not truth(self.condition, ctx):
            return 0
        return reserved


async def reserve(
    ctx: RequestContext, store: TokenStore, windows: Sequence[Window], amount: int, now: float, policy: Counter
) -> Admission | None:
    """The admission; None when the store cannot answer and the policy fails open (503 when it fails closed).
    ``windows`` go to the store as they are: the same tuple handed in again lets the Redis store lease on it."""
    try:
        return await store.reserve(windows, amount, now)
    except StoreUnavailable as exc:
        if policy.fail_closed:
            raise store_unavailable(ctx, store, policy.name, policy.retry_header) from exc
        logger.warning(MSG_STORE_DOWN, policy.name)
        return None


class Settle:
    """Finish callback: keep or give back a reserved call once the response is known (``increment-condition``)."""

    __slots__ = ("policy", "reservation", "reserved", "store")

    def __init__(self, policy: Counter, store: TokenStore, reservation: Reservation, reserved: int) -> None:
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
