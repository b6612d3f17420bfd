"""Policy documents: validation (through the gateway's own validator), read, write and delete per scope."""

from django.db import transaction
from rest_framework.exceptions import ValidationError

from backends.models import Backend
from gateway.policy import PolicyError, validate_document
from named_values.models import NamedValue
from named_values.references import find_references

from .choices import PolicyFormatChoices, PolicyScopeChoices
from .models import Policy
from .references import backend_references

__all__ = (
    "DEFAULT_GLOBAL_POLICY",
    "delete_policy",
    "get_policy",
    "set_policy",
    "validate_policy",
)

# What the global scope holds until someone writes a global document (APIM's default).
DEFAULT_GLOBAL_POLICY = "<policies><inbound/><backend><forward-request/></backend><outbound/><on-error/></policies>"

OWNER_FIELDS = {
    PolicyScopeChoices.GLOBAL: None,
    PolicyScopeChoices.PRODUCT: "product",
    PolicyScopeChoices.API: "api",
    PolicyScopeChoices.OPERATION: "operation",
}


def validate_policy(value: str, scope: str) -> None:
    """Raise a 400 `ValidationError({"value": ["line L, column C: …"]})` unless the document is valid at `scope`.

    The document must pass the gateway's validator (safe parsing, sections, elements allowed at the scope) and every
    `{{named value}}` and `backend-id` it names must exist, so a saved document never makes a snapshot unloadable.
    """
    try:
        validate_document(value, str(scope))
    except PolicyError as exc:
        raise ValidationError({"value": [str(exc)]}, code="invalid") from exc
    errors = []
    named = find_references(value)
    existing = set(NamedValue.objects.filter(name__in={ref.name for ref in named}).values_list("name", flat=True))
    errors += [
        f"{_position(ref.line, ref.column)}named value '{ref.name}' does not exist."
        for ref in named
        if ref.name not in existing
    ]
    backends = backend_references(value)
    existing = set(Backend.objects.filter(name__in={ref.name for ref in backends}).values_list("name", flat=True))
    errors += [
        f"{_position(ref.line, ref.column)}backend '{ref.name}' does not exist."
        for ref in backends
        if ref.name not in existing
    ]
    if errors:
        raise ValidationError({"value": errors}, code="invalid")


def _position(line, column) -> str:
    if line is None:
        return ""
    return f"line {line}, column {column}: " if column is not None else f"line {line}: "


def _owner_filter(scope: str, owner) -> dict:
    field = OWNER_FIELDS[scope]
    if field is None:
        return {"scope": scope}
    if owner is None:
        raise ValueError(f"A {scope} policy needs an owner.")
    return {"scope": scope, field: owner}


def get_policy(scope: str, owner=None) -> Policy | None:
    return Policy.objects.filter(**_owner_filter(scope, owner)).first()


@transaction.atomic
def set_policy(scope: str, owner, value: str, format: str = PolicyFormatChoices.XML) -> tuple[Policy, bool]:
    """Validate and store the document of one scope; returns the policy and whether it was created."""
    validate_policy(value, scope)
    lookup = _owner_filter(scope, owner)
    policy = Policy.objects.select_for_update().filter(**lookup).first()
    created = policy is None
    if created:
        policy = Policy(**lookup)
    policy.format, policy.value = format, value
    policy.save()
    return policy, created


@transaction.atomic
def delete_policy(scope: str, owner=None) -> bool:
    policy = get_policy(scope, owner)
    if policy is None:
        return False
    policy.delete()
    return True
