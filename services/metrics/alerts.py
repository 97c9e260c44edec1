"""Quality alerts: rules over indicator slices, raised and cleared as events.

A breach raises one alert per rule and scope (a partial unique index forbids a second
open one); recovery clears it. Both are written, with their CloudEvents outbox
message, in one transaction, so an alert is published if and only if it is recorded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from uuid import uuid4

from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.catalog import (
    CATALOG_DEFAULT,
    Indicator,
    SliceFilter,
    aggregates,
    conditions,
    result,
)
from services.metrics.store import alert, metrics_outbox
from shared.events.envelope import format_time
from shared.events.topics import QUALITY_ALERTS

logger = logging.getLogger(__name__)

SOURCE: Final = "/servicetrail/metrics"
ALERT_TYPE_PREFIX: Final = "servicetrail.quality."


@dataclass(frozen=True)
class AlertRule:
    """`indicator`'s `statistic` per `scope` column over `window`, against a threshold."""

    name: str
    indicator: str
    statistic: str  # "p90" of a distribution, or "value" of a rate
    scope: str  # "region" or "technician_id"
    window: timedelta
    above: bool  # breach when the value is above (True) or below (False) the threshold
    threshold: float
    min_samples: int


DEFAULT_RULES: Final = (
    AlertRule(
        "slow_response",
        "response_time_s",
        "p90",
        "region",
        timedelta(hours=1),
        above=True,
        threshold=240 * 60,
        min_samples=10,
    ),
    AlertRule(
        "low_csat",
        "csat",
        "value",
        "region",
        timedelta(hours=24),
        above=False,
        threshold=0.8,
        min_samples=20,
    ),
    AlertRule(
        "price_overrun",
        "overrun_rate",
        "value",
        "technician_id",
        timedelta(days=7),
        above=True,
        threshold=0.10,
        min_samples=10,
    ),
)


def _samples(value: dict[str, Any]) -> int:
    return int(value.get("count", value.get("denominator", 0)))


async def evaluate(
    conn: AsyncConnection,
    now: datetime,
    *,
    rules: Sequence[AlertRule] = DEFAULT_RULES,
    catalog: Mapping[str, Indicator] = CATALOG_DEFAULT,
) -> list[dict[str, Any]]:
    """Raise and clear alerts for every scope; returns the events it emitted."""
    emitted: list[dict[str, Any]] = []
    for rule in rules:
        indicator = catalog[rule.indicator]
        where = SliceFilter(start=now - rule.window, end=now)
        scope_column = indicator.table.c[
            indicator.technician if rule.scope == "technician_id" else rule.scope
        ]
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
                _samples(value),
            )
        emitted += await _apply(conn, rule, measured, now)
    return emitted


def _breached(rule: AlertRule, value: float | None, samples: int) -> bool:
    if value is None or samples < rule.min_samples:
        return False
    return value > rule.threshold if rule.above else value < rule.threshold


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
        if _breached(rule, value, samples) and scope not in open_rows:
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
        if not _breached(rule, value, samples):
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
    event = {
        "specversion": "1.0",
        "id": str(uuid4()),
        "source": SOURCE,
        "type": ALERT_TYPE_PREFIX + name,
        "subject": scope,
        "time": format_time(now),
        "datacontenttype": "application/json",
        "dataschema": f"urn:servicetrail:quality.{name}:1",
        "data": {
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
    }
    await conn.execute(
        insert(metrics_outbox).values(
            topic=QUALITY_ALERTS,
            key=scope,
            value=json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode(),
        )
    )
    logger.info("%s %s for %s (%s)", name, rule.name, scope, value)
    return event
