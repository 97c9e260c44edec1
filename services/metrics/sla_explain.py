"""GET /v1/orders/{order_id}/sla: an order's SLA clocks, explained.

Each clock lists the time it counted (segments inside the business calendar and
outside the waits on the customer), the pauses, its deadline and its verdict under
the same rule as the censored SLA rates (`domain.sla_measure`): met when reached by
the deadline; otherwise left out when cancelled (or, for the arrive clock, diagnosed
remotely) by then, a breach once the deadline is at or before now, else running.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.clocks import ALWAYS, Step, calendar_content, order_clock
from services.metrics.policy import IndicatorPolicy
from services.metrics.schemas import (
    CalendarOut,
    ClockPause,
    ClockSegment,
    OrderSla,
    SlaClockOut,
    SlaVerdict,
)
from services.metrics.store import order_state
from shared.domain.errors import OrderNotFound
from shared.domain.indicators import OrderFacts
from shared.domain.sla_clock import HORIZON, SlaClock, Verdict


def _verdict(
    facts: OrderFacts,
    step: Step,
    clock: SlaClock,
    deadline: datetime | None,
    now: datetime,
) -> SlaVerdict:
    """As `domain.sla_measure` decides, and why a clock has no deadline."""
    reached = clock.stopped_at
    if deadline is None:
        held = bool(clock.pauses) and clock.pauses[-1].until is None
        return SlaVerdict.PAUSED if held else SlaVerdict.NEVER_DUE
    if reached is not None and reached <= deadline:
        return SlaVerdict.MET
    if facts.cancelled_at is not None and facts.cancelled_at <= deadline:
        return SlaVerdict.CANCELLED
    diagnosed, arrived = facts.first_diagnosed_at, facts.first_arrived_at
    if (
        step == "arrive"
        and diagnosed is not None
        and diagnosed <= deadline
        and (arrived is None or arrived > diagnosed)
    ):
        return SlaVerdict.REMOTE
    return SlaVerdict.BREACHED if deadline <= now else SlaVerdict.RUNNING


def clock_out(
    facts: OrderFacts, policy: IndicatorPolicy, step: Step, now: datetime
) -> SlaClockOut | None:
    """One clock of the order as of `now` (None: no target for its urgency)."""
    try:
        clock = order_clock(facts, policy.sla, step)
    except ValueError:  # waits whose times run backwards: a damaged stream
        return None
    if clock is None:
        return None
    # A cancelled order's clock counts no further; a calendar is walked at most
    # its horizon.
    until = now if facts.cancelled_at is None else min(now, facts.cancelled_at)
    until = min(until, clock.started_at + HORIZON)
    try:
        reading = clock.read(until)
    except ValueError:
        # The target does not fit in the calendar's horizon: never due. The same
        # segments, read without a target.
        without = replace(clock, target=timedelta(0)).read(until)
        reading = replace(without, deadline=None, verdict=Verdict.RUNNING)
    calendar = policy.sla.calendars.get(facts.urgency.value, ALWAYS)
    return SlaClockOut(
        started_at=clock.started_at,
        target_s=clock.target.total_seconds(),
        calendar=CalendarOut(**calendar_content(calendar)),
        reached_at=clock.stopped_at,
        segments=[
            ClockSegment(
                start=segment.start,
                end=segment.end,
                seconds=segment.duration.total_seconds(),
            )
            for segment in reading.segments
        ],
        pauses=[
            ClockPause(since=pause.since, until=pause.until) for pause in reading.pauses
        ],
        elapsed_s=reading.counted.total_seconds(),
        deadline=reading.deadline,
        verdict=_verdict(facts, step, clock, reading.deadline, now),
    )


async def order_sla(
    conn: AsyncConnection, order_id: UUID, policy: IndicatorPolicy, now: datetime
) -> OrderSla:
    """The order's accept and arrive clocks; OrderNotFound for an unknown order."""
    stored = await conn.scalar(
        select(order_state.c.facts).where(order_state.c.order_id == order_id)
    )
    if stored is None:
        raise OrderNotFound(f"order {order_id} not found")
    facts = OrderFacts.model_validate_json(stored)
    return OrderSla(
        order_id=facts.order_id,
        urgency=facts.urgency.value,
        created_at=facts.created_at,
        as_of=now,
        policy_version=policy.version,
        pause_while_quoted=policy.sla.pause_while_quoted,
        accept=clock_out(facts, policy, "accept", now),
        arrive=clock_out(facts, policy, "arrive", now),
    )
