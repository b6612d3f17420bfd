""".NET value semantics on Python values: ``ToString()``, numeric/date format strings, composite formatting.

Runtime representation of the expression language's values:

============================  ==========================================================
C# type                       Python value
============================  ==========================================================
string / char                 ``str`` (a char is a 1-character string)
int / long / double / bool    ``int`` / ``int`` / ``float`` / ``bool``
null                          ``None``
DateTime / TimeSpan / Guid    aware UTC ``datetime`` / ``timedelta`` / :class:`Guid`
T[] / byte[]                  ``tuple`` / ``bytes``
JObject / JArray              ``dict`` / ``list`` (as parsed by orjson)
JValue                        ``str``/``int``/``float``/``bool``, or :data:`JNULL` for a JSON ``null``
============================  ==========================================================

Formatting follows the invariant culture. ``DateTime.ToString()`` uses the invariant ``G`` pattern
(``MM/dd/yyyy HH:mm:ss``); JSON is indented with two spaces and ``\\n`` line ends (Newtonsoft uses the platform
newline, which is also ``\\n`` on the Linux self-hosted gateway).
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import orjson

from .errors import ExpressionRuntimeError

__all__ = (
    "JNULL",
    "Guid",
    "JsonNull",
    "align",
    "composite_format",
    "equals",
    "format_datetime",
    "format_double",
    "format_number",
    "format_timespan",
    "format_value",
    "json_text",
    "json_type",
    "net_type_name",
    "to_string",
    "utc",
)

MSG_BAD_FORMAT: Final = "Input string was not in a correct format (format string {!r})."

_MONTHS: Final = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
    "December",
)  # fmt: skip
_DAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_STANDARD_DATE_FORMATS: Final = {
    "d": "MM/dd/yyyy",
    "D": "dddd, dd MMMM yyyy",
    "t": "HH:mm",
    "T": "HH:mm:ss",
    "f": "dddd, dd MMMM yyyy HH:mm",
    "F": "dddd, dd MMMM yyyy HH:mm:ss",
    "g": "MM/dd/yyyy HH:mm",
    "G": "MM/dd/yyyy HH:mm:ss",
    "M": "MMMM dd",
    "m": "MMMM dd",
    "Y": "yyyy MMMM",
    "y": "yyyy MMMM",
    "s": "yyyy'-'MM'-'dd'T'HH':'mm':'ss",
    "u": "yyyy'-'MM'-'dd HH':'mm':'ss'Z'",
    "r": "ddd, dd MMM yyyy HH':'mm':'ss 'GMT'",
    "R": "ddd, dd MMM yyyy HH':'mm':'ss 'GMT'",
    "o": "yyyy'-'MM'-'dd'T'HH':'mm':'ss'.'fffffffK",
    "O": "yyyy'-'MM'-'dd'T'HH':'mm':'ss'.'fffffffK",
}
_TICKS_PER_SECOND: Final = 10_000_000


class JsonNull:
    """A JSON ``null`` inside a JSON document (Newtonsoft's ``JValue`` of type Null): not a C# null."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "JNULL"

    def __bool__(self) -> bool:
        return False


JNULL: Final = JsonNull()


class Guid:
    """A ``System.Guid`` (kept as its lower-case "D" text)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    @classmethod
    def new(cls) -> Guid:
        return cls(str(uuid.uuid4()))

    def format(self, fmt: str | None) -> str:
        if fmt in (None, "", "D", "d"):
            return self.text
        if fmt in ("N", "n"):
            return self.text.replace("-", "")
        if fmt in ("B", "b"):
            return "{" + self.text + "}"
        if fmt in ("P", "p"):
            return "(" + self.text + ")"
        raise ExpressionRuntimeError(MSG_BAD_FORMAT.format(fmt))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Guid) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Guid({self.text!r})"


#
# ToString()
#


def format_double(x: float) -> str:
    """``double.ToString()``: the shortest round-trip digits, scientific below 1E-05 and from 1E+15."""
    if x != x:
        return "NaN"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(x)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent = int(exponent) + len(digit_tuple) - len(digits)
    sci = len(digits) + exponent - 1
    prefix = "-" if sign else ""
    if -5 < sci < 15:
        if exponent >= 0:
            return prefix + digits + "0" * exponent
        point = len(digits) + exponent
        if point > 0:
            return f"{prefix}{digits[:point]}.{digits[point:]}"
        return f"{prefix}0.{'0' * -point}{digits}"
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{prefix}{mantissa}E{'+' if sci >= 0 else '-'}{abs(sci):02d}"


def to_string(value: Any) -> str:
    """``Convert.ToString(value)`` / what string concatenation uses: null gives ""."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]  # type(value) is str; mypy does not narrow on type() identity
    if value is None or value is JNULL:
        return ""
    if kind is bool:
        return "True" if value else "False"
    if kind is int:
        return str(value)
    if kind is float:
        return format_double(value)
    if kind is dict or kind is list:
        return json_text(value, indented=True)
    if kind is datetime:
        return format_datetime(value, "G")
    if kind is timedelta:
        return format_timespan(value, None)
    if kind is Guid:
        return value.text  # type: ignore[no-any-return]  # type(value) is Guid, whose text is a str; mypy does not narrow on type()
    to_net = getattr(kind, "net_string", None)  # context objects defined by this package (Url)
    if to_net is not None:
        return to_net(value)  # type: ignore[no-any-return]  # net_string is looked up with getattr, so mypy sees Any
    return net_type_name(value)


def net_type_name(value: Any) -> str:
    """The .NET type name of a runtime value (what ``object.ToString()`` prints for most types)."""
    kind = type(value)
    if kind is str:
        return "System.String"
    if kind is bool:
        return "System.Boolean"
    if kind is int:
        return "System.Int32" if -(2**31) <= value < 2**31 else "System.Int64"
    if kind is float:
        return "System.Double"
    if kind is dict:
        return "Newtonsoft.Json.Linq.JObject"
    if kind is list:
        return "Newtonsoft.Json.Linq.JArray"
    if kind is tuple:
        return "System.String[]" if all(type(v) is str for v in value) else "System.Object[]"
    if kind is bytes:
        return "System.Byte[]"
    if kind is datetime:
        return "System.DateTime"
    if kind is timedelta:
        return "System.TimeSpan"
    if kind is Guid:
        return "System.Guid"
    if value is JNULL:
        return "Newtonsoft.Json.Linq.JValue"
    return getattr(kind, "net_name", "System.Object")


def equals(a: Any, b: Any) -> bool:
    """``==`` between values whose static types do not pick a more specific rule: numbers by value, strings
    ordinally, JSON tokens and other objects by identity (as reference equality in .NET), null only with null."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if ta in (int, float) and tb in (int, float):
        return a == b  # type: ignore[no-any-return]  # both are numbers: == gives a bool, typed Any on these Any operands
    if ta is tb and ta in (str, datetime, timedelta, Guid, bytes):
        return a == b  # type: ignore[no-any-return]  # same-type values: == gives a bool, typed Any on these Any operands
    return False


#
# JSON
#


def json_type(value: Any) -> str:
    """Newtonsoft's JTokenType name of a JSON runtime value."""
    kind = type(value)
    if kind is dict:
        return "Object"
    if kind is list:
        return "Array"
    if kind is str:
        return "String"
    if kind is bool:
        return "Boolean"
    if kind is int:
        return "Integer"
    if kind is float:
        return "Float"
    if value is JNULL or value is None:
        return "Null"
    if kind is datetime:
        return "Date"
    return "Raw"


def _json_default(value: Any) -> Any:
    if value is JNULL:
        return None
    if isinstance(value, Guid):
        return value.text
    if isinstance(value, timedelta):
        return format_timespan(value, None)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError


def json_text(value: Any, *, indented: bool) -> str:
    """``JToken.ToString(Formatting.Indented / None)``: the value written as JSON."""
    option = orjson.OPT_INDENT_2 if indented else 0
    try:
        return orjson.dumps(JNULL if value is None else value, default=_json_default, option=option).decode()
    except TypeError as exc:
        raise ExpressionRuntimeError(f"Cannot write {net_type_name(value)} as JSON.") from exc


#
# Numbers
#


def _group(digits: str) -> str:
    head = len(digits) % 3 or 3
    groups = [digits[:head]] + [digits[i : i + 3] for i in range(head, len(digits), 3)]
    return ",".join(groups)


def _fixed(value: float | int, decimals: int, grouped: bool) -> str:
    text = (
        f"{abs(value):.{decimals}f}"
        if isinstance(value, float)
        else f"{abs(value)}" + ("." + "0" * decimals if decimals else "")
    )
    if grouped:
        whole, dot, frac = text.partition(".")
        text = _group(whole) + dot + frac
    negative = value < 0 and any(c not in "0.," for c in text)
    return "-" + text if negative else text


def format_number(value: float | int, fmt: str) -> str:
    """``ToString(format)`` for int/long/double: the standard D, E, F, G, N, P, R, X formats and simple custom
    patterns made of ``0``, ``#``, ``,`` and ``.``."""
    if not fmt:
        return to_string(value)
    letter, precision_text = fmt[0], fmt[1:]
    if letter.upper() in "DEFGNPRX" and (precision_text.isdigit() or not precision_text):
        precision = int(precision_text) if precision_text else None
        if precision is not None and precision > 99:
            raise ExpressionRuntimeError(MSG_BAD_FORMAT.format(fmt))
        return _standard_number(value, letter, precision, fmt)
    return _custom_number(value, fmt)


def _standard_number(value: float | int, letter: str, precision: int | None, fmt: str) -> str:
    upper = letter.upper()
    is_int = isinstance(value, int)
    if upper == "D":
        if not is_int:
            raise ExpressionRuntimeError(MSG_BAD_FORMAT.format(fmt))
        text = str(abs(value)).rjust(precision or 0, "0")
        return "-" + text if value < 0 else text
    if upper == "X":
        if not isinstance(value, int):
            raise ExpressionRuntimeError(MSG_BAD_FORMAT.format(fmt))
        text = format(value & 0xFFFFFFFF if -(2**31) <= value < 0 else value & 0xFFFFFFFFFFFFFFFF, "x")
        text = text.rjust(precision or 0, "0")
        return text.upper() if letter == "X" else text
    if upper == "F":
        return _fixed(value, 2 if precision is None else precision, grouped=False)
    if upper == "N":
        return _fixed(value, 2 if precision is None else precision, grouped=True)
    if upper == "P":
        return _fixed(value * 100, 2 if precision is None else precision, grouped=True) + " %"
    if upper == "E":
        text = f"{float(value):.{6 if precision is None else precision}e}"
        mantissa, _, exp = text.partition("e")
        return f"{mantissa}{letter}{exp[0]}{abs(int(exp)):03d}"
    if upper == "G" and precision:
        text = f"{value:.{precision}g}"
        if "e" in text:
            mantissa, _, exp = text.partition("e")
            return f"{mantissa}{'E' if letter == 'G' else 'e'}{exp[0]}{abs(int(exp)):02d}"
        return text
    return to_string(value)


def _custom_number(value: float | int, fmt: str) -> str:
    if not fmt or any(c not in "0#.," for c in fmt):
        raise ExpressionRuntimeError(MSG_BAD_FORMAT.format(fmt))
    whole, _, frac = fmt.partition(".")
    required = frac.count("0")
    decimals = len(frac.replace(",", ""))
    text = _fixed(float(value) if decimals else value, decimals, grouped="," in whole)
    sign = ""
    if text.startswith("-"):
        sign, text = "-", text[1:]
    head, dot, tail = text.partition(".")
    if dot:
        tail = tail.rstrip("0")
        tail = tail + "0" * (required - len(tail)) if len(tail) < required else tail
    min_int = whole.count("0")
    if head == "0" and min_int == 0:
        head = ""
    digits = head.replace(",", "")
    if len(digits) < min_int:
        digits = digits.rjust(min_int, "0")
        head = _group(digits) if "," in whole else digits
    result = head + ("." + tail if tail else "")
    return sign + result if result and any(c not in "0.," for c in result) else (result or "0")


#
# DateTime / TimeSpan
#


def _fraction(dt: datetime, width: int, trim: bool) -> str:
    digits = f"{dt.microsecond:06d}0"[:width]
    return digits.rstrip("0") if trim else digits


def format_datetime(dt: datetime, fmt: str | None) -> str:
    """``DateTime.ToString(format)``: the standard one-letter formats and the custom specifiers."""
    if not fmt:
        fmt = "G"
    if len(fmt) == 1:
        pattern = _STANDARD_DATE_FORMATS.get(fmt)
        if pattern is None:
            raise ExpressionRuntimeError(MSG_BAD_FORMAT.format(fmt))
        fmt = pattern
    out: list[str] = []
    i, size = 0, len(fmt)
    while i < size:
        ch = fmt[i]
        if ch in "'\"":
            close = fmt.find(ch, i + 1)
            if close < 0:
                raise ExpressionRuntimeError(MSG_BAD_FORMAT.format(fmt))
            out.append(fmt[i + 1 : close])
            i = close + 1
            continue
        if ch == "\\":
            out.append(fmt[i + 1 : i + 2])
            i += 2
            continue
        run = 1
        while i + run < size and fmt[i + run] == ch:
            run += 1
        out.append(_date_field(dt, ch, run, fmt))
        i += run
    return "".join(out)


def _date_field(dt: datetime, ch: str, run: int, fmt: str) -> str:
    if ch == "y":
        return f"{dt.year % 100}" if run == 1 else (f"{dt.year % 100:02d}" if run == 2 else f"{dt.year:0{run}d}")
    if ch == "M":
        if run >= 4:
            return _MONTHS[dt.month - 1]
        return _MONTHS[dt.month - 1][:3] if run == 3 else f"{dt.month:0{run}d}"
    if ch == "d":
        if run >= 4:
            return _DAYS[dt.weekday()]
        return _DAYS[dt.weekday()][:3] if run == 3 else f"{dt.day:0{run}d}"
    if ch in "Hhms":
        value = {"H": dt.hour, "h": dt.hour % 12 or 12, "m": dt.minute, "s": dt.second}[ch]
        return f"{value:0{min(run, 2)}d}"
    if ch in "fF":
        if run > 7:
            raise ExpressionRuntimeError(MSG_BAD_FORMAT.format(fmt))
        return _fraction(dt, run, trim=ch == "F")
    if ch == "t":
        marker = "AM" if dt.hour < 12 else "PM"
        return marker[:1] if run == 1 else marker
    if ch == "K":
        return "Z" * run
    if ch == "z":
        return "+0" if run == 1 else ("+00" if run == 2 else "+00:00")
    return ch * run


def format_timespan(td: timedelta, fmt: str | None) -> str:
    """``TimeSpan.ToString()`` (the constant ``c`` format, also for ``g``/``G``): ``[-][d.]hh:mm:ss[.fffffff]``."""
    if fmt not in (None, "", "c", "t", "T", "g", "G"):
        raise ExpressionRuntimeError(MSG_BAD_FORMAT.format(fmt))
    ticks = (td.days * 86_400 + td.seconds) * _TICKS_PER_SECOND + td.microseconds * 10
    sign = "-" if ticks < 0 else ""
    ticks = abs(ticks)
    seconds, fraction = divmod(ticks, _TICKS_PER_SECOND)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    text = f"{sign}{f'{days}.' if days else ''}{hour:02d}:{minute:02d}:{second:02d}"
    return text + (f".{fraction:07d}" if fraction else "")


#
# Composite formatting (string.Format and interpolated strings)
#


def format_value(value: Any, fmt: str | None) -> str:
    """``value.ToString(fmt)`` when the value is formattable, else ``ToString()``."""
    if fmt:
        kind = type(value)
        if kind is int or kind is float:
            return format_number(value, fmt)
        if kind is datetime:
            return format_datetime(value, fmt)
        if kind is timedelta:
            return format_timespan(value, fmt)
        if kind is Guid:
            return value.format(fmt)  # type: ignore[no-any-return]  # type(value) is Guid, whose format() gives a str; mypy does not narrow on type()
    return to_string(value)


MAX_ALIGNMENT: Final = 1_000_000  # .NET refuses alignments from one million on


def align(text: str, width: int) -> str:
    """Pad ``text`` to ``width`` (right-aligned when positive, left-aligned when negative)."""
    if abs(width) >= MAX_ALIGNMENT:
        raise ExpressionRuntimeError(MSG_BAD_FORMAT.format(f"alignment {width}"))
    return text.rjust(width) if width >= 0 else text.ljust(-width)


def composite_format(fmt: str, args: tuple[Any, ...]) -> str:
    """``string.Format(fmt, args)``: ``{index[,alignment][:format]}`` items and ``{{``/``}}`` escapes."""
    out: list[str] = []
    i, size = 0, len(fmt)
    while i < size:
        ch = fmt[i]
        if ch == "}":
            if fmt.startswith("}}", i):
                out.append("}")
                i += 2
                continue
            raise ExpressionRuntimeError(MSG_BAD_FORMAT.format(fmt))
        if ch != "{":
            nxt = min((p for p in (fmt.find("{", i), fmt.find("}", i)) if p >= 0), default=size)
            out.append(fmt[i:nxt])
            i = nxt
            continue
        if fmt.startswith("{{", i):
            out.append("{")
            i += 2
            continue
        close = fmt.find("}", i)
        if close < 0:
            raise ExpressionRuntimeError(MSG_BAD_FORMAT.format(fmt))
        item = fmt[i + 1 : close]
        spec, _, item_format = item.partition(":")
        index_text, _, width_text = spec.partition(",")
        try:
            index = int(index_text.strip())
            width = int(width_text.strip()) if width_text.strip() else 0
        except ValueError:
            raise ExpressionRuntimeError(MSG_BAD_FORMAT.format(fmt)) from None
        if not 0 <= index < len(args):
            raise ExpressionRuntimeError(
                "Index (zero based) must be greater than or equal to zero and less than the size of the argument list."
            )
        out.append(align(format_value(args[index], item_format or None), width))
        i = close + 1
    return "".join(out)


def utc(dt: datetime) -> datetime:
    """``dt`` as an aware UTC datetime (a naive one is taken to be UTC already)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
