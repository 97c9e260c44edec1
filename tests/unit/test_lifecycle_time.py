"""The server bounds time: the event `time` window, the reopen window, the event cap.

`decide` gets the server's clock as `now`; nothing here reads a clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import pytest
from pydantic import TypeAdapter, ValidationError

from shared.domain import errors
from shared.domain.instants import Instant
from shared.domain.lifecycle import OrderStatus
from shared.domain.rules import Policy
from tests.builders import (
    Story,
    make_accepted,
    make_completed,
    make_created,
    make_reopened,
    story_at,
)

S = OrderStatus
SKEW: Final = timedelta(minutes=5)
GRACE: Final = timedelta(hours=72)
EPSILON: Final = timedelta(microseconds=1)

# (offset of `time` from the server's clock, the refusal or None)
TIME_BOUNDS: Final = [
    pytest.param(timedelta(0), None, id="now"),
    pytest.param(SKEW, None, id="just-inside-the-skew"),
    pytest.param(SKEW + EPSILON, errors.EventTimeInFuture, id="just-past-the-skew"),
    pytest.param(timedelta(minutes=6), errors.EventTimeInFuture, id="6-min-ahead"),
    pytest.param(-GRACE, None, id="just-inside-the-grace"),
    pytest.param(
        -GRACE - timedelta(seconds=1), errors.EventTimeTooOld, id="grace-plus-1s"
    ),
    pytest.param(-timedelta(days=9000), errors.EventTimeTooOld, id="years-behind"),
]


class TestEventTimeWindow:
    @pytest.mark.parametrize(("offset", "refusal"), TIME_BOUNDS)
    def test_a_new_order_time_is_bounded_by_the_server_clock(
        self, offset: timedelta, refusal: type[errors.DomainError] | None
    ) -> None:
        story = Story()
        now = datetime(2026, 6, 1, 12, tzinfo=UTC)
        created = make_created(customer_id=story.customer.id)
        if refusal is None:
            story.post(story.customer, created, at=now + offset, now=now)
            assert story.current.created_at == now + offset
        else:
            with pytest.raises(refusal):
                story.post(story.customer, created, at=now + offset, now=now)

    @pytest.mark.parametrize(("offset", "refusal"), TIME_BOUNDS)
    def test_an_event_time_is_bounded_by_the_server_clock(
        self, offset: timedelta, refusal: type[errors.DomainError] | None
    ) -> None:
        story = story_at(S.ASSIGNED)
        # Far enough after the previous event that only the window can refuse.
        now = story.clock + timedelta(days=9001)
        accepted = make_accepted(story.technician.id)
        if refusal is None:
            story.post(story.technician, accepted, at=now + offset, now=now)
            assert story.current.status is S.ACCEPTED
        else:
            with pytest.raises(refusal) as err:
                story.post(story.technician, accepted, at=now + offset, now=now)
            assert err.value.code in {"event_time_in_future", "event_time_too_old"}

    def test_the_grace_follows_the_policy(self) -> None:
        story = Story(policy=Policy(max_event_age=timedelta(hours=1)))
        now = datetime(2026, 6, 1, 12, tzinfo=UTC)
        with pytest.raises(errors.EventTimeTooOld):
            story.post(
                story.customer,
                make_created(customer_id=story.customer.id),
                at=now - timedelta(hours=1, seconds=1),
                now=now,
            )

    @pytest.mark.parametrize(
        "now",
        [
            datetime.min.replace(tzinfo=UTC),
            datetime.max.replace(tzinfo=UTC),
        ],
        ids=["year-1", "year-9999"],
    )
    def test_the_bounds_are_total_at_the_ends_of_the_calendar(
        self, now: datetime
    ) -> None:
        policy = Policy()
        assert policy.earliest_acceptable_time(now) <= now
        assert policy.latest_acceptable_time(now) >= now


class TestReopenWindowOnTheServerClock:
    def test_a_late_reopen_with_an_early_device_time_is_refused(self) -> None:
        # The completion was recorded 100 days ago; the app claims the reopen
        # happened a second after it. The window is judged on the server's clock.
        story = Story(policy=Policy(max_event_age=timedelta(days=365)))
        story.create()
        story.to_approved()
        done = story.complete()
        with pytest.raises(errors.WarrantyWindowExpired):
            story.post(
                story.customer,
                make_reopened(),
                at=done.time + timedelta(seconds=1),
                now=done.recorded_at + timedelta(days=100),
            )

    def test_the_window_runs_from_the_recorded_completion_not_its_time(self) -> None:
        # A completion synced 3 days late: its device `time` is 3 days before the
        # server recorded it, and the window runs from the recording.
        story = story_at(S.APPROVED)
        synced_at = story.clock + timedelta(days=3)
        story.post(
            story.technician,
            make_completed(12_000),
            at=story.clock + timedelta(minutes=1),
            now=synced_at,
        )
        assert story.current.first_completed_recorded_at == synced_at
        day_30 = synced_at + timedelta(days=30)
        story.decide(story.customer, make_reopened(), at=day_30, now=day_30)
        with pytest.raises(errors.WarrantyWindowExpired):
            story.decide(
                story.customer,
                make_reopened(),
                at=day_30 + timedelta(seconds=1),
                now=day_30 + timedelta(seconds=1),
            )


class TestEventCap:
    def test_an_order_holding_the_most_events_refuses_the_next(self) -> None:
        story = Story(policy=Policy(max_events_per_order=3))
        story.create()
        story.assign()
        story.accept()
        with pytest.raises(errors.OrderEventLimitReached) as err:
            story.arrive()
        assert err.value.code == "order_event_limit_reached"
        assert story.current.version == 3

    def test_the_cap_must_allow_an_order_to_exist(self) -> None:
        with pytest.raises(ValueError, match="max_events_per_order"):
            Policy(max_events_per_order=0)


INSTANTS: Final = TypeAdapter(Instant)

# (RFC 3339 text, the UTC instant or None for a validation error)
EXTREMES: Final = [
    pytest.param("0001-01-01T00:00:00+14:00", None, id="year-1-plus-14"),
    pytest.param("0001-01-01T00:00:00+23:59", None, id="year-1-plus-23:59"),
    pytest.param("9999-12-31T23:59:59-23:59", None, id="year-9999-minus-23:59"),
    pytest.param("2026-06-30T23:59:60Z", None, id="leap-second"),
    pytest.param("2026-01-01T00:00:00+24:00", None, id="offset-24h"),
    pytest.param("2026-01-01T00:00:00", None, id="naive"),
    pytest.param(
        "0001-01-01T00:00:00Z", datetime.min.replace(tzinfo=UTC), id="year-1-utc"
    ),
    pytest.param(
        "0001-01-01T23:59:00+23:59",
        datetime(1, 1, 1, tzinfo=UTC),
        id="year-1-at-the-edge",
    ),
    pytest.param(
        "9999-12-31T23:59:59.999999Z",
        datetime.max.replace(tzinfo=UTC),
        id="year-9999-utc",
    ),
    pytest.param(
        "2026-03-02t09:00:00z", datetime(2026, 3, 2, 9, tzinfo=UTC), id="lowercase"
    ),
    pytest.param(
        "2026-03-02T17:00:00.123456789+08:00",
        datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC),
        id="nanoseconds",
    ),
]


class TestInstant:
    @pytest.mark.parametrize(("text", "expected"), EXTREMES)
    def test_parsing_is_total_and_lands_in_utc(
        self, text: str, expected: datetime | None
    ) -> None:
        if expected is None:
            with pytest.raises(ValidationError):
                INSTANTS.validate_json(f'"{text}"')
        else:
            parsed = INSTANTS.validate_json(f'"{text}"')
            assert parsed == expected
            assert parsed.utcoffset() == timedelta(0)
