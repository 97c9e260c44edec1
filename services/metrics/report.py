"""The period report: every indicator against the previous period, per region and
category, the technician ranking, alerts, and stability (issue 14).

Bounded work whatever the period's length: each slice's indicators come from
`compute_indicators` (the weekly, daily and hourly rollups, facts only at the
edges), the ranking from the per-technician rollups (`scores.technician_numbers`),
the control charts from one grouped range scan per indicator, and the breakdowns
list at most `MAX_MEMBERS` regions and categories. Everything is read in one
REPEATABLE READ snapshot, so the numbers agree with each other and with `as_of`.

Period boundaries are local midnights in the report time zone
(`MetricsSettings.report_time_zone`, default Asia/Shanghai); see
`shared.domain.periods` for the `at` grammar.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final
from uuid import UUID
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, select, union
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.cases import read_case
from services.metrics.catalog import Indicator, Kind, SliceFilter
from services.metrics.policy import IndicatorPolicy
from services.metrics.queries import compute_indicators, provenance
from services.metrics.report_schemas import (
    Breakdown,
    Homogeneity,
    HomogeneityRow,
    IndicatorChange,
    JudgedWeek,
    RankedTechnician,
    Report,
    ReportAlert,
    ReportChart,
    ReportChartPoint,
    ReportPeriod,
    ReportSignal,
    Unit,
)
from services.metrics.schemas import TechnicianScore
from services.metrics.scores import technician_numbers
from services.metrics.stability import (
    ALL,
    P_CHARTED,
    Chart,
    signal_reason,
    weekly_charts,
)
from services.metrics.store import alert, alert_case, complaint, order_fact, rating
from shared.domain.periods import WEEK, Period
from shared.domain.quality_stats import ChartPoint, chi_square_homogeneity

MAX_MEMBERS: Final = 50
MAX_ALERTS: Final = 500
# Counts "now" are no period's figure: not in a report.
NOW_ONLY: Final = ("orders_open", "orders_unaccepted_overdue")
DISTRIBUTION_STATISTICS: Final = ("p50", "p90")
UNITS: Final[Mapping[str, Unit]] = {
    "price_deviation_mean": Unit.RATIO,
    "rating_mean": Unit.SCORE,
    "nps": Unit.NPS,
}
KIND_UNITS: Final[Mapping[Kind, Unit]] = {
    Kind.DISTRIBUTION: Unit.SECONDS,
    Kind.RATE: Unit.RATE,
    Kind.COUNT: Unit.COUNT,
    Kind.MEAN: Unit.SCORE,
    Kind.NPS: Unit.NPS,
}


async def alert_effects(
    conn: AsyncConnection,
    alert_ids: Sequence[UUID],
    *,
    policy: IndicatorPolicy,
    now: datetime,
) -> dict[UUID, dict[str, Any]]:
    """Each alert's case as the report shows it: its state, owner, resolution and
    every action with its measured effect (indicators.md v2 "Alert cases"), read
    in the report's snapshot; an alert nobody has acted on has none."""
    effects: dict[UUID, dict[str, Any]] = {}
    for alert_id in alert_ids:
        case = await read_case(conn, alert_id, policy=policy, now=now)
        if not case.history:
            continue
        effects[alert_id] = {
            "case_state": case.state,
            "owner": case.owner,
            "closed_at": case.closed_at,
            "resolution": case.resolution,
            "actions": [
                {
                    "text": action.text,
                    "closed_at": action.closed_at,
                    "result": action.result,
                    "effect": None
                    if action.effect is None
                    else action.effect.model_dump(
                        mode="json",
                        include={
                            "indicator",
                            "test",
                            "before",
                            "after",
                            "difference",
                            "p_value",
                            "samples_before",
                            "samples_after",
                            "complete",
                            "reason",
                        },
                    ),
                }
                for action in case.actions
            ],
        }
    return effects


def report_period(period: Period, zone: ZoneInfo) -> ReportPeriod:
    return ReportPeriod(
        kind=period.kind,
        label=period.label,
        start=period.start(zone),
        end=period.end(zone),
        time_zone=zone.key,
    )


def _figures(
    indicator: Indicator, value: Mapping[str, Any]
) -> list[tuple[str, Any, int]]:
    """(statistic, number, samples) of one indicator value."""
    if indicator.kind is Kind.DISTRIBUTION:
        return [(s, value[s], int(value["count"])) for s in DISTRIBUTION_STATISTICS]
    samples = value.get("denominator", value.get("count", value["value"]))
    return [("value", value["value"], int(samples or 0))]


def changes(
    catalog: Mapping[str, Indicator],
    current: Mapping[str, Any],
    previous: Mapping[str, Any],
) -> list[IndicatorChange]:
    """Every period indicator's figures, now against before."""
    found = []
    for name, indicator in catalog.items():
        if name in NOW_ONLY:
            continue
        unit = UNITS.get(name, KIND_UNITS[indicator.kind])
        now_figures = _figures(indicator, current[name])
        before_figures = _figures(indicator, previous[name])
        for (statistic, now, n_now), (_, before, n_before) in zip(
            now_figures, before_figures, strict=True
        ):
            found.append(
                IndicatorChange(
                    indicator=name,
                    statistic=statistic,
                    unit=unit,
                    current=now,
                    previous=before,
                    change=None if now is None or before is None else now - before,
                    current_samples=n_now,
                    previous_samples=n_before,
                )
            )
    return found


async def _members(
    conn: AsyncConnection, dimension: str, start: datetime, end: datetime
) -> list[str]:
    """The regions (categories) with a measured step in [start, end): orders
    created, accepted, arrived or finally completed then, ratings given and
    complaints resolved then (each an indexed range). At most MAX_MEMBERS + 1."""
    f = order_fact.c

    def within(column: Any) -> Any:
        return and_(column >= start, column < end)

    steps = or_(
        *(
            within(f[c])
            for c in ("created_at", "first_accepted_at", "first_arrived_at")
        ),
        within(f.first_final_at),
    )
    found = union(
        select(f[dimension].label("member")).where(steps),
        select(rating.c[dimension]).where(within(rating.c.rated_at)),
        select(complaint.c[dimension]).where(within(complaint.c.resolved_at)),
    ).subquery()
    rows = await conn.execute(
        select(found.c.member).order_by(found.c.member).limit(MAX_MEMBERS + 1)
    )
    return [row.member for row in rows]


async def _alerts(
    conn: AsyncConnection,
    start: datetime,
    end: datetime,
    *,
    policy: IndicatorPolicy,
    now: datetime,
) -> tuple[list[ReportAlert], bool]:
    """Alerts raised, cleared or whose case closed in [start, end), with their
    cases and effects."""

    def within(column: Any) -> Any:
        return and_(column >= start, column < end)

    case_closed = (
        select(alert_case.c.alert_id)
        .where(within(alert_case.c.closed_at))
        .scalar_subquery()
    )
    rows = (
        await conn.execute(
            select(alert)
            .where(
                or_(
                    within(alert.c.raised_at),
                    within(alert.c.cleared_at),
                    alert.c.alert_id.in_(case_closed),
                )
            )
            .order_by(alert.c.raised_at, alert.c.alert_id)
            .limit(MAX_ALERTS + 1)
        )
    ).all()
    rows, truncated = rows[:MAX_ALERTS], len(rows) > MAX_ALERTS
    effects = await alert_effects(
        conn, [row.alert_id for row in rows], policy=policy, now=now
    )
    found = []
    for row in rows:
        effect = effects.get(row.alert_id)
        closed_at = None if effect is None else effect["closed_at"]
        found.append(
            ReportAlert(
                **row._mapping,
                opened_in_period=start <= row.raised_at < end,
                closed_in_period=any(
                    at is not None and start <= at < end
                    for at in (row.cleared_at, closed_at)
                ),
                effect=effect,
            )
        )
    return found, truncated


def ranking(
    current: Sequence[TechnicianScore], previous: Sequence[TechnicianScore]
) -> list[RankedTechnician]:
    """The period's ranking, each technician with their previous rank and score."""
    before = {score.technician_id: score for score in previous}
    found = []
    for score in current:
        earlier = before.get(score.technician_id)
        previous_composite = None if earlier is None else earlier.composite
        found.append(
            RankedTechnician(
                technician_id=score.technician_id,
                rank=score.rank,
                composite=score.composite,
                fuzzy_grade=score.fuzzy.grade,
                final_completions=score.final_completions,
                insufficient_data=score.insufficient_data,
                previous_rank=None if earlier is None else earlier.rank,
                previous_composite=previous_composite,
                composite_change=None
                if score.composite is None or previous_composite is None
                else score.composite - previous_composite,
            )
        )
    # Ranked first (by rank), then the unranked by id: a stable, readable order.
    found.sort(key=lambda t: (t.rank is None, t.rank or 0, t.technician_id))
    return found


def homogeneity(
    indicator: str, across: str, table: Mapping[str, tuple[int, int]]
) -> Homogeneity:
    """The chi-square test of one rate over members' (successes, trials)."""
    rows = {member: (hits, n - hits) for member, (hits, n) in sorted(table.items())}
    test = chi_square_homogeneity(rows)
    return Homogeneity(
        indicator=indicator,
        across=across,
        rows=[
            HomogeneityRow(member=member, successes=s, failures=f)
            for member, (s, f) in rows.items()
            if s + f
        ],
        statistic=test.statistic,
        degrees_of_freedom=test.degrees_of_freedom,
        p_value=test.p_value,
        small_expected_counts=test.small_expected_counts,
        reason=test.reason,
    )


def _judged(chart: Chart, point: ChartPoint) -> JudgedWeek:
    return JudgedWeek(
        week_start=point.week_start,
        value=point.value,
        centre=point.centre,
        lower=point.lower,
        upper=point.upper,
        samples=chart.samples.get(point.week_start, 0),
    )


def _chart_out(chart: Chart) -> ReportChart:
    return ReportChart(
        indicator=chart.indicator,
        chart=chart.chart,
        scope=chart.scope,
        points=[
            ReportChartPoint(
                **dict(_judged(chart, p)), run_length=p.run_length, signal=p.signal
            )
            for p in chart.points
        ],
    )


def _signals(charts: Sequence[Chart]) -> list[ReportSignal]:
    return [
        ReportSignal(
            **dict(_judged(chart, p)),
            indicator=chart.indicator,
            chart=chart.chart,
            scope=chart.scope,
            reason=signal_reason(p),
        )
        for chart in charts
        for p in chart.points
        if p.signal
    ]


async def build_report(
    conn: AsyncConnection,
    period: Period,
    *,
    policy: IndicatorPolicy,
    zone: ZoneInfo,
    now: datetime,
    on_progress: Callable[[int, int], None] | None = None,
) -> Report:
    """The report of `period` (SLA breaches censored up to `now`).

    `on_progress(steps done, steps)` after each of its queries' groups: the
    overall figures, each region and category, the ranking, alerts, charts.
    """
    done, steps = 0, 0

    def step() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, steps)

    catalog = policy.catalog
    previous = period.previous()
    bounds = {
        "current": (period.start(zone), period.end(zone)),
        "previous": (previous.start(zone), previous.end(zone)),
    }

    def where(which: str, **slice_: Any) -> SliceFilter:
        start, end = bounds[which]
        return SliceFilter(start=start, end=end, now=now, **slice_)

    async def both(**slice_: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return (
            await compute_indicators(
                conn, where("current", **slice_), catalog, sla=policy.sla
            ),
            await compute_indicators(
                conn, where("previous", **slice_), catalog, sla=policy.sla
            ),
        )

    async with conn.begin():
        # One snapshot for every number and its provenance.
        await conn.exec_driver_sql(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
        )
        as_of = await provenance(conn, policy_version=policy.version)
        members_of = {
            dimension: await _members(
                conn, dimension, bounds["previous"][0], bounds["current"][1]
            )
            for dimension in ("region", "category")
        }
        truncated = any(len(m) > MAX_MEMBERS for m in members_of.values())
        # overall, each member, ranking, alerts, charts
        steps = 4 + sum(min(len(m), MAX_MEMBERS) for m in members_of.values())
        overall = changes(catalog, *await both())
        step()
        breakdowns: dict[str, list[Breakdown]] = {}
        per_region: dict[str, dict[str, Any]] = {}
        for dimension, members in members_of.items():
            breakdowns[dimension] = []
            for member in members[:MAX_MEMBERS]:
                current, before = await both(**{dimension: member})
                if dimension == "region":
                    per_region[member] = current
                breakdowns[dimension].append(
                    Breakdown(
                        dimension=dimension,
                        member=member,
                        indicators=changes(catalog, current, before),
                    )
                )
                step()
        numbers = await technician_numbers(conn, where("current"), policy)
        earlier = await technician_numbers(conn, where("previous"), policy)
        technicians = ranking(
            numbers.listing(policy.scoring), earlier.listing(policy.scoring)
        )
        step()
        alerts, alerts_truncated = await _alerts(
            conn, *bounds["current"], policy=policy, now=now
        )
        step()
        weeks = period.weeks()
        charts: list[Chart] = []
        if weeks:
            charts = await weekly_charts(
                conn,
                catalog,
                first_week=weeks[0],
                end_week=weeks[-1] + WEEK,
                zone=zone,
                now=now,
                by_region=True,
            )
        step()
    tests = [
        homogeneity(
            name,
            "region",
            {
                member: (
                    int(values[name]["numerator"]),
                    int(values[name]["denominator"]),
                )
                for member, values in per_region.items()
            },
        )
        for name in P_CHARTED
    ]
    tests.append(homogeneity("first_time_fix_rate", "technician_id", numbers.fixes))
    return Report(
        period=report_period(period, zone),
        previous_period=report_period(previous, zone),
        as_of=as_of,
        indicators=overall,
        by_region=breakdowns["region"],
        by_category=breakdowns["category"],
        breakdown_truncated=truncated,
        technicians=technicians,
        alerts=alerts,
        alerts_truncated=alerts_truncated,
        control_charts=[_chart_out(c) for c in charts if c.scope == ALL],
        signals=_signals(charts),
        homogeneity=tests,
    )
