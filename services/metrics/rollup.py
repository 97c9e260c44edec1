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
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    Integer,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    func,
    literal,
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
    stored = (
        await conn.execute(
            select(
                # SET LOCAL, in the same round trip as the policy.
                func.set_config("plan_cache_mode", "force_custom_plan", True),
                rollup_policy.c.sla,
                rollup_policy.c.complete,
            )
        )
    ).one()
    return bool(stored.complete) and stored.sla == sla_json(sla)


def _counted(counter: ColumnElement[Any]) -> ColumnElement[int]:
    """The sum of a rollup counter over days, in int8 arithmetic.

    sum(bigint) accumulates and answers in numeric, about twice the time of
    sum(integer) -> bigint (window=all reads ~12,000 rows of 32 counters). One day's
    counter of one slice stays far below 2**31; were one ever larger, the cast raises
    (out of range) rather than answering a wrong number.
    """
    return func.sum(cast(counter, Integer), type_=BigInteger)


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
    """The values of some buckets over whole days (built once per shape); its
    parameters are named after the indicator, so several join in one UNION ALL."""
    key = (id(indicator), shape)
    if (found := _value_statements.get(key)) is not None:
        return found
    bounded_start, bounded_end, given, signs = shape
    own = f"{indicator.name}__"
    bound: dict[str, Any] = {name: bindparam(own + name) for name in given}
    if bounded_start:
        bound["start"] = bindparam(own + "whole_start")
    if bounded_end:
        bound["end"] = bindparam(own + "whole_end")
    value = indicator.value
    ranges = []
    for i, sign in enumerate(signs):
        low: Any = bindparam(f"{own}low{i}")
        high: Any = bindparam(f"{own}high{i}")
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
    edge = select(
        func.unnest(bindparam(own + "edge_values", type_=ARRAY(Float))).label("v")
    )
    both = union_all(whole, edge).subquery()
    numbered = select(
        both.c.v,
        func.row_number().over(order_by=both.c.v).label("rank"),
        func.count().over().label("values"),
    ).subquery()
    statement = select(
        literal(indicator.name, Text).label("indicator"),
        numbered.c.v,
        numbered.c.rank,
        numbered.c["values"],
    ).where(
        numbered.c.rank == func.any(bindparam(own + "ranks", type_=ARRAY(BigInteger)))
    )
    _value_statements[key] = statement
    return statement


@dataclass
class _Wanted:
    """The exact stage of one distribution: values at `ranks` among `buckets`."""

    indicator: Indicator
    row: dict[str, Any]  # catalog.result's row, percentiles and max still to fill
    located: list[tuple[int, int]]  # (bucket, rank inside the bucket) per percentile
    buckets: list[int] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)  # among the buckets' values
    held: int = 0  # values in the buckets, by the rollups
    edge_buckets: list[int] = field(default_factory=list)  # of Sums.edge_values


def _located(indicator: Indicator, sums: Sums) -> _Wanted:
    """count and mean, and the bucket of each percentile's (and the max's) rank."""
    name = indicator.name
    merged = Counter(sums.histogram)
    edge_buckets = list(map(bucket_of, sums.edge_values))
    merged.update(edge_buckets)
    count = sums.n + len(sums.edge_values)
    total = sums.total + sum(sums.edge_values)
    row: dict[str, Any] = {
        f"{name}__count": count,
        f"{name}__mean": total / count if count else None,
        f"{name}__percentiles": None,
        f"{name}__max": None,
    }
    wanted = _Wanted(indicator, row, [], edge_buckets=edge_buckets)
    if not count:
        return wanted
    ranks = [nearest_rank(p, count) for p in PERCENTILES] + [count]
    keys = sorted(k for k, n in merged.items() if n)
    for rank in ranks:
        below = 0
        for key in keys:
            if below + merged[key] >= rank:
                wanted.located.append((key, rank - below))
                break
            below += merged[key]
    wanted.buckets = sorted({key for key, _ in wanted.located})
    wanted.held = sum(merged[key] for key in wanted.buckets)
    # A rank inside a bucket, as a rank among the chosen buckets' values.
    wanted.ranks = [
        sum(merged[other] for other in wanted.buckets if other < key) + inside
        for key, inside in wanted.located
    ]
    return wanted


def _filled(wanted: _Wanted, picked: list[float]) -> dict[str, Any]:
    name = wanted.indicator.name
    wanted.row[f"{name}__percentiles"] = picked[:-1]
    wanted.row[f"{name}__max"] = picked[-1]
    return result(wanted.indicator, wanted.row)


def _pick_from_edges(
    values: list[float], buckets: list[int], located: list[tuple[int, int]]
) -> list[float]:
    by_bucket: dict[int, list[float]] = defaultdict(list)
    for number, key in zip(values, buckets, strict=True):
        by_bucket[key].append(number)
    return [sorted(by_bucket[key])[inside - 1] for key, inside in located]


def _value_part(
    wanted: _Wanted, where: SliceFilter, span: Span, edge_values: list[float]
) -> tuple[Select[Any], dict[str, Any]]:
    """One distribution's part of the exact stage, and its parameters."""
    assert span.whole is not None
    first, end = span.whole
    given = _given(where)
    own = f"{wanted.indicator.name}__"
    params: dict[str, Any] = {own + name: getattr(where, name) for name in given}
    if first is not None:
        params[own + "whole_start"] = midnight(first)
    if end is not None:
        params[own + "whole_end"] = midnight(end)
    for i, key in enumerate(wanted.buckets):
        params[f"{own}low{i}"], params[f"{own}high{i}"], _ = bucket_bounds(key)
    chosen = set(wanted.buckets)
    params[own + "edge_values"] = [
        v
        for v, key in zip(edge_values, wanted.edge_buckets, strict=True)
        if key in chosen
    ]
    params[own + "ranks"] = sorted(set(wanted.ranks))
    shape = (
        first is not None,
        end is not None,
        given,
        tuple((key > 0) - (key < 0) for key in wanted.buckets),
    )
    return _value_statement(wanted.indicator, shape), params


async def _distributions(
    conn: AsyncConnection,
    distributions: Mapping[str, Indicator],
    where: SliceFilter,
    span: Span,
    sums: Mapping[str, Sums],
) -> dict[str, Any]:
    """count, mean, exact nearest-rank percentiles and max of each distribution.

    The rollups locate each rank's bucket; the values at those ranks among their
    buckets' values (whole days from the value indexes, edges from the facts read)
    come in one statement for every distribution.
    """
    values: dict[str, Any] = {}
    parts: list[Select[Any]] = []
    params: dict[str, Any] = {}
    waiting: dict[str, _Wanted] = {}
    for name, indicator in distributions.items():
        wanted = _located(indicator, sums[name])
        if not wanted.located:
            values[name] = result(indicator, wanted.row)
        elif span.whole is None:  # no whole day: every value is an edge value
            picked = _pick_from_edges(
                sums[name].edge_values, wanted.edge_buckets, wanted.located
            )
            values[name] = _filled(wanted, picked)
        else:
            part, own = _value_part(wanted, where, span, sums[name].edge_values)
            parts.append(part)
            params.update(own)
            waiting[name] = wanted
    if not parts:
        return values
    found: dict[str, dict[int, float]] = defaultdict(dict)
    counted: dict[str, int] = {}
    for row in await conn.execute(union_all(*parts), params):
        found[row.indicator][int(row.rank)] = float(row.v)
        counted[row.indicator] = int(row._mapping["values"])
    for name, wanted in waiting.items():
        if counted.get(name, 0) != wanted.held:
            raise RuntimeError(
                f"{name}: rollup buckets {wanted.buckets} hold {wanted.held} values, "
                f"the facts {counted.get(name, 0)}"
            )
        values[name] = _filled(wanted, [found[name][rank] for rank in wanted.ranks])
    return values


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
                _counted(day.n),
                _counted(day.hits),
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
                    *(_counted(rating_day.c[c]).label(c) for c in RATING_COUNTERS)
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
    distributions = {
        name: indicator
        for name, indicator in catalog.items()
        if indicator.kind is Kind.DISTRIBUTION
    }
    exact = await _distributions(conn, distributions, where, span, sums)
    return {
        name: exact[name] if name in exact else _final(indicator, sums[name])
        for name, indicator in catalog.items()
    }


# --- technician scores -------------------------------------------------------------


@dataclass
class TechnicianSums:
    rates: dict[
        str, dict[str, tuple[int, int]]
    ]  # indicator -> technician -> (num, den)
    ratings: dict[str, dict[str, int]]  # technician -> rating_day counters


SCORE_RATES: Final = ("first_time_fix_rate", "sla_accept_rate", "sla_arrival_rate")


_score_statement_cache: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def _score_statements(
    catalog: Mapping[str, Indicator], shape: tuple[bool, bool, bool, int]
) -> tuple[Any, Any]:
    """The scores' two statements, rates and rating counters per technician: the
    whole days' rollups and each edge's facts as parts of one UNION ALL (a round
    trip each, not 2 + 4 per edge), built once per window shape (bound parameters:
    whole_start/whole_end days, edgeN_start/edgeN_end times)."""
    key = (id(catalog), shape)
    if (found := _score_statement_cache.get(key)) is not None:
        return found
    bounded_start, bounded_end, whole, edges = shape
    rate_parts: list[Select[Any]] = []
    rating_parts: list[Select[Any]] = []
    if whole:
        for table, parts, columns in (
            (
                indicator_day,
                rate_parts,
                [
                    indicator_day.c.indicator,
                    _counted(indicator_day.c.hits),
                    _counted(indicator_day.c.n),
                ],
            ),
            (
                rating_day,
                rating_parts,
                [_counted(rating_day.c[c]).label(c) for c in RATING_COUNTERS],
            ),
        ):
            days = []
            if bounded_start:
                days.append(table.c.day >= bindparam("whole_start"))
            if bounded_end:
                days.append(table.c.day < bindparam("whole_end"))
            grouped = [table.c.dimension_value]
            if table is indicator_day:
                days.append(indicator_day.c.indicator.in_(SCORE_RATES))
                grouped.append(indicator_day.c.indicator)
            parts.append(
                select(table.c.dimension_value, *columns)
                .where(table.c.dimension == "technician_id", *days)
                .group_by(*grouped)
            )
    for edge in EDGES[:edges]:
        bound: dict[str, Any] = {
            "start": bindparam(f"{edge}_start"),
            "end": bindparam(f"{edge}_end"),
        }
        bounds = SliceFilter(**bound)
        for name in SCORE_RATES:
            indicator = catalog[name]
            technician = indicator.table.c[indicator.technician]
            rate_parts.append(
                select(
                    technician,
                    literal(name, Text),
                    func.count().filter(cast(indicator.value, Boolean)),
                    func.count(),
                )
                .where(*conditions(indicator, bounds), technician.is_not(None))
                .group_by(technician)
            )
        rating_parts.append(_edge_ratings(catalog, bounds))
    found = (
        union_all(*rate_parts) if rate_parts else None,
        union_all(*rating_parts) if rating_parts else None,
    )
    _score_statement_cache[key] = found
    return found


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
    params: dict[str, Any] = {}
    if span.whole is not None:
        first, end = span.whole
        if first is not None:
            params["whole_start"] = first
        if end is not None:
            params["whole_end"] = end
    for edge, (start, end_at) in zip(EDGES, span.edges, strict=False):
        params[f"{edge}_start"], params[f"{edge}_end"] = start, end_at
    shape = (
        span.whole is not None and span.whole[0] is not None,
        span.whole is not None and span.whole[1] is not None,
        span.whole is not None,
        len(span.edges),
    )
    rate_statement, rating_statement = _score_statements(catalog, shape)
    if rate_statement is None or rating_statement is None:  # an empty window
        return TechnicianSums(rates={name: {} for name in SCORE_RATES}, ratings={})
    for technician, name, hits, n in await conn.execute(rate_statement, params):
        found = rates[name][technician]
        found[0] += int(hits)
        found[1] += int(n)
    for row in await conn.execute(rating_statement, params):
        counters = ratings[row[0]]
        for c, number in zip(RATING_COUNTERS, row[1:], strict=True):
            counters[c] += int(number or 0)
    return TechnicianSums(
        rates={
            name: {t: (v[0], v[1]) for t, v in by.items()} for name, by in rates.items()
        },
        ratings=dict(ratings),
    )


def _edge_ratings(catalog: Mapping[str, Indicator], edge: SliceFilter) -> Select[Any]:
    """The rating counters per technician over one partial range, from the facts."""
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
    return (
        select(r.technician_id, *columns)
        .where(*conditions(catalog["csat"], edge), r.technician_id.is_not(None))
        .group_by(r.technician_id)
    )
