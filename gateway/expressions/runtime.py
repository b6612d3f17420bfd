"""Per-evaluation state and the sandbox limits checked while an expression runs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from .dotnet import utc
from .errors import ExpressionRuntimeError

if TYPE_CHECKING:
    from gateway.context import RequestContext

__all__ = (
    "MAX_STEPS",
    "MAX_STRING_LENGTH",
    "Env",
    "Fn",
    "charge",
    "check_length",
    "const",
    "wall_now",
    "with_converter",
)

MAX_STEPS: Final = 10_000  # lambda invocations (LINQ predicates) per evaluation; everything else is bounded by size
MAX_STRING_LENGTH: Final = 32 * 1024 * 1024  # characters of any string built by an expression

MSG_STEP_BUDGET: Final = f"The expression exceeded its evaluation budget of {MAX_STEPS} steps."
MSG_STRING_TOO_LONG: Final = f"The expression built a string longer than {MAX_STRING_LENGTH} characters."


class Env:
    """The state of one evaluation: the request context, the local variable slots and the remaining steps."""

    __slots__ = ("ctx", "locals", "steps")

    def __init__(self, ctx: RequestContext, n_locals: int) -> None:
        self.ctx = ctx
        self.locals: list[Any] = [None] * n_locals if n_locals else []
        self.steps = MAX_STEPS


Fn = Callable[[Env], Any]  # a compiled node: computes its value for one evaluation


def const(value: Any) -> Fn:
    return lambda env: value


def with_converter(fn: Fn, converter: Callable[[Any], Any] | None) -> Fn:
    """``fn`` followed by ``converter`` (when there is one)."""
    if converter is None:
        return fn
    return lambda env: converter(fn(env))


def charge(env: Env, cost: int) -> None:
    env.steps -= cost
    if env.steps < 0:
        raise ExpressionRuntimeError(MSG_STEP_BUDGET)


def check_length(text: str) -> str:
    if len(text) > MAX_STRING_LENGTH:
        raise ExpressionRuntimeError(MSG_STRING_TOO_LONG)
    return text


def wall_now(ctx: RequestContext) -> datetime:
    """The current UTC time from the gateway's injectable wall clock (``ctx.services.now``), else the system's."""
    now = ctx.services.now
    return utc(now()) if now is not None else datetime.now(UTC)
