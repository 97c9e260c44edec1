"""Report periods (`shared.domain.periods`) and the report's numbers for people."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.metrics.report_render import change, duration, number, p_value
from services.metrics.report_schemas import Unit
from shared.domain.errors import InvalidRequest
from shared.domain.periods import (
    Period,
    PeriodKind,
    parse_period,
    period_containing,
)

TODAY = date(2026, 12, 4)
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("kind", "at", "first", "end", "label"),
    [
        ("week", "2026-W47", date(2026, 11, 16), date(2026, 11, 23), "2026-W47"),
        ("week", "2026-W01", date(2025, 12, 29), date(2026, 1, 5), "2026-W01"),
        ("week", "2026-W53", date(2026, 12, 28), date(2027, 1, 4), "2026-W53"),
        ("week", "2027-01-01", date(2026, 12, 28), date(2027, 1, 4), "2026-W53"),
        ("month", "2026-11", date(2026, 11, 1), date(2026, 12, 1), "2026-11"),
        ("month", "2026-12", date(2026, 12, 1), date(2027, 1, 1), "2026-12"),
        ("month", "2028-02-29", date(2028, 2, 1), date(2028, 3, 1), "2028-02"),
        ("quarter", "2026-Q4", date(2026, 10, 1), date(2027, 1, 1), "2026-Q4"),
        ("quarter", "2026-05-31", date(2026, 4, 1), date(2026, 7, 1), "2026-Q2"),
        ("year", "2026", date(2026, 1, 1), date(2027, 1, 1), "2026"),
        ("year", "2026-07-04", date(2026, 1, 1), date(2027, 1, 1), "2026"),
    ],
)
def test_at_names_one_period_in_its_own_form_or_by_a_day(
    kind: str, at: str, first: date, end: date, label: str
) -> None:
    period = parse_period(PeriodKind(kind), at, today=TODAY)
    assert (period.first_day, period.end_day, period.label) == (first, end, label)


@pytest.mark.parametrize(
    ("kind", "previous"),
    [
        ("week", "2026-W48"),
        ("month", "2026-11"),
        ("quarter", "2026-Q3"),
        ("year", "2025"),
    ],
)
def test_without_at_the_report_is_the_last_complete_period(
    kind: str, previous: str
) -> None:
    assert parse_period(PeriodKind(kind), None, today=TODAY).label == previous


@pytest.mark.parametrize(
    ("kind", "at"),
    [
        ("week", "2026-W54"),
        ("week", "2026-W00"),
        ("week", "2025-W53"),  # 2025 has 52 ISO weeks
        ("week", "2026-11"),
        ("month", "2026-13"),
        ("month", "2026-W47"),
        ("month", "2026-02-29"),
        ("quarter", "2026-Q0"),
        ("quarter", "2026-Q5"),
        ("year", "1970"),
        ("year", "9999"),
        ("year", "0000"),
        ("year", "\u0662\u0660\u0662\u0666"),  # Arabic-Indic digits
        ("month", "2026-11\n"),
        ("month", " 2026-11"),
        ("month", ""),
    ],
)
def test_anything_else_is_refused_naming_the_field(kind: str, at: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_period(PeriodKind(kind), at, today=TODAY)
    assert [e.field for e in refused.value.errors] == ["at"]


def test_period_instants_are_local_midnights_in_utc() -> None:
    november = parse_period(PeriodKind.MONTH, "2026-11", today=TODAY)
    assert november.start(SHANGHAI) == datetime(2026, 10, 31, 16, tzinfo=UTC)
    assert november.end(SHANGHAI) == datetime(2026, 11, 30, 16, tzinfo=UTC)
    assert november.start(UTC) == datetime(2026, 11, 1, tzinfo=UTC)
    # November's weeks: the Mondays inside it.
    assert november.weeks() == tuple(date(2026, 11, d) for d in (2, 9, 16, 23, 30))


@given(
    st.sampled_from(list(PeriodKind)),
    st.dates(min_value=date(1972, 1, 1), max_value=date(9997, 12, 31)),
)
def test_periods_tile_the_calendar(kind: PeriodKind, day: date) -> None:
    period = period_containing(kind, day)
    assert period.first_day <= day < period.end_day
    previous = period.previous()
    assert previous.end_day == period.first_day
    assert previous.kind is kind
    # A period's label names it again.
    assert parse_period(kind, period.label, today=TODAY) == period
    assert isinstance(period, Period)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (45, "45 s"),
        (300, "5 min 00 s"),
        (3725, "1 h 02 min"),
        (90_000, "1 d 01 h"),
        (-1200, "\u221220 min 00 s"),
    ],
)
def test_durations_read_in_days_hours_minutes_and_seconds(
    seconds: float, text: str
) -> None:
    assert duration(seconds) == text


def test_rates_read_in_percent_and_their_changes_in_points() -> None:
    assert number(0.5, Unit.RATE) == "50.0 %"
    assert change(-0.25, Unit.RATE) == "\u221225.0 pp"
    assert change(60, Unit.SECONDS) == "+1 min 00 s"
    assert number(None, Unit.RATE) == "\u2013"
    assert number(1234, Unit.COUNT) == "1,234"
    assert p_value(0.0004) == "< 0.001"
    assert p_value(0.1573) == "0.157"
