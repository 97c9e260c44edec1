"""Stability (indicators.md v2): weekly control charts, their signals as alerts.

Weekly p-charts of `first_time_fix_rate`, `complaint_rate` and `sla_accept_rate`,
and the individuals chart of the weekly median (nearest-rank p50) `response_time_s`;
the charts themselves are the pure `shared.domain.quality_stats` functions, this
module reads their weekly inputs and raises their signals.

Weeks are Monday-first local weeks in the report time zone (`REPORT_TIME_ZONE`,
default Asia/Shanghai); each week is counted by the "at" of its measurements, as
every indicator is. A chart's point needs the 12 weeks before it, and a run of 8
the 7 points before it, so a chart over some weeks reads the 19 weeks before them
too (`HISTORY_WEEKS`): the run lengths shown count at most that far back.

Alerts: rule `control_chart:<indicator>`, one chart for all orders (scope `all`)
and one per region (scope `region:<name>`). Judged once a week is complete: the
last complete week is a signal -> raised (once: no duplicate while it stays open),
not a signal (or no point that week) -> cleared. The alert's value is that week's
rate or median, its threshold the limit crossed (the centre line for a run), its
samples the week's measurements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final
from uuid import uuid4
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.alerts import emit_alert_event
from services.metrics.catalog import Indicator, SliceFilter, aggregates, conditions
from services.metrics.catalog import result as indicator_result
from services.metrics.domain import AlertRule
from services.metrics.store import alert
from shared.domain.periods import WEEK, local_midnight, week_of
from shared.domain.quality_stats import (
    BASELINE_WEEKS,
    RUN_LENGTH,
    ChartPoint,
    individuals_chart,
    p_chart,
)

P_CHARTED: Final = ("first_time_fix_rate", "complaint_rate", "sla_accept_rate")
MEDIAN_CHARTED: Final = "response_time_s"
CHARTED: Final = (*P_CHARTED, MEDIAN_CHARTED)
HISTORY_WEEKS: Final = BASELINE_WEEKS + RUN_LENGTH - 1
RULE_PREFIX: Final = "control_chart:"
ALL: Final = "all"

# scope -> week -> the indicator's value that week (catalog.result's shape)
Weekly = dict[str, dict[date, dict[str, Any]]]


@dataclass(frozen=True)
class Chart:
    """One control chart over some weeks, with each week's number of samples."""

    indicator: str
    chart: str  # "p" or "individuals"
    scope: str  # "all" or "region:<name>"
    points: tuple[ChartPoint, ...]
    samples: Mapping[date, int]


def rule_name(indicator: str) -> str:
    return f"{RULE_PREFIX}{indicator}"


def chart_kind(indicator: str) -> str:
    """A p-chart for a rate, an individuals chart for the weekly median."""
    return "individuals" if indicator == MEDIAN_CHARTED else "p"


def signal_reason(point: ChartPoint) -> str:
    """Why a point is a signal, in words (empty when it is none)."""
    reasons = []
    if point.value > point.upper:
        reasons.append("above the upper limit")
    elif point.value < point.lower:
        reasons.append("below the lower limit")
    if point.run_signal:
        side = "above" if point.side > 0 else "below"
        reasons.append(f"{point.run_length} weeks in a row {side} the centre line")
    return "; ".join(reasons)


def _weeks(first: date, end: date) -> list[date]:
    found = []
    while first < end:
        found.append(first)
        first += WEEK
    return found


async def weekly_values(
    conn: AsyncConnection,
    indicator: Indicator,
    *,
    first_week: date,
    end_week: date,
    zone: ZoneInfo,
    now: datetime,
    by_region: bool,
) -> Weekly:
    """The indicator per local week in [first_week, end_week), for all orders or
    per region: one grouped, indexed range scan of its facts."""
    where = SliceFilter(
        start=local_midnight(first_week, zone),
        end=local_midnight(end_week, zone),
        now=now,
    )
    week = func.date_trunc("week", indicator.at_column(), zone.key).label("week")
    keys: list[Any] = [week]
    if by_region:
        keys.append(indicator.table.c.region.label("region"))
    rows = await conn.execute(
        select(*keys, *aggregates(indicator, where))
        .select_from(indicator.table)
        .where(and_(*conditions(indicator, where)))
        .group_by(*keys)
    )
    found: Weekly = defaultdict(dict)
    for row in rows:
        scope = f"region:{row.region}" if by_region else ALL
        week_start = row.week.astimezone(zone).date()
        found[scope][week_start] = indicator_result(indicator, dict(row._mapping))
    return found


def chart_of(
    indicator: str, scope: str, weeks: Sequence[date], values: Mapping[date, Any]
) -> Chart:
    """The control chart of one indicator's weekly values over `weeks` (every
    calendar week, oldest first, the baseline's included)."""
    if indicator == MEDIAN_CHARTED:
        medians = [
            (week, float(values[week]["p50"]))
            for week in weeks
            if week in values and values[week]["count"]
        ]
        samples = {week: int(values[week]["count"]) for week, _ in medians}
        return Chart(
            indicator, "individuals", scope, individuals_chart(medians), samples
        )
    counts = [
        (week, *_rate_counts(values.get(week)))
        for week in weeks  # every week, those without trials as n = 0
    ]
    samples = {week: n for week, _, n in counts if n}
    return Chart(indicator, "p", scope, p_chart(counts), samples)


def _rate_counts(value: Mapping[str, Any] | None) -> tuple[int, int]:
    if value is None:
        return 0, 0
    return int(value["numerator"]), int(value["denominator"])


async def weekly_charts(
    conn: AsyncConnection,
    catalog: Mapping[str, Indicator],
    *,
    first_week: date,
    end_week: date,
    zone: ZoneInfo,
    now: datetime,
    by_region: bool = False,
) -> list[Chart]:
    """Every charted indicator's chart over the weeks [first_week, end_week), for
    all orders (and, `by_region`, per region), their points in those weeks only."""
    history_start = first_week - HISTORY_WEEKS * WEEK
    weeks = _weeks(history_start, end_week)
    charts: list[Chart] = []
    for name in CHARTED:
        for regional in (False, True) if by_region else (False,):
            weekly = await weekly_values(
                conn,
                catalog[name],
                first_week=history_start,
                end_week=end_week,
                zone=zone,
                now=now,
                by_region=regional,
            )
            scopes = sorted(weekly) if regional else [ALL]
            for scope in scopes:
                chart = chart_of(name, scope, weeks, weekly.get(scope, {}))
                shown = tuple(p for p in chart.points if p.week_start >= first_week)
                charts.append(
                    Chart(chart.indicator, chart.chart, scope, shown, chart.samples)
                )
    return charts


def last_complete_week(now: datetime, zone: ZoneInfo) -> date:
    """The Monday of the last local week that ended at or before `now`."""
    return week_of(now.astimezone(zone).date()) - WEEK


def _alert_rule(chart: Chart, point: ChartPoint | None, threshold: float) -> AlertRule:
    return AlertRule(
        name=rule_name(chart.indicator),
        indicator=chart.indicator,
        statistic="p50" if chart.chart == "individuals" else "value",
        scope=ALL if chart.scope == ALL else "region",
        window=WEEK,
        above=point is not None and point.side > 0,
        threshold=threshold,
        min_samples=1,
    )


def chart_rule(name: str) -> AlertRule | None:
    """The rule a control-chart alert named `name` was judged under (None for any
    other name): what an alert case measures its actions' effect with."""
    indicator = name.removeprefix(RULE_PREFIX)
    if indicator == name or indicator not in (*P_CHARTED, MEDIAN_CHARTED):
        return None
    return AlertRule(
        name=name,
        indicator=indicator,
        statistic="p50" if chart_kind(indicator) == "individuals" else "value",
        scope="region",
        window=WEEK,
        above=True,
        threshold=0.0,
        min_samples=1,
    )


def _threshold(point: ChartPoint) -> float:
    """The limit a signalling point crossed, or the centre line of its run."""
    if point.value > point.upper:
        return point.upper
    if point.value < point.lower:
        return point.lower
    return point.centre


async def evaluate_control_charts(
    conn: AsyncConnection,
    now: datetime,
    *,
    catalog: Mapping[str, Indicator],
    zone: ZoneInfo,
) -> list[dict[str, Any]]:
    """Raise and clear the control-chart alerts on the last complete week; returns
    the events written to the outbox (in the caller's transaction)."""
    week = last_complete_week(now, zone)
    charts = await weekly_charts(
        conn,
        catalog,
        first_week=week,
        end_week=week + WEEK,
        zone=zone,
        now=now,
        by_region=True,
    )
    emitted: list[dict[str, Any]] = []
    by_indicator: dict[str, list[Chart]] = defaultdict(list)
    for chart in charts:
        by_indicator[chart.indicator].append(chart)
    for indicator in CHARTED:
        name = rule_name(indicator)
        open_rows = {
            row.scope: row
            for row in await conn.execute(
                select(alert).where(alert.c.rule == name, alert.c.state == "open")
            )
        }
        judged = {
            chart.scope: (chart, chart.points[-1] if chart.points else None)
            for chart in by_indicator[indicator]
        }
        for scope, (chart, point) in judged.items():
            if point is None or not point.signal or scope in open_rows:
                continue
            alert_id = uuid4()
            threshold = _threshold(point)
            samples = chart.samples.get(point.week_start, 0)
            await conn.execute(
                insert(alert).values(
                    alert_id=alert_id,
                    rule=name,
                    scope=scope,
                    state="open",
                    value=point.value,
                    threshold=threshold,
                    samples=samples,
                    raised_at=now,
                )
            )
            emitted.append(
                await emit_alert_event(
                    conn,
                    "alert_raised",
                    alert_id,
                    _alert_rule(chart, point, threshold),
                    scope,
                    point.value,
                    samples,
                    now,
                )
            )
        for scope, row in open_rows.items():
            chart, point = judged.get(
                scope, (Chart(indicator, chart_kind(indicator), scope, (), {}), None)
            )
            if point is not None and point.signal:
                continue
            await conn.execute(
                update(alert)
                .where(alert.c.alert_id == row.alert_id)
                .values(state="cleared", cleared_at=now)
            )
            emitted.append(
                await emit_alert_event(
                    conn,
                    "alert_cleared",
                    row.alert_id,
                    _alert_rule(chart, point, row.threshold),
                    scope,
                    None if point is None else point.value,
                    0 if point is None else chart.samples.get(point.week_start, 0),
                    now,
                )
            )
    return emitted
