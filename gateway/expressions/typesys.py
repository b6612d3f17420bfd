"""Static types of the expression language and the allow-list tables of members.

Types are plain strings: the C# name of the type (``string``, ``int``, ``JObject``, ``DateTime``), ``T?`` for a
nullable value type, ``T[]`` for an array, ``null`` for the null literal, ``void``, ``static:Name`` for a type used
as a receiver of static members (``Math``, ``string``) and ``namespace:System.Text`` for a namespace prefix.

Every member an expression can reach is a :class:`Prop` or an :class:`Overload` registered with :func:`define`
for one type; the compiler looks members up only here (never on Python objects), so anything not registered is a
compile-time error. Member implementations receive the runtime value of the receiver as their first argument;
for ``static:`` types that value is the request context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from .dotnet import JNULL

__all__ = (
    "BOOL",
    "CHAR",
    "DATETIME",
    "DOUBLE",
    "GUID",
    "INT",
    "JARRAY",
    "JOBJECT",
    "JTOKEN",
    "LONG",
    "NULL",
    "OBJECT",
    "REQUIRED",
    "STRING",
    "STRING_ARRAY",
    "TIMESPAN",
    "VOID",
    "Members",
    "Overload",
    "Param",
    "Prop",
    "can_be_null",
    "define",
    "display",
    "element_type",
    "find_indexers",
    "find_methods",
    "find_prop",
    "find_unavailable",
    "implicit",
    "implicit_converter",
    "is_numeric",
    "lookup_chain",
    "nullable_of",
    "strip_nullable",
)

OBJECT: Final = "object"
STRING: Final = "string"
INT: Final = "int"
LONG: Final = "long"
DOUBLE: Final = "double"
BOOL: Final = "bool"
CHAR: Final = "char"
NULL: Final = "null"
VOID: Final = "void"
JTOKEN: Final = "JToken"
JOBJECT: Final = "JObject"
JARRAY: Final = "JArray"
DATETIME: Final = "DateTime"
TIMESPAN: Final = "TimeSpan"
GUID: Final = "Guid"
STRING_ARRAY: Final = "string[]"
ENUMERABLE: Final = "IEnumerable"  # pseudo type holding the LINQ methods; "E" is the element type
NULLABLE: Final = "Nullable"  # pseudo type holding the members of T?; "U" is the underlying type

VALUE_TYPES: Final = frozenset({
    INT, LONG, DOUBLE, BOOL, CHAR, DATETIME, TIMESPAN, GUID, "StringComparison", "Formatting", "JTokenType",
    "DayOfWeek", "StringSplitOptions", "ProductState",
})  # fmt: skip
_NUMERIC_RANK: Final = {CHAR: 0, INT: 1, LONG: 2, DOUBLE: 3}
_BASES: Final = {JOBJECT: JTOKEN, JARRAY: JTOKEN}


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()


@dataclass(frozen=True, slots=True)
class Param:
    """A method parameter. ``type`` may name the type parameter ``T``, the element type ``E``, or be a lambda
    ``E=>bool`` / ``E=>R``. ``params`` makes it a C# ``params`` array of ``type`` (the last parameter)."""

    name: str
    type: str
    default: object = REQUIRED
    params: bool = False


@dataclass(frozen=True, slots=True)
class Overload:
    """One method signature. For a generic method (``type_args`` set: the allowed values of ``T``), ``impl`` is a
    factory called once at compile time with the bound ``T`` that returns the implementation."""

    params: tuple[Param, ...]
    result: str
    impl: Callable[..., Any]
    type_args: tuple[str, ...] | None = None
    flag: str | None = None


@dataclass(frozen=True, slots=True)
class Prop:
    type: str
    get: Callable[[Any], Any]
    flag: str | None = None


@dataclass(slots=True)
class Members:
    """The allow-list of one type: properties, methods (by name, overloads in preference order), indexers, and
    members known from APIM that this gateway cannot offer (name -> explanation)."""

    props: dict[str, Prop] = field(default_factory=dict)
    methods: dict[str, list[Overload]] = field(default_factory=dict)
    indexers: list[Overload] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)

    def prop(self, name: str, type_: str, get: Callable[[Any], Any], flag: str | None = None) -> None:
        self.props[name] = Prop(type_, get, flag)

    def method(
        self,
        name: str,
        params: tuple[Param, ...] | list[Param],
        result: str,
        impl: Callable[..., Any],
        *,
        type_args: tuple[str, ...] | None = None,
        flag: str | None = None,
    ) -> None:
        self.methods.setdefault(name, []).append(Overload(tuple(params), result, impl, type_args, flag))

    def indexer(self, params: tuple[Param, ...] | list[Param], result: str, impl: Callable[..., Any]) -> None:
        self.indexers.append(Overload(tuple(params), result, impl))


_TABLES: dict[str, Members] = {}


def define(type_name: str) -> Members:
    """The (mutable, created on first use) member table of ``type_name``; used by the library modules at import."""
    table = _TABLES.get(type_name)
    if table is None:
        table = _TABLES[type_name] = Members()
    return table


#
# Type relations
#


def display(t: str) -> str:
    """A static type as C# error messages show it."""
    if t.startswith(("static:", "namespace:")):
        return t.partition(":")[2]
    return "<null>" if t == NULL else t


def strip_nullable(t: str) -> str:
    return t[:-1] if t.endswith("?") else t


def nullable_of(t: str) -> str:
    return t + "?" if t in VALUE_TYPES else t


def can_be_null(t: str) -> bool:
    return t == NULL or t.endswith("?") or (t not in VALUE_TYPES and t != VOID)


def is_numeric(t: str) -> bool:
    return t in _NUMERIC_RANK


def element_type(t: str) -> str | None:
    """The element type when ``t`` can be enumerated with the LINQ subset (arrays, JArray, JToken)."""
    if t.endswith("[]"):
        return t[:-2]
    if t in (JARRAY, JTOKEN, JOBJECT):
        return JTOKEN
    return None


def _is_subtype(src: str, dst: str) -> bool:
    while src is not None:
        if src == dst:
            return True
        src = _BASES.get(src)  # type: ignore[assignment]  # None at the root of the hierarchy ends the loop
    return False


def implicit(src: str, dst: str) -> bool:
    """Whether C# converts a value of static type ``src`` to ``dst`` implicitly."""
    if src == dst:
        return True
    if src == VOID or dst in (VOID, NULL):
        return False
    if dst == OBJECT:
        return True
    if src == NULL:
        return can_be_null(dst)
    if dst.endswith("?"):
        return implicit(strip_nullable(src), dst[:-1])
    if src in _NUMERIC_RANK and dst in _NUMERIC_RANK:
        return _NUMERIC_RANK[src] < _NUMERIC_RANK[dst]
    if dst == JTOKEN and src in _JSON_PRIMITIVES:  # Newtonsoft's implicit operators JToken(string), ...
        return True
    if src.endswith("[]") and dst.endswith("[]"):  # array covariance (reference elements only)
        element = src[:-2]
        return element not in VALUE_TYPES and implicit(element, dst[:-2])
    return _is_subtype(src, dst)


_JSON_PRIMITIVES: Final = frozenset({STRING, INT, LONG, DOUBLE, BOOL})


def _null_to_json_null(value: Any) -> Any:
    return JNULL if value is None else value  # (JToken)(string)null is a JValue holding null


def _char_to_number(value: Any) -> Any:
    return ord(value) if value is not None else None


def _to_float(value: Any) -> Any:
    return float(value) if value is not None else None


def implicit_converter(src: str, dst: str) -> Callable[[Any], Any] | None:
    """The runtime conversion for an implicit conversion, or None when the Python value is already right."""
    if dst == JTOKEN and src in _JSON_PRIMITIVES:
        return _null_to_json_null
    src, target = strip_nullable(src), strip_nullable(dst)
    if src == CHAR and target in (INT, LONG, DOUBLE):
        return _char_to_number if target != DOUBLE else lambda v: float(ord(v)) if v is not None else None
    if src in (INT, LONG) and target == DOUBLE:
        return _to_float
    return None


#
# Member lookup
#


def lookup_chain(t: str) -> list[tuple[str, dict[str, str]]]:
    """The tables searched for members of ``t``, most specific first, each with its placeholder bindings."""
    if t.endswith("?") and t != "?":
        return [(NULLABLE, {"U": t[:-1]}), (OBJECT, {})]
    chain: list[tuple[str, dict[str, str]]] = []
    current: str | None = t
    while current is not None:
        chain.append((current, {}))
        current = _BASES.get(current)
    element = element_type(t)
    if t.endswith("[]"):
        chain.insert(1, ("T[]", {"E": element or OBJECT}))
    if element is not None:
        chain.append((ENUMERABLE, {"E": element}))
    if not t.startswith(("static:", "namespace:")):
        chain.append((OBJECT, {}))
    return chain


def _substitute(t: str, bindings: dict[str, str]) -> str:
    if not bindings:
        return t
    if t in bindings:
        return bindings[t]
    if t.endswith("[]") and t[:-2] in bindings:
        return bindings[t[:-2]] + "[]"
    if "=>" in t:
        arg, _, result = t.partition("=>")
        return f"{_substitute(arg, bindings)}=>{_substitute(result, bindings)}"
    return t


def _bind_overload(overload: Overload, bindings: dict[str, str]) -> Overload:
    if not bindings:
        return overload
    params = tuple(Param(p.name, _substitute(p.type, bindings), p.default, p.params) for p in overload.params)
    return Overload(params, _substitute(overload.result, bindings), overload.impl, overload.type_args, overload.flag)


def find_prop(t: str, name: str) -> Prop | None:
    """Property ``name`` of ``t`` (placeholders substituted), or None."""
    for table_name, bindings in lookup_chain(t):
        table = _TABLES.get(table_name)
        prop = table.props.get(name) if table is not None else None
        if prop is not None:
            return Prop(_substitute(prop.type, bindings), prop.get, prop.flag) if bindings else prop
    return None


def find_methods(t: str, name: str) -> list[Overload]:
    """All overloads of method ``name`` visible on ``t`` (placeholders substituted), most specific first."""
    found: list[Overload] = []
    for table_name, bindings in lookup_chain(t):
        table = _TABLES.get(table_name)
        if table is not None:
            found.extend(_bind_overload(o, bindings) for o in table.methods.get(name, ()))
    return found


def find_indexers(t: str) -> list[Overload]:
    found: list[Overload] = []
    for table_name, bindings in lookup_chain(t):
        table = _TABLES.get(table_name)
        if table is not None:
            found.extend(_bind_overload(o, bindings) for o in table.indexers)
    return found


def find_unavailable(t: str, name: str) -> str | None:
    for table_name, _ in lookup_chain(t):
        table = _TABLES.get(table_name)
        if table is not None and name in table.unavailable:
            return table.unavailable[name]
    return None
