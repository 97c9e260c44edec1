"""services.metrics.clocks and the calendar settings: an order's SLA clocks under
business calendars and waits on the customer, hand-computed (indicators.md v2,
"Business calendars").

Calendar: Asia/Shanghai (UTC+8, no DST), Monday to Friday 09:00-18:00, holidays
2026-10-01 (Thursday) and 2026-10-02 (Friday). Local times below are Shanghai's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.metrics.clocks import (
    ALWAYS,
    calendar_content,
    calendar_from_content,
    due_at,
    order_clock,
)
from services.metrics.domain import DEFAULT_SLA, SlaTargets, sla_from_json, sla_json
from services.metrics.policy import IndicatorPolicy, policy_from, policy_out
from services.metrics.settings import MetricsSettings
from services.metrics.sla_explain import clock_out
from shared.domain.events import Urgency
from shared.domain.indicators import OrderFacts, QuoteWait, derive_facts
from tests.integration.metrics_io import Timed

SHANGHAI: Final = {
    "time_zone": "Asia/Shanghai",
    "hours": {day: ["09:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
    "holidays": ["2026-10-01", "2026-10-02"],
}
OFFICE: Final = calendar_from_content(SHANGHAI)
SHANGHAI_ZONE: Final = ZoneInfo("Asia/Shanghai")
CALENDAR_SLA: Final = SlaTargets(
    accept=DEFAULT_SLA.accept,
    arrive=DEFAULT_SLA.arrive,
    calendars={"normal": OFFICE},
    pause_while_quoted=True,
)


def local(day: int, hour: int, minute: int = 0, month: int = 9) -> datetime:
    """A Shanghai wall time in 2026, as UTC."""
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI_ZONE).astimezone(
        UTC
    )


def facts(order: Timed) -> OrderFacts:
    found = derive_facts(order.events)
    assert found is not None
    return found


START: Final = datetime(2026, 9, 28, 8, 0, tzinfo=UTC)


def quoted_remotely() -> Timed:
    """An urgent order (24x7) accepted at +10m, diagnosed remotely at +30m and
    quoted at +40m, after START."""
    return (
        Timed("t", region="r", urgency=Urgency.URGENT)
        .created(START)
        .assigned(START + timedelta(minutes=1))
        .accepted(START + timedelta(minutes=10))
        .diagnosed(START + timedelta(minutes=30), remote=True)
        .priced(START + timedelta(minutes=40), 1000)
    )


def test_a_weekend_and_a_holiday_are_not_counted() -> None:
    # Created Wednesday 30 Sep 16:00: 2 h that day; Thursday and Friday are
    # holidays, then the weekend; 2 h more on Monday 5 Oct: due 11:00.
    order = Timed("t", region="r").created(local(30, 16))
    assert due_at(facts(order), CALENDAR_SLA, "accept") == local(5, 11, month=10)
    order.assigned(local(30, 16, 1)).accepted(local(5, 10, 30, month=10))
    clock = order_clock(facts(order), CALENDAR_SLA, "accept")
    assert clock is not None
    reading = clock.read(local(9, 1, month=10))
    assert [(s.start, s.end) for s in reading.segments] == [
        (local(30, 16), local(30, 18)),
        (local(5, 9, month=10), local(5, 10, 30, month=10)),
    ]
    assert reading.counted == timedelta(hours=3, minutes=30)
    assert reading.verdict == "met"


def test_a_target_used_up_as_work_ends_is_due_when_work_resumes() -> None:
    # Friday 25 Sep 14:00 + 4 h = 18:00, the end of work: due Monday 09:00.
    order = Timed("t", region="r").created(local(25, 14))
    assert due_at(facts(order), CALENDAR_SLA, "accept") == local(28, 9)


def test_a_wait_on_the_customer_pauses_the_arrive_clock() -> None:
    # Urgent runs 24x7: arrive target 480 min, paused 120 min while quoted.
    order = quoted_remotely()
    # An open wait holds the clock: not due.
    assert due_at(facts(order), CALENDAR_SLA, "arrive") is None
    order.approved(START + timedelta(minutes=160))
    waited = facts(order)
    assert waited.quote_waits == (
        QuoteWait(
            since=START + timedelta(minutes=40), until=START + timedelta(minutes=160)
        ),
    )
    assert due_at(waited, CALENDAR_SLA, "arrive") == START + timedelta(minutes=600)
    # Without the pause (the default) the wait counts.
    assert due_at(waited, DEFAULT_SLA, "arrive") == START + timedelta(minutes=480)
    # The accept clock stopped before the wait.
    assert due_at(waited, CALENDAR_SLA, "accept") == START + timedelta(minutes=60)


def test_a_wait_still_open_when_the_step_is_reached_ends_there() -> None:
    order = (
        quoted_remotely()
        .rejected(START + timedelta(minutes=50))
        .priced(START + timedelta(minutes=60), 900)
        .cancelled(START + timedelta(minutes=90))
    )
    found = facts(order)
    # Rejected, quoted again, then cancelled: two waits, the second ended by the
    # cancel.
    assert [(w.since, w.until) for w in found.quote_waits] == [
        (START + timedelta(minutes=40), START + timedelta(minutes=50)),
        (START + timedelta(minutes=60), START + timedelta(minutes=90)),
    ]
    assert due_at(found, CALENDAR_SLA, "arrive") == START + timedelta(minutes=520)


def test_the_default_clocks_are_created_at_plus_the_target() -> None:
    start = datetime(2026, 9, 26, 23, 59, 30, tzinfo=UTC)  # a Saturday
    found = facts(Timed("t", region="r").created(start))
    assert due_at(found, DEFAULT_SLA, "accept") == start + timedelta(minutes=240)
    assert due_at(found, DEFAULT_SLA, "arrive") == start + timedelta(minutes=2880)
    no_target = SlaTargets(accept={}, arrive={})
    assert due_at(found, no_target, "accept") is None


def test_the_calendar_content_goes_both_ways() -> None:
    assert calendar_content(OFFICE) == SHANGHAI
    assert calendar_from_content(calendar_content(OFFICE)) == OFFICE


def test_default_calendars_keep_the_recorded_policy_and_the_version() -> None:
    # 24x7 given explicitly is the default: the record and the digest are unmoved.
    explicit = SlaTargets(
        accept=DEFAULT_SLA.accept,
        arrive=DEFAULT_SLA.arrive,
        calendars={"emergency": ALWAYS},
    )
    assert sla_json(explicit) == sla_json(DEFAULT_SLA)
    assert IndicatorPolicy(sla=explicit).version == IndicatorPolicy().version
    assert "calendars" not in sla_json(DEFAULT_SLA)
    # A business calendar or the pause changes both, and survives the record.
    assert IndicatorPolicy(sla=CALENDAR_SLA).version != IndicatorPolicy().version
    again = sla_from_json(sla_json(CALENDAR_SLA))
    assert again.calendars == {"normal": OFFICE}
    assert again.pause_while_quoted


def test_the_calendar_settings_make_the_policy_and_show_in_it() -> None:
    settings = MetricsSettings(
        sla_calendars={"normal": SHANGHAI}, sla_pause_while_quoted=True
    )
    policy = policy_from(settings)
    assert policy.sla.calendars == {"normal": OFFICE}
    shown = policy_out(policy)
    assert shown.sla_pause_while_quoted
    assert shown.sla_calendars["normal"].model_dump(mode="json") == SHANGHAI
    assert shown.sla_calendars["emergency"].hours["sun"] == ["00:00-24:00"]


def _refused(calendar: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as refused:
        MetricsSettings(sla_calendars={"normal": calendar})
    return str(refused.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"time_zone": "Mars/Olympus"}, "unknown time zone"),
        ({"time_zone": "Asia"}, "unknown time zone"),
        ({"hours": {"mon": ["09:00-13:00", "12:00-18:00"]}}, "overlap"),
        ({"hours": {"mon": ["18:00-09:00"]}}, "start < end"),
        ({"hours": {"mon": ["9-18"]}}, "HH:MM-HH:MM"),
        ({"hours": {"mon": ["09:00-24:01"]}}, "end <= 24:00"),
        ({"hours": {"mon": ["09:00-17:60"]}}, "minutes run"),
        ({"hours": {"monday": ["09:00-18:00"]}}, "monday"),
        ({"hours": {}}, "some working time"),
        ({"hours": {"mon": ["09:00-09:30"] * 9}}, "at most 8"),
        ({"holidays": ["2026-02-30"]}, "YYYY-MM-DD"),
        ({"holidays": ["2026-10-01", "2026-10-01"]}, "twice"),
        (
            {"holidays": [f"2026-01-01T{n}" for n in range(367)]},
            "at most 366",
        ),
        ({"week": {}}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_calendar_is_refused_at_start(
    change: dict[str, Any], message: str
) -> None:
    assert message in _refused(SHANGHAI | change)


def test_a_target_that_cannot_fit_the_calendar_is_never_due() -> None:
    # A year of holidays on the only working weekday still leaves later years;
    # a target beyond the calendar's horizon (ten years) is not due.
    huge = SlaTargets(
        accept={"normal": 60 * 24 * 365 * 11}, arrive={}, calendars={"normal": OFFICE}
    )
    found = facts(Timed("t", region="r").created(local(28, 9)))
    assert due_at(found, huge, "accept") is None


def test_the_explanation_of_a_clock_that_is_never_due_lists_its_segments() -> None:
    huge = SlaTargets(
        accept={"normal": 60 * 24 * 365 * 11}, arrive={}, calendars={"normal": OFFICE}
    )
    found = facts(Timed("t", region="r").created(local(28, 9)))
    shown = clock_out(found, IndicatorPolicy(sla=huge), "accept", local(28, 12))
    assert shown is not None
    assert shown.verdict == "never_due"
    assert shown.deadline is None
    assert shown.elapsed_s == 3 * 3600
    assert clock_out(found, IndicatorPolicy(sla=huge), "arrive", local(28, 12)) is None


def test_the_explanation_follows_the_censoring_rule() -> None:
    policy = IndicatorPolicy(sla=CALENDAR_SLA)
    # Cancelled Monday 10:00, before the deadline (Monday 12:00): left out, and
    # the clock stopped counting at the cancel.
    order = Timed("t", region="r").created(local(25, 17)).cancelled(local(28, 10))
    shown = clock_out(facts(order), policy, "accept", local(30, 12))
    assert shown is not None
    assert shown.verdict == "cancelled"
    assert shown.elapsed_s == 2 * 3600
    # Still open at Monday 11:00: running; at 12:00 a breach.
    order = Timed("t", region="r").created(local(25, 17))
    running = clock_out(facts(order), policy, "accept", local(28, 11))
    assert running is not None
    assert running.verdict == "running"
    breached = clock_out(facts(order), policy, "accept", local(28, 12))
    assert breached is not None
    assert breached.verdict == "breached"
    # An open wait on the customer holds the arrive clock.
    held = clock_out(
        facts(quoted_remotely()), policy, "arrive", START + timedelta(hours=1)
    )
    assert held is not None
    assert held.verdict == "paused"
    assert [(p.since, p.until) for p in held.pauses] == [
        (START + timedelta(minutes=40), None)
    ]
    assert held.elapsed_s == 40 * 60


def test_a_redelivered_facts_document_without_waits_loads() -> None:
    found = facts(Timed("t", region="r").created(local(28, 9)))
    document = found.model_dump_json(exclude={"quote_waits"})
    assert OrderFacts.model_validate_json(document).quote_waits == ()
