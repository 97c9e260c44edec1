"""Every indicator of indicators.md as SQL over the per-order facts.

One entry per indicator: which table, which value, which timestamp attributes it to a
window ("at"), which technician column a `technician_id` slice filters on, and how it
aggregates. The full response, the time series and the alerts all read this catalog,
so an indicator is defined exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import (
    ARRAY,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    Integer,
    Interval,
    Select,
    Table,
    Text,
    and_,
    case,
    cast,
    extract,
    func,
    literal,
    null,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB

from services.metrics.domain import (
    DEFAULT_SLA,
    DUE_COLUMNS,
    Kind,
    SlaTargets,
    SliceFilter,
)
from services.metrics.store import (
    alert_case,
    complaint,
    order_fact,
    rating,
    unaccepted_assignment,
)
from shared.domain.peak_hours import PeakHours, Period

__all__ = [
    "DEFAULT_SLA",
    "Indicator",
    "Kind",
    "SlaTargets",
    "SliceFilter",
    "catalog",
]


@dataclass(frozen=True)
class Indicator:
    name: str
    kind: Kind
    table: Table
    at: str
    technician: str
    value: Any  # a SQL expression (or a boolean condition for rates)
    population: Any = None  # extra condition for the denominator / the values
    # A censored SLA rate (indicators.md v2): "at" and the technician are computed
    # (`at_expression`, `technician_expression`) from the stored deadline (these
    # targets, minutes per urgency, under the business calendars), and count only
    # once at or before the server's now.
    at_expression: Any = None
    technician_expression: Any = None
    censored_targets: tuple[tuple[str, float], ...] | None = None

    def at_column(self) -> Any:
        """The time attributing a row to a window (a column or an expression)."""
        if self.at_expression is not None:
            return self.at_expression
        return self.table.c[self.at]

    def technician_column(self) -> Any:
        """Whom a `technician_id` slice filters on (a column or an expression)."""
        if self.technician_expression is not None:
            return self.technician_expression
        return self.table.c[self.technician]


def deadline(reached: str) -> ColumnElement[Any]:
    """The stored deadline of the clock that `reached` stops (`accept_due_at`,
    `arrive_due_at`): created_at + target under the default 24x7 calendar, later
    under a business calendar or a pause; NULL while not due."""
    return order_fact.c[DUE_COLUMNS[reached]]


def holder_at(instant: ColumnElement[Any]) -> ColumnElement[Any]:
    """The technician holding the order at `instant` (domain.holder_at in SQL): the
    first assignment span with since <= instant <= until (until null: still)."""
    span = (
        func.jsonb_array_elements(cast(order_fact.c.assignments, JSONB))
        .table_valued("value", with_ordinality="position")
        .render_derived()
    )
    value = span.c.value

    def element(i: int) -> ColumnElement[Any]:
        return value.op("->>", return_type=Text)(literal(i, Integer))

    since = cast(element(1), DateTime(timezone=True))
    until = cast(element(2), DateTime(timezone=True))
    return (
        select(element(0))
        .select_from(span)
        .where(since <= instant, or_(element(2).is_(None), instant <= until))
        .order_by(span.c.position)
        .limit(1)
        .correlate(order_fact)
        .scalar_subquery()
    )


def _censored_sla(
    name: str,
    reached: str,
    reacher: str,
    targets: Mapping[str, float],
    *,
    visit: bool = False,
) -> Indicator:
    """An SLA rate with censoring (domain.sla_measure in SQL): met when reached
    within the target (at that time, by who reached it); otherwise a breach at the
    target's instant, charged to whoever held the order then, unless cancelled at or
    before it, or for the `visit` clock diagnosed remotely by then (left out: "at"
    is null)."""
    f = order_fact.c
    due = deadline(reached)
    met = f[reached] <= due
    left_out = f.cancelled_at <= due
    if visit:
        remote = and_(
            f.first_diagnosed_at <= due,
            or_(
                f.first_arrived_at.is_(None),
                f.first_arrived_at > f.first_diagnosed_at,
            ),
        )
        left_out = or_(left_out, remote)
    return Indicator(
        name,
        Kind.RATE,
        order_fact,
        reached,
        reacher,
        met,
        at_expression=case((met, f[reached]), (left_out, null()), else_=due),
        technician_expression=case((met, f[reacher]), else_=holder_at(due)),
        censored_targets=tuple(targets.items()),
    )


def catalog(sla: SlaTargets = DEFAULT_SLA) -> dict[str, Indicator]:
    f, r, c = order_fact.c, rating.c, complaint.c
    final = "first_final_at"
    priced = f.approved_total > 0
    indicators = [
        Indicator(
            "response_time_s",
            Kind.DISTRIBUTION,
            order_fact,
            "first_accepted_at",
            "accepted_technician_id",
            f.response_time_s,
        ),
        Indicator(
            "arrival_time_s",
            Kind.DISTRIBUTION,
            order_fact,
            "first_arrived_at",
            "arrived_technician_id",
            f.arrival_time_s,
        ),
        Indicator(
            "diagnosis_time_s",
            Kind.DISTRIBUTION,
            order_fact,
            "first_diagnosed_at",
            "arrived_technician_id",
            f.diagnosis_time_s,
        ),
        Indicator(
            "resolution_time_s",
            Kind.DISTRIBUTION,
            order_fact,
            final,
            "first_final_technician_id",
            f.resolution_time_s,
        ),
        Indicator(
            "complaint_resolution_s",
            Kind.DISTRIBUTION,
            complaint,
            "resolved_at",
            "technician_id",
            c.resolution_s,
        ),
        Indicator(
            "first_time_fix_rate",
            Kind.RATE,
            order_fact,
            final,
            "first_final_technician_id",
            f.first_time_fix,
        ),
        Indicator(
            "resolution_rate",
            Kind.RATE,
            order_fact,
            final,
            "first_final_technician_id",
            f.resolved,
        ),
        Indicator(
            "rework_rate",
            Kind.RATE,
            order_fact,
            final,
            "first_final_technician_id",
            f.reopened,
        ),
        Indicator(
            "complaint_rate",
            Kind.RATE,
            order_fact,
            final,
            "first_final_technician_id",
            f.complaint_filed,
        ),
        Indicator(
            "cancellation_rate",
            Kind.RATE,
            order_fact,
            "created_at",
            "accepted_technician_id",
            f.cancelled_at.is_not(None),
        ),
        Indicator(
            "price_deviation_mean",
            Kind.MEAN,
            order_fact,
            final,
            "first_final_technician_id",
            f.price_deviation,
            priced,
        ),
        Indicator(
            "overrun_rate",
            Kind.RATE,
            order_fact,
            final,
            "first_final_technician_id",
            f.overrun,
            priced,
        ),
        Indicator(
            "requote_rate",
            Kind.RATE,
            order_fact,
            final,
            "first_final_technician_id",
            f.requoted,
            priced,
        ),
        Indicator(
            "quoted_before_work_rate",
            Kind.RATE,
            order_fact,
            final,
            "first_final_technician_id",
            f.quoted_before_work,
            f.free_warranty_completion.is_(False),
        ),
        Indicator(
            "rating_mean",
            Kind.MEAN,
            rating,
            "rated_at",
            "technician_id",
            cast(r.score, Float),
        ),
        Indicator("csat", Kind.RATE, rating, "rated_at", "technician_id", r.score >= 4),
        Indicator(
            "nps",
            Kind.NPS,
            rating,
            "rated_at",
            "technician_id",
            r.nps,
            r.nps.is_not(None),
        ),
        Indicator(
            "ratings_count", Kind.COUNT, rating, "rated_at", "technician_id", r.score
        ),
        _censored_sla(
            "sla_accept_rate",
            "first_accepted_at",
            "accepted_technician_id",
            sla.accept,
        ),
        _censored_sla(
            "sla_arrival_rate",
            "first_arrived_at",
            "arrived_technician_id",
            sla.arrive,
            visit=True,
        ),
        Indicator(
            "eta_error_s",
            Kind.DISTRIBUTION,
            order_fact,
            "first_arrived_at",
            "arrived_technician_id",
            f.eta_error_s,
        ),
        Indicator(
            "eta_kept_rate",
            Kind.RATE,
            order_fact,
            "first_arrived_at",
            "arrived_technician_id",
            f.eta_error_s <= sla.eta_kept_s,
            f.eta_error_s.is_not(None),
        ),
        Indicator(
            "orders_created",
            Kind.COUNT,
            order_fact,
            "created_at",
            "accepted_technician_id",
            f.order_id,
        ),
        Indicator(
            "orders_completed",
            Kind.COUNT,
            order_fact,
            final,
            "first_final_technician_id",
            f.order_id,
        ),
        # Assignments declined, or left unanswered until dispatch expired them,
        # per technician (indicators.md v2 counts an expiry against that technician
        # like a decline; the order's own SLA breach is charged to whoever held it
        # at its target).
        *(
            Indicator(
                f"assignments_{kind}",
                Kind.COUNT,
                unaccepted_assignment,
                "at",
                "technician_id",
                unaccepted_assignment.c.order_id,
                population=unaccepted_assignment.c.kind == kind,
            )
            for kind in ("declined", "expired")
        ),
    ]
    return {i.name: i for i in indicators}


def censored_hints(
    indicator: Indicator, start: Any, end: Any
) -> list[ColumnElement[bool]]:
    """What a censored measurement's "at" in [start, end) implies on indexed
    columns (its "at" is an expression): the step reached in the window, or its
    stored deadline in it. Redundant, for the planner only."""
    if indicator.censored_targets is None or (start is None and end is None):
        return []
    f = order_fact.c

    def within(column: Any) -> ColumnElement[bool]:
        bounds = [column >= start] if start is not None else []
        if end is not None:
            bounds.append(column < end)
        return and_(*bounds)

    return [or_(within(f[indicator.at]), within(deadline(indicator.at)))]


def after_now(indicator: Indicator, now: datetime) -> list[ColumnElement[bool]]:
    """A censored measurement still ahead of `now` (with its indexed hints)."""
    return [indicator.at_column() > now, *censored_hints(indicator, now, None)]


def _touched_by(technician_id: Any, indicator: Indicator) -> ColumnElement[bool]:
    """Redundant, for speed: a censored measurement is charged to whoever reached
    the step or held the order, so the technician reached it or is named in its
    assignment spans. Checked before the per-row holder lookup, it leaves that
    lookup to the technician's own orders (a 30-day scorecard's list: 85 -> 32 ms
    at 1,000,000 events)."""
    f = order_fact.c
    # The spans are JSON text: the id appears there as a quoted string.
    quoted = literal('"', Text) + technician_id + literal('"', Text)
    return or_(
        f[indicator.technician] == technician_id,
        func.strpos(f.assignments, quoted) > 0,
    )


def peak_condition(at: Any, peak: PeakHours) -> ColumnElement[bool]:
    """`at` (a timestamptz) falls in the peak period: PeakHours.is_peak in SQL.

    The local wall time is `at AT TIME ZONE zone`; its weekday and its offset
    from local midnight are tested as the domain tests them.
    """
    local = func.timezone(literal(peak.time_zone, Text), at)
    weekday = cast(extract("isodow", local), Integer) - 1  # Monday = 0
    since_midnight = local - func.date_trunc("day", local)
    found: list[ColumnElement[bool]] = []
    if peak.days:
        found.append(weekday.in_(sorted(peak.days)))
    found += [
        and_(
            since_midnight >= literal(stretch.start, Interval),
            since_midnight < literal(stretch.end, Interval),
        )
        for stretch in peak.hours
    ]
    return or_(*found) if found else literal(False, Boolean)


def period_condition(at: Any, period: Period, peak: PeakHours) -> ColumnElement[bool]:
    """`at` (not null) falls in `period`."""
    condition = peak_condition(at, peak)
    return condition if period is Period.PEAK else ~condition


def conditions(indicator: Indicator, where: SliceFilter) -> list[ColumnElement[bool]]:
    """The window (on the indicator's "at") and the slices, as SQL conditions.

    A censored SLA measurement counts only once at or before `where.now`.
    """
    columns = indicator.table.c
    at = indicator.at_column()
    found: list[ColumnElement[bool]] = [at.is_not(None)]
    if where.start is not None:
        found.append(at >= where.start)
    if where.end is not None:
        found.append(at < where.end)
    found += censored_hints(indicator, where.start, where.end)
    if indicator.censored_targets is not None and where.now is not None:
        found.append(at <= where.now)
    if where.period is not None:
        found.append(period_condition(at, where.period, where.peak_hours))
    for name in ("region", "category", "urgency", "channel"):
        value = getattr(where, name)
        if value is not None:
            found.append(columns[name] == value)
    if where.technician_id is not None:
        found.append(indicator.technician_column() == where.technician_id)
        if indicator.technician_expression is not None:
            found.append(_touched_by(where.technician_id, indicator))
    if indicator.population is not None:
        found.append(indicator.population)
    return found


PERCENTILES: Final = (0.5, 0.9, 0.95)


def parts(
    indicator: Indicator, own: ColumnElement[bool], *, values: bool = False
) -> list[ColumnElement[Any]]:
    """The mergeable parts of one indicator over the rows matching `own`, labelled
    `<name>__<part>`: n (count or denominator), hits (numerator, NPS promoters),
    total (sum of the values), lows (NPS detractors); `result` finishes them.

    A distribution's exact percentiles do not merge: over a whole scan they are
    computed here (nearest-rank `percentile_disc`, and the max); with `values`, the
    values themselves come instead, for the rollups to merge with their buckets.
    """
    name, value = indicator.name, indicator.value
    match indicator.kind:
        case Kind.DISTRIBUTION if values:
            return [
                func.array_agg(value)
                .filter(and_(own, value.is_not(None)))
                .label(f"{name}__values")
            ]
        case Kind.DISTRIBUTION:
            return [
                func.count(value).filter(own).label(f"{name}__n"),
                func.sum(value).filter(own).label(f"{name}__total"),
                # percentile_disc is the nearest-rank percentile: the value at rank
                # ceil(p x n) of the sorted values, as indicators.md defines it.
                func.percentile_disc(literal(list(PERCENTILES), ARRAY(Float)))
                .within_group(value)
                .filter(own)
                .label(f"{name}__percentiles"),
                func.max(value).filter(own).label(f"{name}__max"),
            ]
        case Kind.RATE:
            return [
                func.count().filter(own).label(f"{name}__n"),
                func.count()
                .filter(and_(own, cast(value, Boolean)))
                .label(f"{name}__hits"),
            ]
        case Kind.MEAN:
            return [
                func.count(value).filter(own).label(f"{name}__n"),
                func.sum(value).filter(own).label(f"{name}__total"),
            ]
        case Kind.COUNT:
            return [func.count(value).filter(own).label(f"{name}__n")]
        case Kind.NPS:
            return [
                func.count(value).filter(own).label(f"{name}__n"),
                func.count().filter(and_(own, value >= 9)).label(f"{name}__hits"),
                func.count().filter(and_(own, value <= 6)).label(f"{name}__lows"),
            ]


def aggregates(indicator: Indicator, where: SliceFilter) -> list[ColumnElement[Any]]:
    """The SELECT list of one indicator over a slice (see `parts`).

    Each aggregate carries the indicator's own window and slices as a FILTER, so one
    scan of a table computes every indicator attributed to it.
    """
    return parts(indicator, and_(*conditions(indicator, where)))


def table_query(
    table: Table, indicators: list[Indicator], where: SliceFilter
) -> Select[Any]:
    """One scan of `table` computing every indicator attributed to it."""
    columns = [column for i in indicators for column in aggregates(i, where)]
    # Only rows that some indicator's window can use (indexes on each "at" column).
    windows = [
        and_(*conditions(i, SliceFilter(start=where.start, end=where.end)))
        for i in indicators
    ]
    return select(*columns).select_from(table).where(or_(*windows))


def unaccepted_overdue(
    sla: SlaTargets, where: SliceFilter, now: datetime
) -> list[ColumnElement[bool]]:
    """orders_unaccepted_overdue (now): open orders without an accepted event whose
    accept target has passed, in a slice; a `technician_id` slice is the
    technician holding the order at its target's instant (as a censored breach)."""
    f = order_fact.c
    due = deadline("first_accepted_at")
    # `open` bare (not IS TRUE): the partial index's predicate must be implied.
    found: list[ColumnElement[bool]] = [
        f.open,
        f.first_accepted_at.is_(None),
        due <= now,
    ]
    # Implied by the target having passed (a calendar or a pause only moves the
    # deadline later); indexed (ix_order_fact_unaccepted).
    least = timedelta(minutes=min(sla.accept.values(), default=0))
    found.append(f.created_at <= now - least)
    for name in ("region", "category", "urgency", "channel"):
        value = getattr(where, name)
        if value is not None:
            found.append(f[name] == value)
    if where.technician_id is not None:
        found.append(holder_at(due) == where.technician_id)
    return found


def _mean(total: Any, n: int) -> float | None:
    return float(total) / n if n else None


def result(indicator: Indicator, row: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON value of one indicator from its parts (see `parts`)."""
    name = indicator.name
    n = int(row.get(f"{name}__n") or 0)
    hits = int(row.get(f"{name}__hits") or 0)
    total = row.get(f"{name}__total") or 0.0
    match indicator.kind:
        case Kind.DISTRIBUTION:
            percentiles = row[f"{name}__percentiles"] or [None] * len(PERCENTILES)
            return {
                "count": n,
                "mean": _mean(total, n),
                "p50": percentiles[0],
                "p90": percentiles[1],
                "p95": percentiles[2],
                "max": row[f"{name}__max"],
            }
        case Kind.RATE:
            return {
                "value": hits / n if n else None,
                "numerator": hits,
                "denominator": n,
            }
        case Kind.MEAN:
            return {"value": _mean(total, n), "count": n}
        case Kind.COUNT:
            return {"value": n}
        case Kind.NPS:
            lows = int(row.get(f"{name}__lows") or 0)
            return {"value": 100 * (hits - lows) / n if n else None, "count": n}


def sample_values(indicator: Indicator, where: SliceFilter) -> Select[Any]:
    """The per-row values behind a distribution or a mean in a slice: what a rank
    test compares (an alert action's effect)."""
    return (
        select(indicator.value)
        .select_from(indicator.table)
        .where(and_(*conditions(indicator, where)), indicator.value.is_not(None))
    )


# The alert cases' own indicators (indicators.md v2, "Alert cases"), at the
# acknowledging / closing step. Kept out of `catalog()`: the order rollups and the
# time series read that one, and these are not order facts. Their only slices are
# the alert's scope (`region`, `technician_id`); an order attribute an alert has
# not (category, urgency, channel) selects none of them.
ALERT_CASE_CATALOG: Final = {
    i.name: i
    for i in (
        Indicator(
            "alert_ack_time_s",
            Kind.DISTRIBUTION,
            alert_case,
            "acknowledged_at",
            "technician_id",
            alert_case.c.ack_time_s,
        ),
        Indicator(
            "alert_close_time_s",
            Kind.DISTRIBUTION,
            alert_case,
            "closed_at",
            "technician_id",
            alert_case.c.close_time_s,
        ),
    )
}
ALERT_CASE_SLICES: Final = ("region", "technician_id")


CATALOG_DEFAULT: Final = catalog()
