"""Peak and off-peak periods (indicators.md v2, "Slices": `period=peak|offpeak`).

A measurement is in the peak period when the local wall time of its `at`, in the
configured time zone, falls on a whole peak day (by default Saturday and Sunday) or
inside one of the peak hours of any other day (by default 18:00-08:00: the evening
from 18:00 and the early morning up to 08:00). A range whose start is after its end
wraps past midnight, so it is kept as two ranges of one local date. Every local date
is judged alone, which is what "the local time of `at`" asks, and what SQL tests
with the same wall-clock arithmetic (services.metrics.catalog.peak_condition).

Pure domain: imports only the stdlib; no I/O framework, and reads no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo

from shared.domain.sla_clock import (
    DEFAULT_TIME_ZONE,
    BusinessCalendar,
    WorkingHours,
)


class Period(StrEnum):
    PEAK = "peak"
    OFFPEAK = "offpeak"


WEEKDAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names in `date.weekday()` order (Monday = 0)."""

_RANGE: Final = re.compile(r"([0-9]{2}:[0-9]{2})-([0-9]{2}:[0-9]{2})")


def peak_ranges(text: str) -> tuple[WorkingHours, ...]:
    """`"18:00-08:00"` as the stretches of one local day it covers.

    A range ending at or before its start wraps past midnight: `18:00-08:00` is
    18:00-24:00 and 00:00-08:00. Equal ends would be the whole day or none:
    refused, a whole day is a peak day.
    """
    match = _RANGE.fullmatch(text)
    if match is None:
        raise ValueError(f"peak hours are written HH:MM-HH:MM, got {text[:40]!r}")
    start, end = match.groups()
    if start == end:
        raise ValueError(f"peak hours {text!r} are empty; use a peak day instead")
    if start < end:  # zero-padded HH:MM: text order is time order
        return (WorkingHours.parse(text),)
    ranges = [WorkingHours.parse(f"{start}-24:00")]
    if end != "00:00":
        ranges.insert(0, WorkingHours.parse(f"00:00-{end}"))
    return tuple(ranges)


@dataclass(frozen=True, slots=True)
class PeakHours:
    """When the peak period is: hours of every day, and whole days, local time."""

    time_zone: str = DEFAULT_TIME_ZONE
    # Peak stretches of a local day, sorted, never overlapping.
    hours: tuple[WorkingHours, ...] = peak_ranges("18:00-08:00")
    # Whole peak days, `date.weekday()` numbers (Monday = 0).
    days: frozenset[int] = frozenset({5, 6})

    def __post_init__(self) -> None:
        # The calendar's checks: a known zone, sorted stretches that never overlap.
        week = BusinessCalendar(self.time_zone, (self.hours or _NOTHING,) * 7).week
        object.__setattr__(self, "hours", week[0] if self.hours else ())
        if not self.days <= set(range(7)):
            raise ValueError(f"weekdays run 0 (Monday) to 6, got {sorted(self.days)}")
        object.__setattr__(self, "days", frozenset(self.days))

    @classmethod
    def parse(
        cls, time_zone: str, hours: Iterable[str], days: Iterable[str]
    ) -> PeakHours:
        """From `"18:00-08:00"` ranges and day names (`"sat"`, `"sun"`)."""
        numbers = []
        for name in days:
            if name not in WEEKDAY_NAMES:
                raise ValueError(f"days are one of {WEEKDAY_NAMES}, got {name[:20]!r}")
            numbers.append(WEEKDAY_NAMES.index(name))
        ranges = [r for text in hours for r in peak_ranges(text)]
        return cls(time_zone, tuple(ranges), frozenset(numbers))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def day_names(self) -> list[str]:
        return [WEEKDAY_NAMES[day] for day in sorted(self.days)]

    def range_texts(self) -> list[str]:
        return [str(stretch) for stretch in self.hours]

    def is_peak(self, instant: datetime) -> bool:
        """Whether an aware instant falls in the peak period."""
        local = instant.astimezone(self.zone)
        if local.weekday() in self.days:
            return True
        since_midnight = local.replace(tzinfo=None) - datetime.combine(
            local.date(), time()
        )
        return any(h.start <= since_midnight < h.end for h in self.hours)


# A placeholder day for the calendar check of a PeakHours without any hours.
_NOTHING: Final = (WorkingHours(timedelta(0), timedelta(minutes=1)),)

DEFAULT_PEAK_HOURS: Final = PeakHours()


def in_period(peak: PeakHours, period: Period, instant: datetime) -> bool:
    """Whether an instant belongs to `period` under `peak`."""
    return peak.is_peak(instant) == (period is Period.PEAK)
