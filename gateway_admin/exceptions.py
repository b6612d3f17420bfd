"""One JSON error shape for the REST API: every 4xx names the problem, nothing leaks a traceback.

* field errors: `{"<field>": ["message", ...]}` (400), whole-request errors: `{"detail": "message"}`;
* a uniqueness failure, a delete blocked by references, or any `Conflict` raised by a service answers 409;
* a body over DATA_UPLOAD_MAX_MEMORY_SIZE answers 413 (see `gateway_admin.api.parsers`).
"""

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import ProtectedError, RestrictedError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.fields import get_error_detail
from rest_framework.views import exception_handler as drf_exception_handler

__all__ = ("Conflict", "exception_handler")


class Conflict(exceptions.APIException):
    """The request is valid but clashes with existing configuration (a duplicate name, a referenced object)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current configuration."
    default_code = "conflict"


def exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):
        exc = exceptions.APIException("Request body is too large.")
        exc.status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, ProtectedError | RestrictedError):
        exc = Conflict(_protected_message(exc))
    elif isinstance(exc, IntegrityError):
        # Validators catch duplicates first; this is the race between two concurrent writers.
        exc = Conflict("The change conflicts with the stored configuration (e.g. a concurrent write took the name).")
    elif isinstance(exc, DjangoValidationError):
        # A model's full_clean() in a service: keep the messages and codes ('unique' still answers 409).
        detail = get_error_detail(exc)
        exc = exceptions.ValidationError(detail if isinstance(detail, dict) else {"detail": detail})
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.ValidationError) and _only_unique(exc.get_codes()):
        response.status_code = status.HTTP_409_CONFLICT
    return response


def _only_unique(codes) -> bool:
    """True when every error code in a (nested) ValidationError is 'unique': a duplicate, hence a conflict."""
    flat = list(_flatten(codes))
    return bool(flat) and all(code == "unique" for code in flat)


def _flatten(codes):
    if isinstance(codes, dict):
        for value in codes.values():
            yield from _flatten(value)
    elif isinstance(codes, list | tuple):
        for value in codes:
            yield from _flatten(value)
    else:
        yield codes


def _protected_message(exc) -> str:
    referrers = getattr(exc, "protected_objects", None) or getattr(exc, "restricted_objects", ())
    objects = sorted({f"{obj._meta.verbose_name} '{obj}'" for obj in referrers})
    return "Cannot delete: still referenced by " + ", ".join(objects) + "."
