"""Casts and conversions with .NET / Newtonsoft semantics (used by casts, ``Convert``, ``Value<T>``, generics)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from .dotnet import JNULL, Guid, json_type, net_type_name, to_string
from .errors import ExpressionRuntimeError
from .typesys import (
    BOOL,
    CHAR,
    DATETIME,
    DOUBLE,
    GUID,
    INT,
    JARRAY,
    JOBJECT,
    JTOKEN,
    LONG,
    OBJECT,
    STRING,
    TIMESPAN,
    implicit,
    implicit_converter,
    is_numeric,
    strip_nullable,
)

__all__ = (
    "INT_MAX",
    "INT_MIN",
    "LONG_MAX",
    "LONG_MIN",
    "cast_converter",
    "check_int",
    "check_long",
    "default_of",
    "not_null",
    "parse_bool",
    "parse_double",
    "parse_int",
    "to_bool",
    "to_double",
    "to_int",
    "token_value",
    "wrap_int",
    "wrap_long",
)

INT_MIN: Final = -(2**31)
INT_MAX: Final = 2**31 - 1
LONG_MIN: Final = -(2**63)
LONG_MAX: Final = 2**63 - 1

MSG_INVALID_CAST: Final = "Unable to cast object of type '{}' to type '{}'."
MSG_TOKEN_CAST: Final = "Can not convert {} to {}."  # noqa: S105 (not a password)
MSG_FORMAT: Final = "Input string was not in a correct format."
MSG_OVERFLOW: Final = "Value was either too large or too small for an {}."
MSG_NULL_VALUE: Final = "Value cannot be null."

_NET_NAMES: Final = {
    STRING: "System.String", INT: "System.Int32", LONG: "System.Int64", DOUBLE: "System.Double",
    BOOL: "System.Boolean", CHAR: "System.Char", JOBJECT: "Newtonsoft.Json.Linq.JObject",
    JARRAY: "Newtonsoft.Json.Linq.JArray", JTOKEN: "Newtonsoft.Json.Linq.JToken", DATETIME: "System.DateTime",
    TIMESPAN: "System.TimeSpan", GUID: "System.Guid",
}  # fmt: skip
_TOKEN_TARGETS: Final = frozenset({STRING, INT, LONG, DOUBLE, BOOL})
_JSON_KINDS: Final = (dict, list, str, int, float, bool)


def _fail(message: str) -> ExpressionRuntimeError:
    return ExpressionRuntimeError(message)


def not_null(value: Any, name: str) -> Any:
    """``value``, or ArgumentNullException when it is null."""
    if value is None:
        raise _fail(f"Value cannot be null. (Parameter '{name}')")
    return value


def wrap_int(value: int) -> int:
    """32-bit two's-complement wrap-around (C# unchecked arithmetic)."""
    if INT_MIN <= value <= INT_MAX:
        return value
    return ((value - INT_MIN) & 0xFFFFFFFF) + INT_MIN


def wrap_long(value: int) -> int:
    if LONG_MIN <= value <= LONG_MAX:
        return value
    return ((value - LONG_MIN) & 0xFFFFFFFFFFFFFFFF) + LONG_MIN


def check_int(value: int) -> int:
    if INT_MIN <= value <= INT_MAX:
        return value
    raise _fail(MSG_OVERFLOW.format("Int32"))


def check_long(value: int) -> int:
    if LONG_MIN <= value <= LONG_MAX:
        return value
    raise _fail(MSG_OVERFLOW.format("Int64"))


#
# Parsing and Convert.ToXxx
#


def parse_int(text: str | None, check: Callable[[int], int] = check_int) -> int:
    """``int.Parse`` (invariant): optional surrounding white space and sign, decimal digits only."""
    if text is None:
        raise _fail(MSG_NULL_VALUE)
    stripped = text.strip()
    body = stripped[1:] if stripped[:1] in "+-" else stripped
    if not body or not body.isascii() or not body.isdigit():
        raise _fail(MSG_FORMAT)
    if len(body.lstrip("0")) > 19:  # beyond any Int64 (and Python's limit on int() of long digit strings)
        return check(LONG_MAX + 1)
    return check(int(stripped))


def parse_double(text: str | None) -> float:
    if text is None:
        raise _fail(MSG_NULL_VALUE)
    stripped = text.strip()
    if stripped in ("NaN", "Infinity", "-Infinity", "∞", "-∞"):
        return float(stripped.replace("∞", "Infinity"))
    if not stripped or not stripped.isascii() or stripped.lower().lstrip("+-").startswith(("inf", "nan")):
        raise _fail(MSG_FORMAT)
    try:
        return float(stripped.replace(",", "")) if "," in stripped else float(stripped)
    except ValueError:
        raise _fail(MSG_FORMAT) from None


def parse_bool(text: str | None) -> bool:
    if text is None:
        raise _fail(MSG_NULL_VALUE)
    lowered = text.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise _fail("String was not recognized as a valid Boolean.")


def _round_half_even(value: float) -> int:
    if math.isnan(value) or math.isinf(value):
        raise _fail(MSG_OVERFLOW.format("Int32"))
    return round(value)


def to_int(value: Any, check: Callable[[int], int] = check_int) -> int:
    """``Convert.ToInt32(object)`` / ``Convert.ToInt64``: null is 0, doubles round half to even."""
    kind = type(value)
    if value is None:
        return 0
    if kind is bool:
        return 1 if value else 0
    if kind is int:
        return check(value)
    if kind is float:
        return check(_round_half_even(value))
    if kind is str:
        return parse_int(value, check)
    raise _fail(MSG_INVALID_CAST.format(net_type_name(value), "System.IConvertible"))


def to_double(value: Any) -> float:
    kind = type(value)
    if value is None:
        return 0.0
    if kind is bool:
        return 1.0 if value else 0.0
    if kind is int or kind is float:
        return float(value)
    if kind is str:
        return parse_double(value)
    raise _fail(MSG_INVALID_CAST.format(net_type_name(value), "System.IConvertible"))


def to_bool(value: Any) -> bool:
    kind = type(value)
    if value is None:
        return False
    if kind is bool:
        return bool(value)
    if kind is int or kind is float:
        return bool(value != 0)
    if kind is str:
        return parse_bool(value)
    raise _fail(MSG_INVALID_CAST.format(net_type_name(value), "System.IConvertible"))


def default_of(t: str) -> Any:
    """``default(T)``."""
    if t in (INT, LONG):
        return 0
    if t == DOUBLE:
        return 0.0
    if t == BOOL:
        return False
    if t == CHAR:
        return "\0"
    if t == TIMESPAN:
        return timedelta(0)
    return None


#
# JSON tokens
#


def _token_to(value: Any, target: str, nullable: bool) -> Any:
    """Newtonsoft's explicit conversion operators ``(string)token``, ``(int)token``, ``(bool?)token``, ..."""
    if value is None:
        if target == STRING or nullable:
            return None
        raise _fail(MSG_NULL_VALUE)
    if value is JNULL:
        if target == STRING or nullable:
            return None
        raise _fail(MSG_TOKEN_CAST.format("Null", _NET_NAMES[target].rsplit(".", 1)[1]))
    kind = type(value)
    if kind is dict or kind is list:
        raise _fail(MSG_TOKEN_CAST.format(json_type(value), _NET_NAMES[target].rsplit(".", 1)[1]))
    if target == STRING:
        return to_string(value)
    if target == INT:
        return to_int(value)
    if target == LONG:
        return to_int(value, check_long)
    if target == DOUBLE:
        return to_double(value)
    return to_bool(value)


def token_value(value: Any, target: str) -> Any:
    """``Value<T>()``: null gives ``default(T)``; JSON primitives convert like ``Convert.ChangeType``."""
    base = strip_nullable(target)
    nullable = base != target
    if value is None:
        return None if nullable else default_of(base)
    if base in (JTOKEN, OBJECT):
        return value
    if base in (JOBJECT, JARRAY):
        return _reference_cast(value, base)
    if value is JNULL and base not in (STRING,) and not nullable:
        raise _fail("Null object cannot be converted to a value type.")
    if type(value) in (dict, list):
        raise _fail(f"Cannot cast {json_type(value)} to {_NET_NAMES.get(base, base)}.")
    return _token_to(value, base, nullable)


def _reference_cast(value: Any, target: str) -> Any:
    if value is None:
        return None
    expected = dict if target == JOBJECT else list
    if type(value) is expected:
        return value
    raise _fail(MSG_INVALID_CAST.format(net_type_name(value), _NET_NAMES[target]))


#
# Casts
#


def _unbox(target: str, nullable: bool) -> Callable[[Any], Any]:
    """A cast from ``object``: a runtime type check (lenient about int/long/double, which Python does not tell
    apart)."""
    net = _NET_NAMES.get(target, target)

    def unbox(value: Any) -> Any:
        if value is None:
            if nullable or target not in _VALUE_CHECKS:
                return None
            raise _fail(MSG_NULL_REFERENCE_UNBOX)
        check = _VALUE_CHECKS.get(target) or _REFERENCE_CHECKS.get(target)
        if check is None or not check(value):
            raise _fail(MSG_INVALID_CAST.format(net_type_name(value), net))
        if target == DOUBLE and type(value) is int:
            return float(value)
        return value

    return unbox


MSG_NULL_REFERENCE_UNBOX: Final = "Object reference not set to an instance of an object (unboxing null)."
_VALUE_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    INT: lambda v: type(v) is int and INT_MIN <= v <= INT_MAX,
    LONG: lambda v: type(v) is int,
    DOUBLE: lambda v: type(v) is float or type(v) is int,
    BOOL: lambda v: type(v) is bool,
    CHAR: lambda v: type(v) is str and len(v) == 1,
    DATETIME: lambda v: type(v) is datetime,
    TIMESPAN: lambda v: type(v) is timedelta,
    GUID: lambda v: type(v) is Guid,
}
_REFERENCE_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    STRING: lambda v: type(v) is str,
    JOBJECT: lambda v: type(v) is dict,
    JARRAY: lambda v: type(v) is list,
    JTOKEN: lambda v: type(v) in _JSON_KINDS or v is JNULL,
    "string[]": lambda v: type(v) is tuple,
    "byte[]": lambda v: type(v) is bytes,
}


def _numeric_cast(src: str, dst: str) -> Callable[[Any], Any] | None:
    """Explicit numeric conversions (unchecked, like C#): truncation toward zero and wrap-around."""
    src, dst = strip_nullable(src), strip_nullable(dst)
    if dst == DOUBLE:
        return (
            (lambda v: float(ord(v)) if v is not None else None)
            if src == CHAR
            else (lambda v: float(v) if v is not None else None)
        )
    wrap = wrap_int if dst == INT else (wrap_long if dst == LONG else None)
    if src == DOUBLE and wrap is not None:

        def from_double(v: Any) -> Any:
            if v is None:
                return None
            if math.isnan(v) or math.isinf(v):
                return INT_MIN if dst == INT else LONG_MIN
            return wrap(int(v))

        return from_double
    if src == CHAR and wrap is not None:
        return lambda v: ord(v) if v is not None else None
    if dst == CHAR and src in (INT, LONG):
        return lambda v: chr(v & 0xFFFF) if v is not None else None
    if wrap is not None:
        return lambda v: wrap(v) if v is not None else None
    return None


def cast_converter(src: str, dst: str) -> Callable[[Any], Any] | bool | None:
    """The runtime conversion of the cast ``(dst)value`` for a value of static type ``src``.

    Returns a function, None when the value needs no conversion, or False when C# rejects the cast.
    """
    if implicit(src, dst):
        return implicit_converter(src, dst)
    base, nullable = strip_nullable(dst), dst.endswith("?")
    src_base = strip_nullable(src)
    if is_numeric(src_base) and is_numeric(base):
        converter = _numeric_cast(src, dst)
        if converter is None:
            return None
        if src.endswith("?") and not nullable:
            return lambda v: converter(_value_of_nullable(v))
        return converter
    if src in (JTOKEN, JOBJECT, JARRAY):
        if base in _TOKEN_TARGETS:
            return lambda v: _token_to(v, base, nullable)
        if base in (JOBJECT, JARRAY):
            return lambda v: _reference_cast(v, base)
        return False
    if src == OBJECT:
        if base in _VALUE_CHECKS or base in _REFERENCE_CHECKS:
            return _unbox(base, nullable)
        return False
    if src.endswith("?") and implicit(src_base, dst):
        return _value_of_nullable
    return False


def _value_of_nullable(value: Any) -> Any:
    if value is None:
        raise _fail("Nullable object must have a value.")
    return value
