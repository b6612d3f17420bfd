"""Small vocabulary shared by every layer of the gateway: the pipeline sections and the policy scopes."""

from __future__ import annotations

from enum import StrEnum

__all__ = ("ALL_SCOPES", "ALL_SECTIONS", "Scope", "Section")


class Section(StrEnum):
    """A part of a policy document (and of the compiled pipeline)."""

    INBOUND = "inbound"
    BACKEND = "backend"
    OUTBOUND = "outbound"
    ON_ERROR = "on-error"


class Scope(StrEnum):
    """Where a policy document is attached."""

    GLOBAL = "global"
    PRODUCT = "product"
    API = "api"
    OPERATION = "operation"


ALL_SCOPES = frozenset(Scope)
ALL_SECTIONS = frozenset(Section)
