"""What a refused write says, as field errors a form can show: the same messages the REST API answers with."""

from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError, RestrictedError
from rest_framework.exceptions import APIException
from rest_framework.fields import get_error_detail

from gateway_admin.exceptions import _protected_message
from gateway_admin.safety import ConfigRejected, field_errors

__all__ = ("REFUSALS", "add_errors", "refusal_errors")

# Everything a service or serializer raises to refuse a write.
REFUSALS = (APIException, DjangoValidationError, ProtectedError, RestrictedError, ConfigRejected)


def refusal_errors(exc: Exception, *, kind: str | None = None, name: str | None = None) -> dict[str, list[str]]:
    """`{field: [message, ...]}`; whole-write errors under "detail"."""
    if isinstance(exc, ConfigRejected):
        return field_errors(exc, kind=kind, name=name)
    if isinstance(exc, ProtectedError | RestrictedError):
        return {"detail": [_protected_message(exc)]}
    detail = get_error_detail(exc) if isinstance(exc, DjangoValidationError) else exc.detail
    return _flatten(detail)


def _flatten(detail, prefix: str = "") -> dict[str, list[str]]:
    if isinstance(detail, dict):
        errors: dict[str, list[str]] = {}
        for key, value in detail.items():
            # a nested block's errors are named by their path: access_key.header_name
            name = (prefix or "detail") if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else key)
            for field, messages in _flatten(value, name).items():
                errors.setdefault(field, []).extend(messages)
        return errors
    if isinstance(detail, list | tuple):
        errors = {}
        for item in detail:
            for field, messages in _flatten(item, prefix).items():
                errors.setdefault(field, []).extend(messages)
        return errors
    return {prefix or "detail": [str(detail)]}


def add_errors(form: forms.Form, errors: dict[str, list[str]], aliases: dict[str, str] | None = None) -> None:
    """Put each message on the form field of that name (or its alias); the rest become non-field errors."""
    aliases = aliases or {}
    for field, messages in errors.items():
        head = field.partition(".")[0]  # a nested message (scope.scope) goes on its top field
        target = aliases.get(field, aliases.get(head, field if field in form.fields else head))
        for message in messages:
            form.add_error(target if target in form.fields else None, message)
