"""Validators shared by the configuration models: resource names, URLs, header and query parameter names."""

import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

__all__ = (
    "HEADER_NAME_RE",
    "validate_header_name",
    "validate_http_url",
    "validate_query_name",
    "validate_resource_name",
)

# RFC 9110 token characters, the only ones allowed in a header field name.
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Unreserved URL characters (RFC 3986), so a query parameter name needs no escaping.
QUERY_NAME_RE = re.compile(r"^[A-Za-z0-9\-._~]+$")

validate_resource_name = RegexValidator(
    regex=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    message="Use letters, digits, '-', '.' and '_', starting with a letter or digit.",
    code="invalid_name",
)


def validate_header_name(value: str) -> None:
    if not HEADER_NAME_RE.match(value or ""):
        raise ValidationError(f"'{value}' is not a valid HTTP header name.", code="invalid_header_name")


def validate_query_name(value: str) -> None:
    if not QUERY_NAME_RE.match(value or ""):
        raise ValidationError(
            f"'{value}' is not a valid query parameter name (letters, digits, '-', '.', '_', '~').",
            code="invalid_query_name",
        )


def validate_http_url(value: str) -> None:
    """An absolute http(s) URL with a host. Unlike Django's URLValidator, single-label hosts
    (`http://ollama:11434`, docker service names) are accepted: backends are often on a private network."""
    if not value or any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        raise ValidationError("Enter an http or https URL without spaces.", code="invalid_url")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as exc:
        raise ValidationError(f"'{value}' is not a valid URL: {exc}.", code="invalid_url") from exc
    if parts.scheme not in ("http", "https"):
        raise ValidationError("The URL must start with http:// or https://.", code="invalid_url")
    if not parts.hostname:
        raise ValidationError("The URL must name a host.", code="invalid_url")
    if parts.fragment:
        raise ValidationError("The URL must not have a #fragment.", code="invalid_url")
