"""Typing and implementation of the unary, binary and conditional operators (C# rules, .NET arithmetic).

Each function takes compiled operands ``(static type, fn)`` and returns the compiled result, or raises
ExpressionError at ``pos`` when C# would reject the operand types.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

from .conversions import wrap_int, wrap_long
from .dotnet import equals, to_string
from .errors import ExpressionError, ExpressionRuntimeError
from .runtime import Env, Fn, check_length, with_converter
from .typesys import (
    BOOL,
    CHAR,
    DATETIME,
    DOUBLE,
    INT,
    LONG,
    NULL,
    STRING,
    TIMESPAN,
    VALUE_TYPES,
    VOID,
    can_be_null,
    display,
    implicit,
    implicit_converter,
    is_numeric,
    nullable_of,
    strip_nullable,
)

__all__ = ("binary", "conditional", "unary")

Typed = tuple[str, Fn]

MSG_OPERATOR: Final = "operator '{}' cannot be applied to operands of type '{}' and '{}'"
MSG_UNARY: Final = "operator '{}' cannot be applied to an operand of type '{}'"
MSG_NOT_NULLABLE: Final = "operator '{}' cannot be applied to an operand of type '{}' (it is never null)"
MSG_CONDITIONAL_TYPE: Final = "type of conditional expression cannot be determined: no conversion between '{}' and '{}'"
MSG_DIVIDE_BY_ZERO: Final = "Attempted to divide by zero."
MSG_DATE_RANGE: Final = "The added or subtracted value results in an un-representable DateTime."

# Types whose == is plain value equality of the Python values.
_VALUE_EQUALITY: Final = VALUE_TYPES | {STRING, NULL}
_CONCAT_CHECK: Final = 1 << 20  # concatenations longer than this are checked against the string cap

_COMPARISONS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_BOOL_OPS: Final[dict[str, Callable[[bool, bool], bool]]] = {
    "&": lambda a, b: a and b,
    "|": lambda a, b: a or b,
    "^": lambda a, b: a != b,
}


def _error(op: str, left: str, right: str, pos: int) -> ExpressionError:
    return ExpressionError(MSG_OPERATOR.format(op, display(left), display(right)), pos)


#
# Unary
#


def unary(op: str, pos: int, operand: Typed) -> Typed:
    operand_type, fn = operand
    base = strip_nullable(operand_type)
    if op == "!":
        if base != BOOL:
            raise ExpressionError(MSG_UNARY.format("!", display(operand_type)), pos)
        return operand_type, lambda env: _lift1(_not, fn(env))
    if base == TIMESPAN and op == "-":
        return operand_type, lambda env: _lift1(_negate, fn(env))
    if not is_numeric(base):
        raise ExpressionError(MSG_UNARY.format(op, display(operand_type)), pos)
    result = INT if base == CHAR else base
    if base == CHAR:
        fn = with_converter(fn, _char_code(CHAR))
    if op == "+":
        return (nullable_of(result) if operand_type.endswith("?") else result), fn
    wrap = wrap_int if result == INT else (wrap_long if result == LONG else None)
    negate: Callable[[Any], Any] = _negate if wrap is None else (lambda v: wrap(-v))
    return (nullable_of(result) if operand_type.endswith("?") else result), lambda env: _lift1(negate, fn(env))


def _not(value: Any) -> Any:
    return not value


def _negate(value: Any) -> Any:
    return -value


#
# Binary
#


def binary(op: str, pos: int, left: Typed, right: Typed) -> Typed:
    """Every binary operator but ``&&``/``||`` (which the compiler checks as conditions)."""
    left_type, right_type = left[0], right[0]
    if op == "??":
        return _coalesce(pos, left, right)
    if op in ("==", "!="):
        return _equality(op, pos, left, right)
    lf, rf = left[1], right[1]
    if op in _BOOL_OPS:
        if left_type != BOOL or right_type != BOOL:
            raise _error(op, left_type, right_type, pos)
        fn = _BOOL_OPS[op]
        return BOOL, lambda env: fn(lf(env), rf(env))
    if op == "+" and STRING in (left_type, right_type):
        if left_type == NULL and right_type == NULL:
            raise _error(op, left_type, right_type, pos)
        return STRING, _concat(lf, left_type, rf, right_type)
    temporal = _temporal(op, left_type, right_type)
    if temporal is not None:
        result_type, pair = temporal
        return result_type, lambda env: _lift2(pair, lf(env), rf(env))
    numeric = _numeric_type(left_type, right_type)
    if numeric is None:
        raise _error(op, left_type, right_type, pos)
    lf = with_converter(lf, _promote(left_type, numeric))
    rf = with_converter(rf, _promote(right_type, numeric))
    if op in _COMPARISONS:
        compare = _COMPARISONS[op]
        return BOOL, lambda env: _compare(compare, lf(env), rf(env))
    arith = _arithmetic(op, numeric)
    if not (left_type.endswith("?") or right_type.endswith("?")):
        return numeric, lambda env: arith(lf(env), rf(env))
    return nullable_of(numeric), lambda env: _lift2(arith, lf(env), rf(env))


def _temporal(op: str, left: str, right: str) -> tuple[str, Callable[[Any, Any], Any]] | None:
    left, right = strip_nullable(left), strip_nullable(right)
    if op in _COMPARISONS and left == right and left in (DATETIME, TIMESPAN):
        return BOOL, _COMPARISONS[op]
    if op == "+" and left in (DATETIME, TIMESPAN) and right == TIMESPAN:
        return left, _date_arith(lambda a, b: a + b)
    if op == "-" and left == DATETIME and right == DATETIME:
        return TIMESPAN, lambda a, b: a - b
    if op == "-" and left in (DATETIME, TIMESPAN) and right == TIMESPAN:
        return left, _date_arith(lambda a, b: a - b)
    return None


def _coalesce(pos: int, left: Typed, right: Typed) -> Typed:
    (left_type, lf), (right_type, rf) = left, right
    if left_type == NULL:
        raise _error("??", left_type, right_type, pos)
    if not can_be_null(left_type):
        raise ExpressionError(MSG_NOT_NULLABLE.format("??", display(left_type)), pos)
    underlying = strip_nullable(left_type)
    if left_type.endswith("?") and implicit(right_type, underlying):
        result_type = underlying
    elif implicit(right_type, left_type):
        result_type = left_type
    elif implicit(left_type, right_type):
        result_type = right_type
    else:
        raise _error("??", left_type, right_type, pos)
    lf = with_converter(lf, implicit_converter(underlying, result_type))
    rf = with_converter(rf, implicit_converter(right_type, result_type))

    def coalesce(env: Env) -> Any:
        value = lf(env)
        return value if value is not None else rf(env)

    return result_type, coalesce


def _equality(op: str, pos: int, left: Typed, right: Typed) -> Typed:
    """``==``/``!=``: value equality for strings, numbers and other values; JSON tokens and other objects compare
    with :func:`.dotnet.equals` (strings by value, objects by identity)."""
    (left_type, lf), (right_type, rf) = left, right
    numeric = _numeric_type(left_type, right_type) is not None
    compatible = implicit(left_type, right_type) or implicit(right_type, left_type) or numeric
    if not (compatible or NULL in (left_type, right_type)) or VOID in (left_type, right_type):
        raise _error(op, left_type, right_type, pos)
    negate = op == "!="
    if strip_nullable(left_type) in _VALUE_EQUALITY and strip_nullable(right_type) in _VALUE_EQUALITY:
        if numeric:
            lf = with_converter(lf, _char_code(left_type))
            rf = with_converter(rf, _char_code(right_type))
        if negate:
            return BOOL, lambda env: lf(env) != rf(env)
        return BOOL, lambda env: lf(env) == rf(env)
    if negate:
        return BOOL, lambda env: not equals(lf(env), rf(env))
    return BOOL, lambda env: equals(lf(env), rf(env))


#
# Conditional
#


def conditional(pos: int, condition: Fn, then: Typed, otherwise: Typed) -> Typed:
    (then_type, then_fn), (else_type, else_fn) = then, otherwise
    if then_type == else_type or implicit(else_type, then_type):
        result_type = then_type
    elif implicit(then_type, else_type):
        result_type = else_type
    elif NULL in (then_type, else_type):  # C# 9 target typing: int and null give int?
        result_type = nullable_of(then_type if else_type == NULL else else_type)
    else:
        raise ExpressionError(MSG_CONDITIONAL_TYPE.format(display(then_type), display(else_type)), pos)
    then_fn = with_converter(then_fn, implicit_converter(then_type, result_type))
    else_fn = with_converter(else_fn, implicit_converter(else_type, result_type))
    return result_type, lambda env: then_fn(env) if condition(env) else else_fn(env)


#
# Implementations
#


def _lift1(fn: Callable[[Any], Any], value: Any) -> Any:
    return None if value is None else fn(value)


def _lift2(fn: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    return fn(a, b)


def _compare(compare: Callable[[Any, Any], bool], a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    return compare(a, b)


def _date_arith(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def arith(a: Any, b: Any) -> Any:
        try:
            return fn(a, b)
        except OverflowError:
            raise ExpressionRuntimeError(MSG_DATE_RANGE) from None

    return arith


def _char_code(t: str) -> Callable[[Any], Any] | None:
    if strip_nullable(t) == CHAR:
        return lambda v: ord(v) if v is not None else None
    return None


def _numeric_type(left: str, right: str) -> str | None:
    """The type binary numeric promotion gives ``left op right``, or None when either is not numeric."""
    a, b = strip_nullable(left), strip_nullable(right)
    if not (is_numeric(a) and is_numeric(b)):
        return None
    for candidate in (DOUBLE, LONG):
        if candidate in (a, b):
            return candidate
    return INT


def _promote(source: str, numeric: str) -> Callable[[Any], Any] | None:
    base = strip_nullable(source)
    if base == CHAR:
        if numeric == DOUBLE:
            return lambda v: float(ord(v)) if v is not None else None
        return _char_code(base)
    if numeric == DOUBLE and base != DOUBLE:
        return lambda v: float(v) if v is not None else None
    return None


def _int_div(a: int, b: int) -> int:
    if b == 0:
        raise ExpressionRuntimeError(MSG_DIVIDE_BY_ZERO)
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b > 0) else -quotient


def _int_mod(a: int, b: int) -> int:
    if b == 0:
        raise ExpressionRuntimeError(MSG_DIVIDE_BY_ZERO)
    remainder = abs(a) % abs(b)
    return remainder if a >= 0 else -remainder


def _float_div(a: float, b: float) -> float:
    if b == 0:
        if a == 0 or a != a:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _float_mod(a: float, b: float) -> float:
    if b == 0 or math.isinf(a):
        return math.nan
    return math.fmod(a, b)


_FLOAT_OPS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _float_div,
    "%": _float_mod,
}
_INT_OPS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _int_div,
}


def _arithmetic(op: str, numeric: str) -> Callable[[Any, Any], Any]:
    """``+ - * / %`` for ``numeric``; int and long wrap around like C# unchecked arithmetic."""
    if numeric == DOUBLE:
        return _FLOAT_OPS[op]
    if op == "%":
        return _int_mod
    raw = _INT_OPS[op]
    wrap = wrap_int if numeric == INT else wrap_long
    return lambda a, b: wrap(raw(a, b))


def _concat(left: Fn, left_type: str, right: Fn, right_type: str) -> Fn:
    if left_type == STRING and right_type == STRING:

        def concat_strings(env: Env) -> str:
            a = left(env)
            b = right(env)
            text = (a if a is not None else "") + (b if b is not None else "")
            return check_length(text) if len(text) > _CONCAT_CHECK else text

        return concat_strings

    def concat(env: Env) -> str:
        text = to_string(left(env)) + to_string(right(env))
        return check_length(text) if len(text) > _CONCAT_CHECK else text

    return concat
