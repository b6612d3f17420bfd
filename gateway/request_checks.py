"""Checks before a request is routed or its policies run: paths with ``.``/``..`` or empty segments, in any
encoding, are refused with 400 (never normalised), and the JSON body is checked for pipelines whose policies read
it. See docs/request-handling.md.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import unquote

import orjson

__all__ = (
    "MSG_BAD_PATH",
    "MSG_BODY_NOT_JSON",
    "MSG_BODY_NOT_OBJECT",
    "parse_json_body",
    "path_problem",
)

MSG_BAD_PATH: Final = "Invalid request path: {}."
MSG_BODY_NOT_JSON: Final = "Request body is not valid JSON: {}."
MSG_BODY_NOT_OBJECT: Final = "Request body is not valid JSON: a JSON object is expected, got {}."
_DOT_SEGMENTS: Final = "dot segments ('.' or '..') are not allowed"
_EMPTY_SEGMENTS: Final = "empty segments ('//') are not allowed"
_SEPARATORS: Final = re.compile(r"[/\\]")
_MAX_DECODES: Final = 3  # %25 nests: each round undoes one level of encoding
_JSON_NAMES: Final = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def path_problem(path: str) -> str | None:
    """The 400 message for ``path`` (a raw request path), or None when it may be routed."""
    if "." not in path and "//" not in path and "%" not in path and "\\" not in path:
        return None  # the common case: nothing to decode, no dot, no empty segment
    text = path
    for _ in range(_MAX_DECODES):
        problem = _segments_problem(text)
        if problem is not None:
            return MSG_BAD_PATH.format(problem)
        if "%" not in text:
            return None
        decoded = unquote(text, errors="surrogateescape")
        if decoded == text:
            return None
        text = decoded
    problem = _segments_problem(text)
    return MSG_BAD_PATH.format(problem) if problem is not None else None


def _segments_problem(text: str) -> str | None:
    segments = _SEPARATORS.split(text)
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if not segment:
            if 0 < index < last:  # the first is before the leading "/", the last after a trailing one
                return _EMPTY_SEGMENTS
            continue
        name = segment.split(";", 1)[0]
        if name == "." or name == "..":
            return _DOT_SEGMENTS
    return None


def parse_json_body(body: bytes, *, need_object: bool) -> tuple[Any, str | None]:
    """``(document, None)`` for a body orjson accepts, else ``(None, the 400 message)``.

    ``need_object``: anything other than a JSON object is refused too (the token policies read members).
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return None, MSG_BODY_NOT_JSON.format(_reason(exc))
    if need_object and type(document) is not dict:
        kind = "null" if document is None else _JSON_NAMES.get(type(document), "another value")
        return None, MSG_BODY_NOT_OBJECT.format(kind)
    return document, None


def _reason(exc: orjson.JSONDecodeError) -> str:
    """orjson's message, without the trailing position detail it repeats, and kept short."""
    message = str(exc.msg if hasattr(exc, "msg") else exc).rstrip(".")
    if len(message) > 200:
        message = message[:200] + "…"
    return f"{message} (line {exc.lineno}, column {exc.colno})"
