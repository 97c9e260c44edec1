"""SLA clocks on business calendars: hand-computed fixtures and properties.

The office calendar is Mon-Fri 09:00-18:00, Sat 09:00-12:00 in Asia/Shanghai (UTC+8,
no DST). 2026-12-04 is a Friday. Each fixture's arithmetic is in its comments.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.events import Urgency
from shared.domain.indicators import SlaPolicy
from shared.domain.sla_clock import (
    BusinessCalendar,
    Pause,
    Segment,
    SlaClock,
    Verdict,
    WorkingHours,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = ["09:00-18:00"]
OFFICE = BusinessCalendar.weekly(
    "Asia/Shanghai",
    {0: WEEKDAYS, 1: WEEKDAYS, 2: WEEKDAYS, 3: WEEKDAYS, 4: WEEKDAYS},
)
# 240 minutes: the normal urgency's accept target.
NORMAL_ACCEPT = SlaPolicy().accept_within(Urgency.NORMAL)


def local(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """An instant in Shanghai, in December 2026 (the 4th is a Friday)."""
    return datetime(2026, 12, day, hour, minute, second, tzinfo=SHANGHAI)


def clock(
    started_at: datetime,
    *,
    stopped_at: datetime | None = None,
    pauses: tuple[Pause, ...] = (),
    calendar: BusinessCalendar = OFFICE,
    target: timedelta = NORMAL_ACCEPT,
) -> SlaClock:
    return SlaClock(
        calendar,
        started_at,
        target,
        stopped_at=stopped_at,
        pauses=pauses,
    )


class TestWorkingHoursAndHolidays:
    def test_friday_evening_order_is_due_monday_noon(self) -> None:
        # Fri 17:00-18:00 counts 60 min; Sat and Sun have no hours on this calendar;
        # Mon 09:00 + the 180 min left = Mon 12:00.
        reading = clock(local(4, 17), stopped_at=local(7, 12)).read(local(8, 9))
        assert reading.deadline == local(7, 12)
        assert reading.segments == (
            Segment(local(4, 17), local(4, 18)),
            Segment(local(7, 9), local(7, 12)),
        )
        assert reading.counted == timedelta(minutes=240)
        assert reading.verdict is Verdict.MET

    def test_a_holiday_monday_moves_the_deadline_to_tuesday(self) -> None:
        # Fri 17:00-18:00 = 60 min; Mon 7 Dec is a holiday; Tue 09:00 + 180 = 12:00.
        calendar = BusinessCalendar.weekly(
            "Asia/Shanghai",
            dict.fromkeys(range(5), WEEKDAYS),
            holidays=[date(2026, 12, 7)],
        )
        reading = clock(local(4, 17), calendar=calendar).read(local(7, 17))
        assert reading.deadline == local(8, 12)
        assert reading.counted == timedelta(minutes=60)
        assert reading.verdict is Verdict.RUNNING

    def test_saturday_morning_hours_count(self) -> None:
        # Fri 17:00-18:00 = 60; Sat 09:00-12:00 = 180: the target is used up at
        # Sat 12:00, and counting resumes Mon 09:00, so a stop before then is met
        # and Mon 09:00 is the last instant that meets it.
        calendar = BusinessCalendar.weekly(
            "Asia/Shanghai",
            dict.fromkeys(range(5), WEEKDAYS) | {5: ["09:00-12:00"]},
        )
        reading = clock(local(4, 17), calendar=calendar).read(local(6, 20))
        assert reading.deadline == local(7, 9)
        assert reading.counted == timedelta(minutes=240)
        assert reading.verdict is Verdict.RUNNING


class TestReachedAtTheEdge:
    def test_reached_exactly_at_the_deadline_is_met(self) -> None:
        reading = clock(local(4, 17), stopped_at=local(7, 12)).read(local(9, 0))
        assert reading.counted == NORMAL_ACCEPT
        assert reading.verdict is Verdict.MET

    def test_reached_one_second_after_the_deadline_is_breached(self) -> None:
        reading = clock(local(4, 17), stopped_at=local(7, 12, 0, 1)).read(local(9, 0))
        assert reading.counted == NORMAL_ACCEPT + timedelta(seconds=1)
        assert reading.verdict is Verdict.BREACHED

    def test_target_used_up_at_closing_time_is_met_until_work_resumes(self) -> None:
        # Fri 14:00-18:00 = 240 min: the target is used up at Fri 18:00 exactly.
        # Accepted on Saturday, no more time counted: met. The deadline is Mon
        # 09:00, the last instant still met; one second later is a breach.
        started = local(4, 14)
        saturday = clock(started, stopped_at=local(5, 10)).read(local(5, 10))
        assert saturday.counted == NORMAL_ACCEPT
        assert saturday.verdict is Verdict.MET
        assert saturday.deadline == local(7, 9)
        late = clock(started, stopped_at=local(7, 9, 0, 1)).read(local(7, 10))
        assert late.verdict is Verdict.BREACHED

    def test_an_unreached_clock_runs_until_the_deadline_then_is_breached(
        self,
    ) -> None:
        unreached = clock(local(4, 17))
        assert unreached.read(local(7, 12)).verdict is Verdict.RUNNING
        assert unreached.read(local(7, 12, 0, 1)).verdict is Verdict.BREACHED

    def test_a_zero_target_is_due_when_work_starts(self) -> None:
        # Nothing may be counted: a stop before Mon 09:00 is met, and the clock
        # breaches as soon as working time counts.
        zero = clock(local(5, 10), target=timedelta(0))
        assert zero.read(local(7, 8)).deadline == local(7, 9)
        assert zero.read(local(7, 8)).verdict is Verdict.RUNNING
        assert zero.read(local(7, 9, 0, 1)).verdict is Verdict.BREACHED


class TestPauses:
    def test_two_paused_working_hours_move_the_deadline_two_working_hours(
        self,
    ) -> None:
        # Without the pause: Mon 09:00 + 240 = 13:00. Quoted Mon 10:00-12:00: 09:00-10:00
        # counts 60, 12:00 + the 180 left = 15:00.
        quoted = Pause(local(7, 10), local(7, 12))
        reading = clock(local(7, 9), stopped_at=local(7, 15), pauses=(quoted,)).read(
            local(8, 9)
        )
        assert reading.deadline == local(7, 15)
        assert reading.segments == (
            Segment(local(7, 9), local(7, 10)),
            Segment(local(7, 12), local(7, 15)),
        )
        assert reading.pauses == (quoted,)
        assert reading.verdict is Verdict.MET

    def test_a_pause_over_the_night_removes_only_its_working_part(self) -> None:
        # Without the pause: Mon 15:00-18:00 = 180, Tue 09:00 + 60 = Tue 10:00.
        # Paused Mon 17:00 - Tue 10:00 (17 wall hours), of which working time is
        # Mon 17:00-18:00 and Tue 09:00-10:00 = 2 hours: Mon 15:00-17:00 counts
        # 120, Tue 10:00 + the 120 left = Tue 12:00.
        overnight = Pause(local(7, 17), local(8, 10))
        reading = clock(local(7, 15), pauses=(overnight,)).read(local(8, 11))
        assert reading.deadline == local(8, 12)
        assert reading.segments == (
            Segment(local(7, 15), local(7, 17)),
            Segment(local(8, 10), local(8, 11)),
        )
        assert reading.counted == timedelta(hours=3)

    def test_an_open_pause_leaves_the_deadline_unknown(self) -> None:
        # Mon 09:00-10:00 counts 60 of 240; quoted since 10:00 and not answered.
        waiting = Pause(local(7, 10))
        reading = clock(local(7, 9), pauses=(waiting,)).read(local(9, 17))
        assert reading.deadline is None
        assert reading.counted == timedelta(hours=1)
        assert reading.pauses == (waiting,)
        assert reading.verdict is Verdict.RUNNING

    def test_an_open_pause_after_the_deadline_keeps_the_breach(self) -> None:
        # Mon 09:00 + 240 = 13:00; quoted only from 14:00: 09:00-14:00 counted 300.
        reading = clock(local(7, 9), pauses=(Pause(local(7, 14)),)).read(local(9, 9))
        assert reading.deadline == local(7, 13)
        assert reading.counted == timedelta(hours=5)
        assert reading.verdict is Verdict.BREACHED

    def test_an_open_pause_from_the_deadline_holds_the_clock(self) -> None:
        # 09:00-13:00 counted 240 = the target, then quoted: never more than the
        # target, so not breached, and when it resumes is unknown.
        reading = clock(local(7, 9), pauses=(Pause(local(7, 13)),)).read(local(9, 9))
        assert reading.deadline is None
        assert reading.verdict is Verdict.RUNNING

    def test_applied_pauses_are_clipped_to_the_clock(self) -> None:
        # A pause before the start is left out; one past the stop ends there; an
        # open pause on a stopped clock ends at the stop.
        reading = clock(
            local(7, 9),
            stopped_at=local(7, 16),
            pauses=(
                Pause(local(4, 10), local(4, 11)),
                Pause(local(7, 10), local(7, 11)),
                Pause(local(7, 15)),
            ),
        ).read(local(8, 9))
        assert reading.pauses == (
            Pause(local(7, 10), local(7, 11)),
            Pause(local(7, 15), local(7, 16)),
        )
        # 09:00-10:00 and 11:00-15:00.
        assert reading.counted == timedelta(hours=5)
        assert reading.verdict is Verdict.BREACHED


class TestDaylightSavingTime:
    def test_office_hours_follow_the_local_clock_across_a_dst_change(self) -> None:
        # Berlin moves to summer time on Sun 29 Mar 2026. Fri 27 Mar 17:00 CET
        # (16:00 UTC) to 18:00 counts 60; Mon 30 Mar 09:00 CEST is 07:00 UTC;
        # + 180 = 12:00 CEST = 10:00 UTC (66 UTC hours after the start, not 67).
        calendar = BusinessCalendar.weekly(
            "Europe/Berlin", dict.fromkeys(range(5), WEEKDAYS)
        )
        started = datetime(2026, 3, 27, 17, tzinfo=BERLIN)
        reading = clock(started, calendar=calendar).read(started)
        assert reading.deadline == datetime(2026, 3, 30, 10, tzinfo=UTC)
        assert reading.deadline == datetime(2026, 3, 30, 12, tzinfo=BERLIN)

    def test_a_spring_forward_night_has_one_working_hour_less(self) -> None:
        # Sunday 00:00-06:00 local on 29 Mar 2026 is 23:00 UTC (Sat) to 04:00 UTC:
        # 5 hours. A 4-hour target runs out at 03:00 UTC = 05:00 CEST local.
        calendar = BusinessCalendar.weekly("Europe/Berlin", {6: ["00:00-06:00"]})
        started = datetime(2026, 3, 29, 0, tzinfo=BERLIN)
        reading = clock(started, calendar=calendar, target=timedelta(hours=4)).read(
            datetime(2026, 3, 29, 12, tzinfo=BERLIN)
        )
        assert reading.segments == (
            Segment(
                datetime(2026, 3, 28, 23, tzinfo=UTC),
                datetime(2026, 3, 29, 4, tzinfo=UTC),
            ),
        )
        assert reading.deadline == datetime(2026, 3, 29, 5, tzinfo=BERLIN)
        assert reading.verdict is Verdict.BREACHED

    def test_a_fall_back_night_has_one_working_hour_more(self) -> None:
        # Sunday 00:00-06:00 local on 25 Oct 2026 is 22:00 UTC (Sat, CEST) to 05:00
        # UTC (CET): 7 hours, so a 7-hour target is exactly used up (met).
        calendar = BusinessCalendar.weekly("Europe/Berlin", {6: ["00:00-06:00"]})
        started = datetime(2026, 10, 25, 0, tzinfo=BERLIN)
        stopped = datetime(2026, 10, 25, 6, tzinfo=BERLIN)
        reading = clock(
            started, stopped_at=stopped, calendar=calendar, target=timedelta(hours=7)
        ).read(stopped)
        assert reading.counted == timedelta(hours=7)
        assert reading.verdict is Verdict.MET

    def test_hours_inside_the_spring_forward_gap_do_not_overlap(self) -> None:
        # 02:00-03:00 does not exist on 29 Mar 2026 in Berlin; 01:00-02:30 and
        # 02:30-04:00 still cover 01:00 CET (00:00 UTC) to 04:00 CEST (02:00 UTC).
        calendar = BusinessCalendar.weekly(
            "Europe/Berlin", {6: ["01:00-02:30", "02:30-04:00"]}
        )
        started = datetime(2026, 3, 29, 0, tzinfo=BERLIN)
        reading = clock(started, calendar=calendar).read(started + timedelta(hours=8))
        assert reading.segments == (
            Segment(
                datetime(2026, 3, 29, 0, tzinfo=UTC),
                datetime(2026, 3, 29, 2, tzinfo=UTC),
            ),
        )


class TestDefaults:
    def test_always_is_24x7_in_the_products_zone(self) -> None:
        calendar = BusinessCalendar.always()
        assert calendar.time_zone == "Asia/Shanghai"
        assert calendar.is_always

    def test_24x7_counts_one_segment_from_start_to_stop(self) -> None:
        started = datetime(2026, 3, 2, 8, tzinfo=UTC)
        stopped = started + timedelta(days=3)
        reading = clock(
            started, stopped_at=stopped, calendar=BusinessCalendar.always()
        ).read(stopped)
        assert reading.segments == (Segment(started, stopped),)

    def test_instants_come_back_in_utc(self) -> None:
        reading = clock(local(7, 9), calendar=BusinessCalendar.always()).read(
            local(7, 10)
        )
        assert reading.segments[0].start.tzinfo is UTC
        assert reading.deadline is not None
        assert reading.deadline.tzinfo is UTC


# Seconds are enough: event times are RFC 3339 instants, usually whole seconds.
instants = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis takes naive bounds
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
durations = st.integers(min_value=0, max_value=30 * 24 * 3600).map(
    lambda seconds: timedelta(seconds=seconds)
)
# The same 24x7 week spelled with a split Monday: it takes the day-by-day walk
# (through Berlin's DST days) that `always` skips, and must agree with it.
SPLIT_24X7 = BusinessCalendar.weekly(
    "Europe/Berlin",
    {0: ["00:00-12:00", "12:00-24:00"]} | {day: ["00:00-24:00"] for day in range(1, 7)},
)


@pytest.mark.parametrize(
    "calendar", [BusinessCalendar.always(), SPLIT_24X7], ids=["always", "split"]
)
@settings(max_examples=60, deadline=None)
@given(created=instants, taken=durations, target=durations)
def test_24x7_without_pauses_is_plain_arithmetic(
    calendar: BusinessCalendar, created: datetime, taken: timedelta, target: timedelta
) -> None:
    reached = created + taken
    reading = clock(created, stopped_at=reached, calendar=calendar, target=target).read(
        reached
    )
    assert reading.deadline == created + target
    assert reading.counted == taken
    assert reading.verdict is (Verdict.MET if taken <= target else Verdict.BREACHED)


@settings(max_examples=60, deadline=None)
@given(created=instants, elapsed=durations, target=durations)
def test_24x7_unreached_clock_breaches_after_plain_deadline(
    created: datetime, elapsed: timedelta, target: timedelta
) -> None:
    reading = clock(created, calendar=BusinessCalendar.always(), target=target).read(
        created + elapsed
    )
    expected = Verdict.RUNNING if elapsed <= target else Verdict.BREACHED
    assert reading.verdict is expected


minutes = st.integers(min_value=0, max_value=14 * 24 * 60)


@settings(max_examples=80, deadline=None)
@given(
    start=minutes,
    reached=minutes,
    target=st.integers(min_value=0, max_value=3000),
    pause_edges=st.lists(minutes, max_size=4, unique=True),
    last_pause_open=st.booleans(),
)
def test_met_exactly_when_reached_by_the_deadline(
    start: int,
    reached: int,
    target: int,
    pause_edges: list[int],
    last_pause_open: bool,
) -> None:
    """The censoring rule carries over: reached at or before the deadline is met."""
    monday = local(7, 0)
    started_at = monday + timedelta(minutes=start)
    stopped_at = started_at + timedelta(minutes=reached)
    edges = [monday + timedelta(minutes=edge) for edge in sorted(pause_edges)]
    # Sorted unique edges taken two by two: closed pauses that never overlap.
    pauses = [Pause(edges[i], edges[i + 1]) for i in range(0, len(edges) - 1, 2)]
    if last_pause_open and len(edges) % 2:
        pauses.append(Pause(edges[-1]))
    sla = clock(started_at, pauses=tuple(pauses), target=timedelta(minutes=target))
    stopped = clock(
        started_at,
        stopped_at=stopped_at,
        pauses=tuple(pauses),
        target=timedelta(minutes=target),
    )
    reading = stopped.read(stopped_at)
    deadline = sla.read(started_at).deadline
    if deadline is not None:
        assert reading.verdict is (
            Verdict.MET if stopped_at <= deadline else Verdict.BREACHED
        )
    for segment in reading.segments:
        assert segment.start < segment.end
        # Counted time is working time (Mon-Fri 09:00-18:00 local) outside pauses.
        start_local = segment.start.astimezone(SHANGHAI)
        end_local = segment.end.astimezone(SHANGHAI)
        assert start_local.weekday() < 5
        assert start_local.date() == (end_local - timedelta(microseconds=1)).date()
        assert start_local.hour >= 9
        assert (end_local.hour, end_local.minute) <= (18, 0)
        for pause in reading.pauses:
            assert pause.until is not None
            assert segment.end <= pause.since or pause.until <= segment.start


class TestHostileInputs:
    def test_naive_instants_are_refused(self) -> None:
        naive = datetime(2026, 12, 7, 9)  # noqa: DTZ001 - the point of the test
        with pytest.raises(ValueError, match="started_at must carry a UTC offset"):
            clock(naive)
        with pytest.raises(ValueError, match="now must carry a UTC offset"):
            clock(local(7, 9)).read(naive)
        with pytest.raises(ValueError, match="pause since must carry a UTC offset"):
            Pause(naive)

    def test_a_pause_ending_before_it_starts_is_refused(self) -> None:
        with pytest.raises(ValueError, match="a pause ends before it starts"):
            Pause(local(7, 12), local(7, 10))

    def test_overlapping_pauses_are_refused(self) -> None:
        with pytest.raises(ValueError, match="pauses overlap"):
            clock(
                local(7, 9),
                pauses=(Pause(local(7, 10), local(7, 12)), Pause(local(7, 11))),
            )

    def test_a_pause_after_an_open_pause_is_refused(self) -> None:
        with pytest.raises(ValueError, match="only the last pause may be open"):
            clock(
                local(7, 9),
                pauses=(Pause(local(7, 10)), Pause(local(7, 11), local(7, 12))),
            )

    def test_a_stop_before_the_start_is_refused(self) -> None:
        with pytest.raises(ValueError, match=r"stops .* before it starts"):
            clock(local(7, 9), stopped_at=local(7, 8))

    def test_a_negative_target_is_refused(self) -> None:
        with pytest.raises(ValueError, match="must not be negative"):
            clock(local(7, 9), target=timedelta(minutes=-1))

    def test_instants_near_datetimes_limits_are_refused(self) -> None:
        far = datetime(9999, 12, 31, 23, tzinfo=UTC)
        with pytest.raises(ValueError, match="must lie between the years"):
            clock(far)
        # The latest start still walks its whole horizon without overflowing.
        latest = datetime(9979, 12, 31, 23, tzinfo=UTC)
        assert clock(latest).read(latest).deadline is not None
        year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
        with pytest.raises(ValueError, match="must lie between the years"):
            clock(year_one)

    def test_a_business_clock_longer_than_the_horizon_is_refused(self) -> None:
        with pytest.raises(ValueError, match="spans at most 3660 days"):
            clock(local(7, 9)).read(local(7, 9) + timedelta(days=3661))

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("9-18", "HH:MM-HH:MM"),
            ("09:00-25:00", "start < end <= 24:00"),
            ("18:00-09:00", "start < end"),
            ("09:00-09:00", "start < end"),
            ("09:60-10:00", "minutes run 00-59"),
            ("\u0660\u0669:00-18:00", "HH:MM-HH:MM"),  # Arabic-Indic digits
        ],
    )
    def test_bad_working_hours_are_refused(self, text: str, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            WorkingHours.parse(text)

    def test_working_hours_are_whole_minutes(self) -> None:
        with pytest.raises(ValueError, match="whole minutes"):
            WorkingHours(timedelta(hours=9, seconds=1), timedelta(hours=10))

    def test_overlapping_working_hours_are_refused(self) -> None:
        with pytest.raises(ValueError, match="overlap"):
            BusinessCalendar.weekly(
                "Asia/Shanghai", {0: ["09:00-12:00", "11:00-18:00"]}
            )

    @pytest.mark.parametrize(
        "name",
        [
            "Mars/Olympus",
            "../../etc/passwd",
            "",
            "Asia",
            "Asia/Shang\x00hai",
            "a" * 9999,
        ],
    )
    def test_an_unknown_time_zone_is_refused(self, name: str) -> None:
        with pytest.raises(ValueError, match="unknown time zone"):
            BusinessCalendar.always(name)

    def test_a_calendar_without_working_time_is_refused(self) -> None:
        with pytest.raises(ValueError, match="needs some working time"):
            BusinessCalendar.weekly("Asia/Shanghai", {})

    def test_an_unknown_weekday_is_refused(self) -> None:
        with pytest.raises(ValueError, match="weekdays run 0"):
            BusinessCalendar.weekly("Asia/Shanghai", {7: WEEKDAYS})
