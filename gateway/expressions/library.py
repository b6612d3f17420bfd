"""The allow-listed .NET library: members of object, string, the numeric types, char, Math, Convert, Encoding,
WebUtility and Uri, and the enums they use. Dates live in :mod:`.dates`, JSON, arrays and LINQ in :mod:`.jsonlib`.

Importing this module fills the tables of :mod:`.typesys`. Implementations take the receiver first (for static
members: the request context, which they ignore).
"""

from __future__ import annotations

import base64
import binascii
import html
import math
from collections.abc import Callable, Iterable
from typing import Any, Final
from urllib.parse import quote, unquote, unquote_plus

from .conversions import (
    INT_MAX,
    INT_MIN,
    LONG_MAX,
    LONG_MIN,
    check_long,
    not_null,
    parse_bool,
    parse_double,
    parse_int,
    to_bool,
    to_double,
    to_int,
)
from .dotnet import composite_format, equals, format_number, to_string
from .errors import ExpressionRuntimeError
from .jsonlib import iterate
from .runtime import MAX_STRING_LENGTH, MSG_STRING_TOO_LONG, check_length
from .typesys import BOOL, CHAR, DOUBLE, INT, JTOKEN, LONG, OBJECT, STRING, STRING_ARRAY, Param, define

__all__ = ()

MSG_OUT_OF_RANGE: Final = "Specified argument was out of the range of valid values. (Parameter '{}')"
MSG_INDEX_RANGE: Final = "Index was outside the bounds of the array."

_IGNORE_CASE: Final = frozenset({"OrdinalIgnoreCase", "CurrentCultureIgnoreCase", "InvariantCultureIgnoreCase"})
_URL_SAFE: Final = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!*()")


#
# object
#

_object = define(OBJECT)
_object.method("ToString", (), STRING, to_string)
_object.method("Equals", (Param("obj", OBJECT),), BOOL, equals)


#
# string
#


def _fold(text: str, comparison: str | None) -> str:
    return text.casefold() if comparison in _IGNORE_CASE else text


def _substring(s: str, start: int, length: int | None = None) -> str:
    if start < 0 or start > len(s):
        raise ExpressionRuntimeError(MSG_OUT_OF_RANGE.format("startIndex"))
    if length is None:
        return s[start:]
    if length < 0 or start + length > len(s):
        raise ExpressionRuntimeError(
            "Index and length must refer to a location within the string. (Parameter 'length')"
        )
    return s[start : start + length]


def _replace(s: str, old: str | None, new: str | None) -> str:
    if old is None:
        raise ExpressionRuntimeError("Value cannot be null. (Parameter 'oldValue')")
    if not old:
        raise ExpressionRuntimeError("The value cannot be an empty string. (Parameter 'oldValue')")
    new = new or ""
    if len(new) > len(old) and len(s) + s.count(old) * (len(new) - len(old)) > MAX_STRING_LENGTH:
        raise ExpressionRuntimeError(MSG_STRING_TOO_LONG)  # refused before the result is built
    return s.replace(old, new) if old in s else s


def _split(s: str, separator: str | None, options: str = "None") -> tuple[str, ...]:
    parts = s.split(separator) if separator else [s]
    if options == "TrimEntries":
        parts = [p.strip() for p in parts]
    if options == "RemoveEmptyEntries":
        parts = [p for p in parts if p]
    return tuple(parts)


def _index_of(s: str, value: str | None, start: int = 0, comparison: str | None = None) -> int:
    not_null(value, "value")
    if start < 0 or start > len(s):
        raise ExpressionRuntimeError(MSG_OUT_OF_RANGE.format("startIndex"))
    return _fold(s, comparison).find(_fold(value, comparison), start)  # type: ignore[arg-type]  # not_null above refused None, which mypy cannot see through it


def _pad(s: str, width: int, char: str, left: bool) -> str:
    if width < 0 or width > MAX_STRING_LENGTH:
        raise ExpressionRuntimeError(MSG_OUT_OF_RANGE.format("totalWidth"))
    return s.rjust(width, char) if left else s.ljust(width, char)


def _remove(s: str, start: int, count: int | None = None) -> str:
    if start < 0 or start > len(s) or (count is None and start == len(s)):
        raise ExpressionRuntimeError(MSG_OUT_OF_RANGE.format("startIndex"))
    if count is None:
        return s[:start]
    if count < 0 or start + count > len(s):
        raise ExpressionRuntimeError(MSG_OUT_OF_RANGE.format("count"))
    return s[:start] + s[start + count :]


def _string_char_at(s: str, index: int) -> str:
    if not 0 <= index < len(s):
        raise ExpressionRuntimeError(MSG_INDEX_RANGE)
    return s[index]


def _contains(s: str, value: str | None, comparison: str | None = None) -> bool:
    return _fold(not_null(value, "value"), comparison) in _fold(s, comparison)


def _starts_with(s: str, value: str | None, comparison: str | None = None) -> bool:
    return _fold(s, comparison).startswith(_fold(not_null(value, "value"), comparison))


def _ends_with(s: str, value: str | None, comparison: str | None = None) -> bool:
    return _fold(s, comparison).endswith(_fold(not_null(value, "value"), comparison))


def _string_equals(a: str | None, b: str | None, comparison: str | None = None) -> bool:
    if a is None or b is None:
        return a is b
    return _fold(a, comparison) == _fold(b, comparison)


def _compare(a: str | None, b: str | None, comparison: str | bool | None = None) -> int:
    if a is None or b is None:
        return 0 if a is b else (-1 if a is None else 1)
    if comparison is True:
        comparison = "OrdinalIgnoreCase"
    mode = comparison if isinstance(comparison, str) else None
    a, b = _fold(a, mode), _fold(b, mode)
    return (a > b) - (a < b)


def _join(separator: str | None, values: Iterable[Any]) -> str:
    return check_length((separator or "").join(to_string(v) for v in values))


_string = define(STRING)
_string.prop("Length", INT, len)
_string.indexer((Param("index", INT),), CHAR, _string_char_at)
_string.method("ToLower", (), STRING, str.lower)
_string.method("ToUpper", (), STRING, str.upper)
_string.method("ToLowerInvariant", (), STRING, str.lower)
_string.method("ToUpperInvariant", (), STRING, str.upper)
_string.method("Trim", (), STRING, str.strip)
_string.method("Trim", (Param("trimChar", CHAR),), STRING, str.strip)
_string.method("TrimStart", (), STRING, str.lstrip)
_string.method("TrimStart", (Param("trimChar", CHAR),), STRING, str.lstrip)
_string.method("TrimEnd", (), STRING, str.rstrip)
_string.method("TrimEnd", (Param("trimChar", CHAR),), STRING, str.rstrip)
for _name, _impl in (("Contains", _contains), ("StartsWith", _starts_with), ("EndsWith", _ends_with)):
    _string.method(_name, (Param("value", STRING),), BOOL, _impl)
    _string.method(_name, (Param("value", STRING), Param("comparisonType", "StringComparison")), BOOL, _impl)
_string.method("Contains", (Param("value", CHAR),), BOOL, _contains)
_string.method("IndexOf", (Param("value", STRING),), INT, _index_of)
_string.method("IndexOf", (Param("value", CHAR),), INT, _index_of)
_string.method("IndexOf", (Param("value", STRING), Param("startIndex", INT)), INT, _index_of)
_string.method("IndexOf", (Param("value", CHAR), Param("startIndex", INT)), INT, _index_of)
_string.method(
    "IndexOf",
    (Param("value", STRING), Param("comparisonType", "StringComparison")),
    INT,
    lambda s, v, c: _index_of(s, v, 0, c),
)
_string.method("LastIndexOf", (Param("value", STRING),), INT, lambda s, v: s.rfind(not_null(v, "value")))
_string.method("LastIndexOf", (Param("value", CHAR),), INT, lambda s, v: s.rfind(v))
_string.method("Substring", (Param("startIndex", INT),), STRING, _substring)
_string.method("Substring", (Param("startIndex", INT), Param("length", INT)), STRING, _substring)
_string.method("Replace", (Param("oldValue", STRING), Param("newValue", STRING)), STRING, _replace)
_string.method("Replace", (Param("oldChar", CHAR), Param("newChar", CHAR)), STRING, lambda s, a, b: s.replace(a, b))
_string.method("Split", (Param("separator", CHAR),), STRING_ARRAY, _split)
_string.method("Split", (Param("separator", STRING),), STRING_ARRAY, _split)
_string.method("Split", (Param("separator", CHAR), Param("options", "StringSplitOptions")), STRING_ARRAY, _split)
_string.method("Split", (Param("separator", STRING), Param("options", "StringSplitOptions")), STRING_ARRAY, _split)
_string.method("Equals", (Param("value", STRING),), BOOL, _string_equals)
_string.method("Equals", (Param("value", STRING), Param("comparisonType", "StringComparison")), BOOL, _string_equals)
_string.method("PadLeft", (Param("totalWidth", INT),), STRING, lambda s, w: _pad(s, w, " ", True))
_string.method(
    "PadLeft", (Param("totalWidth", INT), Param("paddingChar", CHAR)), STRING, lambda s, w, c: _pad(s, w, c, True)
)
_string.method("PadRight", (Param("totalWidth", INT),), STRING, lambda s, w: _pad(s, w, " ", False))
_string.method(
    "PadRight", (Param("totalWidth", INT), Param("paddingChar", CHAR)), STRING, lambda s, w, c: _pad(s, w, c, False)
)
_string.method("Remove", (Param("startIndex", INT),), STRING, _remove)
_string.method("Remove", (Param("startIndex", INT), Param("count", INT)), STRING, _remove)

_string_static = define("static:string")
_string_static.prop("Empty", STRING, lambda _: "")
_string_static.method("IsNullOrEmpty", (Param("value", STRING),), BOOL, lambda _, v: not v)
_string_static.method("IsNullOrWhiteSpace", (Param("value", STRING),), BOOL, lambda _, v: v is None or not v.strip())
_string_static.method(
    "Format",
    (Param("format", STRING), Param("args", OBJECT, params=True)),
    STRING,
    lambda _, fmt, args: check_length(composite_format(not_null(fmt, "format"), args)),
)
_string_static.method(
    "Join", (Param("separator", STRING), Param("value", STRING, params=True)), STRING, lambda _, s, v: _join(s, v)
)
_string_static.method(
    "Join", (Param("separator", STRING), Param("values", JTOKEN)), STRING, lambda _, s, v: _join(s, iterate(v))
)
_string_static.method(
    "Join", (Param("separator", STRING), Param("values", OBJECT, params=True)), STRING, lambda _, s, v: _join(s, v)
)
_string_static.method("Concat", (Param("values", STRING, params=True),), STRING, lambda _, v: _join("", v))
_string_static.method("Concat", (Param("args", OBJECT, params=True),), STRING, lambda _, v: _join("", v))
_string_static.method("Equals", (Param("a", STRING), Param("b", STRING)), BOOL, lambda _, a, b: _string_equals(a, b))
_string_static.method(
    "Equals",
    (Param("a", STRING), Param("b", STRING), Param("comparisonType", "StringComparison")),
    BOOL,
    lambda _, a, b, c: _string_equals(a, b, c),
)
_string_static.method("Compare", (Param("strA", STRING), Param("strB", STRING)), INT, lambda _, a, b: _compare(a, b))
_string_static.method(
    "Compare",
    (Param("strA", STRING), Param("strB", STRING), Param("ignoreCase", BOOL)),
    INT,
    lambda _, a, b, c: _compare(a, b, c),
)
_string_static.method(
    "Compare",
    (Param("strA", STRING), Param("strB", STRING), Param("comparisonType", "StringComparison")),
    INT,
    lambda _, a, b, c: _compare(a, b, c),
)


def _constant(value: str) -> Callable[[Any], str]:
    return lambda _: value


for _enum, _names in (
    ("StringComparison", ("Ordinal", "OrdinalIgnoreCase", "CurrentCulture", "CurrentCultureIgnoreCase",
                          "InvariantCulture", "InvariantCultureIgnoreCase")),
    ("StringSplitOptions", ("None", "RemoveEmptyEntries", "TrimEntries")),
    ("Formatting", ("None", "Indented")),
    ("JTokenType", ("None", "Object", "Array", "Constructor", "Property", "Comment", "Integer", "Float", "String",
                    "Boolean", "Null", "Undefined", "Date", "Raw", "Bytes", "Guid", "Uri", "TimeSpan")),
    ("DayOfWeek", ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")),
):  # fmt: skip
    _table = define("static:" + _enum)
    for _value in _names:
        _table.prop(_value, _enum, _constant(_value))


#
# Numbers, bool, char
#

for _numeric in (INT, LONG, DOUBLE):
    define(_numeric).method("ToString", (Param("format", STRING),), STRING, lambda v, f: format_number(v, f or ""))

_int_static = define("static:int")
_int_static.method("Parse", (Param("s", STRING),), INT, lambda _, s: parse_int(s))
_int_static.prop("MaxValue", INT, lambda _: INT_MAX)
_int_static.prop("MinValue", INT, lambda _: INT_MIN)
_long_static = define("static:long")
_long_static.method("Parse", (Param("s", STRING),), LONG, lambda _, s: parse_int(s, check_long))
_long_static.prop("MaxValue", LONG, lambda _: LONG_MAX)
_long_static.prop("MinValue", LONG, lambda _: LONG_MIN)
_double_static = define("static:double")
_double_static.method("Parse", (Param("s", STRING),), DOUBLE, lambda _, s: parse_double(s))
_double_static.method("IsNaN", (Param("d", DOUBLE),), BOOL, lambda _, d: math.isnan(d))
_bool_static = define("static:bool")
_bool_static.method("Parse", (Param("value", STRING),), BOOL, lambda _, s: parse_bool(s))
_char_static = define("static:char")
_char_static.method("IsDigit", (Param("c", CHAR),), BOOL, lambda _, c: c.isdigit())
_char_static.method("IsLetter", (Param("c", CHAR),), BOOL, lambda _, c: c.isalpha())
_char_static.method("IsWhiteSpace", (Param("c", CHAR),), BOOL, lambda _, c: c.isspace())


#
# Math and Convert
#


def _abs(value: int | float) -> int | float:
    return abs(value)


_math = define("static:Math")
for _t in (INT, LONG, DOUBLE):
    _math.method("Max", (Param("val1", _t), Param("val2", _t)), _t, lambda _, a, b: max(a, b))
    _math.method("Min", (Param("val1", _t), Param("val2", _t)), _t, lambda _, a, b: min(a, b))
    _math.method("Abs", (Param("value", _t),), _t, lambda _, a: _abs(a))
_math.method("Ceiling", (Param("a", DOUBLE),), DOUBLE, lambda _, a: float(math.ceil(a)) if math.isfinite(a) else a)
_math.method("Floor", (Param("d", DOUBLE),), DOUBLE, lambda _, a: float(math.floor(a)) if math.isfinite(a) else a)
_math.method("Truncate", (Param("d", DOUBLE),), DOUBLE, lambda _, a: float(math.trunc(a)) if math.isfinite(a) else a)
_math.method("Round", (Param("a", DOUBLE),), DOUBLE, lambda _, a: float(round(a)) if math.isfinite(a) else a)
_math.method(
    "Round",
    (Param("value", DOUBLE), Param("digits", INT)),
    DOUBLE,
    lambda _, a, d: round(a, d) if math.isfinite(a) else a,
)
_math.method("Pow", (Param("x", DOUBLE), Param("y", DOUBLE)), DOUBLE, lambda _, x, y: _pow(x, y))
_math.method("Sqrt", (Param("d", DOUBLE),), DOUBLE, lambda _, d: math.sqrt(d) if d >= 0 else math.nan)


def _pow(x: float, y: float) -> float:
    try:
        return math.pow(x, y)
    except OverflowError:
        return math.inf
    except ValueError:
        return math.nan


_convert = define("static:Convert")
_convert.method("ToInt32", (Param("value", OBJECT),), INT, lambda _, v: to_int(v))
_convert.method("ToInt64", (Param("value", OBJECT),), LONG, lambda _, v: to_int(v, check_long))
_convert.method("ToDouble", (Param("value", OBJECT),), DOUBLE, lambda _, v: to_double(v))
_convert.method("ToBoolean", (Param("value", OBJECT),), BOOL, lambda _, v: to_bool(v))
_convert.method("ToString", (Param("value", OBJECT),), STRING, lambda _, v: to_string(v))
_convert.method(
    "ToBase64String",
    (Param("inArray", "byte[]"),),
    STRING,
    lambda _, b: base64.b64encode(not_null(b, "inArray")).decode(),
)
_convert.method("FromBase64String", (Param("s", STRING),), "byte[]", lambda _, s: _from_base64(s))


def _from_base64(text: str | None) -> bytes:
    try:
        return base64.b64decode(not_null(text, "s").strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ExpressionRuntimeError("The input is not a valid Base-64 string.") from None


#
# Encoding, WebUtility, Uri
#

_encoding_static = define("static:Encoding")
_encoding_static.prop("UTF8", "Encoding", lambda _: "utf-8")
_encoding_static.prop("ASCII", "Encoding", lambda _: "ascii")
_encoding_static.prop("Unicode", "Encoding", lambda _: "utf-16-le")
_encoding = define("Encoding")
_encoding.method(
    "GetBytes", (Param("s", STRING),), "byte[]", lambda enc, s: not_null(s, "s").encode(enc, errors="replace")
)
_encoding.method(
    "GetString", (Param("bytes", "byte[]"),), STRING, lambda enc, b: not_null(b, "bytes").decode(enc, errors="replace")
)


def _url_encode(text: str | None) -> str | None:
    """``WebUtility.UrlEncode``: unreserved characters kept, space as '+', the rest %XX (upper-case hex)."""
    if text is None:
        return None
    out: list[str] = []
    for byte in text.encode("utf-8"):
        if byte in _URL_SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def _html_encode(text: str | None) -> str | None:
    if text is None:
        return None
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


_web = define("static:WebUtility")
_web.method("UrlEncode", (Param("value", STRING),), STRING, lambda _, s: _url_encode(s))
_web.method(
    "UrlDecode", (Param("encodedValue", STRING),), STRING, lambda _, s: unquote_plus(s) if s is not None else None
)
_web.method("HtmlEncode", (Param("value", STRING),), STRING, lambda _, s: _html_encode(s))
_web.method("HtmlDecode", (Param("value", STRING),), STRING, lambda _, s: html.unescape(s) if s is not None else None)
_uri = define("static:Uri")
_uri.method(
    "EscapeDataString", (Param("stringToEscape", STRING),), STRING, lambda _, s: quote(not_null(s, "s"), safe="")
)
_uri.method("UnescapeDataString", (Param("stringToUnescape", STRING),), STRING, lambda _, s: unquote(not_null(s, "s")))
