"""Policy documents: safe XML parsing, validation against the policy usage tables, inheritance, policies.

The management plane imports ``validate_document`` / ``parse_document`` from here; nothing in this package
imports the HTTP layer at import time, so validation works without a running gateway.
"""

from __future__ import annotations

from . import backend, control, headers, query, ratelimit, response, token_limit, token_metric  # noqa: F401
from .base import (
    ALL_SCOPES,
    Attr,
    Base,
    BindEnv,
    Policy,
    Scope,
    Section,
    bind_steps,
    get_policy_class,
    policy_names,
    register,
    walk,
)
from .catalog import ALIASES, CATALOG
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
from .values import EXPRESSIONS_NOT_ALLOWED, Expression, Literal, Value, is_expression, parse_value
from .xml import Element, parse_xml, to_xml

__all__ = (
    "ALIASES",
    "ALL_SCOPES",
    "CATALOG",
    "EXPRESSIONS_NOT_ALLOWED",
    "FORMATS",
    "SCOPE_ORDER",
    "SECTION_ORDER",
    "Attr",
    "Base",
    "BindEnv",
    "Element",
    "Expression",
    "Literal",
    "Policy",
    "PolicyDocument",
    "PolicyError",
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
    "register",
    "to_rawxml",
    "to_xml",
    "validate_document",
    "walk",
)
