"""The type and namespace names an expression may mention (everything else is an unknown name)."""

from __future__ import annotations

from typing import Final

from .errors import ExpressionError
from .nodes import TypeRef
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
    nullable_of,
)

__all__ = ("NAMESPACES", "STATIC_TYPES", "TYPE_NAMES", "resolve_type", "static_type")

MSG_UNKNOWN_TYPE: Final = "the type '{}' is not allowed in policy expressions"
MSG_UNSUPPORTED_TYPE: Final = "the type '{}' is not supported; use {}"

# Names usable as receivers of static members (string.Join, Math.Max, System.Text.Encoding.UTF8, ...).
STATIC_TYPES: Final = {
    "string": "string", "String": "string", "System.String": "string",
    "int": "int", "Int32": "int", "System.Int32": "int", "long": "long", "Int64": "long", "System.Int64": "long",
    "double": "double", "Double": "double", "System.Double": "double",
    "bool": "bool", "Boolean": "bool", "System.Boolean": "bool", "char": "char", "Char": "char", "System.Char": "char",
    "Math": "Math", "System.Math": "Math", "Convert": "Convert", "System.Convert": "Convert",
    "DateTime": "DateTime", "System.DateTime": "DateTime", "TimeSpan": "TimeSpan", "System.TimeSpan": "TimeSpan",
    "Guid": "Guid", "System.Guid": "Guid", "DayOfWeek": "DayOfWeek", "System.DayOfWeek": "DayOfWeek",
    "StringComparison": "StringComparison", "System.StringComparison": "StringComparison",
    "StringSplitOptions": "StringSplitOptions", "System.StringSplitOptions": "StringSplitOptions",
    "Encoding": "Encoding", "System.Text.Encoding": "Encoding",
    "WebUtility": "WebUtility", "System.Net.WebUtility": "WebUtility", "Uri": "Uri", "System.Uri": "Uri",
    "Formatting": "Formatting", "Newtonsoft.Json.Formatting": "Formatting",
    "JObject": "JObject", "Newtonsoft.Json.Linq.JObject": "JObject",
    "JToken": "JToken", "Newtonsoft.Json.Linq.JToken": "JToken",
    "JArray": "JArray", "Newtonsoft.Json.Linq.JArray": "JArray",
    "JTokenType": "JTokenType", "Newtonsoft.Json.Linq.JTokenType": "JTokenType",
    "ProductState": "ProductState",
}  # fmt: skip
NAMESPACES: Final = frozenset(
    ".".join(name.split(".")[:i]) for name in STATIC_TYPES if "." in name for i in range(1, name.count(".") + 1)
)
# Names usable in casts, declarations and type arguments.
TYPE_NAMES: Final = {
    "string": STRING, "String": STRING, "System.String": STRING, "int": INT, "Int32": INT, "System.Int32": INT,
    "long": LONG, "Int64": LONG, "System.Int64": LONG, "double": DOUBLE, "Double": DOUBLE, "System.Double": DOUBLE,
    "bool": BOOL, "Boolean": BOOL, "System.Boolean": BOOL, "char": CHAR, "Char": CHAR, "System.Char": CHAR,
    "object": OBJECT, "Object": OBJECT, "System.Object": OBJECT,
    "JObject": JOBJECT, "Newtonsoft.Json.Linq.JObject": JOBJECT, "JToken": JTOKEN,
    "Newtonsoft.Json.Linq.JToken": JTOKEN, "JArray": JARRAY, "Newtonsoft.Json.Linq.JArray": JARRAY,
    "DateTime": DATETIME, "System.DateTime": DATETIME, "TimeSpan": TIMESPAN, "System.TimeSpan": TIMESPAN,
    "Guid": GUID, "System.Guid": GUID,
}  # fmt: skip
_SUBSTITUTES: Final = {
    "float": "double", "Single": "double", "decimal": "double", "dynamic": "a specific type", "uint": "long",
    "ulong": "long", "short": "int", "ushort": "int", "sbyte": "int",
}  # fmt: skip


def static_type(name: str) -> str | None:
    """``static:X`` / ``namespace:X`` for a (possibly dotted) name, or None when it names neither."""
    static = STATIC_TYPES.get(name)
    if static is not None:
        return "static:" + static
    if name in NAMESPACES:
        return "namespace:" + name
    return None


def resolve_type(ref: TypeRef) -> str:
    """The static type a written type names (``int?``, ``string[]``, ``Newtonsoft.Json.Linq.JObject``)."""
    name = ref.name
    array = name.endswith("[]")
    if array:
        name = name[:-2]
    nullable = name.endswith("?")
    if nullable:
        name = name[:-1]
    if array and name == "byte":
        return "byte[]"
    resolved = TYPE_NAMES.get(name)
    if resolved is None:
        if name in _SUBSTITUTES:
            raise ExpressionError(MSG_UNSUPPORTED_TYPE.format(name, _SUBSTITUTES[name]), ref.pos)
        raise ExpressionError(MSG_UNKNOWN_TYPE.format(name), ref.pos)
    if nullable:
        resolved = nullable_of(resolved)
    return resolved + "[]" if array else resolved
