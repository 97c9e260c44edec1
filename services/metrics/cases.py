"""Alert cases: each step stored as an event with its CloudEvent, the case read back
as the fold of its events, and each closed action's measured effect.

A step is one transaction: lock the alert, fold its stored steps, `decide`, append
the step, project the new case into `alert_case` and queue its CloudEvent on the
quality topic in the metrics outbox, so a step is published if and only if it is
recorded. GET reads the events, not the projection: what it serves is the fold.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final
from uuid import UUID, uuid4

from sqlalchemy import Row, Select, and_, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.catalog import (
    ALERT_CASE_CATALOG,
    ALERT_CASE_SLICES,
    Indicator,
    Kind,
    SliceFilter,
    aggregates,
    conditions,
    result,
    sample_values,
    table_query,
)
from services.metrics.domain import NOW_COUNTS, ROLLED_DIMENSIONS, AlertRule
from services.metrics.policy import IndicatorPolicy
from services.metrics.schemas import (
    ActionOut,
    AlertCaseOut,
    AlertOut,
    CaseEventOut,
    EffectOut,
    WindowOut,
)
from services.metrics.stability import chart_rule
from services.metrics.store import alert, alert_case, alert_case_event, metrics_outbox
from shared.domain.alert_case import (
    STEP_TYPES,
    Action,
    AlertCase,
    CaseEvent,
    CaseStep,
    Effect,
    decide,
    duration_effect,
    effect_windows,
    evolve,
    fold,
    parse_scope,
    rate_effect,
)
from shared.domain.errors import DomainError
from shared.events.envelope import (
    QUALITY_TYPE_PREFIX,
    encode,
    quality_alert_cloudevent,
)
from shared.events.topics import QUALITY_ALERTS

logger = logging.getLogger(__name__)

# Distributions and means compare by ranks (Mann-Whitney U), rates by proportions.
_RANKED: Final = (Kind.DISTRIBUTION, Kind.MEAN)


class AlertNotFound(DomainError):
    code = "alert_not_found"


# --- writing a step -------------------------------------------------------------------


async def record_step(
    conn: AsyncConnection,
    alert_id: UUID,
    step: CaseStep,
    *,
    actor: str,
    now: datetime,
) -> CaseEvent:
    """Decide `step` on the alert's case and store it with its CloudEvent."""
    async with conn.begin():
        raised = (
            await conn.execute(
                select(alert).where(alert.c.alert_id == alert_id).with_for_update()
            )
        ).one_or_none()
        if raised is None:
            raise AlertNotFound(f"no alert {alert_id}")
        events = await load_case_events(conn, [alert_id])
        case = fold(alert_id, raised.raised_at, events[alert_id])
        decide(case, step, now=now)
        event = CaseEvent(uuid4(), alert_id, case.version + 1, actor, now, step)
        await conn.execute(
            alert_case_event.insert().values(
                event_id=event.event_id,
                alert_id=alert_id,
                version=event.version,
                type=step.TYPE,
                actor=actor,
                at=now,
                data=step.model_dump_json(),
            )
        )
        await _project(conn, evolve(case, event), scope=raised.scope)
        cloudevent = quality_alert_cloudevent(
            step.TYPE,
            subject=raised.scope,
            time=now,
            data={
                "alert_id": str(alert_id),
                "rule": raised.rule,
                "scope": raised.scope,
                "version": event.version,
                "actor": actor,
                **step.model_dump(mode="json"),
            },
            event_id=event.event_id,
        )
        await conn.execute(
            metrics_outbox.insert().values(
                topic=QUALITY_ALERTS, key=raised.scope, value=encode(cloudevent)
            )
        )
    logger.info("%s on alert %s by %s", step.TYPE, alert_id, actor)
    return event


async def load_case_events(
    conn: AsyncConnection, alert_ids: Sequence[UUID] | None = None
) -> dict[UUID, list[CaseEvent]]:
    """The stored steps per alert, in order (`alert_ids` None: every alert)."""
    query = select(alert_case_event).order_by(
        alert_case_event.c.alert_id, alert_case_event.c.version
    )
    if alert_ids is not None:
        query = query.where(alert_case_event.c.alert_id.in_(alert_ids))
    found: dict[UUID, list[CaseEvent]] = defaultdict(list)
    for row in await conn.execute(query):
        found[row.alert_id].append(
            CaseEvent(
                row.event_id,
                row.alert_id,
                row.version,
                row.actor,
                row.at,
                STEP_TYPES[row.type].model_validate_json(row.data),
            )
        )
    return found


def projection_row(case: AlertCase, *, scope: str) -> dict[str, Any]:
    """The `alert_case` row of a case (the scope gives its only slices)."""
    dimension, value = parse_scope(scope)
    return {
        "alert_id": case.alert_id,
        "version": case.version,
        "state": case.state.value,
        "owner": case.owner,
        "actions": len(case.actions),
        "open_actions": case.open_actions,
        "acknowledged_at": case.acknowledged_at,
        "closed_at": case.closed_at,
        "ack_time_s": case.ack_time_s,
        "close_time_s": case.close_time_s,
        **{d: value if d == dimension else None for d in ALERT_CASE_SLICES},
    }


async def _project(conn: AsyncConnection, case: AlertCase, *, scope: str) -> None:
    row = projection_row(case, scope=scope)
    statement = pg_insert(alert_case).values(row)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[alert_case.c.alert_id],
            set_={k: statement.excluded[k] for k in row if k != "alert_id"},
        )
    )


async def refold_cases(conn: AsyncConnection) -> int:
    """Rebuild `alert_case` from the stored steps (in the caller's transaction);
    returns the cases projected."""
    await conn.execute(delete(alert_case))
    events = await load_case_events(conn)
    if not events:
        return 0
    rows = await conn.execute(
        select(alert.c.alert_id, alert.c.raised_at, alert.c.scope).where(
            alert.c.alert_id.in_(list(events))
        )
    )
    for alert_id, raised_at, scope in rows:
        case = fold(alert_id, raised_at, events[alert_id])
        await conn.execute(
            alert_case.insert().values(projection_row(case, scope=scope))
        )
    return len(events)


# --- reading a case ---------------------------------------------------------------------


def alert_with_case() -> Select[Any]:
    """The alert columns and its case summary (an alert without steps: none yet)."""
    return select(
        alert,
        func.coalesce(alert_case.c.state, "unacknowledged").label("case_state"),
        alert_case.c.owner,
        func.coalesce(alert_case.c.actions, 0).label("actions"),
        func.coalesce(alert_case.c.open_actions, 0).label("open_actions"),
    ).select_from(
        alert.outerjoin(alert_case, alert_case.c.alert_id == alert.c.alert_id)
    )


async def get_case(
    conn: AsyncConnection,
    alert_id: UUID,
    *,
    policy: IndicatorPolicy,
    now: datetime,
) -> AlertCaseOut:
    """The alert, its case folded from its events, and its actions' effects."""
    async with conn.begin():
        await conn.exec_driver_sql(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
        )
        return await read_case(conn, alert_id, policy=policy, now=now)


async def read_case(
    conn: AsyncConnection,
    alert_id: UUID,
    *,
    policy: IndicatorPolicy,
    now: datetime,
) -> AlertCaseOut:
    """get_case inside the caller's transaction (a report reads many in one)."""
    row = (
        await conn.execute(alert_with_case().where(alert.c.alert_id == alert_id))
    ).one_or_none()
    if row is None:
        raise AlertNotFound(f"no alert {alert_id}")
    events = (await load_case_events(conn, [alert_id]))[alert_id]
    case = fold(alert_id, row.raised_at, events)
    rule = {r.name: r for r in policy.alert_rules}.get(row.rule) or chart_rule(row.rule)
    actions = [
        _action_out(
            action,
            None
            if action.closed_at is None
            else await measure_effect(conn, action, row, rule, policy, now),
        )
        for action in case.actions
    ]
    summary = dict(row._mapping) | {
        "case_state": case.state,
        "owner": case.owner,
        "actions": len(case.actions),
        "open_actions": case.open_actions,
    }
    # The case's own fields as the fold left them, plus the alert, the actions
    # with their effects and the history.
    folded = {
        f: getattr(case, f) for f in AlertCaseOut.model_fields if hasattr(case, f)
    }
    history = [
        CaseEventOut(
            event_id=e.event_id,
            version=e.version,
            type=QUALITY_TYPE_PREFIX + e.step.TYPE,
            actor=e.actor,
            time=e.at,
            data=e.step.model_dump(mode="json"),
        )
        for e in events
    ]
    return AlertCaseOut.model_validate(
        folded
        | {
            "alert": AlertOut.model_validate(summary),
            "actions": actions,
            "history": history,
        }
    )


def _action_out(action: Action, effect: EffectOut | None) -> ActionOut:
    shown = ActionOut.model_validate(action, from_attributes=True)
    return shown.model_copy(update={"effect": effect})


def _untested(indicator: str | None, reason: str) -> EffectOut:
    return EffectOut(indicator=indicator, reason=reason)


def scope_filter(
    scope: str,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    rule: AlertRule | None = None,
    policy: IndicatorPolicy | None = None,
) -> SliceFilter:
    """The window [start, end) of an alert's scope as a slice; for a rule that
    compares a period with all hours (slow_peak_response), that period's slice,
    where the problem was."""
    dimension, value = parse_scope(scope)
    # A rolled dimension's name is a SliceFilter field of type str.
    slices: dict[str, Any] = (
        {dimension: value} if dimension in ROLLED_DIMENSIONS else {}
    )
    if rule is not None and rule.compare_period is not None and policy is not None:
        slices |= {"period": rule.compare_period, "peak_hours": policy.peak_hours}
    return SliceFilter(start=start, end=end, now=now, **slices)


async def measure_effect(
    conn: AsyncConnection,
    action: Action,
    alert_row: Row[Any],
    rule: AlertRule | None,
    policy: IndicatorPolicy,
    now: datetime,
) -> EffectOut:
    """The effect of a closed action on its alert's indicator (indicators.md v2).

    The after window ends at `now` until its full length has passed (`complete`).
    A rule no longer in the policy, a count "now" (no window) or an indicator that is
    neither a rate nor values (a count, NPS) is reported untested, with the reason.
    """
    if rule is None:
        return _untested(None, f"rule {alert_row.rule!r} is not in the policy")
    if rule.indicator in NOW_COUNTS or not rule.window:
        return _untested(rule.indicator, "a count now has no window to compare")
    indicator = policy.catalog.get(rule.indicator)
    if indicator is None or not (
        indicator.kind is Kind.RATE or indicator.kind in _RANKED
    ):
        return _untested(rule.indicator, "neither a rate nor durations: no test")
    windows = effect_windows(action, rule.window)
    assert windows is not None  # a closed action
    after_end = min(windows.after_end, now)
    before = scope_filter(
        alert_row.scope,
        windows.before_start,
        windows.before_end,
        now,
        rule=rule,
        policy=policy,
    )
    after = scope_filter(
        alert_row.scope, windows.after_start, after_end, now, rule=rule, policy=policy
    )
    if indicator.kind is Kind.RATE:
        effect = rate_effect(
            await _rate_counts(conn, indicator, before),
            await _rate_counts(conn, indicator, after),
        )
    else:
        effect = duration_effect(
            await _values(conn, indicator, before),
            await _values(conn, indicator, after),
        )
    return _effect_out(
        indicator.name,
        effect,
        WindowOut(start=windows.before_start, end=windows.before_end),
        WindowOut(start=windows.after_start, end=after_end),
        complete=now >= windows.after_end,
    )


def _effect_out(
    indicator: str,
    effect: Effect,
    before: WindowOut,
    after: WindowOut,
    *,
    complete: bool,
) -> EffectOut:
    shown = EffectOut.model_validate(effect, from_attributes=True)
    return shown.model_copy(
        update={
            "indicator": indicator,
            "before_window": before,
            "after_window": after,
            "complete": complete,
        }
    )


async def _rate_counts(
    conn: AsyncConnection, indicator: Indicator, where: SliceFilter
) -> tuple[int, int]:
    """(successes, n) of a rate over a slice."""
    row = (
        await conn.execute(
            select(*aggregates(indicator, where))
            .select_from(indicator.table)
            .where(and_(*conditions(indicator, where)))
        )
    ).one()
    value = result(indicator, dict(row._mapping))
    return int(value["numerator"]), int(value["denominator"])


async def _values(
    conn: AsyncConnection, indicator: Indicator, where: SliceFilter
) -> list[float]:
    return [float(v) for v in await conn.scalars(sample_values(indicator, where))]


# --- the cases' own indicators ------------------------------------------------------


async def case_indicators(
    conn: AsyncConnection, where: SliceFilter
) -> Mapping[str, Any]:
    """alert_ack_time_s and alert_close_time_s over a slice.

    A slice on an order attribute no alert scope has (category, urgency, channel)
    holds no alert: both are empty there.
    """
    indicators = list(ALERT_CASE_CATALOG.values())
    sliced = (d for d in ROLLED_DIMENSIONS if getattr(where, d) is not None)
    if any(d not in ALERT_CASE_SLICES for d in sliced):
        empty = {
            f"{i.name}__{part}": None
            for i in indicators
            for part in ("percentiles", "max")
        }
        return {i.name: result(i, empty) for i in indicators}
    row = (await conn.execute(table_query(alert_case, indicators, where))).one()
    return {i.name: result(i, dict(row._mapping)) for i in indicators}


async def take_step(
    conn: AsyncConnection,
    alert_id: UUID,
    step: CaseStep,
    *,
    actor: str,
    policy: IndicatorPolicy,
    now: datetime,
) -> AlertCaseOut:
    """Record `step`, then answer the case as GET /v1/alerts/{id} shows it."""
    await record_step(conn, alert_id, step, actor=actor, now=now)
    return await get_case(conn, alert_id, policy=policy, now=now)
