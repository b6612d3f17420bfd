"""Newtonsoft's JToken/JObject/JArray, .NET arrays, the LINQ subset (with lambdas) and Nullable<T>.

JSON values are what orjson parses (dict, list, str, int, float, bool); a JSON ``null`` read out of a document is
:data:`.dotnet.JNULL` (a JValue), while a missing property is C# ``null`` (None), as in Newtonsoft.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

import orjson

from .conversions import not_null, token_value
from .dotnet import JNULL, equals, json_text, json_type, to_string
from .errors import ExpressionRuntimeError
from .typesys import BOOL, DOUBLE, INT, JARRAY, JOBJECT, JTOKEN, LONG, OBJECT, STRING, Param, define

__all__ = ("TOKEN_TYPE_ARGS", "iterate", "json_get", "parse_json")

MSG_INDEX_RANGE: Final = "Index was outside the bounds of the array."
MSG_COLLECTION_RANGE: Final = "Index was out of range. Must be non-negative and less than the size of the collection."
MSG_NO_ELEMENTS: Final = "Sequence contains no elements"
MSG_NO_MATCH: Final = "Sequence contains no matching element"
MSG_JVALUE_CHILD: Final = "Cannot access child value on Newtonsoft.Json.Linq.JValue."
MSG_BAD_JSON: Final = "Unexpected character encountered while parsing value: {}"
MSG_NOT_ENUMERABLE: Final = "Enumerating the properties of a JObject is not supported; index it by name instead."

# the type arguments accepted by Value<T>() / ToObject<T>()
TOKEN_TYPE_ARGS: Final = (STRING, INT, LONG, DOUBLE, BOOL, "int?", "long?", "double?", "bool?", JTOKEN, JOBJECT, JARRAY)


#
# Arrays and LINQ
#


def iterate(value: Any) -> Iterable[Any]:
    kind = type(value)
    if kind is tuple or kind is bytes:
        return value  # type: ignore[no-any-return]  # type(value) is tuple or bytes, both iterable; mypy does not narrow on type()
    if kind is list:
        return (JNULL if item is None else item for item in value)
    if kind is dict:
        raise ExpressionRuntimeError(MSG_NOT_ENUMERABLE)
    raise ExpressionRuntimeError(MSG_JVALUE_CHILD)


def _array_at(array: tuple[Any, ...] | bytes, index: int) -> Any:
    if not 0 <= index < len(array):
        raise ExpressionRuntimeError(MSG_INDEX_RANGE)
    return array[index]


def _first(value: Any, predicate: Callable[[Any], Any] | None = None) -> Any:
    for item in iterate(value):
        if predicate is None or predicate(item):
            return item
    raise ExpressionRuntimeError(MSG_NO_ELEMENTS if predicate is None else MSG_NO_MATCH)


def _first_or_default(value: Any, predicate: Callable[[Any], Any] | None = None) -> Any:
    for item in iterate(value):
        if predicate is None or predicate(item):
            return item
    return None


def _last(value: Any, default: bool) -> Any:
    items = tuple(iterate(value))
    if items:
        return items[-1]
    if default:
        return None
    raise ExpressionRuntimeError(MSG_NO_ELEMENTS)


def _element_at(value: Any, index: int) -> Any:
    items = tuple(iterate(value))
    if not 0 <= index < len(items):
        raise ExpressionRuntimeError(MSG_COLLECTION_RANGE)
    return items[index]


_array = define("T[]")
_array.prop("Length", INT, len)
_array.indexer((Param("index", INT),), "E", _array_at)

_linq = define("IEnumerable")
_linq.method("Count", (), INT, lambda v: sum(1 for _ in iterate(v)))
_linq.method("Count", (Param("predicate", "E=>bool"),), INT, lambda v, f: sum(1 for x in iterate(v) if f(x)))
_linq.method("Any", (), BOOL, lambda v: any(True for _ in iterate(v)))
_linq.method("Any", (Param("predicate", "E=>bool"),), BOOL, lambda v, f: any(f(x) for x in iterate(v)))
_linq.method("All", (Param("predicate", "E=>bool"),), BOOL, lambda v, f: all(f(x) for x in iterate(v)))
_linq.method("First", (), "E", _first)
_linq.method("First", (Param("predicate", "E=>bool"),), "E", _first)
_linq.method("FirstOrDefault", (), "E", _first_or_default)
_linq.method("FirstOrDefault", (Param("predicate", "E=>bool"),), "E", _first_or_default)
_linq.method("Last", (), "E", lambda v: _last(v, default=False))
_linq.method("LastOrDefault", (), "E", lambda v: _last(v, default=True))
_linq.method("ElementAt", (Param("index", INT),), "E", _element_at)
_linq.method("Where", (Param("predicate", "E=>bool"),), "E[]", lambda v, f: tuple(x for x in iterate(v) if f(x)))
_linq.method("Select", (Param("selector", "E=>R"),), "R[]", lambda v, f: tuple(f(x) for x in iterate(v)))
_linq.method("Contains", (Param("value", "E"),), BOOL, lambda v, x: any(equals(item, x) for item in iterate(v)))
_linq.method("ToArray", (), "E[]", lambda v: tuple(iterate(v)))
_linq.method("Skip", (Param("count", INT),), "E[]", lambda v, n: tuple(iterate(v))[max(n, 0) :])
_linq.method("Take", (Param("count", INT),), "E[]", lambda v, n: tuple(iterate(v))[: max(n, 0)])

_nullable = define("Nullable")
_nullable.prop("HasValue", BOOL, lambda v: v is not None)
_nullable.prop(
    "Value", "U", lambda v: v if v is not None else _raise(ExpressionRuntimeError("Nullable object must have a value."))
)
_nullable.method("GetValueOrDefault", (Param("defaultValue", "U"),), "U", lambda v, d: d if v is None else v)
_nullable.method("ToString", (), STRING, to_string)


def _raise(error: Exception) -> Any:
    raise error


#
# Newtonsoft JSON
#


def parse_json(data: bytes | str, expected: str = JTOKEN) -> Any:
    """Parse JSON text into the runtime representation of ``expected`` (JToken, JObject or JArray)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ExpressionRuntimeError(MSG_BAD_JSON.format(exc.msg)) from None
    if expected == JOBJECT and type(value) is not dict:
        raise ExpressionRuntimeError(
            f"Error reading JObject from JsonReader. Current JsonReader item is not an object: {json_type(value)}"
        )
    if expected == JARRAY and type(value) is not list:
        raise ExpressionRuntimeError(
            f"Error reading JArray from JsonReader. Current JsonReader item is not an array: {json_type(value)}"
        )
    return JNULL if value is None else value


def json_get(token: Any, key: Any) -> Any:
    """``token[key]``: a missing property gives null, a JSON null gives :data:`JNULL`."""
    kind = type(token)
    if kind is dict:
        if type(key) is not str:
            raise ExpressionRuntimeError(
                f"Accessed JObject values with invalid key value: {to_string(key)}. Object property name expected."
            )
        value = token.get(key, _MISSING)
        if value is _MISSING:
            return None
        return JNULL if value is None else value
    if kind is list:
        if type(key) is not int:
            raise ExpressionRuntimeError(
                f'Accessed JArray values with invalid key value: "{key}". Int32 array index expected.'
            )
        if not 0 <= key < len(token):
            raise ExpressionRuntimeError(MSG_COLLECTION_RANGE)
        value = token[key]
        return JNULL if value is None else value
    raise ExpressionRuntimeError(MSG_JVALUE_CHILD)


_MISSING: Final = object()


def _container_edge(token: Any, last: bool) -> Any:
    if type(token) is list:
        if not token:
            return None
        value = token[-1] if last else token[0]
        return JNULL if value is None else value
    if type(token) is dict:
        raise ExpressionRuntimeError(
            "JObject.First/Last return a JProperty, which is not supported; index the object by name."
        )
    raise ExpressionRuntimeError(MSG_JVALUE_CHILD)


def _select_token(token: Any, path: str | None) -> Any:
    """``SelectToken`` for plain paths: ``a.b[0].c``, ``['a b']``, an optional leading ``$``."""
    current = token
    for segment in _path_segments(not_null(path, "path")):
        if current is None or current is JNULL or type(current) not in (dict, list):
            return None
        if type(current) is dict and type(segment) is str:
            current = json_get(current, segment)
        elif type(current) is list and type(segment) is int:
            current = json_get(current, segment) if 0 <= segment < len(current) else None
        else:
            return None
    return current


def _path_segments(path: str) -> list[str | int]:
    segments: list[str | int] = []
    i, size = (1, len(path)) if path.startswith("$") else (0, len(path))
    name: list[str] = []
    while i < size:
        ch = path[i]
        if ch == ".":
            if name:
                segments.append("".join(name))
                name = []
            i += 1
        elif ch == "[":
            if name:
                segments.append("".join(name))
                name = []
            close = path.find("]", i)
            if close < 0:
                raise ExpressionRuntimeError(f"Unexpected end while parsing path: {path}")
            inner = path[i + 1 : close].strip()
            if inner[:1] in "'\"" and inner[-1:] == inner[:1] and len(inner) >= 2:
                segments.append(inner[1:-1])
            elif inner.isdigit():
                segments.append(int(inner))
            else:
                raise ExpressionRuntimeError(f"Unsupported JSON path: {path}")
            i = close + 1
        elif ch in "*?@()":
            raise ExpressionRuntimeError(f"Unsupported JSON path: {path}")
        else:
            name.append(ch)
            i += 1
    if name:
        segments.append("".join(name))
    return segments


def _value_factory(t: str) -> Callable[..., Any]:
    return lambda token, key: token_value(json_get(token, key), t)


def _self_value_factory(t: str) -> Callable[..., Any]:
    return lambda token: token_value(token, t)


_jtoken = define(JTOKEN)
_jtoken.indexer((Param("propertyName", STRING),), JTOKEN, json_get)
_jtoken.indexer((Param("index", INT),), JTOKEN, json_get)
_jtoken.prop("Type", "JTokenType", json_type)
_jtoken.prop("HasValues", BOOL, lambda t: type(t) in (dict, list) and bool(t))
_jtoken.prop("First", JTOKEN, lambda t: _container_edge(t, last=False))
_jtoken.prop("Last", JTOKEN, lambda t: _container_edge(t, last=True))
_jtoken.method("Value", (Param("key", OBJECT),), "T", _value_factory, type_args=TOKEN_TYPE_ARGS)
_jtoken.method("Value", (), "T", _self_value_factory, type_args=TOKEN_TYPE_ARGS)
_jtoken.method("ToObject", (), "T", _self_value_factory, type_args=TOKEN_TYPE_ARGS)
_jtoken.method(
    "ToString", (Param("formatting", "Formatting"),), STRING, lambda t, f: json_text(t, indented=f == "Indented")
)
_jtoken.method("SelectToken", (Param("path", STRING),), JTOKEN, _select_token)

_jobject = define(JOBJECT)
_jobject.prop("Count", INT, len)
_jobject.method("ContainsKey", (Param("propertyName", STRING),), BOOL, lambda o, k: not_null(k, "propertyName") in o)
_jobject.method(
    "GetValue", (Param("propertyName", STRING),), JTOKEN, lambda o, k: json_get(o, k) if k is not None else None
)
_jarray = define(JARRAY)
_jarray.prop("Count", INT, len)


def _parser(expected: str) -> Callable[[Any, str | None], Any]:
    return lambda _, s: parse_json(not_null(s, "json"), expected)


for _json_type in (JTOKEN, JOBJECT, JARRAY):
    define("static:" + _json_type).method("Parse", (Param("json", STRING),), _json_type, _parser(_json_type))
