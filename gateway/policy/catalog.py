"""The APIM policy catalog: which policies Sluice implements, and what is said about the rest.

Registered policy classes declare their own sections and scopes; ``IMPLEMENTED`` only names them. ``UNSUPPORTED``
covers the other policies of the APIM policy reference
(https://learn.microsoft.com/azure/api-management/api-management-policies), so that a document copied from APIM
gets "not supported by Sluice yet" rather than "unknown policy", and a policy that only works in Azure says so.
``on-error`` admits the policies APIM allows there
(https://learn.microsoft.com/azure/api-management/api-management-error-handling-policies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .base import ALL_SCOPES, Scope, Section

__all__ = (
    "ALIASES",
    "IMPLEMENTED",
    "KNOWN",
    "MSG_MANAGED_IDENTITY",
    "MSG_NOT_SUPPORTED",
    "MSG_UNKNOWN",
    "UNSUPPORTED",
    "Usage",
    "rejection",
)

MSG_UNKNOWN: Final = "unknown policy <{name}>"
MSG_NOT_SUPPORTED: Final = "policy <{name}> is not supported by Sluice yet"
MSG_MANAGED_IDENTITY: Final = (
    "policy <authentication-managed-identity> cannot work outside Azure: a self-hosted gateway has no managed "
    "identity to get a token from. Keep the backend's key or token in a secret named value and send it with "
    '<set-header name="Authorization" exists-action="override"><value>Bearer {{my-token}}</value></set-header> '
    '(or "api-key"), or put it in the backend\'s credentials and use <set-backend-service backend-id="..."/>'
)

IN, BE, OUT, ERR = Section.INBOUND, Section.BACKEND, Section.OUTBOUND, Section.ON_ERROR
_ALL = frozenset(Section)
_NOT_GLOBAL = frozenset({Scope.PRODUCT, Scope.API, Scope.OPERATION})


@dataclass(frozen=True, slots=True)
class Usage:
    """Where a policy may appear (APIM's "Usage" block; workspaces are not modelled)."""

    sections: frozenset[Section]
    scopes: frozenset[Scope] = ALL_SCOPES
    message: str = MSG_NOT_SUPPORTED


def _u(*sections: Section, scopes: frozenset[Scope] = ALL_SCOPES, message: str = MSG_NOT_SUPPORTED) -> Usage:
    return Usage(frozenset(sections), scopes, message)


# The policies ``gateway.policy.builtin.BUILTINS`` registers (aliases included). Their usage is declared on their
# classes, nowhere else; tests/gateway/policy/test_registry.py holds this set and BUILTINS together.
IMPLEMENTED: Final[frozenset[str]] = frozenset(
    {
        "azure-openai-emit-token-metric",
        "azure-openai-semantic-cache-lookup",
        "azure-openai-semantic-cache-store",
        "azure-openai-token-limit",
        "base",
        "check-header",
        "choose",
        "forward-request",
        "limit-concurrency",
        "llm-content-safety",
        "llm-emit-token-metric",
        "llm-semantic-cache-lookup",
        "llm-semantic-cache-store",
        "llm-token-limit",
        "quota-by-key",
        "rate-limit-by-key",
        "retry",
        "return-response",
        "set-backend-service",
        "set-header",
        "set-query-parameter",
        "set-status",
        "set-variable",
    }
)

# The other policies of the APIM reference: where APIM allows them, and what a document using one is told.
UNSUPPORTED: Final[dict[str, Usage]] = {
    # document structure, control flow and variables (and what on-error admits)
    "include-fragment": _u(*_ALL),
    "set-method": _u(IN, ERR),
    "find-and-replace": _u(*_ALL),
    "send-request": _u(*_ALL),
    "send-one-way-request": _u(*_ALL),
    "log-to-eventhub": _u(*_ALL),
    "json-to-xml": _u(IN, OUT, ERR),
    "xml-to-json": _u(IN, OUT, ERR),
    "mock-response": _u(IN, OUT, ERR),
    "trace": _u(*_ALL),
    "wait": _u(IN, BE, OUT),
    # routing and transformation
    "set-body": _u(IN, BE, OUT),
    "rewrite-uri": _u(IN, scopes=_NOT_GLOBAL),
    "cors": _u(IN),
    "redirect-content-urls": _u(IN, OUT),
    "xsl-transform": _u(IN, OUT),
    # AI gateway
    # access restriction and authentication
    "rate-limit": _u(IN, scopes=_NOT_GLOBAL),
    "quota": _u(IN, scopes=_NOT_GLOBAL),
    "ip-filter": _u(IN),
    "validate-jwt": _u(IN),
    "validate-azure-ad-token": _u(IN),
    "validate-content": _u(IN, OUT),
    "validate-parameters": _u(IN),
    "validate-headers": _u(OUT),
    "validate-status-code": _u(OUT),
    "authentication-basic": _u(IN),
    "authentication-certificate": _u(IN),
    "authentication-managed-identity": _u(IN, message=MSG_MANAGED_IDENTITY),
    "get-authorization-context": _u(IN),
    # caching and metrics
    "cache-lookup": _u(IN),
    "cache-store": _u(OUT),
    "cache-lookup-value": _u(IN, BE, OUT),
    "cache-store-value": _u(IN, BE, OUT),
    "cache-remove-value": _u(IN, BE, OUT),
    "emit-metric": _u(IN, BE, OUT),
}

KNOWN: Final[frozenset[str]] = IMPLEMENTED | UNSUPPORTED.keys()

# APIM's Azure OpenAI names of the LLM policies. An implemented alias is a subclass of its policy that only renames it.
ALIASES: Final[dict[str, str]] = {
    "azure-openai-token-limit": "llm-token-limit",
    "azure-openai-emit-token-metric": "llm-emit-token-metric",
    "azure-openai-semantic-cache-lookup": "llm-semantic-cache-lookup",
    "azure-openai-semantic-cache-store": "llm-semantic-cache-store",
}


def rejection(name: str) -> str:
    """Why an element that is not a registered policy is refused (an implemented one only when left unregistered)."""
    usage = UNSUPPORTED.get(name)
    if usage is not None:
        return usage.message.replace("{name}", name)
    if name in IMPLEMENTED:
        return MSG_NOT_SUPPORTED.replace("{name}", name)
    return MSG_UNKNOWN.replace("{name}", name)
