"""Control flow and variables: ``choose`` / ``when`` / ``otherwise`` and ``set-variable``.

``choose`` holds nested statements compiled with the rules of its section and scope. It is a *control* step: the
pipeline asks it which statements to run (``select``) and runs them itself, so tracing, errors and short-circuits
work the same at any depth.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from .base import ALL_SECTIONS, Attr, BindEnv, ParseChild, Policy, bind_steps, check_element, register
from .values import ExpressionRuntimeError, Value
from .xml import Element

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response

__all__ = ("Choose", "SetVariable", "truth")

MSG_NOT_BOOLEAN: Final = "The condition of <when> must evaluate to a Boolean, got {}."
_WHEN_ATTRS: Final = {"condition": Attr(required=True)}
_LITERAL_BOOLS: Final = {"true": True, "false": False}

Branch = tuple[str, tuple[Policy, ...]]


def truth(value: Value, ctx: RequestContext) -> bool:
    """A Boolean value: a literal ``true``/``false`` (checked at load time) or an expression's ``bool`` result."""
    if value.is_literal:
        return _LITERAL_BOOLS[value.literal.strip().lower()]
    result = value.evaluate_object(ctx)
    if not isinstance(result, bool):
        raise ExpressionRuntimeError(MSG_NOT_BOOLEAN.format(type(result).__name__))
    return result


def check_boolean(value: Value, el: Element, attr: str) -> None:
    """Load-time check of a Boolean attribute: literals must be ``true``/``false``, expressions must yield bool."""
    if value.is_literal:
        if value.literal.strip().lower() not in _LITERAL_BOOLS:
            raise el.error(f"<{el.tag}>: attribute '{attr}' must be true, false or a Boolean expression")
        return
    result_type = getattr(getattr(value, "compiled", None), "result_type", None)
    if isinstance(result_type, str) and result_type not in ("bool", "bool?", "object", "dynamic", "JToken"):
        raise el.value_error(attr, f"<{el.tag}>: attribute '{attr}' must be a Boolean expression, not {result_type}")


@register
class Choose(Policy):
    """``<choose><when condition="…">…</when>…<otherwise>…</otherwise></choose>``: the first true branch runs."""

    name = "choose"
    sections = ALL_SECTIONS
    is_control = True
    __slots__ = ("branches", "otherwise")

    def __init__(self, branches: tuple[tuple[Value, tuple[Policy, ...]], ...], otherwise: tuple[Policy, ...]):
        super().__init__()
        self.branches = branches
        self.otherwise = otherwise

    @classmethod
    def from_element(cls, el: Element) -> Choose:
        raise el.error("<choose> holds other policies and can only be compiled within a document")

    @classmethod
    def build(cls, el: Element, parse_child: ParseChild) -> Choose:
        check_element(el, {}, {"when", "otherwise"}, False)
        branches: list[tuple[Value, tuple[Policy, ...]]] = []
        otherwise: tuple[Policy, ...] | None = None
        for child in el.children:
            if otherwise is not None:
                raise child.error(f"<{child.tag}> must not follow <otherwise> (it must be the last branch)")
            if child.tag == "when":
                condition = _branch_attrs(child, _WHEN_ATTRS)["condition"]
                check_boolean(condition, child, "condition")
                branches.append((condition, tuple(parse_child(c) for c in child.children)))
            else:
                _branch_attrs(child, {})
                otherwise = tuple(parse_child(c) for c in child.children)
        if not branches:
            raise el.error("<choose> needs at least one <when>")
        return cls(tuple(branches), otherwise or ())

    def substeps(self) -> Iterable[Policy]:
        for _, steps in self.branches:
            yield from steps
        yield from self.otherwise

    def bind(self, env: BindEnv) -> None:
        bind_steps(self.substeps(), env)

    def select(self, ctx: RequestContext) -> Branch:
        """The label (``when[2]``, ``otherwise``; 1-based like APIM's error paths) and steps of the branch to run."""
        for index, (condition, steps) in enumerate(self.branches, 1):
            if truth(condition, ctx):
                return f"when[{index}]", steps
        return "otherwise", self.otherwise

    async def apply(self, ctx: RequestContext) -> Response | None:  # pragma: no cover - the pipeline runs select()
        raise NotImplementedError("<choose> is run by the pipeline through select()")


def _branch_attrs(el: Element, attributes: dict[str, Attr]) -> dict[str, Value]:
    if el.text.strip():
        raise el.error(f"<{el.tag}> must not contain text")
    return check_element(el, attributes, {c.tag for c in el.children}, True)


@register
class SetVariable(Policy):
    """``<set-variable name="x" value="…"/>``: stores a value in ``context.Variables`` (an expression keeps its type:
    bool, int, string, JSON ...; a literal is a string)."""

    name = "set-variable"
    sections = ALL_SECTIONS
    attributes = {"name": Attr(required=True, expressions=False), "value": Attr(required=True)}
    __slots__ = ("value", "variable")

    def __init__(self, variable: str, value: Value) -> None:
        super().__init__()
        self.variable = variable
        self.value = value

    @classmethod
    def from_element(cls, el: Element) -> SetVariable:
        attrs = cls.check_element(el)
        variable = attrs["name"].literal
        if not variable.strip():
            raise el.error("<set-variable>: 'name' must not be empty")
        return cls(variable, attrs["value"])

    async def apply(self, ctx: RequestContext) -> Response | None:
        value = self.value
        ctx.variables[self.variable] = value.literal if value.is_literal else value.evaluate_object(ctx)
        return None

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        return {"name": self.variable, "value": ctx.variables.get(self.variable)}
