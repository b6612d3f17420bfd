"""Policy documents: safe XML parsing, validation against the policy usage tables, inheritance, policies.

The management plane imports ``validate_document`` / ``parse_document`` from here; nothing in this package
imports the HTTP layer at import time, so validation works without a running gateway.
"""

from __future__ import annotations

from . import backend, headers, response  # noqa: F401  (register the built-in policies)
from .base import ALL_SCOPES, Attr, Base, BindEnv, Policy, Scope, Section, get_policy_class, policy_names, register
from .document import (
    SCOPE_ORDER,
    SECTION_ORDER,
    PolicyDocument,
    effective_document,
    merge_sections,
    parse_document,
    validate_document,
)
from .errors import PolicyError
from .values import EXPRESSIONS_NOT_SUPPORTED, Literal, Value, parse_value
from .xml import Element, parse_xml, to_xml

__all__ = (
    "ALL_SCOPES",
    "EXPRESSIONS_NOT_SUPPORTED",
    "SCOPE_ORDER",
    "SECTION_ORDER",
    "Attr",
    "Base",
    "BindEnv",
    "Element",
    "Literal",
    "Policy",
    "PolicyDocument",
    "PolicyError",
    "Scope",
    "Section",
    "Value",
    "effective_document",
    "get_policy_class",
    "merge_sections",
    "parse_document",
    "parse_value",
    "parse_xml",
    "policy_names",
    "register",
    "to_xml",
    "validate_document",
)
