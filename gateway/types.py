"""Small vocabulary shared by every layer of the gateway: the pipeline sections and the policy scopes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ("ALL_SCOPES", "ALL_SECTIONS", "Deployment", "Scope", "Section")


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


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where this gateway runs, as expressions see it (``context.Deployment``, from ``ctx.services.deployment``)."""

    region: str = ""
    service_name: str = ""
    gateway_id: str = ""
    instance_id: str = ""
