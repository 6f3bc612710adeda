"""Budget windows: local midnights in IANA zones, Monday weeks, month ends, daylight saving."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmroute_proto.periods import PeriodType, period_window


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_daily_in_utc() -> None:
    w = period_window("daily", "UTC", utc(2026, 3, 10, 15, 30))
    assert (w.start, w.end) == (utc(2026, 3, 10), utc(2026, 3, 11))


def test_daily_in_berlin_starts_at_local_midnight() -> None:
    # 23:30 UTC on the 10th is 00:30 on the 11th in Berlin (CET, UTC+1).
    w = period_window("daily", "Europe/Berlin", utc(2026, 3, 10, 23, 30))
    assert (w.start, w.end) == (utc(2026, 3, 10, 23), utc(2026, 3, 11, 23))


def test_spring_forward_day_is_23_hours_and_fall_back_day_25() -> None:
    spring = period_window("daily", "Europe/Berlin", utc(2026, 3, 29, 12))
    assert spring.start == utc(2026, 3, 28, 23) and spring.length == timedelta(hours=23)
    fall = period_window("daily", "Europe/Berlin", utc(2026, 10, 25, 12))
    assert fall.start == utc(2026, 10, 24, 22) and fall.length == timedelta(hours=25)


def test_weekly_starts_on_monday() -> None:
    # Sunday 2026-03-15 12:00 UTC is in the week of Monday 2026-03-09.
    w = period_window("weekly", "UTC", utc(2026, 3, 15, 12))
    assert (w.start, w.end) == (utc(2026, 3, 9), utc(2026, 3, 16))
    assert w.start.weekday() == 0
    # Four hours later it is already Monday the 16th in Tokyo (01:00 local).
    tokyo = period_window("weekly", "Asia/Tokyo", utc(2026, 3, 15, 16))
    assert tokyo.start == utc(2026, 3, 15, 15)


def test_weekly_across_dst_is_one_hour_short() -> None:
    w = period_window("weekly", "America/New_York", utc(2026, 3, 10, 12))
    assert w.start == utc(2026, 3, 9, 4) and w.length == timedelta(days=7)
    dst = period_window("weekly", "America/New_York", utc(2026, 3, 4, 12))  # week with 2026-03-08
    assert dst.start == utc(2026, 3, 2, 5) and dst.length == timedelta(days=7) - timedelta(hours=1)


@pytest.mark.parametrize(
    ("instant", "start", "end"),
    [
        (utc(2026, 1, 31, 23, 59), utc(2026, 1, 1), utc(2026, 2, 1)),
        (utc(2026, 2, 15), utc(2026, 2, 1), utc(2026, 3, 1)),
        (utc(2028, 2, 29, 12), utc(2028, 2, 1), utc(2028, 3, 1)),  # leap year
        (utc(2026, 12, 31, 23), utc(2026, 12, 1), utc(2027, 1, 1)),  # year end
        (utc(2026, 4, 30, 23, 59, 59), utc(2026, 4, 1), utc(2026, 5, 1)),
    ],
)
def test_monthly_month_ends(instant: datetime, start: datetime, end: datetime) -> None:
    w = period_window("monthly", "UTC", instant)
    assert (w.start, w.end) == (start, end)


def test_monthly_in_a_zone_ahead_of_utc() -> None:
    # 2026-01-31 20:00 UTC is already February 1st in Auckland (UTC+13 in summer).
    w = period_window("monthly", "Pacific/Auckland", utc(2026, 1, 31, 20))
    assert w.start == utc(2026, 1, 31, 11) and w.contains(utc(2026, 1, 31, 20))


def test_midnight_inside_a_dst_gap_starts_after_the_gap() -> None:
    # America/Santiago springs forward at local midnight (2026-09-06 00:00 -> 01:00).
    w = period_window("daily", "America/Santiago", utc(2026, 9, 6, 12))
    assert w.start == utc(2026, 9, 6, 4)  # 01:00 local, UTC-3
    assert w.length == timedelta(hours=23)


def test_unknown_zone_and_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        period_window("daily", "Mars/Olympus", utc(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        period_window("daily", "UTC", datetime(2026, 1, 1))


KINDS: list[PeriodType] = ["daily", "weekly", "monthly"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "America/Santiago", "Asia/Kolkata", "Pacific/Auckland"]


@given(
    kind=st.sampled_from(KINDS),
    zone=st.sampled_from(ZONES),
    instant=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
    ),
)
def test_windows_contain_the_instant_and_tile_time(kind: PeriodType, zone: str, instant: datetime) -> None:
    w = period_window(kind, zone, instant)
    assert w.contains(instant)
    assert period_window(kind, zone, w.end).start == w.end  # the next window starts where this one ends
    assert period_window(kind, zone, w.start - timedelta(microseconds=1)).end == w.start
