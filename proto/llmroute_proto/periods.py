"""Budget periods: the daily, weekly (from Monday) or monthly window an instant falls in, in a time zone.

Shared by the operator's ledger and a standalone sidecar's own budget count, so both roll over at the
same instants.

Windows start at local midnight in the budget's IANA time zone and are returned as aware UTC instants.
Arithmetic happens on local calendar dates, never by adding hours, so a day that is 23 or 25 hours long
(daylight saving) is still one day. A midnight that does not exist locally (a DST jump at 00:00, as in
some zones) resolves to the first instant after the gap, the way ``zoneinfo`` maps it with ``fold=0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["PeriodType", "Window", "period_window", "zone"]

PeriodType = Literal["daily", "weekly", "monthly"]


@dataclass(frozen=True)
class Window:
    """``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def contains(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError with a readable message if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    local = datetime.combine(day, time(0), tzinfo=tz)
    # A non-existent local time (inside a DST gap) round-trips to the instant after the gap.
    return local.astimezone(UTC).astimezone(tz).astimezone(UTC)


def _first_day(kind: PeriodType, day: date) -> date:
    if kind == "daily":
        return day
    if kind == "weekly":
        return day - timedelta(days=day.weekday())  # Monday
    return day.replace(day=1)


def _next_first_day(kind: PeriodType, first: date) -> date:
    if kind == "daily":
        return first + timedelta(days=1)
    if kind == "weekly":
        return first + timedelta(days=7)
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def period_window(kind: PeriodType, timezone: str, instant: datetime) -> Window:
    """The window of type ``kind`` in ``timezone`` that contains ``instant`` (aware)."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    tz = zone(timezone)
    local_day = instant.astimezone(tz).date()
    first = _first_day(kind, local_day)
    start = _local_midnight(first, tz)
    if instant < start:  # only possible around a gap at midnight: the instant belongs to the period before
        first = _first_day(kind, first - timedelta(days=1))
        start = _local_midnight(first, tz)
    end = _local_midnight(_next_first_day(kind, first), tz)
    return Window(start=start, end=end)
