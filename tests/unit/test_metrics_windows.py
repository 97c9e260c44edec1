"""Cutting a window at UTC midnights: whole days for the rollups, edges for the facts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.metrics.domain import (
    END_OF_TIME,
    HOURS_READ_AT_MOST,
    Cut,
    Span,
    cut_window,
    hour_of,
    midnight,
    reading,
    split_weeks,
    split_window,
)

FIRST: datetime = datetime.min.replace(tzinfo=UTC)


def as_ranges(
    pieces: Sequence[tuple[datetime, datetime]],
    days: tuple[date | None, date | None] | None,
    start: datetime,
    end: datetime,
) -> list[tuple[datetime, datetime]]:
    """Pieces and whole days as [from, to) ranges, sorted, open day ends closed by the
    window."""
    ranges = list(pieces)
    if days is not None:
        first, last = days
        ranges.append(
            (
                start if first is None else midnight(first),
                end if last is None else midnight(last),
            )
        )
    return sorted(r for r in ranges if r[0] < r[1])


def covered(
    span: Span, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The span as [from, to) ranges, sorted."""
    return as_ranges(span.edges, span.whole, start, end)


WINDOW_STARTS: Final = st.datetimes(
    # Hypothesis takes naive bounds and attaches `timezones` itself.
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
WINDOW_LENGTHS: Final = st.timedeltas(
    min_value=timedelta(0), max_value=timedelta(days=40)
)


@given(WINDOW_STARTS, WINDOW_LENGTHS)
def test_a_window_is_cut_into_adjacent_ranges_that_cover_it_exactly(
    start: datetime, length: timedelta
) -> None:
    end = start + length
    ranges = covered(split_window(start, end), start, end)

    if start == end:
        assert ranges == []
        return
    assert ranges[0][0] == start
    assert ranges[-1][1] == end
    assert all(a[1] == b[0] for a, b in pairwise(ranges))


def test_whole_days_are_the_midnights_inside_the_window() -> None:
    start = datetime(2026, 3, 2, 17, tzinfo=UTC)
    end = datetime(2026, 3, 5, 6, tzinfo=UTC)

    span = split_window(start, end)

    assert span.whole == (date(2026, 3, 3), date(2026, 3, 5))
    assert span.edges == (
        (start, midnight(date(2026, 3, 3))),
        (midnight(date(2026, 3, 5)), end),
    )


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), None),
        (datetime(9999, 12, 31, 12, tzinfo=UTC), None),
        (datetime(9999, 12, 31, 12, tzinfo=UTC), END_OF_TIME),
        (None, datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        (FIRST, None),
        (None, FIRST),
        (FIRST + timedelta(hours=1), datetime(1, 1, 3, tzinfo=UTC)),
    ],
)
def test_the_calendars_first_and_last_days_are_cut_without_overflow(
    start: datetime | None, end: datetime | None
) -> None:
    span = split_window(start, end)

    for a, b in span.edges:
        assert a < b
        assert start is None or a >= start
        assert end is None or b <= end


def test_a_window_in_the_last_day_is_one_edge_to_the_end_of_time() -> None:
    start = datetime(9999, 12, 31, 12, tzinfo=UTC)

    assert split_window(start, None) == Span(None, ((start, END_OF_TIME),))


def cut_ranges(
    cut: Cut, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The cut's days, hours and edges as [from, to) ranges, sorted."""
    return as_ranges([*cut.hours, *cut.edges], cut.days, start, end)


@given(WINDOW_STARTS, WINDOW_LENGTHS)
def test_a_cut_covers_the_window_exactly_and_reads_at_most_two_partial_hours(
    start: datetime, length: timedelta
) -> None:
    end = start + length
    cut = cut_window(start, end)
    ranges = cut_ranges(cut, start, end)

    if start == end:
        assert ranges == []
        assert cut.rolled is None
        return
    assert ranges[0][0] == start
    assert ranges[-1][1] == end
    assert all(a[1] == b[0] for a, b in pairwise(ranges))
    assert len(cut.edges) <= 2
    assert all(b - a < timedelta(hours=1) for a, b in cut.edges)
    assert all(a == hour_of(a) and b == hour_of(b) for a, b in cut.hours)
    # The days and hours are one range (the exact stage reads its values at once).
    rolled = sorted(r for r in ranges if r not in cut.edges)
    if not rolled:
        assert cut.rolled is None
    else:
        assert cut.rolled == (rolled[0][0], rolled[-1][1])


def test_a_24_hour_window_is_23_whole_hours_and_two_partial_ones() -> None:
    start = datetime(2026, 3, 2, 17, 25, tzinfo=UTC)

    cut = cut_window(start, start + timedelta(hours=24))

    assert cut.days is None
    assert cut.hours == (
        (datetime(2026, 3, 2, 18, tzinfo=UTC), datetime(2026, 3, 3, 17, tzinfo=UTC)),
    )
    assert cut.edges == (
        (start, datetime(2026, 3, 2, 18, tzinfo=UTC)),
        (datetime(2026, 3, 3, 17, tzinfo=UTC), start + timedelta(hours=24)),
    )


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), None),
        (datetime(9999, 12, 31, 23, 30, tzinfo=UTC), None),
        (datetime(9999, 12, 31, 12, 30, tzinfo=UTC), END_OF_TIME),
        (None, datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        (FIRST, None),
        (None, FIRST + timedelta(minutes=30)),
        (FIRST + timedelta(minutes=30), datetime(1, 1, 3, 5, tzinfo=UTC)),
    ],
)
def test_hours_at_the_calendars_ends_are_cut_without_overflow(
    start: datetime | None, end: datetime | None
) -> None:
    cut = cut_window(start, end)

    for a, b in (*cut.edges, *cut.hours):
        assert a < b
        assert start is None or a >= start
        assert end is None or b <= end


@given(
    st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
    st.integers(min_value=0, max_value=60),
)
def test_whole_days_are_whole_mondays_weeks_and_at_most_six_days_either_side(
    first: date, length: int
) -> None:
    end = first + timedelta(days=length)
    cut = split_weeks(first, end)

    bounded = [(a, b) for a, b in cut.days if a is not None and b is not None]
    assert len(bounded) == len(cut.days)  # bounded days give bounded ranges
    covered = list(bounded)
    if cut.weeks is not None:
        low, high = cut.weeks
        assert low is not None
        assert high is not None
        assert low.weekday() == 0
        assert high.weekday() == 0
        assert low < high
        covered.append((low, high))
    covered = sorted((a, b) for a, b in covered if a < b)
    if length == 0:
        assert covered == []
        return
    assert covered[0][0] == first
    assert covered[-1][1] == end
    assert all(a[1] == b[0] for a, b in pairwise(covered))
    if cut.weeks is not None:
        assert all(b - a < timedelta(days=7) for a, b in bounded)
    else:  # a window of two weeks or more always has a whole week inside
        assert length < 13


@pytest.mark.parametrize(
    ("first", "end"),
    [
        (date(9999, 12, 28), None),
        (date(9999, 12, 24), date.max),
        (None, date(1, 1, 3)),
        (date.min, None),
        (date(1, 1, 2), date(1, 1, 20)),
    ],
)
def test_weeks_at_the_calendars_ends_are_cut_without_overflow(
    first: date | None, end: date | None
) -> None:
    cut = split_weeks(first, end)

    for a, b in (*cut.days, *((cut.weeks,) if cut.weeks else ())):
        assert a is None or b is None or a < b
        assert first is None or (a is not None and a >= first)
        assert end is None or (b is not None and b <= end)


def test_a_30_day_window_reads_four_weeks_and_the_days_around_them() -> None:
    cut = split_weeks(date(2026, 11, 4), date(2026, 12, 3))  # Wednesday to Thursday

    assert cut.weeks == (date(2026, 11, 9), date(2026, 11, 30))
    assert cut.days == (
        (date(2026, 11, 4), date(2026, 11, 9)),
        (date(2026, 11, 30), date(2026, 12, 3)),
    )


def whole_hours(
    days: tuple[date | None, date | None] | None,
    hours: Sequence[tuple[datetime, datetime]],
) -> Counter[datetime]:
    """Every whole hour of bounded days and hour ranges, counted."""
    found: Counter[datetime] = Counter()
    ranges = list(hours)
    if days is not None:
        first, end = days
        assert first is not None
        assert end is not None
        ranges.append((midnight(first), midnight(end)))
    for a, b in ranges:
        while a < b:
            found[a] += 1
            a += timedelta(hours=1)
    return found


# UTC instants of this century and the next (Hypothesis takes naive bounds).
MOMENTS: Final = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@given(MOMENTS, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=9)))
def test_a_reading_adds_and_subtracts_exactly_the_cuts_whole_hours(
    start: datetime, length: timedelta
) -> None:
    cut = cut_window(start, start + length)
    read = reading(cut)

    added = whole_hours(read.days, read.hours)
    added.subtract(whole_hours(None, read.less))
    assert +added == whole_hours(cut.days, cut.hours)
    assert all(count in (0, 1) for count in added.values())  # less was added
    # A day's hours are read one by one only up to HOURS_READ_AT_MOST of them.
    per_day = Counter(hour.date() for hour in whole_hours(None, read.hours))
    assert all(count <= HOURS_READ_AT_MOST for count in per_day.values())


def test_a_window_ending_at_20h_reads_its_last_day_less_four_hours() -> None:
    end = datetime(2026, 12, 3, 20, 30, tzinfo=UTC)

    read = reading(cut_window(end - timedelta(days=7), end))

    assert read.days == (date(2026, 11, 27), date(2026, 12, 4))
    assert read.hours == (
        (datetime(2026, 11, 26, 21, tzinfo=UTC), midnight(date(2026, 11, 27))),
    )
    assert read.less == (
        (datetime(2026, 12, 3, 20, tzinfo=UTC), midnight(date(2026, 12, 4))),
    )
