"""Attribute and text values of policies.

Every configurable value is a :class:`Value` so that a policy-expression compiler can slot in later:
today only :class:`Literal` exists and expressions (``@(...)`` / ``@{...}``) are rejected at load time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .errors import PolicyError

if TYPE_CHECKING:
    from gateway.context import RequestContext

__all__ = ("EXPRESSIONS_NOT_SUPPORTED", "Literal", "Value", "is_expression", "parse_value")

EXPRESSIONS_NOT_SUPPORTED = "policy expressions are not supported yet"


class Value(Protocol):
    """A value resolved per request. Literals are constant; expressions (later) read the context."""

    @property
    def is_literal(self) -> bool: ...

    @property
    def literal(self) -> str:
        """The constant text; only meaningful when ``is_literal``."""
        ...

    def evaluate(self, ctx: RequestContext) -> str: ...


class Literal:
    """A constant value."""

    __slots__ = ("literal",)
    is_literal = True

    def __init__(self, text: str) -> None:
        self.literal = text

    def evaluate(self, ctx: RequestContext) -> str:
        return self.literal

    def __repr__(self) -> str:
        return f"Literal({self.literal!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Literal) and other.literal == self.literal

    def __hash__(self) -> int:
        return hash(self.literal)


def is_expression(text: str) -> bool:
    stripped = text.lstrip()
    return stripped.startswith(("@(", "@{"))


def parse_value(text: str, *, where: str, line: int | None = None, column: int | None = None) -> Value:
    """Compile one attribute/text value. ``where`` names it in error messages (e.g. ``set-header/@name``)."""
    if is_expression(text):
        raise PolicyError(f"{where}: {EXPRESSIONS_NOT_SUPPORTED}", line, column)
    return Literal(text)
