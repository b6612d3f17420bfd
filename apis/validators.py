"""Validators for API paths and operation URL templates."""

import re

from django.core.exceptions import ValidationError

__all__ = ("RESERVED_API_NAMES", "validate_api_name", "validate_api_path", "validate_url_template")

# Names that would collide with list-level routes under /api/apis/.
RESERVED_API_NAMES = frozenset({"import-language-model"})

PATH_SEGMENT_RE = re.compile(r"^[A-Za-z0-9\-._~]+$")
# A template segment: unreserved/sub-delim characters and {parameter} placeholders.
TEMPLATE_SEGMENT_RE = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()+,;=:@%]|\{[A-Za-z0-9_\-]+\})*$")


def validate_api_name(value: str) -> None:
    if value in RESERVED_API_NAMES:
        raise ValidationError(f"'{value}' is reserved.", code="reserved_name")


def validate_api_path(value: str) -> None:
    """`gemini`, `llm/openai`: no leading or trailing slash, segments of [A-Za-z0-9-._~], no '.'/'..' segments."""
    if not value:
        raise ValidationError("The path may not be empty.", code="invalid_path")
    if value.startswith("/") or value.endswith("/"):
        raise ValidationError("The path must not start or end with '/'.", code="invalid_path")
    for segment in value.split("/"):
        if not PATH_SEGMENT_RE.match(segment) or segment in (".", ".."):
            raise ValidationError(
                f"Invalid path segment '{segment}': use letters, digits, '-', '.', '_' and '~'.", code="invalid_path"
            )


def validate_url_template(value: str) -> None:
    """`/chat/completions`, `/deployments/{deployment-id}/chat/completions`, `/*` (wildcard, last segment only)."""
    if not value.startswith("/"):
        raise ValidationError("The URL template must start with '/'.", code="invalid_template")
    segments = value[1:].split("/") if len(value) > 1 else []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "*":
            if index != last:
                raise ValidationError("'*' is only allowed as the last segment ('/*').", code="invalid_template")
        elif segment == "" and index != last:
            raise ValidationError("The URL template has an empty segment ('//').", code="invalid_template")
        elif not TEMPLATE_SEGMENT_RE.match(segment):
            raise ValidationError(
                f"Invalid URL template segment '{segment}' (no query string, spaces, or stray braces/wildcards).",
                code="invalid_template",
            )
