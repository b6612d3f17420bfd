"""``set-variable``: stores a value in ``context.Variables``.

APIM reference: https://learn.microsoft.com/azure/api-management/set-variable-policy
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import ALL_SECTIONS, Attr, Policy
from ..values import Value
from ..xml import Element

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response

__all__ = ("SetVariable",)


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
