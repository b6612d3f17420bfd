"""``set-query-parameter``: adds, replaces, appends or deletes a query parameter of the request to the backend.

APIM reference: https://learn.microsoft.com/azure/api-management/set-query-parameter-policy
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, unquote_plus

from ..base import Attr, Policy, Section, text_value
from ..values import ExpressionRuntimeError, Value
from ..xml import Element

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response

__all__ = ("SetQueryParameter", "set_query_parameter")

ACTIONS: Final = ("override", "skip", "append", "delete")


def _encode(text: str) -> str:
    return quote(text, safe="-._~")


def set_query_parameter(query: str, name: str, action: str, values: tuple[str, ...]) -> str:
    """Apply one statement to an encoded query string (without ``?``); ``values`` are already encoded pairs."""
    pairs = [p for p in query.split("&") if p] if query else []
    present = [p for p in pairs if unquote_plus(p.partition("=")[0]) == name]
    if action == "skip" and present:
        return query
    if action in ("override", "delete") and present:
        pairs = [p for p in pairs if unquote_plus(p.partition("=")[0]) != name]
    if action != "delete":
        pairs.extend(values)
    return "&".join(pairs)


class SetQueryParameter(Policy):
    """``<set-query-parameter name="p" exists-action="override|skip|append|delete"><value>v</value>…``.

    Several ``<value>``s give the parameter several times (``p=a&p=b``).
    """

    name = "set-query-parameter"
    sections = frozenset({Section.INBOUND, Section.BACKEND})
    attributes = {
        "name": Attr(required=True),
        "exists-action": Attr(choices=ACTIONS, default="override"),
    }
    children = frozenset({"value"})
    __slots__ = ("action", "pairs", "param", "values")

    def __init__(self, param: Value, action: Value, values: tuple[Value, ...]) -> None:
        super().__init__()
        self.param = param
        self.action = action
        self.values = values
        # literal fast path: the encoded pairs, computed once
        self.pairs: tuple[str, ...] | None = None
        if param.is_literal and all(v.is_literal for v in values):
            self.pairs = tuple(f"{_encode(param.literal)}={_encode(v.literal)}" for v in values)

    @classmethod
    def from_element(cls, el: Element) -> SetQueryParameter:
        attrs = cls.check_element(el)
        name = attrs["name"]
        if name.is_literal and not name.literal:
            raise el.error("<set-query-parameter>: 'name' must not be empty")
        values = tuple(text_value(child) for child in el.children)
        return cls(name, attrs["exists-action"], values)

    async def apply(self, ctx: RequestContext) -> Response | None:
        param = self.param.literal if self.param.is_literal else self.param.evaluate(ctx)
        action = self.action.literal if self.action.is_literal else self.action.evaluate(ctx)
        if action not in ACTIONS:
            raise ExpressionRuntimeError(f"'exists-action' must be one of {', '.join(ACTIONS)}, got {action!r}.")
        pairs = self.pairs
        if pairs is None:
            encoded = _encode(param)
            pairs = tuple(f"{encoded}={_encode(v.evaluate(ctx))}" for v in self.values)
        ctx.query = set_query_parameter(ctx.query, param, action, pairs)
        return None

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        return {"name": self.param.source, "query": ctx.query}
