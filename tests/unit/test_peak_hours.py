"""The peak period (indicators.md v2, "Slices"): 18:00-08:00 local time and all of
Saturday and Sunday by default, configurable hours, days and time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.peak_hours import (
    DEFAULT_PEAK_HOURS,
    PeakHours,
    Period,
    in_period,
    peak_ranges,
)

SHANGHAI = timedelta(hours=8)


def shanghai(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """2026-03-<day> (the 6th is a Friday) at a Shanghai wall time."""
    return datetime(2026, 3, day, hour, minute, second, tzinfo=UTC) - SHANGHAI


@pytest.mark.parametrize(
    ("instant", "peak"),
    [
        (shanghai(6, 7, 59, 59), True),
        (shanghai(6, 8), False),
        (shanghai(6, 17, 59, 59), False),
        (shanghai(6, 18), True),
        (shanghai(7, 12), True),  # Saturday
        (shanghai(8, 23, 59, 59), True),  # Sunday
        (shanghai(9, 0), True),  # Monday before 08:00
        (shanghai(9, 8), False),
    ],
)
def test_the_default_peak_is_evenings_nights_and_weekends(
    instant: datetime, peak: bool
) -> None:
    assert DEFAULT_PEAK_HOURS.is_peak(instant) is peak
    assert in_period(DEFAULT_PEAK_HOURS, Period.PEAK, instant) is peak
    assert in_period(DEFAULT_PEAK_HOURS, Period.OFFPEAK, instant) is not peak


def test_a_range_past_midnight_is_two_stretches_of_a_day() -> None:
    assert [str(r) for r in peak_ranges("18:00-08:00")] == [
        "00:00-08:00",
        "18:00-24:00",
    ]
    assert [str(r) for r in peak_ranges("22:00-00:00")] == ["22:00-24:00"]
    assert [str(r) for r in peak_ranges("12:00-13:30")] == ["12:00-13:30"]


def test_configured_hours_days_and_zone() -> None:
    lunch = PeakHours.parse("UTC", ["12:00-13:00"], ["sun"])
    assert lunch.is_peak(datetime(2026, 3, 6, 12, 30, tzinfo=UTC))
    assert not lunch.is_peak(datetime(2026, 3, 6, 13, tzinfo=UTC))
    assert not lunch.is_peak(datetime(2026, 3, 7, 9, tzinfo=UTC))  # Saturday
    assert lunch.is_peak(datetime(2026, 3, 8, 9, tzinfo=UTC))  # Sunday
    assert lunch.day_names() == ["sun"]
    assert PeakHours.parse("Asia/Shanghai", ["18:00-08:00"], ["sat", "sun"]) == (
        DEFAULT_PEAK_HOURS
    )


@pytest.mark.parametrize(
    ("zone", "hours", "days"),
    [
        ("Mars/Olympus", [], []),
        ("Asia", [], []),
        ("UTC", ["9:00-10:00"], []),
        ("UTC", ["10:00-10:00"], []),
        ("UTC", ["10:00-25:00"], []),
        ("UTC", ["10:60-11:00"], []),
        ("UTC", ["08:00-10:00", "09:00-11:00"], []),
        ("UTC", [], ["Sunday"]),
    ],
)
def test_invalid_peak_hours_are_refused(
    zone: str, hours: list[str], days: list[str]
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # the domain's one error type
        PeakHours.parse(zone, hours, days)


# Stored times are bounded on write; far from datetime's limits.
@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001  # hypothesis: naive bounds
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    )
)
def test_every_instant_is_in_exactly_one_period(instant: datetime) -> None:
    periods = [p for p in Period if in_period(DEFAULT_PEAK_HOURS, p, instant)]
    assert len(periods) == 1
