"""APIM policy expressions: a sandboxed C# subset, compiled once and evaluated per request.

``compile_expression("@(context.Subscription.Id)")`` parses the text, checks every name and member against an
allow-list (unknown members, unsupported constructs and wrong arguments are :class:`ExpressionError` with the
character offset), and returns a :class:`CompiledExpression` whose ``evaluate(ctx)`` runs a tree of closures over
a :class:`gateway.context.RequestContext`. Runtime failures raise :class:`ExpressionRuntimeError`, which the
pipeline reports as ``ExpressionValueEvaluationFailure``.

The sandbox: user text is never given to ``eval``/``exec``/``compile``; members are looked up only in the tables of
:mod:`.typesys` (filled by :mod:`.library` and :mod:`.context`); sources are limited to
:data:`MAX_EXPRESSION_LENGTH` characters, the tree to :data:`MAX_AST_DEPTH` levels and :data:`MAX_NODES` nodes
(the subset has no loops, so that also bounds the work per evaluation); LINQ lambdas are charged against a step
budget of :data:`MAX_STEPS`, and strings built by an expression are capped at :data:`MAX_STRING_LENGTH`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from gateway.types import Deployment

from .compiler import MAX_AST_DEPTH, MAX_NODES, compile_parsed
from .dependencies import subscription_only
from .dotnet import to_string
from .errors import REASON_EVALUATION_FAILURE, ExpressionError, ExpressionRuntimeError
from .parser import parse
from .runtime import MAX_STEPS, MAX_STRING_LENGTH, Env

if TYPE_CHECKING:
    from gateway.context import RequestContext

__all__ = (
    "MAX_AST_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "MAX_NODES",
    "MAX_STEPS",
    "MAX_STRING_LENGTH",
    "REASON_EVALUATION_FAILURE",
    "CompiledExpression",
    "Deployment",
    "ExpressionError",
    "ExpressionRuntimeError",
    "compile_expression",
    "is_expression",
)

MAX_EXPRESSION_LENGTH: Final = 16 * 1024

MSG_TOO_LONG: Final = f"expression is longer than {MAX_EXPRESSION_LENGTH} characters"

# Python errors a library member may still raise on odd input; reported like .NET exceptions would be.
_RUNTIME_FAILURES: Final = (ArithmeticError, LookupError, ValueError, TypeError, UnicodeError, RecursionError)


class CompiledExpression:
    """A compiled ``@(...)`` / ``@{...}`` expression.

    ``result_type`` is the C# type of the value (``string``, ``int``, ``bool``, ``JObject``, ...). ``uses_body`` is
    set when the request body is read, ``uses_response`` when ``context.Response`` is touched and
    ``uses_response_body`` when the response body is read (the pipeline must buffer it first).
    ``subscription_only`` is set when the value depends on the request's subscription alone (``.dependencies``).
    """

    __slots__ = (
        "_fn",
        "_n_locals",
        "result_type",
        "source",
        "subscription_only",
        "uses_body",
        "uses_response",
        "uses_response_body",
    )

    def __init__(self, source: str) -> None:
        if len(source) > MAX_EXPRESSION_LENGTH:
            raise ExpressionError(MSG_TOO_LONG, MAX_EXPRESSION_LENGTH)
        parsed = parse(source)
        program = compile_parsed(source, parsed)
        self.source = source
        self.result_type = program.result_type
        self.uses_body = "body" in program.flags
        self.uses_response = bool({"response", "response_body"} & program.flags)
        self.uses_response_body = "response_body" in program.flags
        self.subscription_only = subscription_only(parsed)
        self._fn = program.fn
        self._n_locals = program.n_locals

    def evaluate(self, ctx: RequestContext) -> Any:
        """The value of the expression for ``ctx`` (Python representation: see :mod:`.dotnet`)."""
        env = Env(ctx, self._n_locals)
        try:
            return self._fn(env)
        except ExpressionRuntimeError:
            raise
        except _RUNTIME_FAILURES as exc:
            raise ExpressionRuntimeError(f"{type(exc).__name__}: {exc}") from exc

    def to_str(self, ctx: RequestContext) -> str:
        """The value converted as .NET does (``null`` -> "", ``true`` -> "True", JSON indented)."""
        return to_string(self.evaluate(ctx))

    def __repr__(self) -> str:
        return f"CompiledExpression({self.source!r}, result_type={self.result_type!r})"


def compile_expression(text: str) -> CompiledExpression:
    """Compile ``@( expression )`` or ``@{ statements }``; raises ExpressionError (with ``offset``) if invalid."""
    return CompiledExpression(text)


def is_expression(text: str) -> bool:
    """Whether an attribute or element value is a policy expression (rather than literal text)."""
    return text.lstrip().startswith(("@(", "@{"))
