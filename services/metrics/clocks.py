"""SLA clocks of an order under the policy's business calendars (indicators.md v2,
"Business calendars").

The accept clock runs from created_at to the first accept, the arrive clock to the
first arrival; each counts only its urgency's working time, and, when the policy
pauses while quoted, not the waits on the customer (`OrderFacts.quote_waits`). A
clock's deadline is what the censored SLA rates compare with: the consumer stores it
with the facts (`order_fact.accept_due_at`, `arrive_due_at`). With the default
calendar (24x7) and no pause it is created_at + target, as before calendars.

Calendars are written as JSON content: `{"time_zone": "Asia/Shanghai", "hours":
{"mon": ["09:00-18:00"], ...}, "holidays": ["2026-10-01", ...]}`; a weekday left out
has no working time.

Pure: imports no I/O framework and reads no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from shared.domain.indicators import OrderFacts
from shared.domain.sla_clock import BusinessCalendar, Pause, SlaClock

if TYPE_CHECKING:
    from services.metrics.domain import SlaTargets

WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS: Final = BusinessCalendar.always()
# Bounds of a configured calendar: a year of holidays, a few stretches a day.
MAX_HOLIDAYS: Final = 366
MAX_STRETCHES_PER_DAY: Final = 8

Step = Literal["accept", "arrive"]


def calendar_content(calendar: BusinessCalendar) -> dict[str, Any]:
    """A calendar as canonical JSON content (`calendar_from_content` reads it)."""
    return {
        "time_zone": calendar.time_zone,
        "hours": {
            name: [str(hours) for hours in day]
            for name, day in zip(WEEKDAYS, calendar.week, strict=True)
            if day
        },
        "holidays": sorted(day.isoformat() for day in calendar.holidays),
    }


def calendar_from_content(content: Mapping[str, Any]) -> BusinessCalendar:
    """A calendar from its JSON content; ValueError says what is wrong."""
    unknown = set(content) - {"time_zone", "hours", "holidays"}
    if unknown:
        raise ValueError(f"unknown calendar fields {sorted(unknown)}")
    zone = content.get("time_zone")
    if not isinstance(zone, str):
        raise ValueError("a calendar needs a time_zone (an IANA name)")
    hours = content.get("hours", {})
    if not isinstance(hours, Mapping):
        raise ValueError('hours are {"mon": ["09:00-18:00"], ...}')
    days = set(hours) - set(WEEKDAYS)
    if days:
        raise ValueError(f"weekdays are {', '.join(WEEKDAYS)}; got {sorted(days)}")
    for name, stretches in hours.items():
        if not isinstance(stretches, list) or not all(
            isinstance(s, str) for s in stretches
        ):
            raise ValueError(f'{name}: hours are a list like ["09:00-18:00"]')
        if len(stretches) > MAX_STRETCHES_PER_DAY:
            raise ValueError(
                f"{name}: at most {MAX_STRETCHES_PER_DAY} stretches of hours a day"
            )
    holidays = content.get("holidays", [])
    if not isinstance(holidays, list) or not all(isinstance(d, str) for d in holidays):
        raise ValueError('holidays are a list of dates like ["2026-10-01"]')
    if len(holidays) > MAX_HOLIDAYS:
        raise ValueError(f"at most {MAX_HOLIDAYS} holidays, got {len(holidays)}")
    if len(set(holidays)) != len(holidays):
        raise ValueError("a holiday is listed twice")
    try:
        days_off = [date.fromisoformat(day) for day in holidays]
    except ValueError:
        raise ValueError("holidays are dates written YYYY-MM-DD") from None
    return BusinessCalendar.weekly(
        zone,
        {WEEKDAYS.index(name): stretches for name, stretches in hours.items()},
        holidays=days_off,
    )


def _pauses(facts: OrderFacts, stopped_at: datetime | None) -> tuple[Pause, ...]:
    """The waits on the customer before the clock stopped, ended by the stop."""
    found = []
    for wait in facts.quote_waits:
        if stopped_at is not None and wait.since >= stopped_at:
            continue
        until = wait.until
        if stopped_at is not None and (until is None or until > stopped_at):
            until = stopped_at
        # A damaged stream's times may run backwards: never an inverted pause.
        found.append(
            Pause(wait.since, None if until is None else max(until, wait.since))
        )
    return tuple(found)


def order_clock(facts: OrderFacts, sla: SlaTargets, step: Step) -> SlaClock | None:
    """The order's accept or arrive clock (None: no target for its urgency)."""
    urgency = facts.urgency.value
    targets = sla.accept if step == "accept" else sla.arrive
    minutes = targets.get(urgency)
    if minutes is None:
        return None
    stopped_at = facts.first_accepted_at if step == "accept" else facts.first_arrived_at
    if stopped_at is not None:  # reached "before" created only in a damaged stream
        stopped_at = max(stopped_at, facts.created_at)
    return SlaClock(
        sla.calendars.get(urgency, ALWAYS),
        facts.created_at,
        timedelta(minutes=minutes),
        stopped_at=stopped_at,
        pauses=_pauses(facts, stopped_at) if sla.pause_while_quoted else (),
    )


def due_at(facts: OrderFacts, sla: SlaTargets, step: Step) -> datetime | None:
    """The clock's deadline: None without a target, while an open wait holds it,
    or for a target the calendar cannot fit (never due)."""
    urgency = facts.urgency.value
    if not sla.pause_while_quoted and sla.calendars.get(urgency, ALWAYS).is_always:
        # 24x7 without pauses (the default, and the consumer's hot path): the
        # deadline is created_at + target, whatever the order's other times.
        minutes = (sla.accept if step == "accept" else sla.arrive).get(urgency)
        return (
            None if minutes is None else facts.created_at + timedelta(minutes=minutes)
        )
    try:
        clock = order_clock(facts, sla, step)
        return None if clock is None else clock.deadline()
    except ValueError:  # beyond the calendar's horizon, or a damaged stream
        return None
