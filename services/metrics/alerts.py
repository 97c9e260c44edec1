"""Quality alerts: rules over indicator slices, raised and cleared as events.

A breach raises one alert per rule and scope (a partial unique index forbids a second
open one); recovery clears it. Both are written, with their CloudEvents outbox
message, in one transaction, so an alert is published if and only if it is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Final
from uuid import uuid4

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.catalog import (
    CATALOG_DEFAULT,
    Indicator,
    SliceFilter,
    aggregates,
    conditions,
    result,
    unaccepted_overdue,
)
from services.metrics.domain import (
    DEFAULT_RULES,
    DEFAULT_SLA,
    NOW_COUNTS,
    AlertRule,
    SlaTargets,
    breached,
)
from services.metrics.domain import (
    samples as samples_of,
)
from services.metrics.store import alert, metrics_outbox, order_fact
from shared.domain.peak_hours import DEFAULT_PEAK_HOURS, PeakHours
from shared.events.envelope import (
    QUALITY_SOURCE,
    QUALITY_TYPE_PREFIX,
    encode,
    quality_alert_cloudevent,
)
from shared.events.topics import QUALITY_ALERTS

__all__ = ["ALERT_TYPE_PREFIX", "DEFAULT_RULES", "SOURCE", "AlertRule", "evaluate"]

logger = logging.getLogger(__name__)

SOURCE: Final = QUALITY_SOURCE
ALERT_TYPE_PREFIX: Final = QUALITY_TYPE_PREFIX


async def evaluate(
    conn: AsyncConnection,
    now: datetime,
    *,
    rules: Sequence[AlertRule] = DEFAULT_RULES,
    catalog: Mapping[str, Indicator] = CATALOG_DEFAULT,
    sla: SlaTargets = DEFAULT_SLA,
    peak_hours: PeakHours = DEFAULT_PEAK_HOURS,
) -> list[dict[str, Any]]:
    """Raise and clear alerts for every scope; returns the events it emitted."""
    emitted: list[dict[str, Any]] = []
    for rule in rules:
        if rule.indicator in NOW_COUNTS:
            measured = await _overdue_now(conn, rule, now, sla)
        else:
            where = SliceFilter(
                start=now - rule.window, end=now, now=now, peak_hours=peak_hours
            )
            measured = await _windowed(conn, rule, catalog[rule.indicator], where)
        emitted += await _apply(conn, rule, measured, now)
    return emitted


async def _windowed(
    conn: AsyncConnection, rule: AlertRule, indicator: Indicator, where: SliceFilter
) -> dict[str, tuple[float | None, int]]:
    """The rule's statistic and samples per scope value over its window; for a
    `compare_period` rule, the period's statistic less the all-hours one, on the
    fewer samples of the two."""
    if rule.compare_period is None:
        return await _measured(conn, rule, indicator, where)
    overall = await _measured(conn, rule, indicator, where)
    period = replace(where, period=rule.compare_period)
    compared: dict[str, tuple[float | None, int]] = {}
    for scope, (value, samples) in (
        await _measured(conn, rule, indicator, period)
    ).items():
        base, base_samples = overall[scope]  # the period's rows are among all
        difference = None if value is None or base is None else value - base
        compared[scope] = (difference, min(samples, base_samples))
    return compared


async def _measured(
    conn: AsyncConnection, rule: AlertRule, indicator: Indicator, where: SliceFilter
) -> dict[str, tuple[float | None, int]]:
    """The rule's statistic and samples per scope value over a slice."""
    scope_column = (
        indicator.technician_column()
        if rule.scope == "technician_id"
        else indicator.table.c[rule.scope]
    )
    rows = await conn.execute(
        select(scope_column.label("scope_value"), *aggregates(indicator, where))
        .select_from(indicator.table)
        .where(and_(*conditions(indicator, where)), scope_column.is_not(None))
        .group_by(scope_column)
    )
    measured: dict[str, tuple[float | None, int]] = {}
    for row in rows:
        value = result(indicator, dict(row._mapping))
        measured[f"{rule.scope}:{row.scope_value}"] = (
            value[rule.statistic],
            samples_of(value),
        )
    return measured


async def _overdue_now(
    conn: AsyncConnection, rule: AlertRule, now: datetime, sla: SlaTargets
) -> dict[str, tuple[float | None, int]]:
    """orders_unaccepted_overdue per scope value at `now`; its samples are the
    orders it counts (a scope without any is absent: recovered)."""
    scope_column = order_fact.c[rule.scope]
    rows = await conn.execute(
        select(scope_column, func.count())
        .where(*unaccepted_overdue(sla, SliceFilter(), now))
        .group_by(scope_column)
    )
    return {
        f"{rule.scope}:{value}": (float(count), int(count)) for value, count in rows
    }


async def _apply(
    conn: AsyncConnection,
    rule: AlertRule,
    measured: dict[str, tuple[float | None, int]],
    now: datetime,
) -> list[dict[str, Any]]:
    open_rows = {
        row.scope: row
        for row in await conn.execute(
            select(alert).where(alert.c.rule == rule.name, alert.c.state == "open")
        )
    }
    emitted = []
    for scope, (value, samples) in measured.items():
        if breached(rule, value, samples) and scope not in open_rows:
            assert value is not None
            alert_id = uuid4()
            await conn.execute(
                insert(alert).values(
                    alert_id=alert_id,
                    rule=rule.name,
                    scope=scope,
                    state="open",
                    value=value,
                    threshold=rule.threshold,
                    samples=samples,
                    raised_at=now,
                )
            )
            emitted.append(
                await _emit(
                    conn, "alert_raised", alert_id, rule, scope, value, samples, now
                )
            )
    for scope, row in open_rows.items():
        value, samples = measured.get(scope, (None, 0))
        if not breached(rule, value, samples):
            await conn.execute(
                update(alert)
                .where(alert.c.alert_id == row.alert_id)
                .values(state="cleared", cleared_at=now)
            )
            emitted.append(
                await _emit(
                    conn,
                    "alert_cleared",
                    row.alert_id,
                    rule,
                    scope,
                    value,
                    samples,
                    now,
                )
            )
    return emitted


async def _emit(
    conn: AsyncConnection,
    name: str,
    alert_id: Any,
    rule: AlertRule,
    scope: str,
    value: float | None,
    samples: int,
    now: datetime,
) -> dict[str, Any]:
    event = quality_alert_cloudevent(
        name,
        subject=scope,
        time=now,
        data={
            "alert_id": str(alert_id),
            "rule": rule.name,
            "indicator": rule.indicator,
            "statistic": rule.statistic,
            "scope": scope,
            "value": value,
            "threshold": rule.threshold,
            "samples": samples,
            "window_seconds": int(rule.window.total_seconds()),
        },
    )
    await conn.execute(
        insert(metrics_outbox).values(
            topic=QUALITY_ALERTS,
            key=scope,
            value=encode(event),
        )
    )
    logger.info("%s %s for %s (%s)", name, rule.name, scope, value)
    return event


# Public for alerts judged elsewhere (the control charts of `stability`, whose
# verdict is no threshold): their events are shaped as `evaluate`'s own.
emit_alert_event: Final = _emit
