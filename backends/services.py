"""Backend behaviour: delete protection against policies that route to the backend."""

from django.db import transaction

from gateway_admin.exceptions import Conflict

from .models import Backend

__all__ = ("delete_backend", "find_referrers")


def find_referrers(name: str) -> list[str]:
    """Descriptions of the policy documents whose `set-backend-service backend-id` names this backend."""
    from policies.models import Policy
    from policies.references import backend_references

    return [
        str(policy)
        for policy in Policy.objects.select_related("product", "api", "operation__api")
        if any(ref.name == name for ref in backend_references(policy.value))
    ]


@transaction.atomic
def delete_backend(backend: Backend) -> None:
    referrers = find_referrers(backend.name)
    if referrers:
        raise Conflict(f"Backend '{backend.name}' is referenced by {', '.join(referrers)}.")
    backend.delete()
