"""Policy documents: validation (through the gateway's own validator), read, write and delete per scope, and the
effective policy of an operation (APIM's "Calculate effective policy")."""

from contextlib import suppress

from django.db import transaction
from rest_framework.exceptions import ValidationError

from backends.models import Backend
from gateway.contract import (
    Element,
    PolicyError,
    effective_document,
    parse_document,
    rawxml_to_xml,
    to_rawxml,
    to_xml,
    xml_to_rawxml,
)
from named_values.crypto import SecretDecryptionError
from named_values.models import NamedValue
from named_values.references import find_references

from .choices import PolicyContentFormatChoices, PolicyFormatChoices, PolicyScopeChoices
from .models import Policy
from .references import backend_references_in

__all__ = (
    "DEFAULT_GLOBAL_POLICY",
    "delete_policy",
    "effective_policy",
    "export_policy",
    "get_policy",
    "render_policy",
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


def validate_policy(value: str, scope: str, format: str = PolicyContentFormatChoices.XML) -> str:
    """Raise a 400 `ValidationError({"value": ["line L, column C: …"]})` unless the document is valid at `scope`.

    The document must pass the gateway's validator (safe parsing, sections, elements allowed at the scope, policy
    expressions that compile) with its `{{named values}}` substituted as a gateway does, and every named value and
    `backend-id` it names must exist, so a saved document never makes a snapshot unloadable. Positions are those
    of `value` as sent (also for `rawxml`). Returns the document in the stored `xml` format.
    """
    named = find_references(value)
    existing, values = _named_values({ref.name for ref in named})
    try:
        document = parse_document(value, str(scope), str(format), named_values=values)
    except PolicyError as exc:
        raise ValidationError({"value": [str(exc)]}, code="invalid") from exc
    errors = [
        f"{_position(ref.line, ref.column)}named value '{ref.name}' does not exist."
        for ref in named
        if ref.name not in existing
    ]
    backends = backend_references_in(document.root)
    existing = set(Backend.objects.filter(name__in={ref.name for ref in backends}).values_list("name", flat=True))
    errors += [
        f"{_position(ref.line, ref.column)}backend '{ref.name}' does not exist."
        for ref in backends
        if ref.name not in existing
    ]
    if errors:
        raise ValidationError({"value": errors}, code="invalid")
    return value if format == PolicyContentFormatChoices.XML else rawxml_to_xml(value)


def _named_values(names: set[str]) -> tuple[set[str], dict[str, str]]:
    """Which of `names` exist, and their values (a secret that cannot be decrypted is left unsubstituted)."""
    existing, values = set(), {}
    for named_value in NamedValue.objects.filter(name__in=names):
        existing.add(named_value.name)
        with suppress(SecretDecryptionError):
            values[named_value.name] = named_value.value
    return existing, values


def export_policy(value: str, format: str = PolicyContentFormatChoices.XML) -> str:
    """A stored (`xml`) document in `format`; `rawxml` keeps the layout and unescapes the expressions."""
    return xml_to_rawxml(value) if format == PolicyContentFormatChoices.RAWXML else value


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
def set_policy(scope: str, owner, value: str, format: str = PolicyContentFormatChoices.XML) -> tuple[Policy, bool]:
    """Validate and store the document of one scope (always as `xml`); returns the policy and whether it was created."""
    canonical = validate_policy(value, scope, format)
    lookup = _owner_filter(scope, owner)
    policy = Policy.objects.select_for_update().filter(**lookup).first()
    created = policy is None
    if created:
        policy = Policy(**lookup)
    policy.format, policy.value = PolicyFormatChoices.XML, canonical
    policy.save()
    return policy, created


@transaction.atomic
def delete_policy(scope: str, owner=None) -> bool:
    policy = get_policy(scope, owner)
    if policy is None:
        return False
    policy.delete()
    return True


def effective_policy(operation, product=None) -> Element:
    """The document that runs for `operation` (in `product`'s context when given): every scope's document with
    `<base/>` expanded, global -> product -> API -> operation, plus the `forward-request` the gateway adds when no
    scope forwards. Scopes without a document inherit their parent's sections unchanged."""
    documents = [
        _stored(PolicyScopeChoices.GLOBAL, None) or DEFAULT_GLOBAL_POLICY,
        _stored(PolicyScopeChoices.PRODUCT, product) if product is not None else None,
        _stored(PolicyScopeChoices.API, operation.api),
        _stored(PolicyScopeChoices.OPERATION, operation),
    ]
    try:
        root = effective_document(*documents)
    except PolicyError as exc:  # a document stored before the validator became stricter
        raise ValidationError({"detail": f"a stored policy document is no longer valid: {exc}"}) from exc
    backend = next((section for section in root.children if section.tag == "backend"), None)
    if backend is None:
        backend = Element("backend")
        sections = [section.tag for section in root.children]
        position = sum(1 for tag in sections if tag == "inbound")
        root.children.insert(position, backend)
    if not any(el.tag == "forward-request" for el in backend.iter()):
        backend.children.append(Element("forward-request"))
    return root


def render_policy(root: Element, format: str = PolicyContentFormatChoices.XML) -> str:
    return to_rawxml(root) if format == PolicyContentFormatChoices.RAWXML else to_xml(root)


def _stored(scope: str, owner) -> str | None:
    policy = get_policy(scope, owner)
    return policy.value if policy is not None else None
