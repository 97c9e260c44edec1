"""Report periods: a calendar week, month, quarter or year, and its previous one.

The `at` grammar (api.md v2, `GET /v1/reports?period=&at=`), one form per period
kind, or a day inside the period:

| period  | own form   | example    |
|---------|------------|------------|
| week    | `YYYY-Www` | `2026-W47` (ISO 8601 week, Monday first) |
| month   | `YYYY-MM`  | `2026-11`  |
| quarter | `YYYY-Qn`  | `2026-Q4`  |
| year    | `YYYY`     | `2026`     |
| any     | `YYYY-MM-DD` | `2026-11-18`: the period holding that day |

Years run from 1971 to 9998, so that a period's previous one and the instants of
both stay inside the calendar whatever the time zone. Without `at`, the report is
for the last complete period before today. A period is a range of local days
[first_day, end_day); its instants are local midnights in the report's time zone.

Pure domain: the stdlib only; "today" is an argument, never a clock read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Final

from shared.domain.errors import FieldError, InvalidRequest

FIRST_YEAR: Final = 1971
LAST_YEAR: Final = 9998
WEEK: Final = timedelta(days=7)

# [0-9], not \d: \d also matches other scripts' digits, which int() accepts.
_DAY: Final = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_FORMS: Final[dict[str, re.Pattern[str]]] = {
    "week": re.compile(r"([0-9]{4})-W([0-9]{2})"),
    "month": re.compile(r"([0-9]{4})-([0-9]{2})"),
    "quarter": re.compile(r"([0-9]{4})-Q([0-9])"),
    "year": re.compile(r"([0-9]{4})"),
}
_EXAMPLES: Final = {
    "week": "2026-W47",
    "month": "2026-11",
    "quarter": "2026-Q4",
    "year": "2026",
}


class PeriodKind(StrEnum):
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


def week_of(day: date) -> date:
    """The Monday starting the ISO week of `day`."""
    return day - timedelta(days=day.weekday())


def local_midnight(day: date, zone: tzinfo) -> datetime:
    """The instant (in UTC) at which `day` begins in `zone`."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _month_start(year: int, month: int) -> date:
    """The first day of a month counted past December (month 13 = next January)."""
    year += (month - 1) // 12
    return date(year, (month - 1) % 12 + 1, 1)


@dataclass(frozen=True, slots=True)
class Period:
    """The local days [first_day, end_day) of one calendar period."""

    kind: PeriodKind
    first_day: date
    end_day: date

    @property
    def label(self) -> str:
        """The period in its own `at` form (`2026-W47`, `2026-11`, ...)."""
        first = self.first_day
        match self.kind:
            case PeriodKind.WEEK:
                year, week, _ = first.isocalendar()
                return f"{year:04d}-W{week:02d}"
            case PeriodKind.MONTH:
                return f"{first.year:04d}-{first.month:02d}"
            case PeriodKind.QUARTER:
                return f"{first.year:04d}-Q{(first.month - 1) // 3 + 1}"
            case PeriodKind.YEAR:
                return f"{first.year:04d}"

    def previous(self) -> Period:
        """The period of the same kind just before this one."""
        return period_containing(self.kind, self.first_day - timedelta(days=1))

    def start(self, zone: tzinfo) -> datetime:
        """The first instant of the period in `zone` (inclusive), in UTC."""
        return local_midnight(self.first_day, zone)

    def end(self, zone: tzinfo) -> datetime:
        """The instant the period ends in `zone` (exclusive), in UTC."""
        return local_midnight(self.end_day, zone)

    def weeks(self) -> tuple[date, ...]:
        """The Mondays of the weeks starting inside the period (a control chart's
        weeks "in" a month, quarter or year)."""
        monday = week_of(self.first_day)
        if monday < self.first_day:
            monday += WEEK
        found = []
        while monday < self.end_day:
            found.append(monday)
            monday += WEEK
        return tuple(found)


def period_containing(kind: PeriodKind, day: date) -> Period:
    """The period of `kind` holding `day`."""
    match kind:
        case PeriodKind.WEEK:
            first = week_of(day)
            return Period(kind, first, first + WEEK)
        case PeriodKind.MONTH:
            return Period(
                kind,
                _month_start(day.year, day.month),
                _month_start(day.year, day.month + 1),
            )
        case PeriodKind.QUARTER:
            month = (day.month - 1) // 3 * 3 + 1
            return Period(
                kind, _month_start(day.year, month), _month_start(day.year, month + 3)
            )
        case PeriodKind.YEAR:
            return Period(kind, date(day.year, 1, 1), date(day.year + 1, 1, 1))


def _refuse(kind: PeriodKind, at: str, why: str) -> InvalidRequest:
    detail = (
        f"at={at[:40]!r} is not a {kind.value}: {why}; give {_EXAMPLES[kind.value]} "
        "or a day YYYY-MM-DD"
    )
    return InvalidRequest(detail, errors=(FieldError("at", detail),))


def _checked_year(kind: PeriodKind, at: str, year: int) -> int:
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise _refuse(kind, at, f"years run from {FIRST_YEAR} to {LAST_YEAR}")
    return year


def _own_form(kind: PeriodKind, at: str, numbers: tuple[int, ...]) -> date:
    """A day inside the period that `at`, in the kind's own form, names."""
    year = _checked_year(kind, at, numbers[0])
    match kind:
        case PeriodKind.WEEK:
            try:
                return date.fromisocalendar(year, numbers[1], 1)
            except ValueError:
                raise _refuse(kind, at, f"{year} has no such ISO week") from None
        case PeriodKind.MONTH:
            if not 1 <= numbers[1] <= 12:
                raise _refuse(kind, at, "months run from 01 to 12")
            return date(year, numbers[1], 1)
        case PeriodKind.QUARTER:
            if not 1 <= numbers[1] <= 4:
                raise _refuse(kind, at, "quarters run from Q1 to Q4")
            return date(year, (numbers[1] - 1) * 3 + 1, 1)
        case PeriodKind.YEAR:
            return date(year, 1, 1)


def parse_period(kind: PeriodKind, at: str | None, *, today: date) -> Period:
    """The period `at` names (see the module's grammar); without `at`, the last
    complete one before `today`.

    Raises:
        InvalidRequest: `at` is not in the grammar, or names no such period.
    """
    if at is None:
        return period_containing(kind, today).previous()
    if day := _DAY.fullmatch(at):
        year, month, day_of_month = (int(group) for group in day.groups())
        _checked_year(kind, at, year)
        try:
            return period_containing(kind, date(year, month, day_of_month))
        except ValueError:
            raise _refuse(kind, at, "no such day") from None
    own = _FORMS[kind.value].fullmatch(at)
    if own is None:
        raise _refuse(kind, at, "unknown form")
    return period_containing(
        kind, _own_form(kind, at, tuple(int(g) for g in own.groups()))
    )
