"""What the counting policies share: ``rate-limit-by-key`` and ``quota-by-key`` (ratelimit.py) and
``llm-token-limit`` (token_limit.py) read the same counter store and counter key, take header names and whole
numbers the same way, and report a refusal's wait (``Retry-After``) the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .headers import check_header_name

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.limits import TokenStore

    from .values import Value
    from .xml import Element

__all__ = ("counter_key", "counter_store", "optional_header_name", "parse_count", "set_retry_after")


def counter_store(ctx: RequestContext) -> TokenStore | None:
    """The gateway's counter store (``gateway.limits``); None when none is configured."""
    store: TokenStore | None = getattr(ctx.services, "limits", None)
    return store


def counter_key(value: Value, ctx: RequestContext) -> str:
    """The ``counter-key`` of this request."""
    return value.literal if value.is_literal else value.evaluate(ctx)


def optional_header_name(value: Value | None, el: Element) -> bytes | None:
    """A checked ``…-header-name`` attribute, None when it is absent."""
    return check_header_name(value.literal, el) if value is not None else None


def parse_count(text: str, low: int, high: int | None) -> int | None:
    """``text`` as a whole number from ``low`` to ``high`` (no upper bound when None); None when it is not one."""
    text = text.strip()
    if not text.isdigit():
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
