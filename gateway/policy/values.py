"""Attribute and text values of policies: constants (:class:`Literal`) or policy expressions (:class:`Expression`).

An expression (``@( expression )`` or ``@{ statements }``) is compiled once, when the document is parsed; a compile
error becomes a PolicyError at the exact line and column inside the attribute or text. Policies keep a fast path
for literals (computed at load time) and evaluate expressions per request; a failure while evaluating raises
``ExpressionRuntimeError``, which the pipeline reports as ``ExpressionValueEvaluationFailure`` of that policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from gateway.expressions.errors import ExpressionError, ExpressionRuntimeError

from .errors import PolicyError

if TYPE_CHECKING:
    from gateway.context import RequestContext

__all__ = (
    "EXPRESSIONS_NOT_ALLOWED",
    "Expression",
    "ExpressionRuntimeError",
    "Literal",
    "Locate",
    "Value",
    "collect_expressions",
    "is_expression",
    "parse_value",
)

EXPRESSIONS_NOT_ALLOWED = "policy expressions are not allowed here"

Locate = Callable[[int], tuple[int | None, int | None]]
"""Maps a character offset inside a value to its 1-based (line, column) in the document."""


class Value(Protocol):
    """A value resolved per request. Literals are constant; expressions read the request context."""

    @property
    def is_literal(self) -> bool: ...

    @property
    def literal(self) -> str:
        """The constant text; only valid when ``is_literal``."""
        ...

    @property
    def source(self) -> str:
        """The text as written in the document."""
        ...

    def evaluate(self, ctx: RequestContext) -> str:
        """The value as a string (an expression's result formatted as .NET's ``ToString()`` would)."""
        ...

    def evaluate_object(self, ctx: RequestContext) -> Any:
        """The value with its type kept (bool, int, string, JSON, ...); a literal is its text."""
        ...


class Literal:
    """A constant value."""

    __slots__ = ("literal",)
    is_literal = True

    def __init__(self, text: str) -> None:
        self.literal = text

    @property
    def source(self) -> str:
        return self.literal

    def evaluate(self, ctx: RequestContext) -> str:
        return self.literal

    def evaluate_object(self, ctx: RequestContext) -> Any:
        return self.literal

    def __repr__(self) -> str:
        return f"Literal({self.literal!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Literal) and other.literal == self.literal

    def __hash__(self) -> int:
        return hash(self.literal)


class Expression:
    """A compiled policy expression (``gateway.expressions.CompiledExpression``) and its source text."""

    __slots__ = ("compiled", "source")
    is_literal = False

    def __init__(self, compiled: Any, source: str) -> None:
        self.compiled = compiled
        self.source = source

    @property
    def literal(self) -> str:
        raise TypeError(f"{self.source!r} is a policy expression: evaluate it per request")

    def evaluate(self, ctx: RequestContext) -> str:
        result: str = self.compiled.to_str(ctx)
        return result

    def evaluate_object(self, ctx: RequestContext) -> Any:
        return self.compiled.evaluate(ctx)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


_collector: ContextVar[list[Expression] | None] = ContextVar("policy_expressions", default=None)


@contextmanager
def collect_expressions() -> Iterator[list[Expression]]:
    """Collect the expressions compiled by ``parse_value`` inside the block (one policy's, for its flags)."""
    found: list[Expression] = []
    token = _collector.set(found)
    try:
        yield found
    finally:
        _collector.reset(token)


def is_expression(text: str) -> bool:
    return text.lstrip().startswith(("@(", "@{"))


def parse_value(
    text: str,
    *,
    where: str,
    line: int | None = None,
    column: int | None = None,
    locate: Locate | None = None,
    expressions: bool = True,
) -> Value:
    """Compile one attribute/text value. ``where`` names it in error messages (e.g. ``<set-header> attribute 'name'``).

    ``locate`` places a compile error at its character; without it errors point at ``line``/``column``.
    ``expressions=False`` rejects expressions (attributes documented as "policy expressions aren't allowed").
    """
    if not is_expression(text):
        return Literal(text)
    if not expressions:
        raise PolicyError(f"{where}: {EXPRESSIONS_NOT_ALLOWED}", *(locate(0) if locate else (line, column)))
    from gateway.expressions import compile_expression

    try:
        expression = Expression(compile_expression(text), text)
    except ExpressionError as exc:
        position = locate(exc.offset) if locate is not None else (line, column)
        raise PolicyError(f"{where}: invalid policy expression: {exc.message}", *position) from None
    found = _collector.get()
    if found is not None:
        found.append(expression)
    return expression
