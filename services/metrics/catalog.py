"""Every indicator of indicators.md as SQL over the per-order facts.

One entry per indicator: which table, which value, which timestamp attributes it to a
window ("at"), which technician column a `technician_id` slice filters on, and how it
aggregates. The full response, the time series and the alerts all read this catalog,
so an indicator is defined exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    ARRAY,
    Boolean,
    ColumnElement,
    Float,
    Select,
    Table,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
)

from services.metrics.domain import DEFAULT_SLA, Kind, SlaTargets, SliceFilter
from services.metrics.store import complaint, order_fact, rating

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


def _target(column: str, targets: Mapping[str, float]) -> ColumnElement[Any]:
    """The SLA target in seconds for the row's urgency."""
    return case(
        *(
            (order_fact.c.urgency == urgency, minutes * 60)
            for urgency, minutes in targets.items()
        ),
        else_=None,
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
        Indicator(
            "sla_accept_rate",
            Kind.RATE,
            order_fact,
            "first_accepted_at",
            "accepted_technician_id",
            f.response_time_s <= _target("accept", sla.accept),
            f.response_time_s.is_not(None),
        ),
        Indicator(
            "sla_arrival_rate",
            Kind.RATE,
            order_fact,
            "first_arrived_at",
            "arrived_technician_id",
            f.arrival_time_s <= _target("arrive", sla.arrive),
            f.arrival_time_s.is_not(None),
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
    ]
    return {i.name: i for i in indicators}


def conditions(indicator: Indicator, where: SliceFilter) -> list[ColumnElement[bool]]:
    """The window (on the indicator's "at") and the slices, as SQL conditions."""
    columns = indicator.table.c
    at = columns[indicator.at]
    found: list[ColumnElement[bool]] = [at.is_not(None)]
    if where.start is not None:
        found.append(at >= where.start)
    if where.end is not None:
        found.append(at < where.end)
    for name in ("region", "category", "urgency"):
        value = getattr(where, name)
        if value is not None:
            found.append(columns[name] == value)
    if where.technician_id is not None:
        found.append(columns[indicator.technician] == where.technician_id)
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


CATALOG_DEFAULT: Final = catalog()
