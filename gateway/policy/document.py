"""Policy documents: parsing, validation against the usage tables, and ``<base/>`` inheritance.

Inheritance (APIM semantics): the effective section of a scope is its own section with each ``<base/>``
replaced by the parent scope's *effective* section (global -> product -> API -> operation). Our choice
where APIM is silent: a scope that has no document, or a document without that section, inherits the
parent's effective section unchanged (as if the section were ``<base/>``); an *empty* section element
(``<outbound />``) drops everything inherited. ``<base/>`` at global scope expands to nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from xml.sax.saxutils import escape

from .base import Base, Policy, Scope, Section
from .catalog import rejection
from .errors import PolicyError
from .rawxml import rawxml_source
from .registry import Registry, installed
from .values import collect_expressions
from .xml import Element, OffsetMap, Source, normalize_newlines, parse_xml

__all__ = (
    "FORMATS",
    "SCOPE_ORDER",
    "SECTION_ORDER",
    "PolicyDocument",
    "effective_document",
    "merge_sections",
    "parse_document",
    "parse_tree",
    "policy_class",
    "validate_document",
)

SECTION_ORDER = (Section.INBOUND, Section.BACKEND, Section.OUTBOUND, Section.ON_ERROR)
SCOPE_ORDER = (Scope.GLOBAL, Scope.PRODUCT, Scope.API, Scope.OPERATION)
_SECTION_NAMES = frozenset(s.value for s in Section)
FORMATS = ("xml", "rawxml")
# the syntax of gateway.snapshot's substitution: {{name}}, the name without spaces
NAMED_VALUE_RE = re.compile(r"\{\{([A-Za-z0-9\-._]+)\}\}")
_XML_QUOTES = {'"': "&quot;", "'": "&apos;"}
_USES = {"body": "uses_body", "response": "uses_response", "response_body": "uses_response_body"}


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """A parsed, validated document of one scope. ``sections`` holds only the sections present."""

    scope: Scope
    root: Element
    sections: Mapping[Section, tuple[Policy, ...]]

    def section_elements(self) -> dict[Section, list[Element]]:
        return {Section(child.tag): list(child.children) for child in self.root.children}


def _scope(scope: str | Scope) -> Scope:
    try:
        return Scope(scope)
    except ValueError:
        raise ValueError(f"unknown policy scope {scope!r} (expected one of: global, product, api, operation)") from None


def parse_tree(text: str, format: str = "xml", named_values: Mapping[str, str] | None = None) -> Element:
    """The element tree of a document in ``format`` (``xml`` or ``rawxml``); positions are in ``text``.

    ``named_values`` substitutes ``{{name}}`` references first (XML-escaped, as a gateway does when it loads the
    document); unknown names stay as written. Positions inside a substituted value point at its reference.
    """
    if not isinstance(text, str):
        raise PolicyError("policy document must be a string")
    if format == "xml":
        source = Source(normalize_newlines(text))
    elif format == "rawxml":
        source = rawxml_source(text)
    else:
        raise ValueError(f"unknown policy format {format!r} (expected one of: {', '.join(FORMATS)})")
    if named_values:
        source = _substitute(source, named_values)
    return parse_xml(source.text, source)


def _substitute(source: Source, values: Mapping[str, str]) -> Source:
    text, pieces, edits = source.text, [], OffsetMap()
    position = size = 0
    for match in NAMED_VALUE_RE.finditer(text):
        value = values.get(match.group(1))
        if value is None:
            continue
        replacement = escape(value, _XML_QUOTES)
        pieces.append(text[position : match.start()])
        size += match.start() - position
        edits.add(size, match.start(), len(replacement), match.end() - match.start())
        pieces.append(replacement)
        size += len(replacement)
        position = match.end()
    if not edits:
        return source
    pieces.append(text[position:])
    return source.edited("".join(pieces), edits)


def parse_document(
    text: str,
    scope: str | Scope,
    format: str = "xml",
    named_values: Mapping[str, str] | None = None,
    *,
    registry: Registry | None = None,
) -> PolicyDocument:
    """Parse and validate a policy document of ``scope``; raises PolicyError with line/column.

    Policy elements are looked up in ``registry`` (by default the gateway's, built from the built-in policies).
    """
    scope = _scope(scope)
    policies = installed() if registry is None else registry
    root = parse_tree(text, format, named_values)
    if root.tag != "policies":
        raise root.error(f"the root element must be <policies>, not <{root.tag}>")
    if root.attrs:
        raise root.error("<policies> takes no attributes")
    if root.text.strip():
        raise root.error("<policies> must not contain text")
    sections: dict[Section, tuple[Policy, ...]] = {}
    for section_el in root.children:
        if section_el.tag not in _SECTION_NAMES:
            raise section_el.error(
                f"unknown section <{section_el.tag}> (expected inbound, backend, outbound or on-error)"
            )
        section = Section(section_el.tag)
        if section in sections:
            raise section_el.error(f"section <{section_el.tag}> appears more than once")
        if section_el.attrs:
            raise section_el.error(f"<{section_el.tag}> takes no attributes")
        if section_el.text.strip():
            raise section_el.error(f"<{section_el.tag}> must not contain text")
        if section is Section.BACKEND and len(section_el.children) > 1:
            raise section_el.children[1].error("<backend> may hold only one policy element")
        sections[section] = tuple(_parse_policy(el, section, scope, policies) for el in section_el.children)
    return PolicyDocument(scope, root, sections)


def policy_class(name: str, registry: Registry | None = None) -> type[Policy] | None:
    """The registered class of a policy element name, None when there is none."""
    return (installed() if registry is None else registry).get(name)


def _parse_policy(el: Element, section: Section, scope: Scope, policies: Registry, nested: bool = False) -> Policy:
    cls = policies.get(el.tag)
    if cls is None:
        raise el.error(rejection(el.tag))
    if nested and cls is Base:
        raise el.error("<base /> may only appear directly in a section, not inside another policy")
    if section not in cls.sections:
        allowed = ", ".join(s.value for s in SECTION_ORDER if s in cls.sections)
        raise el.error(f"<{el.tag}> is not allowed in the {section.value} section (allowed: {allowed})")
    if scope not in cls.scopes:
        allowed = ", ".join(s.value for s in SCOPE_ORDER if s in cls.scopes)
        raise el.error(f"<{el.tag}> is not allowed at {scope.value} scope (allowed: {allowed})")
    with collect_expressions() as expressions:
        policy = cls.build(el, lambda child: _parse_policy(child, section, scope, policies, nested=True))
    policy.locate(el, section, scope)
    if expressions:
        policy.uses = frozenset(use for e in expressions for use in _USES if getattr(e.compiled, _USES[use], False))
    return policy


def validate_document(
    text: str,
    scope: str | Scope,
    format: str = "xml",
    named_values: Mapping[str, str] | None = None,
    *,
    registry: Registry | None = None,
) -> None:
    """Raise PolicyError if ``text`` is not a valid policy document for ``scope``."""
    parse_document(text, scope, format, named_values, registry=registry)


#
# Inheritance
#

T = TypeVar("T")


def merge_sections(
    levels: Sequence[Mapping[Section, Sequence[T]] | None], is_base: Callable[[T], bool]
) -> dict[Section, list[T]]:
    """Expand ``<base/>`` through ``levels`` (broadest first); returns every section defined anywhere."""
    effective: dict[Section, list[T]] = {}
    for level in levels:
        if level is None:
            continue
        for section, items in level.items():
            parent = effective.get(section, [])
            merged: list[T] = []
            for item in items:
                if is_base(item):
                    merged.extend(parent)
                else:
                    merged.append(item)
            effective[section] = merged
    return {section: effective[section] for section in SECTION_ORDER if section in effective}


DocumentInput = str | PolicyDocument | None


def effective_document(
    global_policy: DocumentInput = None,
    product_policy: DocumentInput = None,
    api_policy: DocumentInput = None,
    operation_policy: DocumentInput = None,
) -> Element:
    """The merged ``<policies>`` element tree for one operation in one product context.

    Inputs are document texts (validated at their scope) or parsed documents; ``None`` means no document.
    Serialise the result with ``to_xml``. Sections defined at no scope are omitted.
    """
    levels: list[dict[Section, list[Element]] | None] = []
    for scope, doc in zip(SCOPE_ORDER, (global_policy, product_policy, api_policy, operation_policy), strict=True):
        if isinstance(doc, str):
            doc = parse_document(doc, scope)
        levels.append(doc.section_elements() if doc is not None else None)
    merged = merge_sections(levels, lambda el: el.tag == Base.name)
    root = Element("policies")
    for section, elements in merged.items():
        root.children.append(Element(section.value, children=[el.copy() for el in elements]))
    return root
