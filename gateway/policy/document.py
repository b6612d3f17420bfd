"""Policy documents: parsing, validation against the usage tables, and ``<base/>`` inheritance.

Inheritance (APIM semantics): the effective section of a scope is its own section with each ``<base/>``
replaced by the parent scope's *effective* section (global -> product -> API -> operation). Our choice
where APIM is silent: a scope that has no document, or a document without that section, inherits the
parent's effective section unchanged (as if the section were ``<base/>``); an *empty* section element
(``<outbound />``) drops everything inherited. ``<base/>`` at global scope expands to nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .base import Base, Policy, Scope, Section, get_policy_class
from .xml import Element, parse_xml

__all__ = (
    "SCOPE_ORDER",
    "SECTION_ORDER",
    "PolicyDocument",
    "effective_document",
    "merge_sections",
    "parse_document",
    "validate_document",
)

SECTION_ORDER = (Section.INBOUND, Section.BACKEND, Section.OUTBOUND, Section.ON_ERROR)
SCOPE_ORDER = (Scope.GLOBAL, Scope.PRODUCT, Scope.API, Scope.OPERATION)
_SECTION_NAMES = frozenset(s.value for s in Section)


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


def parse_document(text: str, scope: str | Scope) -> PolicyDocument:
    """Parse and validate a policy document of ``scope``; raises PolicyError with line/column."""
    scope = _scope(scope)
    root = parse_xml(text)
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
        sections[section] = tuple(_parse_policy(el, section, scope) for el in section_el.children)
    return PolicyDocument(scope, root, sections)


def _parse_policy(el: Element, section: Section, scope: Scope) -> Policy:
    try:
        cls = get_policy_class(el.tag)
    except LookupError:
        raise el.error(f"unknown policy <{el.tag}>") from None
    if section not in cls.sections:
        allowed = ", ".join(s.value for s in SECTION_ORDER if s in cls.sections)
        raise el.error(f"<{el.tag}> is not allowed in the {section.value} section (allowed: {allowed})")
    if scope not in cls.scopes:
        allowed = ", ".join(s.value for s in SCOPE_ORDER if s in cls.scopes)
        raise el.error(f"<{el.tag}> is not allowed at {scope.value} scope (allowed: {allowed})")
    policy = cls.from_element(el)
    policy.locate(el, section, scope)
    return policy


def validate_document(text: str, scope: str | Scope) -> None:
    """Raise PolicyError if ``text`` is not a valid policy document for ``scope``."""
    parse_document(text, scope)


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
