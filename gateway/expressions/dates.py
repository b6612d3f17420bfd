"""The allow-listed date and time members: DateTime, TimeSpan, Guid and their static members.

``DateTime.UtcNow`` (and ``Now``, ``Today``) read the gateway's injectable wall clock (see :func:`.runtime.wall_now`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from .conversions import not_null
from .dotnet import Guid, format_datetime, format_timespan
from .errors import ExpressionRuntimeError
from .runtime import wall_now
from .typesys import DATETIME, DOUBLE, GUID, INT, LONG, STRING, TIMESPAN, Param, define

__all__ = ()

MSG_DATE_RANGE: Final = "The added or subtracted value results in an un-representable DateTime."

_EPOCH: Final = datetime(1, 1, 1, tzinfo=UTC)
_DAY_NAMES: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _date_add(dt: datetime, delta: timedelta) -> datetime:
    try:
        return dt + delta
    except OverflowError:
        raise ExpressionRuntimeError(MSG_DATE_RANGE) from None


def _add_months(dt: datetime, months: int) -> datetime:
    total = dt.year * 12 + dt.month - 1 + months
    year, month = divmod(total, 12)
    if not 1 <= year <= 9999:
        raise ExpressionRuntimeError(MSG_DATE_RANGE)
    next_month = datetime(year + (month == 11), (month + 1) % 12 + 1, 1, tzinfo=UTC)
    last_day = (next_month - timedelta(days=1)).day
    return dt.replace(year=year, month=month + 1, day=min(dt.day, last_day))


def _ticks(td: timedelta) -> int:
    return (td.days * 86_400 + td.seconds) * 10_000_000 + td.microseconds * 10


def _span_part(td: timedelta, unit: int, modulo: int) -> int:
    ticks = _ticks(td)
    sign = -1 if ticks < 0 else 1
    return sign * ((abs(ticks) // unit) % modulo)


def _adder(unit: str) -> Callable[[datetime, float], datetime]:
    return lambda d, v: _date_add(d, timedelta(**{unit: v}))


def _span_from(unit: str) -> Callable[[Any, float], timedelta]:
    return lambda _, v: timedelta(**{unit: v})


def _span_component(unit: int, modulo: int) -> Callable[[timedelta], int]:
    return lambda td: _span_part(td, unit, modulo)


def _span_total(divisor: float) -> Callable[[timedelta], float]:
    return lambda td: _ticks(td) / 10_000_000 / divisor


def _parse_date(text: str | None) -> datetime:
    try:
        parsed = datetime.fromisoformat(not_null(text, "s").strip())
    except ValueError:
        try:
            parsed = datetime.strptime(text.strip(), "%m/%d/%Y %H:%M:%S")  # type: ignore[union-attr]  # not_null above refused None, so text is a str here
        except ValueError:
            raise ExpressionRuntimeError(f"String '{text}' was not recognized as a valid DateTime.") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


_datetime = define(DATETIME)
for _name, _get in (
    ("Year", lambda d: d.year), ("Month", lambda d: d.month), ("Day", lambda d: d.day), ("Hour", lambda d: d.hour),
    ("Minute", lambda d: d.minute), ("Second", lambda d: d.second), ("Millisecond", lambda d: d.microsecond // 1000),
    ("DayOfYear", lambda d: d.timetuple().tm_yday),
):  # fmt: skip
    _datetime.prop(_name, INT, _get)
_datetime.prop("DayOfWeek", "DayOfWeek", lambda d: _DAY_NAMES[d.weekday()])
_datetime.prop("Date", DATETIME, lambda d: d.replace(hour=0, minute=0, second=0, microsecond=0))
_datetime.prop("TimeOfDay", TIMESPAN, lambda d: d - d.replace(hour=0, minute=0, second=0, microsecond=0))
_datetime.prop("Ticks", LONG, lambda d: _ticks(d - _EPOCH))
for _name, _unit in (("AddMilliseconds", "milliseconds"), ("AddSeconds", "seconds"), ("AddMinutes", "minutes"),
                     ("AddHours", "hours"), ("AddDays", "days")):  # fmt: skip
    _datetime.method(_name, (Param("value", DOUBLE),), DATETIME, _adder(_unit))
_datetime.method(
    "AddTicks", (Param("value", LONG),), DATETIME, lambda d, v: _date_add(d, timedelta(microseconds=v // 10))
)
_datetime.method("AddMonths", (Param("months", INT),), DATETIME, _add_months)
_datetime.method("AddYears", (Param("value", INT),), DATETIME, lambda d, v: _add_months(d, 12 * v))
_datetime.method("Add", (Param("value", TIMESPAN),), DATETIME, _date_add)
_datetime.method("Subtract", (Param("value", DATETIME),), TIMESPAN, lambda d, v: d - v)
_datetime.method("Subtract", (Param("value", TIMESPAN),), DATETIME, lambda d, v: _date_add(d, -v))
_datetime.method("ToString", (Param("format", STRING),), STRING, format_datetime)
_datetime.method("ToUniversalTime", (), DATETIME, lambda d: d)
_datetime.method("ToLocalTime", (), DATETIME, lambda d: d)

_datetime_static = define("static:DateTime")
_datetime_static.prop("UtcNow", DATETIME, wall_now)
_datetime_static.prop("Now", DATETIME, wall_now)  # the gateway runs in UTC, like APIM
_datetime_static.prop("Today", DATETIME, lambda ctx: wall_now(ctx).replace(hour=0, minute=0, second=0, microsecond=0))
_datetime_static.prop("MinValue", DATETIME, lambda _: _EPOCH)
_datetime_static.prop("MaxValue", DATETIME, lambda _: datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
_datetime_static.method("Parse", (Param("s", STRING),), DATETIME, lambda _, s: _parse_date(s))

_timespan = define(TIMESPAN)
for _name, _span_unit, _modulo in (("Days", 864_000_000_000, 10**12), ("Hours", 36_000_000_000, 24),
                              ("Minutes", 600_000_000, 60), ("Seconds", 10_000_000, 60),
                              ("Milliseconds", 10_000, 1000)):  # fmt: skip
    _timespan.prop(_name, INT, _span_component(_span_unit, _modulo))
for _name, _divisor in (("TotalDays", 86_400.0), ("TotalHours", 3_600.0), ("TotalMinutes", 60.0),
                        ("TotalSeconds", 1.0), ("TotalMilliseconds", 0.001)):  # fmt: skip
    _timespan.prop(_name, DOUBLE, _span_total(_divisor))
_timespan.prop("Ticks", LONG, _ticks)
_timespan.method("Add", (Param("ts", TIMESPAN),), TIMESPAN, lambda a, b: a + b)
_timespan.method("Subtract", (Param("ts", TIMESPAN),), TIMESPAN, lambda a, b: a - b)
_timespan.method("Negate", (), TIMESPAN, lambda a: -a)
_timespan.method("Duration", (), TIMESPAN, abs)
_timespan.method("ToString", (Param("format", STRING),), STRING, format_timespan)

_timespan_static = define("static:TimeSpan")
_timespan_static.prop("Zero", TIMESPAN, lambda _: timedelta(0))
for _name, _unit in (("FromMilliseconds", "milliseconds"), ("FromSeconds", "seconds"), ("FromMinutes", "minutes"),
                     ("FromHours", "hours"), ("FromDays", "days")):  # fmt: skip
    _timespan_static.method(_name, (Param("value", DOUBLE),), TIMESPAN, _span_from(_unit))
_timespan_static.method("FromTicks", (Param("value", LONG),), TIMESPAN, lambda _, v: timedelta(microseconds=v / 10))

_guid = define(GUID)
_guid.method("ToString", (Param("format", STRING),), STRING, lambda g, f: g.format(f))
_guid_static = define("static:Guid")
_guid_static.method("NewGuid", (), GUID, lambda _: Guid.new())
_guid_static.prop("Empty", GUID, lambda _: Guid("00000000-0000-0000-0000-000000000000"))


def _parse_guid(text: str | None) -> Guid:
    try:
        return Guid(str(uuid.UUID(not_null(text, "input").strip())))
    except ValueError:
        raise ExpressionRuntimeError("Unrecognized Guid format.") from None


_guid_static.method("Parse", (Param("input", STRING),), GUID, lambda _, s: _parse_guid(s))
