"""Indicators from the daily rollups: whole UTC days from `indicator_day` and
`rating_day`, the partial days at a window's edges from the per-order facts.

Exact as the brute-force SQL: counts and sums add up; a nearest-rank percentile is
found in the merged bucket histogram and then picked among the per-order values of
that one bucket (`domain.bucket_of`'s bounds are exact binary fractions). A slice the
rollups do not keep, or SLA targets they were not counted with, returns None and the
caller computes from the facts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    Select,
    Table,
    and_,
    bindparam,
    cast,
    func,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.catalog import PERCENTILES, Indicator, conditions, result
from services.metrics.domain import (
    Kind,
    SlaTargets,
    SliceFilter,
    Span,
    bucket_bounds,
    bucket_of,
    midnight,
    nearest_rank,
    rollup_dimension,
    sla_json,
    split_window,
)
from services.metrics.store import (
    RATING_LEVEL_COLUMNS,
    indicator_day,
    rating,
    rating_day,
    rollup_policy,
)

RATING_COUNTERS: Final = tuple(
    c.name
    for c in rating_day.c
    if c.name not in ("dimension", "dimension_value", "day")
)


@dataclass
class Sums:
    """One indicator's additive parts over a window, before its final value."""

    n: int = 0
    hits: int = 0
    total: float = 0.0
    lows: int = 0  # NPS detractors
    histogram: Counter[int] = field(default_factory=Counter)  # whole days
    edge_values: list[float] = field(default_factory=list)


async def rollups_usable(conn: AsyncConnection, sla: SlaTargets) -> bool:
    """Whether the rollups hold every fact, SLA hits counted under these targets.

    Also plans this transaction's statements for their parameters: asyncpg prepares
    them, and after five runs PostgreSQL's generic plan of a window's OR-ed ranges
    scanned whole tables (a 30-day window went from 75 ms to 560 ms).
    """
    await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
    stored = (
        await conn.execute(select(rollup_policy.c.sla, rollup_policy.c.complete))
    ).one()
    return bool(stored.complete) and stored.sla == sla_json(sla)


def _days(table: Table, span: Span) -> list[ColumnElement[bool]]:
    """The whole days of a window, on a rollup table's `day`."""
    first, end = span.whole or (None, None)
    found: list[ColumnElement[bool]] = []
    if first is not None:
        found.append(table.c.day >= first)
    if end is not None:
        found.append(table.c.day < end)
    return found


def _slice_rows(table: Table, where: SliceFilter, span: Span) -> list[Any]:
    """The rollup rows of a slice over the whole days of a window."""
    chosen = rollup_dimension(where)
    assert chosen is not None
    dimension, member = chosen
    return [
        table.c.dimension == dimension,
        table.c.dimension_value == member,
        *_days(table, span),
    ]


def _edge_columns(
    indicator: Indicator, where: SliceFilter, ranges: ColumnElement[bool]
) -> list[Any]:
    """Additive aggregates of one indicator over the partial ranges of a window."""
    name, value = indicator.name, indicator.value
    own = and_(*conditions(indicator, where), ranges)
    match indicator.kind:
        case Kind.DISTRIBUTION:
            return [
                func.array_agg(value)
                .filter(and_(own, value.is_not(None)))
                .label(f"{name}__values")
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


def _add_edge(sums: Sums, name: str, row: Mapping[str, Any]) -> None:
    sums.n += int(row.get(f"{name}__n") or 0)
    sums.hits += int(row.get(f"{name}__hits") or 0)
    sums.lows += int(row.get(f"{name}__lows") or 0)
    sums.total += float(row.get(f"{name}__total") or 0.0)
    sums.edge_values += row.get(f"{name}__values") or []


def _add_ratings(found: dict[str, Sums], counters: Mapping[str, Any]) -> None:
    """The rating indicators from summed `rating_day` counters."""
    ratings = int(counters["ratings"] or 0)
    found["rating_mean"].n += ratings
    found["rating_mean"].total += float(counters["score_sum"] or 0)
    found["csat"].n += ratings
    found["csat"].hits += int(counters["satisfied"] or 0)
    found["nps"].n += int(counters["nps_count"] or 0)
    found["nps"].hits += int(counters["promoters"] or 0)
    found["nps"].lows += int(counters["detractors"] or 0)
    found["ratings_count"].n += ratings


RATING_INDICATORS: Final = ("rating_mean", "csat", "nps", "ratings_count")


_value_statements: dict[tuple[Any, ...], Select[Any]] = {}


def _value_statement(
    indicator: Indicator, shape: tuple[bool, bool, tuple[str, ...], tuple[int, ...]]
) -> Select[Any]:
    """The values of some buckets over whole days (built once per shape)."""
    key = (id(indicator), shape)
    if (found := _value_statements.get(key)) is not None:
        return found
    bounded_start, bounded_end, given, signs = shape
    bound: dict[str, Any] = {name: bindparam(name) for name in given}
    if bounded_start:
        bound["start"] = bindparam("whole_start")
    if bounded_end:
        bound["end"] = bindparam("whole_end")
    value = indicator.value
    ranges = []
    for i, sign in enumerate(signs):
        low: Any = bindparam(f"low{i}")
        high: Any = bindparam(f"high{i}")
        if sign == 0:
            ranges.append(value == low)
        elif sign > 0:
            ranges.append(and_(value >= low, value < high))
        else:
            ranges.append(and_(value > low, value <= high))
    # The buckets' whole-day values and their edge values, numbered in value order
    # inside the database: only the values at the wanted ranks travel.
    whole = select(cast(value, Float).label("v")).where(
        *conditions(indicator, SliceFilter(**bound)), or_(*ranges)
    )
    edge = select(func.unnest(bindparam("edge_values", type_=ARRAY(Float))).label("v"))
    both = union_all(whole, edge).subquery()
    numbered = select(
        both.c.v,
        func.row_number().over(order_by=both.c.v).label("rank"),
        func.count().over().label("values"),
    ).subquery()
    statement = select(numbered.c.v, numbered.c.rank, numbered.c["values"]).where(
        numbered.c.rank == func.any(bindparam("ranks", type_=ARRAY(BigInteger)))
    )
    _value_statements[key] = statement
    return statement


async def _ranked_values(
    conn: AsyncConnection,
    indicator: Indicator,
    where: SliceFilter,
    span: Span,
    buckets: list[int],
    edge_values: list[float],
    ranks: list[int],
) -> tuple[dict[int, float], int]:
    """The values at `ranks` (1-based) among the values of `buckets` (whole days of
    the window and `edge_values`), and how many values those buckets hold."""
    assert span.whole is not None
    first, end = span.whole
    given = _given(where)
    params: dict[str, Any] = {name: getattr(where, name) for name in given}
    if first is not None:
        params["whole_start"] = midnight(first)
    if end is not None:
        params["whole_end"] = midnight(end)
    for i, key in enumerate(buckets):
        params[f"low{i}"], params[f"high{i}"], _ = bucket_bounds(key)
    params["edge_values"] = edge_values
    params["ranks"] = ranks
    shape = (
        first is not None,
        end is not None,
        given,
        tuple((key > 0) - (key < 0) for key in buckets),
    )
    rows = (await conn.execute(_value_statement(indicator, shape), params)).all()
    return {int(r.rank): float(r.v) for r in rows}, (
        int(rows[0]._mapping["values"]) if rows else 0
    )


async def _distribution(
    conn: AsyncConnection,
    indicator: Indicator,
    where: SliceFilter,
    span: Span,
    sums: Sums,
) -> dict[str, Any]:
    """count, mean, exact nearest-rank percentiles and max, as catalog.result reads."""
    name = indicator.name
    merged = Counter(sums.histogram)
    for number in sums.edge_values:
        merged[bucket_of(number)] += 1
    count = sums.n + len(sums.edge_values)
    total = sums.total + sum(sums.edge_values)
    row: dict[str, Any] = {
        f"{name}__count": count,
        f"{name}__mean": total / count if count else None,
        f"{name}__percentiles": None,
        f"{name}__max": None,
    }
    if not count:
        return row
    ranks = [nearest_rank(p, count) for p in PERCENTILES] + [count]
    located: list[tuple[int, int]] = []  # (bucket, rank inside the bucket)
    keys = sorted(k for k, n in merged.items() if n)
    for rank in ranks:
        below = 0
        for key in keys:
            if below + merged[key] >= rank:
                located.append((key, rank - below))
                break
            below += merged[key]
    picked = (
        _pick_from_edges(sums.edge_values, located)
        if span.whole is None  # no whole day: every value is an edge value
        else await _pick(conn, indicator, where, span, sums, merged, located)
    )
    row[f"{name}__percentiles"] = picked[:-1]
    row[f"{name}__max"] = picked[-1]
    return row


def _pick_from_edges(
    values: list[float], located: list[tuple[int, int]]
) -> list[float]:
    by_bucket: dict[int, list[float]] = defaultdict(list)
    for number in values:
        by_bucket[bucket_of(number)].append(number)
    return [sorted(by_bucket[key])[inside - 1] for key, inside in located]


async def _pick(
    conn: AsyncConnection,
    indicator: Indicator,
    where: SliceFilter,
    span: Span,
    sums: Sums,
    merged: Counter[int],
    located: list[tuple[int, int]],
) -> list[float]:
    """The located values, numbered by the database among their buckets' values."""
    buckets = sorted({key for key, _ in located})
    held = sum(merged[key] for key in buckets)
    # A rank inside a bucket, as a rank among the chosen buckets' values.
    ranks = [
        sum(merged[other] for other in buckets if other < key) + inside
        for key, inside in located
    ]
    wanted = set(buckets)
    edge_values = [v for v in sums.edge_values if bucket_of(v) in wanted]
    found, counted = await _ranked_values(
        conn, indicator, where, span, buckets, edge_values, sorted(set(ranks))
    )
    if counted != held:
        raise RuntimeError(
            f"{indicator.name}: rollup buckets {buckets} hold {held} values, "
            f"the facts {counted}"
        )
    return [found[rank] for rank in ranks]


def _final(indicator: Indicator, sums: Sums) -> dict[str, Any]:
    name = indicator.name
    row: dict[str, Any]
    match indicator.kind:
        case Kind.RATE:
            row = {f"{name}__denominator": sums.n, f"{name}__numerator": sums.hits}
        case Kind.MEAN:
            row = {
                f"{name}__count": sums.n,
                f"{name}__mean": sums.total / sums.n if sums.n else None,
            }
        case Kind.NPS:
            row = {
                f"{name}__count": sums.n,
                f"{name}__promoters": sums.hits,
                f"{name}__detractors": sums.lows,
            }
        case _:
            row = {f"{name}__count": sums.n}
    return result(indicator, row)


EDGES: Final = ("edge0", "edge1")
_SLICED: Final = ("region", "category", "urgency", "technician_id")
_edge_statements: dict[tuple[int, int, tuple[str, ...]], list[Select[Any]]] = {}


def _given(where: SliceFilter) -> tuple[str, ...]:
    return tuple(name for name in _SLICED if getattr(where, name) is not None)


def _edge_statements_for(
    catalog: Mapping[str, Indicator], edges: int, given: tuple[str, ...]
) -> list[Select[Any]]:
    """One statement per facts table over `edges` partial ranges (built once)."""
    key = (id(catalog), edges, given)
    if (found := _edge_statements.get(key)) is not None:
        return found
    by_table: dict[Table, list[Indicator]] = defaultdict(list)
    for indicator in catalog.values():
        by_table[indicator.table].append(indicator)
    bound: dict[str, Any] = {name: bindparam(name) for name in given}
    sliced = SliceFilter(**bound)
    statements = []
    for table, indicators in by_table.items():
        columns: list[Any] = []
        anywhere = []
        for indicator in indicators:
            at = table.c[indicator.at]
            ranges = or_(
                *(
                    and_(at >= bindparam(f"{e}_start"), at < bindparam(f"{e}_end"))
                    for e in EDGES[:edges]
                )
            )
            columns += _edge_columns(indicator, sliced, ranges)
            anywhere.append(ranges)
        statements.append(select(*columns).select_from(table).where(or_(*anywhere)))
    _edge_statements[key] = statements
    return statements


async def rolled_indicators(
    conn: AsyncConnection,
    where: SliceFilter,
    catalog: Mapping[str, Indicator],
    sla: SlaTargets,
) -> dict[str, Any] | None:
    """Every catalog indicator for a slice from the rollups, or None (not rolled)."""
    if rollup_dimension(where) is None:
        return None
    if not await rollups_usable(conn, sla):
        return None
    span = split_window(where.start, where.end)
    sums: dict[str, Sums] = {name: Sums() for name in catalog}
    if span.whole is not None:
        day = indicator_day.c
        rows = await conn.execute(
            select(
                day.indicator,
                day.bucket,
                func.sum(day.n),
                func.sum(day.hits),
                func.sum(day.total),
            )
            .where(*_slice_rows(indicator_day, where, span))
            .group_by(day.indicator, day.bucket)
        )
        for name, bucket, n, hits, total in rows:
            if (found := sums.get(name)) is None:
                continue
            found.n += int(n)
            found.hits += int(hits)
            found.total += float(total)
            if catalog[name].kind is Kind.DISTRIBUTION:
                found.histogram[bucket] += int(n)
        counters = (
            await conn.execute(
                select(
                    *(func.sum(rating_day.c[c]).label(c) for c in RATING_COUNTERS)
                ).where(*_slice_rows(rating_day, where, span))
            )
        ).one()
        _add_ratings(sums, dict(counters._mapping))
    if span.edges:
        given = _given(where)
        params: dict[str, Any] = {name: getattr(where, name) for name in given}
        for edge, (start, end) in zip(EDGES, span.edges, strict=False):
            params[f"{edge}_start"], params[f"{edge}_end"] = start, end
        for query in _edge_statements_for(catalog, len(span.edges), given):
            row = (await conn.execute(query, params)).one()._mapping
            for name in catalog:
                _add_edge(sums[name], name, row)
    values: dict[str, Any] = {}
    for name, indicator in catalog.items():
        if indicator.kind is Kind.DISTRIBUTION:
            row = await _distribution(conn, indicator, where, span, sums[name])
            values[name] = result(indicator, row)
        else:
            values[name] = _final(indicator, sums[name])
    return values


# --- technician scores -------------------------------------------------------------


@dataclass
class TechnicianSums:
    rates: dict[
        str, dict[str, tuple[int, int]]
    ]  # indicator -> technician -> (num, den)
    ratings: dict[str, dict[str, int]]  # technician -> rating_day counters


SCORE_RATES: Final = ("first_time_fix_rate", "sla_accept_rate", "sla_arrival_rate")


async def rolled_technician_sums(
    conn: AsyncConnection,
    where: SliceFilter,
    catalog: Mapping[str, Indicator],
    sla: SlaTargets,
) -> TechnicianSums | None:
    """Per technician: the scores' rates and rating counters; None: not rolled."""
    if any(getattr(where, d) is not None for d in ("region", "category", "urgency")):
        return None
    if where.technician_id is not None or not await rollups_usable(conn, sla):
        return None
    span = split_window(where.start, where.end)
    rates: dict[str, dict[str, list[int]]] = {
        name: defaultdict(lambda: [0, 0]) for name in SCORE_RATES
    }
    ratings: dict[str, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(RATING_COUNTERS, 0)
    )
    if span.whole is not None:
        day = indicator_day.c
        rows = await conn.execute(
            select(
                day.dimension_value,
                day.indicator,
                func.sum(day.hits),
                func.sum(day.n),
            )
            .where(
                day.dimension == "technician_id",
                day.indicator.in_(SCORE_RATES),
                *_days(indicator_day, span),
            )
            .group_by(day.dimension_value, day.indicator)
        )
        for technician, name, hits, n in rows:
            found = rates[name][technician]
            found[0] += int(hits)
            found[1] += int(n)
        rated = rating_day.c
        rows = await conn.execute(
            select(
                rated.dimension_value,
                *(func.sum(rated[c]).label(c) for c in RATING_COUNTERS),
            )
            .where(rated.dimension == "technician_id", *_days(rating_day, span))
            .group_by(rated.dimension_value)
        )
        for row in rows:
            counters = ratings[row[0]]
            for c, number in zip(RATING_COUNTERS, row[1:], strict=True):
                counters[c] += int(number)
    for start, end in span.edges:
        edge = replace(where, start=start, end=end)
        for name in SCORE_RATES:
            indicator = catalog[name]
            technician = indicator.table.c[indicator.technician]
            for row in await conn.execute(
                select(
                    technician,
                    func.count().filter(cast(indicator.value, Boolean)),
                    func.count(),
                )
                .where(*conditions(indicator, edge), technician.is_not(None))
                .group_by(technician)
            ):
                found = rates[name][row[0]]
                found[0] += int(row[1])
                found[1] += int(row[2])
        await _edge_ratings(conn, catalog, edge, ratings)
    return TechnicianSums(
        rates={
            name: {t: (v[0], v[1]) for t, v in by.items()} for name, by in rates.items()
        },
        ratings=dict(ratings),
    )


async def _edge_ratings(
    conn: AsyncConnection,
    catalog: Mapping[str, Indicator],
    edge: SliceFilter,
    ratings: dict[str, dict[str, int]],
) -> None:
    r = rating.c
    levels = [
        func.count().filter(r[name.rsplit("_", 1)[0]] == int(name.rsplit("_", 1)[1]))
        for name in RATING_LEVEL_COLUMNS
    ]
    columns: Sequence[Any] = [
        func.count(),
        func.count().filter(r.score >= 4),
        func.sum(r.score),
        func.sum(func.coalesce(r.attitude, r.score)),
        func.count(r.nps),
        func.count().filter(r.nps >= 9),
        func.count().filter(r.nps <= 6),
        *levels,
    ]
    rows = await conn.execute(
        select(r.technician_id, *columns)
        .where(*conditions(catalog["csat"], edge), r.technician_id.is_not(None))
        .group_by(r.technician_id)
    )
    for row in rows:
        counters = ratings[row[0]]
        for c, number in zip(RATING_COUNTERS, row[1:], strict=True):
            counters[c] += int(number or 0)
