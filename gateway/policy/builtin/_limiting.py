"""What the counting policies share (``rate-limit-by-key``, ``quota-by-key``, ``llm-token-limit``): the counter
store and key, header names and whole numbers, a refusal's ``Retry-After``, and ``sluice-on-store-error``
(docs/redis-outage.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from gateway.errors import GatewayError

from .set_header import check_header_name

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.limits import TokenStore

    from ..values import Value
    from ..xml import Element

__all__ = (
    "MSG_STORE_UNAVAILABLE",
    "REASON_STORE_UNAVAILABLE",
    "STORE_ERROR_ATTR",
    "STORE_ERROR_CHOICES",
    "counter_key",
    "counter_store",
    "denies_on_store_error",
    "optional_header_name",
    "parse_count",
    "set_retry_after",
    "store_unavailable",
)


def counter_store(ctx: RequestContext) -> TokenStore | None:
    """The gateway's counter store (``gateway.limits``); None when none is configured."""
    return ctx.services.limits


def counter_key(value: Value, ctx: RequestContext) -> str:
    """The ``counter-key`` of this request."""
    return value.literal if value.is_literal else value.evaluate(ctx)


def optional_header_name(value: Value | None, el: Element) -> bytes | None:
    """A checked ``…-header-name`` attribute, None when it is absent."""
    return check_header_name(value.literal, el) if value is not None else None


def parse_count(text: str, low: int, high: int | None) -> int | None:
    """``text`` as a whole number from ``low`` to ``high`` (no upper bound when None); None when it is not one."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()):  # ASCII only: "²" passes isdigit(), not int()
        return None
    number = int(text)
    if number < low or (high is not None and number > high):
        return None
    return number


def set_retry_after(ctx: RequestContext, seconds: int, header: bytes, variable: str | None) -> None:
    """Report a refusal's wait: in ``variable`` when one is configured, and in ``header`` unless there is nothing
    to wait for (0: a quota that is never renewed)."""
    if variable is not None:
        ctx.variables[variable] = seconds
    if seconds > 0:
        ctx.response_headers.append((header, b"%d" % seconds))


#
# When the counter store cannot answer
#

STORE_ERROR_ATTR: Final = "sluice-on-store-error"
STORE_ERROR_CHOICES: Final = ("allow", "deny")
MSG_STORE_UNAVAILABLE: Final = "Rate limit counters are unavailable. Try again in {} seconds."
REASON_STORE_UNAVAILABLE: Final = "CounterStoreUnavailable"


def denies_on_store_error(value: Value | None) -> bool:
    """The ``sluice-on-store-error`` choice: True for ``deny`` (fail closed), False for ``allow`` (the default)."""
    return value is not None and value.literal == "deny"


def store_unavailable(ctx: RequestContext, store: TokenStore, source: str, header: bytes) -> GatewayError:
    """The 503 of a policy that fails closed, with ``Retry-After`` set to the store's next probe."""
    seconds = store.unavailable_retry_after()
    ctx.response_headers.append((header, b"%d" % seconds))
    return GatewayError(503, MSG_STORE_UNAVAILABLE.format(seconds), source=source, reason=REASON_STORE_UNAVAILABLE)
