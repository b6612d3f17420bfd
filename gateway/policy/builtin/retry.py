"""``retry``: runs its child policies again while a condition holds, up to ``count`` more times.

APIM reference: https://learn.microsoft.com/azure/api-management/retry-policy

With ``forward-request`` inside, each attempt goes to the next member of a pool (the forwarder skips the members
this request already tried, and tripped ones). The request body is already held whole by the gateway (up to
``SLUICE_MAX_BODY_BYTES``), so every attempt sends the same bytes. A streamed answer is judged on its head: a retry
closes it before any byte reaches the client; once the stream is handed to the client it is never retried.

A forwarding failure that produced no answer (connection refused or reset, timeout, every pool member tripped) is
retried while attempts remain, whatever the condition: the condition decides for answers, and
``context.Response`` is null after such a failure. The last failure goes to ``on-error`` as without ``retry``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from gateway.errors import GatewayError

from ..base import ALL_SECTIONS, Attr, BindEnv, ParseChild, Policy, bind_steps, check_boolean, check_element, truth
from ..values import Value
from ..xml import Element

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response

__all__ = ("MAX_COUNT", "MAX_INTERVAL", "Retry", "Wrapper", "run_steps")

logger = logging.getLogger("gateway.policy.retry")

MAX_COUNT: Final = 50
MAX_INTERVAL: Final = 300.0
_RETRYABLE_SOURCES: Final = frozenset({"forward-request"})
REASON_ERROR_STATUS: Final = "BackendErrorStatusCode"  # forward-request fail-on-error-status-code
_ATTRS: Final = {
    "condition": Attr(required=True),
    "count": Attr(required=True, expressions=False),
    "interval": Attr(required=True, expressions=False),
    "max-interval": Attr(expressions=False),
    "delta": Attr(expressions=False),
    "first-fast-retry": Attr(choices=("true", "false"), expressions=False, default="false"),
}


async def run_steps(ctx: RequestContext, steps: Iterable[Policy]) -> Response | None:
    """Run nested statements in order (``choose`` branches in place); stop at the first that answers."""
    for step in steps:
        if step.is_control:
            response = await run_steps(ctx, step.select(ctx)[1])
        else:
            response = await step.apply(ctx)
        if response is not None:
            return response
    return None


async def close_response(ctx: RequestContext, filters: int) -> None:
    """Drop an answer that will not be sent (a retried attempt): close its stream, if any, and drop what it set up
    for the client's answer: the chunk filters added after the first ``filters`` (token meters, told the body is
    abandoned) and its usage, so that only the answer the client gets is counted."""
    extra = ctx.chunk_filters[filters:]
    del ctx.chunk_filters[filters:]
    for chunk_filter in extra:
        try:
            chunk_filter.finish(False)
        except Exception:  # a filter of a dropped answer must not fail the retry
            logger.exception("chunk filter failed while dropping a retried answer")
    ctx.usage = None
    head = ctx.response
    ctx.response = None
    if head is not None and head.upstream is not None:
        upstream, head.upstream = head.upstream, None
        await upstream.aclose()


class Wrapper(Policy):
    """A policy that runs child policies itself (``retry``, ``limit-concurrency``): they are compiled with the rules
    of the enclosing section and scope, and bound with it."""

    __slots__ = ("steps",)

    def __init__(self, steps: tuple[Policy, ...]) -> None:
        super().__init__()
        self.steps = steps

    @classmethod
    def from_element(cls, el: Element) -> Policy:
        raise el.error(f"<{el.tag}> holds other policies and can only be compiled within a document")

    def substeps(self) -> Iterable[Policy]:
        return self.steps

    def bind(self, env: BindEnv) -> None:
        bind_steps(self.steps, env)


class Retry(Wrapper):
    """``<retry condition="@(…)" count="3" interval="1" [max-interval="…" delta="…" first-fast-retry="…"]>``."""

    name = "retry"
    sections = ALL_SECTIONS
    __slots__ = ("condition", "count", "delta", "fast_first", "interval", "max_interval")

    def __init__(
        self,
        condition: Value,
        count: int,
        interval: float,
        steps: tuple[Policy, ...],
        *,
        max_interval: float | None = None,
        delta: float | None = None,
        fast_first: bool = False,
    ) -> None:
        super().__init__(steps)
        self.condition = condition
        self.count = count
        self.interval = interval
        self.max_interval = max_interval
        self.delta = delta
        self.fast_first = fast_first

    @classmethod
    def build(cls, el: Element, parse_child: ParseChild) -> Retry:
        attrs = check_element(el, _ATTRS, {c.tag for c in el.children}, False)
        condition = attrs["condition"]
        check_boolean(condition, el, "condition")
        count = _number(el, "count", attrs["count"].literal, 1, MAX_COUNT, integer=True)
        interval = _number(el, "interval", attrs["interval"].literal, 0, MAX_INTERVAL)
        max_interval = delta = None
        if "max-interval" in attrs:
            max_interval = _number(el, "max-interval", attrs["max-interval"].literal, 0, MAX_INTERVAL)
        if "delta" in attrs:
            delta = _number(el, "delta", attrs["delta"].literal, 0, MAX_INTERVAL)
        if max_interval is not None and delta is None:
            raise el.error("<retry>: 'max-interval' needs 'delta' (exponential back-off)")
        if not el.children:
            raise el.error("<retry> needs at least one child policy")
        steps = tuple(parse_child(child) for child in el.children)
        fast_first = attrs["first-fast-retry"].literal == "true"
        return cls(
            condition, int(count), interval, steps, max_interval=max_interval, delta=delta, fast_first=fast_first
        )

    def wait_before(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based): fixed, linear (``delta``) or exponential
        (``delta`` and ``max-interval``, with ±20 % jitter on the delta)."""
        if retry == 1 and self.fast_first:
            return 0.0
        delta = self.delta
        if delta is None:
            return self.interval
        if self.max_interval is None:
            return self.interval + (retry - 1) * delta
        jittered: float = random.uniform(delta * 0.8, delta * 1.2)
        return min(self.interval + ((1 << (retry - 1)) - 1) * jittered, self.max_interval)

    async def apply(self, ctx: RequestContext) -> Response | None:
        retry = 0
        filters = len(ctx.chunk_filters)
        while True:
            failure: GatewayError | None = None
            try:
                response = await run_steps(ctx, self.steps)
            except GatewayError as error:
                if error.source not in _RETRYABLE_SOURCES or error.status == 400 or retry >= self.count:
                    raise
                if error.reason == REASON_ERROR_STATUS and not truth(self.condition, ctx):
                    raise  # fail-on-error-status-code: an answer, which the condition judges
                failure = error
                ctx.last_error = error
            else:
                if response is not None or retry >= self.count or not truth(self.condition, ctx):
                    return response
            retry += 1
            await close_response(ctx, filters)
            if failure is None and ctx.attempts:
                ctx.attempts[-1]["retried"] = True
            wait = self.wait_before(retry)
            if wait > 0:
                await ctx.services.sleep(wait)

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        return {"attempts": list(ctx.attempts)}


def _number(el: Element, attr: str, text: str, low: float, high: float, *, integer: bool = False) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high or value != value:
        kind = "an integer" if integer else "a number of seconds"
        raise el.error(f"<retry>: '{attr}' must be {kind} from {low:g} to {high:g}, got {text!r}")
    return value
