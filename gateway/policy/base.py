"""The Policy base class, how a policy declares its usage (names, sections, scopes, attributes), and ``<base/>``.

How to add a policy: docs/adding-a-policy.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

from gateway.types import ALL_SCOPES, ALL_SECTIONS, Scope, Section

from .errors import PolicyError
from .values import ExpressionRuntimeError, Locate, Value, parse_value
from .xml import Element

if TYPE_CHECKING:
    from gateway.blocklists import Blocklist
    from gateway.context import RequestContext
    from gateway.http.messages import Response
    from gateway.model import BackendTarget

__all__ = (
    "ALL_SCOPES",
    "ALL_SECTIONS",
    "Attr",
    "Base",
    "BindEnv",
    "ParseChild",
    "Policy",
    "Scope",
    "Section",
    "bind_steps",
    "check_boolean",
    "check_element",
    "text_value",
    "truth",
    "walk",
)


@dataclass(frozen=True, slots=True)
class Attr:
    """Declaration of one policy attribute (the ``schema.lua`` of a policy)."""

    required: bool = False
    choices: tuple[str, ...] | None = None
    default: str | None = None
    expressions: bool = True  # False: "policy expressions aren't allowed" for this attribute


class BindEnv(Protocol):
    """What a policy may resolve against when a snapshot is loaded (gateway side only)."""

    def backend(self, backend_id: str) -> BackendTarget:
        """The backend entity ``backend_id``; raises PolicyError when unknown."""
        ...

    def target_for_url(self, url: str) -> BackendTarget:
        """A forwarding target for a literal base URL; raises PolicyError when unusable."""
        ...

    def blocklist(self, name: str) -> Blocklist | None:
        """The content-safety blocklist ``name`` of the snapshot, None when it has none of that name."""
        ...


class Policy:
    """One policy statement of a section, compiled once when the snapshot loads.

    Subclasses declare their usage as class data (``name``, ``sections``, ``scopes``, ``attributes``,
    ``children``) and implement ``from_element`` (load time) and ``apply`` (per request). ``apply`` returns
    ``None`` to continue with the next step, or a Response to end the request with it.
    """

    name: ClassVar[str] = ""
    sections: ClassVar[frozenset[Section]] = frozenset()
    scopes: ClassVar[frozenset[Scope]] = ALL_SCOPES
    attributes: ClassVar[Mapping[str, Attr]] = {}
    children: ClassVar[frozenset[str]] = frozenset()
    allows_text: ClassVar[bool] = False
    # Flags the pipeline and forwarder can check before buffering (httpx ``Auth`` style).
    requires_request_body: ClassVar[bool] = False
    requires_response_body: ClassVar[bool] = False
    # The request body, when there is one, must be a JSON object (the token policies read its members): the
    # pipeline answers 400 before any step runs when it is not (gateway.request_checks). Expressions that read
    # the body as JSON answer the same 400 when they read it (gateway.expressions.errors.RequestBodyError).
    requires_json_body: ClassVar[bool] = False
    # Control-flow statements: the pipeline runs ``select(ctx)``'s steps in place of ``apply``.
    is_control: ClassVar[bool] = False

    __slots__ = ("column", "line", "policy_id", "scope", "section", "uses")

    def __init__(self) -> None:
        # what this statement's expressions read: "body", "response", "response_body" (set by the document parser)
        self.uses: frozenset[str] = frozenset()
        self.policy_id: str | None = None
        self.line: int | None = None
        self.column: int | None = None
        self.scope: Scope | None = None
        self.section: Section | None = None

    @classmethod
    def from_element(cls, el: Element) -> Policy:
        """Validate ``el`` and build the policy. Raises PolicyError (with position) on anything wrong."""
        raise NotImplementedError(f"{cls.__name__}.from_element() must be overridden")

    @classmethod
    def build(cls, el: Element, parse_child: ParseChild) -> Policy:
        """Build from ``el`` inside a document. Policies that hold other policies (``choose``) override this and
        compile their nested statements with ``parse_child``, which applies the section and scope rules."""
        return cls.from_element(el)

    def substeps(self) -> Iterable[Policy]:
        """Policies nested in this one (``choose`` branches), for walks over a pipeline."""
        return ()

    def select(self, ctx: RequestContext) -> tuple[str, tuple[Policy, ...]]:
        """Control steps (``is_control``): the label and the steps of the branch to run for this request."""
        raise NotImplementedError(f"{type(self).__name__} is not a control step")

    def bind(self, env: BindEnv) -> None:
        """Resolve references (backend ids, URLs) when the snapshot loads. Default: nothing to resolve."""

    def load_warnings(self) -> tuple[str, ...]:
        """Advice on a valid statement that likely does not do what its author meant. The gateway logs each as a
        WARNING when it loads a snapshot; the management plane accepts the statement as it is. Default: none."""
        return ()

    async def apply(self, ctx: RequestContext) -> Response | None:
        raise NotImplementedError(f"{type(self).__name__}.apply() must be overridden")

    def trace_details(self, ctx: RequestContext) -> dict[str, Any] | None:
        """Extra fields for the trace entry of this step (only called when tracing)."""
        return None

    # helpers for subclasses

    @classmethod
    def check_element(cls, el: Element, *, text_allowed: bool | None = None) -> dict[str, Value]:
        """Check attributes, child tags and text of ``el`` against the declaration; return attribute Values.

        Missing optional attributes with a default are filled in. The ``id`` attribute is always accepted.
        """
        return check_element(
            el,
            cls.attributes,
            cls.children,
            cls.allows_text if text_allowed is None else text_allowed,
        )

    def locate(self, el: Element, section: Section | None, scope: Scope | None) -> None:
        self.policy_id = el.attrs.get("id")
        self.line = el.line
        self.column = el.column
        self.section = section
        self.scope = scope

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} line={self.line}>"


ParseChild = Callable[[Element], "Policy"]
"""Compiles one nested policy element with the rules of the enclosing section and scope."""


def _locate(el: Element, attr: str | None) -> Locate:
    return lambda offset: el.value_position(attr, offset)


def text_value(el: Element, where: str | None = None, *, expressions: bool = True) -> Value:
    """The text of a text-only child such as ``<value>`` as a Value (an expression error points inside it)."""
    if el.attrs:
        raise el.error(f"<{el.tag}> takes no attributes")
    if el.children:
        raise el.children[0].error(f"<{el.tag}> must contain text only")
    return parse_value(el.text, where=where or f"<{el.tag}>", locate=_locate(el, None), expressions=expressions)


MSG_NOT_BOOLEAN: Final = "The condition of <when> must evaluate to a Boolean, got {}."
_LITERAL_BOOLS: Final = {"true": True, "false": False}


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


def check_element(
    el: Element, attributes: Mapping[str, Attr], children: Iterable[str], text_allowed: bool
) -> dict[str, Value]:
    for attr_name in el.attrs:
        if attr_name != "id" and attr_name not in attributes:
            allowed = ", ".join(sorted(attributes)) or "none"
            raise el.error(f"<{el.tag}>: unknown attribute '{attr_name}' (allowed: {allowed})")
    values: dict[str, Value] = {}
    for attr_name, spec in attributes.items():
        raw = el.attrs.get(attr_name)
        if raw is None:
            if spec.required:
                raise el.error(f"<{el.tag}>: missing required attribute '{attr_name}'")
            if spec.default is None:
                continue
            raw = spec.default
        value = parse_value(
            raw,
            where=f"<{el.tag}> attribute '{attr_name}'",
            line=el.line,
            column=el.column,
            locate=_locate(el, attr_name),
            expressions=spec.expressions,
        )
        if spec.choices is not None and value.is_literal and value.literal not in spec.choices:
            raise el.error(f"<{el.tag}>: attribute '{attr_name}' must be one of {', '.join(spec.choices)}, got {raw!r}")
        values[attr_name] = value
    allowed_children = frozenset(children)
    for child in el.children:
        if child.tag not in allowed_children:
            raise child.error(f"<{child.tag}> is not allowed inside <{el.tag}>")
    if not text_allowed and el.text.strip():
        raise el.error(f"<{el.tag}> must not contain text")
    return values


def bind_steps(steps: Iterable[Policy], env: BindEnv) -> None:
    """Bind each of ``steps``; an error without a position gets the position of the step that raised it."""
    for step in steps:
        try:
            step.bind(env)
        except PolicyError as exc:
            if exc.line is None:
                raise PolicyError(exc.message, step.line, step.column) from None
            raise


def walk(steps: Iterable[Policy]) -> Iterable[Policy]:
    """Every policy of ``steps`` and, depth first, the policies nested in them."""
    for step in steps:
        yield step
        yield from walk(step.substeps())


class Base(Policy):
    """``<base/>``: where the parent scope's same section is spliced in (a no-op at global scope)."""

    name = "base"
    sections = ALL_SECTIONS
    __slots__ = ()

    @classmethod
    def from_element(cls, el: Element) -> Base:
        cls.check_element(el)
        return cls()

    async def apply(self, ctx: RequestContext) -> Response | None:  # pragma: no cover - expanded away
        return None
