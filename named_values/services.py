"""Named value behaviour: create/update with encryption at rest, reference checks, delete protection."""

from collections.abc import Iterable

from django.db import transaction

from gateway_admin.exceptions import Conflict

from .models import NamedValue
from .references import referenced_names

__all__ = (
    "create_named_value",
    "delete_named_value",
    "find_referrers",
    "missing_named_values",
    "update_named_value",
)


def create_named_value(*, name: str, value: str, secret: bool = False, tags: Iterable[str] = ()) -> NamedValue:
    named_value = NamedValue(name=name, tags=list(tags))
    named_value.set_value(value, secret=secret)
    named_value.save()
    return named_value


def update_named_value(
    named_value: NamedValue,
    *,
    value: str | None = None,
    secret: bool | None = None,
    tags: Iterable[str] | None = None,
) -> NamedValue:
    """Change any of value, secret flag and tags; `value=None` keeps the current value (re-stored if the flag flips)."""
    if value is not None or (secret is not None and secret != named_value.secret):
        named_value.set_value(named_value.value if value is None else value, secret=secret)
    if tags is not None:
        named_value.tags = list(tags)
    named_value.save()
    return named_value


def find_referrers(name: str) -> list[str]:
    """Human descriptions of every backend and policy document that references `{{name}}`."""
    from backends.models import Backend
    from policies.models import Policy

    referrers = []
    for backend in Backend.objects.all():
        if name in referenced_names([*backend.credentials_header.values(), *backend.credentials_query.values()]):
            referrers.append(f"backend '{backend.name}'")
    for policy in Policy.objects.select_related("product", "api", "operation__api"):
        if name in referenced_names([policy.value]):
            referrers.append(str(policy))
    return referrers


@transaction.atomic
def delete_named_value(named_value: NamedValue) -> None:
    referrers = find_referrers(named_value.name)
    if referrers:
        raise Conflict(f"Named value '{named_value.name}' is referenced by {', '.join(referrers)}.")
    named_value.delete()


def missing_named_values(names: Iterable[str]) -> list[str]:
    """The names among `names` for which no named value exists, sorted."""
    wanted = set(names)
    existing = set(NamedValue.objects.filter(name__in=wanted).values_list("name", flat=True))
    return sorted(wanted - existing)
