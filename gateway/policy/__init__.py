"""Policy documents: safe XML parsing, validation against the policies' declared usage, inheritance, policies.

The management plane imports ``validate_document`` / ``parse_document`` from here; nothing in this package
imports the HTTP layer at import time, so validation works without a running gateway.
"""

from __future__ import annotations

from . import registry
from .base import (
    ALL_SCOPES,
    Attr,
    Base,
    BindEnv,
    Policy,
    Scope,
    Section,
    bind_steps,
    walk,
)
from .builtin import BUILTINS
from .catalog import ALIASES, IMPLEMENTED, KNOWN, UNSUPPORTED
from .document import (
    FORMATS,
    SCOPE_ORDER,
    SECTION_ORDER,
    PolicyDocument,
    effective_document,
    merge_sections,
    parse_document,
    parse_tree,
    validate_document,
)
from .errors import PolicyError
from .rawxml import rawxml_to_xml, to_rawxml
from .registry import Registry, get_policy_class, policy_names
from .values import EXPRESSIONS_NOT_ALLOWED, Expression, Literal, Value, is_expression, parse_value
from .xml import Element, parse_xml, to_xml

# The gateway's policies: the built-in ones, from their one list (docs/adding-a-policy.md).
REGISTRY = Registry(BUILTINS)
registry.install(REGISTRY)

__all__ = (
    "ALIASES",
    "ALL_SCOPES",
    "BUILTINS",
    "EXPRESSIONS_NOT_ALLOWED",
    "FORMATS",
    "IMPLEMENTED",
    "KNOWN",
    "REGISTRY",
    "SCOPE_ORDER",
    "SECTION_ORDER",
    "UNSUPPORTED",
    "Attr",
    "Base",
    "BindEnv",
    "Element",
    "Expression",
    "Literal",
    "Policy",
    "PolicyDocument",
    "PolicyError",
    "Registry",
    "Scope",
    "Section",
    "Value",
    "bind_steps",
    "effective_document",
    "get_policy_class",
    "is_expression",
    "merge_sections",
    "parse_document",
    "parse_tree",
    "parse_value",
    "parse_xml",
    "policy_names",
    "rawxml_to_xml",
    "to_rawxml",
    "to_xml",
    "validate_document",
    "walk",
)
