"""Window arithmetic: the minute and the UTC quota periods; keys share one hash tag."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.limits import PERIODS, minute_window, period_bounds, quota_window


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


NOW = ts(2026, 11, 25, 18, 42, 17)  # a Wednesday


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("Hourly", ts(2026, 11, 25, 18), ts(2026, 11, 25, 19)),
        ("Daily", ts(2026, 11, 25), ts(2026, 11, 26)),
        ("Weekly", ts(2026, 11, 23), ts(2026, 11, 30)),  # Monday 00:00 UTC
        ("Monthly", ts(2026, 11, 1), ts(2026, 12, 1)),
        ("Yearly", ts(2026, 1, 1), ts(2027, 1, 1)),
    ],
)
def test_period_bounds(period, start, end):
    assert period_bounds(period, NOW) == (start, end)
    assert period_bounds(period, start) == (start, end)  # the start belongs to the period
    assert period_bounds(period, end)[0] == end


def test_december_rolls_over_to_january():
    assert period_bounds("Monthly", ts(2026, 12, 31, 23, 59, 59)) == (ts(2026, 12, 1), ts(2027, 1, 1))


def test_unknown_period():
    with pytest.raises(ValueError, match="unknown quota period"):
        period_bounds("Fortnightly", NOW)


def test_minute_window_and_keys():
    window = minute_window("sub-1", NOW, 500)
    assert (window.start, window.end, window.limit) == (ts(2026, 11, 25, 18, 42), ts(2026, 11, 25, 18, 43), 500)
    assert window.key == f"tl:{{sub-1}}:m:{int(window.start)}"
    assert window.expires_at > window.end
    keys = [quota_window("sub-1", p, NOW, 1).key for p in PERIODS]
    assert len(set(keys)) == len(PERIODS)
    assert all(k.startswith("tl:{sub-1}:") for k in keys)  # one hash tag: one Redis Cluster slot
