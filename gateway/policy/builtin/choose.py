"""``choose`` / ``when`` / ``otherwise``: runs the statements of the first branch whose condition is true.

APIM reference: https://learn.microsoft.com/azure/api-management/choose-policy

``choose`` holds nested statements compiled with the rules of its section and scope. It is a *control* step: the
pipeline asks it which statements to run (``select``) and runs them itself, so tracing, errors and short-circuits
work the same at any depth.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from ..base import ALL_SECTIONS, Attr, BindEnv, ParseChild, Policy, bind_steps, check_boolean, check_element, truth
from ..values import Value
from ..xml import Element

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.http.messages import Response

__all__ = ("Choose",)

_WHEN_ATTRS: Final = {"condition": Attr(required=True)}

Branch = tuple[str, tuple[Policy, ...]]


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
