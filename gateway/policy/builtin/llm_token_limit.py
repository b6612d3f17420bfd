"""``llm-token-limit`` (alias ``azure-openai-token-limit``): tokens per minute and token quotas per key.

APIM reference: https://learn.microsoft.com/azure/api-management/llm-token-limit-policy

Sluice reserves an estimate at admission, atomically in the shared counter store, and settles to the real usage
when the response is over; the bound this gives, the refusals and their reasons are in docs/token-limits.md, store
outages (``sluice-on-store-error``) in docs/redis-outage.md.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Final

from gateway.errors import GatewayError
from gateway.limits.base import PERIODS, StoreUnavailable, minute_start, minute_window, quota_window
from gateway.llm_accounting import exchange_for

from ..base import Attr, Policy, Section
from ..values import ExpressionRuntimeError, Value
from ..xml import Element
from ._limiting import (
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
from ._remembered import PerKey, PerSubscription, same_per_subscription

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response
    from gateway.limits import Admission, TokenStore, Window
    from gateway.llm_accounting import LlmExchange

__all__ = (
    "DEFAULT_COMPLETION_RESERVATION",
    "MSG_TOKEN_LIMIT",
    "MSG_TOKEN_QUOTA",
    "AzureOpenAiTokenLimit",
    "LlmTokenLimit",
    "format_wait",
)

logger = logging.getLogger("gateway.policy.token_limit")

MSG_TOKEN_LIMIT: Final = "Token limit is exceeded. Try again in {}."  # noqa: S105
MSG_TOKEN_QUOTA: Final = "Token quota is exceeded. Try again in {}."  # noqa: S105
REASON_TOKEN_LIMIT: Final = "TokenLimitExceeded"  # noqa: S105
REASON_TOKEN_QUOTA: Final = "TokenQuotaExceeded"  # noqa: S105
MSG_NO_STORE: Final = "no token store is configured; %s is not enforced"
MSG_STORE_DOWN: Final = "the token store is unavailable (%s); %s lets requests through"
DEFAULT_COMPLETION_RESERVATION: Final = 1024
MAX_TOKENS: Final = 10**15  # counters are Lua numbers (doubles): exact far beyond this
LOG_EVERY: Final = 10.0
# The windows of one counter key stay the same for a whole minute (every period starts on a minute): each policy keeps
# those of the current minute by counter key and limit (``._remembered.PerKey``, at most ``REMEMBERED_MAX`` keys), so
# most requests build none. A counter key whose expression depends on the subscription alone
# (``CompiledExpression.subscription_only``: the wizard's ``context.Subscription?.Id ?? "anonymous"``) is not even
# evaluated again: the windows are kept per subscription too (``._remembered.PerSubscription``).

_last_warning = 0.0


def _warn(message: str, *args: Any) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= LOG_EVERY:
        _last_warning = now
        logger.warning(message, *args)


def format_wait(seconds: int) -> str:
    """``41 seconds``, ``21 minutes and 33 seconds``, ``3 hours, 2 minutes and 1 second``."""
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{n} {unit}{'' if n == 1 else 's'}"
        for n, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"), (secs, "second"))
        if n
    ]
    if not parts:
        return "0 seconds"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _literal_int(value: Value | None, el: Element, attr: str, low: int) -> int | None:
    if value is None or not value.is_literal:
        return None
    number = parse_count(value.literal, low, MAX_TOKENS)
    if number is None:
        raise el.error(f"<{el.tag}>: attribute '{attr}' must be an integer of at least {low}, got {value.literal!r}")
    return number


def _variable(value: Value | None, el: Element, attr: str) -> str | None:
    if value is None:
        return None
    if not value.literal.strip():
        raise el.error(f"<{el.tag}>: attribute '{attr}' must not be empty")
    return value.literal


class LlmTokenLimit(Policy):
    """``<llm-token-limit counter-key="…" tokens-per-minute="N" token-quota="N" token-quota-period="Daily"
    estimate-prompt-tokens="true|false" …/>``."""

    name = "llm-token-limit"
    sections = frozenset({Section.INBOUND})
    requires_json_body = True
    attributes = {
        "counter-key": Attr(required=True),
        "tokens-per-minute": Attr(),
        "token-quota": Attr(expressions=False),
        "token-quota-period": Attr(choices=PERIODS, expressions=False),
        "estimate-prompt-tokens": Attr(required=True, choices=("true", "false"), expressions=False),
        "retry-after-header-name": Attr(expressions=False),
        "retry-after-variable-name": Attr(expressions=False),
        "remaining-quota-tokens-header-name": Attr(expressions=False),
        "remaining-quota-tokens-variable-name": Attr(expressions=False),
        "remaining-tokens-header-name": Attr(expressions=False),
        "remaining-tokens-variable-name": Attr(expressions=False),
        "tokens-consumed-header-name": Attr(expressions=False),
        "tokens-consumed-variable-name": Attr(expressions=False),
        # Sluice extension: the completion tokens reserved for a request that sets no max_tokens
        "sluice-default-completion-reservation": Attr(expressions=False),
        # Sluice extension: what to do when the counter store cannot answer (allow = fail open, deny = 503)
        STORE_ERROR_ATTR: Attr(choices=STORE_ERROR_CHOICES, expressions=False),
    }
    __slots__ = (
        "consumed_header",
        "consumed_variable",
        "counter_key",
        "default_completion",
        "estimate",
        "fail_closed",
        "on_response_needed",
        "period",
        "quota",
        "quota_header",
        "quota_variable",
        "remaining_header",
        "remaining_variable",
        "reports",
        "retry_header",
        "retry_variable",
        "subscription_windows",
        "tpm",
        "tpm_value",
        "window_cache",
        "window_end",
        "window_minute",
    )

    def __init__(self, attrs: dict[str, Value], el: Element) -> None:
        super().__init__()
        tag = el.tag
        self.counter_key = attrs["counter-key"]
        self.tpm_value = attrs.get("tokens-per-minute")
        self.tpm = _literal_int(self.tpm_value, el, "tokens-per-minute", 1)
        self.quota = _literal_int(attrs.get("token-quota"), el, "token-quota", 1)
        period = attrs.get("token-quota-period")
        self.period = period.literal if period is not None else None
        if (self.quota is None) != (self.period is None):
            raise el.error(f"<{tag}>: 'token-quota' and 'token-quota-period' must be given together")
        if self.tpm_value is None and self.quota is None:
            raise el.error(f"<{tag}>: give 'tokens-per-minute', or 'token-quota' with 'token-quota-period', or both")
        self.estimate = attrs["estimate-prompt-tokens"].literal == "true"
        default = _literal_int(
            attrs.get("sluice-default-completion-reservation"), el, "sluice-default-completion-reservation", 0
        )
        self.default_completion = DEFAULT_COMPLETION_RESERVATION if default is None else default
        self.retry_header = optional_header_name(attrs.get("retry-after-header-name"), el) or b"retry-after"
        self.retry_variable = _variable(attrs.get("retry-after-variable-name"), el, "retry-after-variable-name")
        self.remaining_header = optional_header_name(attrs.get("remaining-tokens-header-name"), el)
        self.remaining_variable = _variable(
            attrs.get("remaining-tokens-variable-name"), el, "remaining-tokens-variable-name"
        )
        self.quota_header = optional_header_name(attrs.get("remaining-quota-tokens-header-name"), el)
        self.quota_variable = _variable(
            attrs.get("remaining-quota-tokens-variable-name"), el, "remaining-quota-tokens-variable-name"
        )
        self.consumed_header = optional_header_name(attrs.get("tokens-consumed-header-name"), el)
        self.consumed_variable = _variable(
            attrs.get("tokens-consumed-variable-name"), el, "tokens-consumed-variable-name"
        )
        # skip the per-request bookkeeping nobody asked for
        reporting = (self.remaining_header, self.remaining_variable, self.quota_header, self.quota_variable)
        self.reports = any(x is not None for x in reporting)
        self.on_response_needed = self.reports or self.consumed_header is not None or self.consumed_variable is not None
        self.fail_closed = denies_on_store_error(attrs.get(STORE_ERROR_ATTR))
        self.window_cache: PerKey[tuple[tuple[Window, ...], int]] = PerKey()  # by (counter key, tokens per minute)
        self.window_minute = self.window_end = -1.0  # [start, end) of the minute of the caches below
        # the windows and limit of the current minute per subscription, when the counter key and the limits depend on
        # nothing else; None otherwise
        tpm = self.tpm_value
        per_subscription = same_per_subscription(self.counter_key) and (tpm is None or tpm.is_literal)
        self.subscription_windows: PerSubscription[tuple[tuple[Window, ...], int]] | None = (
            PerSubscription() if per_subscription else None
        )

    @classmethod
    def from_element(cls, el: Element) -> LlmTokenLimit:
        return cls(cls.check_element(el), el)

    # per request

    def windows(self, ctx: RequestContext, now: float) -> tuple[tuple[Window, ...], int]:
        """The quota window first (a quota refusal, 403, wins over a per-minute one), then the minute; and the
        smallest of their limits. Shared by the requests of the same counter key and minute: nobody changes them."""
        by_subscription = self.subscription_windows
        if not self.window_minute <= now < self.window_end:  # another minute than the one of the caches: a new one
            minute = minute_start(now)
            self.window_cache.clear()
            if by_subscription is not None:
                by_subscription.clear()
            self.window_minute = minute
            self.window_end = minute + 60.0
        if by_subscription is not None:
            subscription = ctx.subscription
            found = by_subscription.get(subscription)
            if found is not None:
                return found
        key = counter_key(self.counter_key, ctx)
        tpm = self.tpm
        if tpm is None and self.tpm_value is not None:
            text = self.tpm_value.evaluate(ctx)
            tpm = parse_count(text, 1, MAX_TOKENS)
            if tpm is None:
                raise ExpressionRuntimeError(f"'tokens-per-minute' must be a positive integer, got {text!r}.")
        cached = self.window_cache.get((key, tpm))
        if cached is None:
            cached = self._build_windows(key, tpm, now)
        if by_subscription is not None:
            by_subscription.put(subscription, cached)
        return cached

    def _build_windows(self, key: str, tpm: int | None, now: float) -> tuple[tuple[Window, ...], int]:
        """The windows of ``key`` for the minute of ``now`` (see ``windows``), kept in the window cache."""
        built = []
        if self.quota is not None and self.period is not None:
            built.append(quota_window(key, self.period, now, self.quota))
        if tpm is not None:
            built.append(minute_window(key, now, tpm))
        windows = tuple(built)
        cached = windows, min(w.limit for w in windows)
        self.window_cache.put((key, tpm), cached)
        return cached

    def reservation(self, exchange: LlmExchange, ceiling: int) -> tuple[int, int]:
        """``(amount, prompt estimate)`` to reserve for the request (see the module docstring)."""
        if exchange.body is None:  # not a model request (no JSON body): nothing to reserve, but over-limit blocks
            return 0, 0
        prompt = exchange.prompt_estimate() if self.estimate or exchange.stream else 0
        cap, choices = exchange.completion_cap()
        amount = prompt + (self.default_completion if cap is None else cap) * choices
        # at most the smallest limit (a request may use all of it), at least 1; without min() and max(), two calls
        if amount > ceiling:
            amount = ceiling
        return (amount if amount > 1 else 1), prompt

    async def apply(self, ctx: RequestContext) -> Response | None:
        store = counter_store(ctx)
        if store is None:
            _warn(MSG_NO_STORE, self.name)
            return None
        exchange = exchange_for(ctx)
        now = store.now()
        windows, ceiling = self.windows(ctx, now)
        amount, prompt = self.reservation(exchange, ceiling)
        admission = store.reserve_now(windows, amount, now)  # from a lease: no coroutine, no await
        if admission is None:
            try:
                admission = await store.reserve(windows, amount, now)
            except StoreUnavailable as exc:
                if self.fail_closed:
                    raise store_unavailable(ctx, store, self.name, self.retry_header) from exc
                _warn(MSG_STORE_DOWN, exc, self.name)
                return None
        outcome = _Outcome(self, store, windows, admission, amount, prompt)
        exchange.admissions.append(outcome)
        if not admission.allowed:
            raise outcome.refuse(ctx)
        outcome.admitted(ctx)
        return None

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        exchange = ctx.llm
        if exchange is None:
            return None
        for outcome in reversed(exchange.admissions):
            if isinstance(outcome, _Outcome) and outcome.policy is self:
                return outcome.details()
        return None


class AzureOpenAiTokenLimit(LlmTokenLimit):
    """``azure-openai-token-limit``: the Azure OpenAI name of the same policy."""

    name = "azure-openai-token-limit"
    __slots__ = ()


class _Outcome:
    """One admission of one policy for one request: headers and variables, then the settlement."""

    __slots__ = ("admission", "amount", "policy", "prompt", "store", "windows")

    def __init__(
        self,
        policy: LlmTokenLimit,
        store: TokenStore,
        windows: tuple[Window, ...],
        admission: Admission,
        amount: int,
        prompt: int,
    ) -> None:
        self.policy = policy
        self.store = store
        self.windows = windows
        self.admission = admission
        self.amount = amount
        self.prompt = prompt

    def _remaining(self, correction: int = 0) -> tuple[int | None, int | None]:
        """(per-minute, quota) tokens left, moved by ``correction`` (actual - reserved) once usage is known."""
        windows, used = self.windows, self.admission.used
        left = [max(0, min(w.limit, w.limit - used[i] - correction)) for i, w in enumerate(windows)]
        quota = left[0] if self.policy.quota is not None else None
        minute = left[-1] if self.policy.tpm_value is not None else None
        return minute, quota

    def _report(self, ctx: RequestContext, correction: int = 0, *, headers: bool) -> None:
        policy = self.policy
        if not policy.reports:
            return
        minute, quota = self._remaining(correction)
        variables = ctx.variables
        if minute is not None:
            if policy.remaining_variable is not None:
                variables[policy.remaining_variable] = minute
            if headers and policy.remaining_header is not None:
                ctx.response_headers.append((policy.remaining_header, b"%d" % minute))
        if quota is not None:
            if policy.quota_variable is not None:
                variables[policy.quota_variable] = quota
            if headers and policy.quota_header is not None:
                ctx.response_headers.append((policy.quota_header, b"%d" % quota))

    def refuse(self, ctx: RequestContext) -> GatewayError:
        policy = self.policy
        admission = self.admission
        retry_after = admission.retry_after
        is_minute = policy.tpm_value is not None and admission.refused == len(self.windows) - 1
        set_retry_after(ctx, retry_after, policy.retry_header, policy.retry_variable)  # at least 1 when refused
        self._report(ctx, headers=True)
        if is_minute:
            return GatewayError(
                429, MSG_TOKEN_LIMIT.format(format_wait(retry_after)), source=policy.name, reason=REASON_TOKEN_LIMIT
            )
        return GatewayError(
            403, MSG_TOKEN_QUOTA.format(format_wait(retry_after)), source=policy.name, reason=REASON_TOKEN_QUOTA
        )

    def admitted(self, ctx: RequestContext) -> None:
        policy = self.policy
        if policy.reports:
            self._report(ctx, headers=False)
        if policy.consumed_variable is not None:
            ctx.variables[policy.consumed_variable] = self.prompt if policy.estimate else 0
        exchange = ctx.llm
        if exchange is not None and policy.on_response_needed:
            exchange.response_hooks.append(self.on_response)
        ctx.on_finish.append(self.settle)

    def on_response(self, ctx: RequestContext) -> None:
        """The backend answered: headers (remaining counts, tokens consumed) and the consumed-tokens variable."""
        policy = self.policy
        usage = ctx.usage
        consumed = usage.total_tokens if usage is not None else self.prompt  # a stream: its prompt so far
        self._report(ctx, consumed - self.amount if usage is not None else 0, headers=True)
        if policy.consumed_header is not None:
            ctx.response_headers.append((policy.consumed_header, b"%d" % consumed))
        if policy.consumed_variable is not None:
            ctx.variables[policy.consumed_variable] = consumed

    def settle(self, ctx: RequestContext, complete: bool) -> None:
        """Finish callback: correct the counters to the request's real total (0 when no usage is known: the
        backend was not reached, refused the request or failed)."""
        reservation = self.admission.reservation
        if reservation is None:
            return
        usage = ctx.usage
        self.store.settle(reservation, usage.total_tokens if usage is not None else 0)

    def details(self) -> dict[str, Any]:
        admission = self.admission
        return {
            "allowed": admission.allowed,
            "reserved": self.amount,
            "prompt-estimate": self.prompt,
            "windows": [
                {"key": w.key, "limit": w.limit, "used": admission.used[i]} for i, w in enumerate(self.windows)
            ],
            **({"retry-after": admission.retry_after} if not admission.allowed else {}),
        }
