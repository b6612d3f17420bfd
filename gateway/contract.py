"""What the management plane may use of the gateway: one public module, so the data plane's modules can move.

The Django apps import from here (and ``gateway.usage.record`` for the usage record), never from other gateway modules.
Everything here is re-exported; the definitions stay where they belong.
"""

from __future__ import annotations

from gateway.blocklists import ITEM_KINDS as BLOCKLIST_ITEM_KINDS
from gateway.blocklists import check_item as check_blocklist_item
from gateway.limits.base import PERIODS
from gateway.metrics import metric_prefix
from gateway.policy import (
    Element,
    PolicyError,
    effective_document,
    is_expression,
    parse_document,
    parse_value,
    parse_xml,
    rawxml_to_xml,
    to_rawxml,
    to_xml,
)
from gateway.policy.builtin._safety import BUILTIN_BACKEND as CONTENT_SAFETY_BUILTIN
from gateway.policy.builtin._safety import CATEGORIES as CONTENT_SAFETY_CATEGORIES
from gateway.policy.builtin.llm_emit_token_metric import BUILT_IN_DIMENSIONS
from gateway.policy.builtin.llm_token_limit import MAX_TOKENS
from gateway.policy.rawxml import xml_to_rawxml
from gateway.secrets import hash_key, sign_trace_token, snapshot_fernet, trace_key
from gateway.snapshot import Problem, check_snapshot

__all__ = (
    "BLOCKLIST_ITEM_KINDS",
    "BUILT_IN_DIMENSIONS",
    "CONTENT_SAFETY_BUILTIN",
    "CONTENT_SAFETY_CATEGORIES",
    "MAX_TOKENS",
    "PERIODS",
    "Element",
    "PolicyError",
    "Problem",
    "check_blocklist_item",
    "check_snapshot",
    "effective_document",
    "hash_key",
    "is_expression",
    "metric_prefix",
    "parse_document",
    "parse_value",
    "parse_xml",
    "rawxml_to_xml",
    "sign_trace_token",
    "snapshot_fernet",
    "to_rawxml",
    "to_xml",
    "trace_key",
    "xml_to_rawxml",
)
