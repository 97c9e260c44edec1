"""SLA clocks that count business time (indicators.md v2, "Business calendars").

An accept or arrive clock starts when the order is created and stops when the step
is reached. It counts only time inside the calendar's working hours (a time zone,
hours per weekday, holidays) and outside pauses (the order waits on the customer,
e.g. `quoted` until approved or rejected). Its reading lists the counted segments,
so a verdict can always be explained (`GET /v1/orders/{id}/sla`).

The deadline is the last instant at which the step can be reached and still meet
the target: reached at or before it means met, exactly as the censoring rule
compares `reached_at <= created_at + target` today. With the 24x7 calendar and no
pause it *is* created_at + target, so the default numbers do not move. When the
target runs out exactly as working time ends (Friday 18:00), no more time is counted
until work resumes, so the deadline is when work resumes (Monday 09:00).

Local working hours become UTC per local date, so DST change days have their real
length (23 or 25 hours). A wall time inside a spring-forward gap resolves as Python
does by default (fold=0: the offset before the change); a day's intervals are then
sorted and merged, so they never overlap.

Pure domain: imports only the stdlib; no I/O framework, and reads no clock (`now`
is an argument).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import Final, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIME_ZONE: Final = "Asia/Shanghai"
FULL_DAY: Final = timedelta(hours=24)
# How far after the clock's start a calendar is walked day by day. A clock longer
# than this is refused instead of listing thousands of segments.
HORIZON: Final = timedelta(days=3660)
# Instants are kept away from datetime's limits so the walk (a local day either
# side, the horizon after the latest start) can never overflow.
EARLIEST: Final = datetime(2, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(9980, 1, 1, tzinfo=UTC)
# IANA names are short ("America/Argentina/ComodRivadavia" is 32 characters).
_LONGEST_ZONE_NAME: Final = 64

_HOURS_TEXT: Final = re.compile(r"([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})")

Span: TypeAlias = tuple[datetime, datetime]
"""A [start, end) stretch of UTC instants."""


# --- the calendar ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkingHours:
    """A [start, end) stretch of local wall time in a day, as offsets from midnight.

    Offsets rather than `time`s, because a day may end at 24:00.
    """

    start: timedelta
    end: timedelta

    def __post_init__(self) -> None:
        if not timedelta(0) <= self.start < self.end <= FULL_DAY:
            raise ValueError(
                f"working hours must satisfy 00:00 <= start < end <= 24:00, got {self}"
            )
        if self.start % timedelta(minutes=1) or self.end % timedelta(minutes=1):
            raise ValueError(f"working hours are whole minutes, got {self}")

    @classmethod
    def parse(cls, text: str) -> WorkingHours:
        """`"09:00-18:00"` (24-hour clock; `24:00` ends a day)."""
        match = _HOURS_TEXT.fullmatch(text)
        if match is None:
            raise ValueError(f"working hours are written HH:MM-HH:MM, got {text!r}")
        start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
        if start_m > 59 or end_m > 59:
            raise ValueError(f"minutes run 00-59, got {text!r}")
        return cls(
            timedelta(hours=start_h, minutes=start_m),
            timedelta(hours=end_h, minutes=end_m),
        )

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


def _hhmm(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


_ALL_DAY: Final = (WorkingHours(timedelta(0), FULL_DAY),)


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    """When an SLA clock may run: working hours per weekday, minus holidays.

    `week` has seven entries, Monday first (`date.weekday()`); `holidays` are local
    dates without any working time.
    """

    time_zone: str
    week: tuple[tuple[WorkingHours, ...], ...]
    holidays: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        try:
            if len(self.time_zone) > _LONGEST_ZONE_NAME:
                raise ValueError
            ZoneInfo(self.time_zone)
        # OSError: a name that is a folder of the zone database ("Asia").
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {self.time_zone[:80]!r}") from None
        if len(self.week) != 7:
            raise ValueError(f"a week has 7 days, got {len(self.week)}")
        # Sorted once here so the walk can merge intervals in order.
        week = tuple(tuple(sorted(day, key=lambda h: h.start)) for day in self.week)
        for hours in week:
            for before, after in pairwise(hours):
                if after.start < before.end:
                    raise ValueError(f"working hours {before} and {after} overlap")
        if not any(week):
            # A clock on such a calendar could never run, so never meet a target.
            raise ValueError("a calendar needs some working time in its week")
        object.__setattr__(self, "week", week)
        object.__setattr__(self, "holidays", frozenset(self.holidays))

    @classmethod
    def always(cls, time_zone: str = DEFAULT_TIME_ZONE) -> BusinessCalendar:
        """24x7 with no holiday: every instant counts (the default calendar)."""
        return cls(time_zone, (_ALL_DAY,) * 7)

    @classmethod
    def weekly(
        cls,
        time_zone: str,
        hours: Mapping[int, Sequence[str]],
        *,
        holidays: Iterable[date] = (),
    ) -> BusinessCalendar:
        """A calendar from `{weekday: ["09:00-18:00", ...]}`, Monday = 0."""
        unknown = set(hours) - set(range(7))
        if unknown:
            raise ValueError(f"weekdays run 0 (Monday) to 6, got {sorted(unknown)}")
        week = tuple(
            tuple(WorkingHours.parse(text) for text in hours.get(day, ()))
            for day in range(7)
        )
        return cls(time_zone, week, frozenset(holidays))

    @property
    def zone(self) -> ZoneInfo:
        """The calendar's time zone."""
        return ZoneInfo(self.time_zone)  # ZoneInfo caches instances per key

    @property
    def is_always(self) -> bool:
        """Every instant is working time (so no day-by-day walk is needed)."""
        return not self.holidays and all(day == _ALL_DAY for day in self.week)

    def working_spans(self, start: datetime, end: datetime) -> Iterator[Span]:
        """The working time within [start, end), in order, adjacent spans merged."""
        if self.is_always:
            if start < end:
                yield start, end
            return
        zone = self.zone
        day = start.astimezone(zone).date() - timedelta(days=1)
        last_day = end.astimezone(zone).date()
        pending: Span | None = None
        while day <= last_day:
            for span in self._day_spans(day, zone):
                clipped = (max(span[0], start), min(span[1], end))
                if clipped[0] >= clipped[1]:
                    continue
                if pending is not None and clipped[0] <= pending[1]:
                    pending = (pending[0], max(pending[1], clipped[1]))
                    continue
                if pending is not None:
                    yield pending
                pending = clipped
            day += timedelta(days=1)
        if pending is not None:
            yield pending

    def _day_spans(self, day: date, zone: ZoneInfo) -> list[Span]:
        """One local date's working hours in UTC, sorted, never overlapping."""
        if day in self.holidays:
            return []
        midnight = datetime.combine(day, time())

        def in_utc(offset: timedelta) -> datetime:
            # Wall-clock arithmetic on the naive local time, then resolved in the
            # zone: 09:00 stays 09:00 local on a DST change day.
            return (midnight + offset).replace(tzinfo=zone).astimezone(UTC)

        spans = sorted(
            (in_utc(hours.start), in_utc(hours.end))
            for hours in self.week[day.weekday()]
        )
        merged: list[Span] = []
        for start, end in spans:
            if start >= end:  # wholly inside a spring-forward gap
                continue
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged


# --- the clock ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pause:
    """[since, until) during which the order waits on the customer; until None: still."""

    since: datetime
    until: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "since", _in_utc("pause since", self.since))
        if self.until is not None:
            object.__setattr__(self, "until", _in_utc("pause until", self.until))
            if self.until < self.since:
                raise ValueError(
                    f"a pause ends before it starts: since {self.since.isoformat()}, "
                    f"until {self.until.isoformat()}"
                )


@dataclass(frozen=True, slots=True)
class Segment:
    """A [start, end) stretch of counted time."""

    start: datetime
    end: datetime

    @property
    def duration(self) -> timedelta:
        """How much time the segment counts."""
        return self.end - self.start


class Verdict(StrEnum):
    """Met: stopped within the target. Breached: counted past it. Running: neither."""

    MET = "met"
    BREACHED = "breached"
    RUNNING = "running"


@dataclass(frozen=True, slots=True)
class SlaClockReading:
    """What a clock shows at `now`, with what explains it."""

    segments: tuple[Segment, ...]
    # The pauses within the clock's span [start, stop or now), clipped to it.
    pauses: tuple[Pause, ...]
    counted: timedelta
    # None while an open pause holds the clock before the target is used up.
    deadline: datetime | None
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class SlaClock:
    """An accept or arrive clock of one order; `read(now)` computes its state."""

    calendar: BusinessCalendar
    started_at: datetime
    target: timedelta
    stopped_at: datetime | None = None
    pauses: tuple[Pause, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "started_at", _in_utc("started_at", self.started_at))
        if self.stopped_at is not None:
            stopped_at = _in_utc("stopped_at", self.stopped_at)
            object.__setattr__(self, "stopped_at", stopped_at)
            if self.stopped_at < self.started_at:
                raise ValueError(
                    f"the clock stops ({self.stopped_at.isoformat()}) before it "
                    f"starts ({self.started_at.isoformat()})"
                )
        if self.target < timedelta(0):
            raise ValueError(f"an SLA target must not be negative, got {self.target}")
        ordered = tuple(sorted(self.pauses, key=lambda pause: pause.since))
        for before, after in pairwise(ordered):
            if before.until is None:
                raise ValueError(
                    f"only the last pause may be open: the pause from "
                    f"{before.since.isoformat()} is, yet another starts at "
                    f"{after.since.isoformat()}"
                )
            if after.since < before.until:
                raise ValueError(
                    f"pauses overlap: one from {before.since.isoformat()}, "
                    f"another from {after.since.isoformat()}"
                )
        object.__setattr__(self, "pauses", ordered)

    def read(self, now: datetime) -> SlaClockReading:
        """The clock at `now` (ignored once stopped): segments, deadline, verdict."""
        end = self.stopped_at if self.stopped_at is not None else _in_utc("now", now)
        end = max(end, self.started_at)  # a `now` behind the start counts nothing
        if not self.calendar.is_always and end - self.started_at > HORIZON:
            raise ValueError(
                f"a business-hours clock spans at most {HORIZON.days} days"
            )
        segments = tuple(
            Segment(start, stop) for start, stop in self._counted_spans(end)
        )
        counted = sum((segment.duration for segment in segments), timedelta(0))
        if counted > self.target:
            verdict = Verdict.BREACHED
        elif self.stopped_at is not None:
            verdict = Verdict.MET
        else:
            verdict = Verdict.RUNNING
        return SlaClockReading(
            segments=segments,
            pauses=self._pauses_within(end),
            counted=counted,
            deadline=self._deadline(),
            verdict=verdict,
        )

    def deadline(self) -> datetime | None:
        """The last instant at which reaching the step still meets the target
        (None while an open pause holds the clock); what `read` reports, without
        walking to a `now`."""
        return self._deadline()

    def _counted_spans(self, end: datetime) -> Iterator[Span]:
        """Working time in [started_at, end) minus the pauses, in order."""
        open_pause = self.pauses[-1] if self.pauses else None
        if open_pause is not None and open_pause.until is None:
            # Validation made the open pause the last one: nothing counts after it.
            end = min(end, max(open_pause.since, self.started_at))
        closed = [
            (pause.since, pause.until)
            for pause in self.pauses
            if pause.until is not None
        ]
        return _subtract(self.calendar.working_spans(self.started_at, end), closed)

    def _deadline(self) -> datetime | None:
        """The last instant at which reaching the step still meets the target.

        It lies in the first counted span longer than what is left of the target;
        when no span is, an open pause holds the clock (None) or the target does
        not fit in the horizon (refused).
        """
        horizon_end = self.started_at + HORIZON
        if self.calendar.is_always:  # one span, no walk: only datetime limits it
            horizon_end = datetime.max.replace(tzinfo=UTC)
        left = self.target
        for start, end in self._counted_spans(horizon_end):
            if end - start > left:
                return start + left
            left -= end - start
        if self.pauses and self.pauses[-1].until is None:
            return None
        raise ValueError(
            f"the target {self.target} does not fit in the calendar's time "
            f"up to {horizon_end.date().isoformat()}"
        )

    def _pauses_within(self, end: datetime) -> tuple[Pause, ...]:
        applied: list[Pause] = []
        for pause in self.pauses:
            since = max(pause.since, self.started_at)
            until = pause.until
            if until is None and self.stopped_at is not None:
                until = self.stopped_at
            elif until is not None:
                until = min(until, end)
            if since < end and (until is None or since < until):
                applied.append(Pause(since, until))
        return tuple(applied)


def _subtract(spans: Iterable[Span], holes: Sequence[Span]) -> Iterator[Span]:
    """`spans` minus `holes`; both sorted, neither overlapping itself."""
    first = 0
    for start, end in spans:
        # Holes wholly before this span are before every later span too.
        while first < len(holes) and holes[first][1] <= start:
            first += 1
        cursor = start
        for hole_start, hole_end in holes[first:]:
            if hole_start >= end:
                break
            if hole_start > cursor:
                yield cursor, hole_start
            cursor = max(cursor, hole_end)
        if cursor < end:
            yield cursor, end


def _in_utc(name: str, value: datetime) -> datetime:
    """`value` in UTC, refused when naive or too near datetime's limits."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must carry a UTC offset, got {value.isoformat()}")
    try:
        in_utc = value.astimezone(UTC)
    except OverflowError:
        in_utc = EARLIEST - timedelta(days=1)  # refused just below
    if not EARLIEST <= in_utc < LATEST:
        raise ValueError(
            f"{name} must lie between the years {EARLIEST.year} and "
            f"{LATEST.year}, got {value.isoformat()}"
        )
    return in_utc
