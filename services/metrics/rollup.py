"""Indicators from the rollups: whole Monday-aligned UTC weeks from `indicator_week`
and `rating_week`, whole days around them from `indicator_day` and `rating_day`,
whole hours at a window's edges from `indicator_hour` and `rating_hour`, and at most
an hour at either end from the per-order facts (`domain.cut_window`); window=all
from `indicator_total` and `rating_total`.

Exact as the brute-force SQL: counts and sums add up; a nearest-rank percentile is
found in the merged bucket histogram and then picked among the per-order values of
that one bucket (`domain.bucket_of`'s bounds are exact binary fractions). A slice the
rollups do not keep, or SLA targets they were not counted with, returns None and the
caller computes from the facts.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeAlias, TypeVar

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

from services.metrics.catalog import (
    PERCENTILES,
    Indicator,
    after_now,
    censored_hints,
    conditions,
    parts,
    result,
)
from services.metrics.domain import (
    ATTRIBUTES,
    Cut,
    Kind,
    Reading,
    SlaTargets,
    SliceFilter,
    Weeks,
    bucket_bounds,
    bucket_of,
    cut_window,
    nearest_rank,
    reading,
    rollup_dimension,
    sla_json,
    split_weeks,
)
from services.metrics.store import (
    RATING_COUNTER_COLUMNS,
    RATING_LEVEL_COLUMNS,
    SCORE_COUNTER_COLUMNS,
    indicator_day,
    indicator_hour,
    indicator_total,
    indicator_week,
    rating,
    rating_day,
    rating_hour,
    rating_total,
    rating_week,
    rollup_policy,
)

RATING_COUNTERS: Final = RATING_COUNTER_COLUMNS
INDICATOR_ROLLUPS: Final = (
    indicator_week,
    indicator_day,
    indicator_hour,
    indicator_total,
)
RATING_ROLLUPS: Final = (rating_week, rating_day, rating_hour, rating_total)
SCORE_RATES: Final = ("first_time_fix_rate", "sla_accept_rate", "sla_arrival_rate")

# --- statements built once ----------------------------------------------------------

_Built = TypeVar("_Built")
_BUILT_MAX: Final = 256
_built: OrderedDict[tuple[int, Hashable], tuple[object, object]] = OrderedDict()


def built_once(owner: object, shape: Hashable, build: Callable[[], _Built]) -> _Built:
    """What `build` makes for `owner` (a catalog, an indicator, a policy) and `shape`.

    The entry holds `owner` itself, and a hit must be that very object: keyed by
    `id()` alone, a catalog freed and another allocated at its address got the dead
    one's statements (another indicator's column, other bind parameter names: a
    500 that Hypothesis found intermittently). `shape` must name everything else
    the built thing depends on, bind parameter names included.
    """
    key = (id(owner), shape)
    found = _built.get(key)
    if found is not None and found[0] is owner:
        _built.move_to_end(key)
        return found[1]  # type: ignore[return-value]  # stored by this function
    made = build()
    _built[key] = (owner, made)
    if len(_built) > _BUILT_MAX:
        _built.popitem(last=False)
    return made


# --- reading the rollups ----------------------------------------------------------------


async def rollups_usable(conn: AsyncConnection, sla: SlaTargets) -> bool:
    """Whether the rollups hold every fact, SLA hits counted under these targets.

    Also plans this transaction's statements for their parameters: asyncpg prepares
    them, and after five runs PostgreSQL's generic plan of a window's OR-ed ranges
    scanned whole tables (a 30-day window went from 75 ms to 560 ms). And without
    parallel workers: a 30-day window's ~12,000 rating rows were read by a
    parallel plan whose workers took longer to start (~25 ms on two busy cores)
    than the whole read takes in one process.
    """
    stored = (
        await conn.execute(
            select(
                # SET LOCAL, in the same round trip as the policy.
                func.set_config("plan_cache_mode", "force_custom_plan", True),
                func.set_config("max_parallel_workers_per_gather", "0", True),
                rollup_policy.c.sla,
                rollup_policy.c.complete,
            )
        )
    ).one()
    return bool(stored.complete) and stored.sla == sla_json(sla)


def _counted(counter: ColumnElement[Any]) -> ColumnElement[int]:
    """The sum of a rollup counter, in int8 arithmetic.

    sum(bigint) accumulates and answers in numeric, about twice the time of
    sum(integer) -> bigint. One period's counter of one slice stays far below 2**31;
    were one ever larger, the cast raises (out of range) rather than answering a
    wrong number.
    """
    return func.sum(cast(counter, Integer), type_=BigInteger)


@dataclass(frozen=True)
class _Shape:
    """What a cut's statements depend on: which parts, hence which parameters."""

    total: bool  # all time: the all-time rows
    weeks: tuple[bool, bool] | None  # whole weeks: their bounded sides
    days: tuple[tuple[bool, bool], ...]  # whole-day ranges: their bounded sides
    hours: int
    less: int  # whole-hour ranges subtracted (`domain.reading`)
    edges: int
    rolled_start: bool
    rolled_end: bool

    @property
    def empty(self) -> bool:
        return not (self.total or self.weeks or self.days or self.hours or self.edges)


def _weeks(read: Reading) -> Weeks:
    """The whole days read as whole weeks and days (none: all time or no day)."""
    if read.days is None or read.days == (None, None):
        return Weeks(None, ())
    return split_weeks(*read.days)


def _bounded(period: tuple[object | None, object | None]) -> tuple[bool, bool]:
    return (period[0] is not None, period[1] is not None)


def _shape(cut: Cut) -> _Shape:
    rolled = cut.rolled or (None, None)
    read = reading(cut)
    weeks = _weeks(read)
    return _Shape(
        total=read.days == (None, None),
        weeks=None if weeks.weeks is None else _bounded(weeks.weeks),
        days=tuple(_bounded(days) for days in weeks.days),
        hours=len(read.hours),
        less=len(read.less),
        edges=len(cut.edges),
        rolled_start=rolled[0] is not None,
        rolled_end=rolled[1] is not None,
    )


def _cut_params(cut: Cut) -> dict[str, Any]:
    """The bound parameters of a cut, as the statements of its shape name them."""
    params: dict[str, Any] = {}
    read = reading(cut)
    weeks = _weeks(read)
    named = [(f"day{i}", days) for i, days in enumerate(weeks.days)]
    if weeks.weeks is not None:
        named.append(("week", weeks.weeks))
    for name, (first, end) in named:
        if first is not None:
            params[f"{name}_start"] = first
        if end is not None:
            params[f"{name}_end"] = end
    for i, (start, stop) in enumerate(read.hours):
        params[f"hour{i}_start"], params[f"hour{i}_end"] = start, stop
    for i, (start, stop) in enumerate(read.less):
        params[f"less{i}_start"], params[f"less{i}_end"] = start, stop
    for i, (start, stop) in enumerate(cut.edges):
        params[f"edge{i}_start"], params[f"edge{i}_end"] = start, stop
    low, high = cut.rolled or (None, None)
    if low is not None:
        params["rolled_start"] = low
    if high is not None:
        params["rolled_end"] = high
    return params


def _rolled_parts(
    tables: tuple[Table, Table, Table, Table],
    shape: _Shape,
    columns: Callable[[Table, int], list[Any]],
    keep: Callable[[Table], list[Any]],
) -> list[Select[Any]]:
    """`columns` of the rollup rows `keep` selects over the cut's weeks, days and
    hours, of the (weekly, daily, hourly, all-time) rollup `tables`; the hours read
    `less` with their counters negated (`columns`' sign)."""
    week, day, hour, total = tables
    found: list[Select[Any]] = []
    if shape.total:
        found.append(select(*columns(total, 1)).where(*keep(total)))
    periods: list[tuple[Table, Any, str, tuple[bool, bool]]] = [
        (day, day.c.day, f"day{i}", bounded) for i, bounded in enumerate(shape.days)
    ]
    if shape.weeks is not None:
        periods.append((week, week.c.week, "week", shape.weeks))
    periods += [
        (hour, hour.c.hour, f"hour{i}", (True, True)) for i in range(shape.hours)
    ]
    periods += [
        (hour, hour.c.hour, f"less{i}", (True, True)) for i in range(shape.less)
    ]
    for table, period, name, (bounded_start, bounded_end) in periods:
        bounds = []
        if bounded_start:
            bounds.append(period >= bindparam(f"{name}_start"))
        if bounded_end:
            bounds.append(period < bindparam(f"{name}_end"))
        sign = -1 if name.startswith("less") else 1
        found.append(select(*columns(table, sign)).where(*keep(table), *bounds))
    return found


def _signed(counter: Any, sign: int) -> Any:
    """A rollup counter, negated for the hours a reading subtracts."""
    return counter if sign > 0 else (-counter).label(counter.name)


def _edge_bounds(i: int) -> SliceFilter:
    """A slice over the partial hour `edge<i>`, its bounds bound parameters."""
    bounds: dict[str, Any] = {
        "start": bindparam(f"edge{i}_start"),
        "end": bindparam(f"edge{i}_end"),
    }
    return SliceFilter(**bounds)


def _of_slice(table: Table) -> list[Any]:
    return [
        table.c.dimension == bindparam("dimension"),
        table.c.dimension_value == bindparam("member"),
    ]


def _indicator_rows(shape: _Shape) -> Select[Any]:
    """Per indicator and bucket: n, hits, total of one slice over days and hours."""

    def columns(table: Table, sign: int) -> list[Any]:
        c = table.c
        counters = [_signed(counter, sign) for counter in (c.n, c.hits, c.total)]
        return [c.indicator, c.bucket, *counters]

    both = union_all(
        *_rolled_parts(INDICATOR_ROLLUPS, shape, columns, _of_slice)
    ).subquery()
    return select(
        both.c.indicator,
        both.c.bucket,
        _counted(both.c.n),
        _counted(both.c.hits),
        func.sum(both.c.total),
    ).group_by(both.c.indicator, both.c.bucket)


def _rating_rows(shape: _Shape) -> Select[Any]:
    """The rating counters of one slice over days and hours."""

    def columns(table: Table, sign: int) -> list[Any]:
        return [_signed(table.c[c], sign) for c in RATING_COUNTERS]

    both = union_all(
        *_rolled_parts(RATING_ROLLUPS, shape, columns, _of_slice)
    ).subquery()
    counters: list[Any] = [_counted(both.c[c]).label(c) for c in RATING_COUNTERS]
    return select(*counters)


# --- indicators ---------------------------------------------------------------------


@dataclass
class Sums:
    """One indicator's mergeable parts over a window, before its final value."""

    n: int = 0
    hits: int = 0
    total: float = 0.0
    lows: int = 0  # NPS detractors
    histogram: Counter[int] = field(default_factory=Counter)  # days and hours
    edge_values: list[float] = field(default_factory=list)

    def add(self, name: str, row: Mapping[str, Any]) -> None:
        """Parts labelled as `catalog.parts` labels them."""
        self.n += int(row.get(f"{name}__n") or 0)
        self.hits += int(row.get(f"{name}__hits") or 0)
        self.lows += int(row.get(f"{name}__lows") or 0)
        self.total += float(row.get(f"{name}__total") or 0.0)
        self.edge_values += row.get(f"{name}__values") or []

    def parts(self, name: str) -> dict[str, Any]:
        return {
            f"{name}__n": self.n,
            f"{name}__hits": self.hits,
            f"{name}__total": self.total,
            f"{name}__lows": self.lows,
        }


def _add_ratings(found: dict[str, Sums], counters: Mapping[str, Any]) -> None:
    """The rating indicators from summed rating counters."""
    ratings = int(counters["ratings"] or 0)
    found["rating_mean"].n += ratings
    found["rating_mean"].total += float(counters["score_sum"] or 0)
    found["csat"].n += ratings
    found["csat"].hits += int(counters["satisfied"] or 0)
    found["nps"].n += int(counters["nps_count"] or 0)
    found["nps"].hits += int(counters["promoters"] or 0)
    found["nps"].lows += int(counters["detractors"] or 0)
    found["ratings_count"].n += ratings


_SLICED: Final = ("region", "category", "urgency", "channel", "technician_id")


def _given(where: SliceFilter) -> tuple[str, ...]:
    return tuple(name for name in _SLICED if getattr(where, name) is not None)


def _sliced(given: tuple[str, ...]) -> SliceFilter:
    bound: dict[str, Any] = {name: bindparam(name) for name in given}
    return SliceFilter(**bound)


def _edge_statements(
    catalog: Mapping[str, Indicator], edges: int, given: tuple[str, ...]
) -> list[Select[Any]]:
    """One statement per facts table: every indicator's parts over the partial
    hours `edge<i>_start`/`edge<i>_end` of a slice given by `given`'s parameters."""
    by_table: dict[Table, list[Indicator]] = defaultdict(list)
    for indicator in catalog.values():
        by_table[indicator.table].append(indicator)
    sliced = _sliced(given)
    statements = []
    for table, indicators in by_table.items():
        columns: list[Any] = []
        anywhere = []
        for indicator in indicators:
            at = indicator.at_column()
            bounds = [_edge_bounds(i) for i in range(edges)]
            ranges = or_(
                *(
                    and_(
                        at >= b.start,
                        at < b.end,
                        *censored_hints(indicator, b.start, b.end),
                    )
                    for b in bounds
                )
            )
            own = and_(*conditions(indicator, sliced), ranges)
            columns += parts(indicator, own, values=True)
            anywhere.append(ranges)
        statements.append(select(*columns).select_from(table).where(or_(*anywhere)))
    return statements


def _bucket_range(value: Any, key: int, low: Any, high: Any) -> ColumnElement[bool]:
    """One bucket's values (`domain.bucket_bounds`), as one index range."""
    if key == 0:
        return value == low  # type: ignore[no-any-return]  # a SQL comparison
    if key > 0:
        return and_(value >= low, value < high)
    return and_(value > low, value <= high)


@dataclass(frozen=True)
class _Wanted:
    """What the exact stage looks up of one distribution: the values at `ranks`
    (1-based) among the values of `buckets` over the rolled range and
    `edge_values` (the partial hours' values in those buckets)."""

    indicator: Indicator
    buckets: list[int]
    ranks: list[int]
    edge_values: list[float]


# (distribution name, bucket signs) per distribution, the rolled range's bounded
# sides and the slice's given dimensions: what the exact stage's statement depends on.
_ValuesShape: TypeAlias = tuple[
    tuple[tuple[str, tuple[int, ...]], ...], bool, bool, tuple[str, ...]
]


def _values_statement(
    catalog: Mapping[str, Indicator], shape: _ValuesShape
) -> Select[Any]:
    """The values at some ranks among some buckets' values, of every wanted
    distribution at once (`d<j>_*` parameters): those over the rolled range and the
    edge values (a parameter).

    One SELECT per bucket, each one range of the distribution's value index: an
    OR of the ranges was read as a bitmap of heap pages (one page per value, ~12 ms
    for a 30-day window's four buckets) where each range alone is read index-only.
    """
    wanted, bounded_start, bounded_end, given = shape
    bound: dict[str, Any] = {name: bindparam(name) for name in given}
    if bounded_start:
        bound["start"] = bindparam("rolled_start")
    if bounded_end:
        bound["end"] = bindparam("rolled_end")
    found = []
    for j, (name, signs) in enumerate(wanted):
        indicator = catalog[name]
        value = indicator.value
        rolled = [
            select(cast(value, Float).label("v")).where(
                *conditions(indicator, SliceFilter(**bound)),
                _bucket_range(
                    value, sign, bindparam(f"d{j}_low{i}"), bindparam(f"d{j}_high{i}")
                ),
            )
            for i, sign in enumerate(signs)
        ]
        edge = select(
            func.unnest(bindparam(f"d{j}_edge_values", type_=ARRAY(Float))).label("v")
        )
        # Numbered in value order inside the database: only the values at the
        # wanted ranks travel.
        both = union_all(*rolled, edge).subquery()
        numbered = select(
            both.c.v,
            func.row_number().over(order_by=both.c.v).label("rank"),
            func.count().over().label("values"),
        ).subquery()
        found.append(
            select(
                literal(j, Integer).label("distribution"),
                numbered.c.v,
                numbered.c.rank,
                numbered.c["values"],
            ).where(
                numbered.c.rank
                == func.any(bindparam(f"d{j}_ranks", type_=ARRAY(BigInteger)))
            )
        )
    return union_all(*found)  # type: ignore[return-value]  # a compound select


async def _picked(
    conn: AsyncConnection,
    catalog: Mapping[str, Indicator],
    where: SliceFilter,
    cut: Cut,
    wanted: list[_Wanted],
) -> list[tuple[list[float], int]]:
    """Per wanted distribution: the values at its ranks, and how many values its
    buckets hold (over the cut's rolled range, and its edge values); one statement."""
    given = _given(where)
    params = {name: getattr(where, name) for name in given} | _cut_params(cut)
    for j, one in enumerate(wanted):
        for i, key in enumerate(one.buckets):
            params[f"d{j}_low{i}"], params[f"d{j}_high{i}"], _ = bucket_bounds(key)
        params[f"d{j}_edge_values"] = one.edge_values
        params[f"d{j}_ranks"] = sorted(set(one.ranks))
    rolled = _shape(cut)
    shape: _ValuesShape = (
        tuple(
            (one.indicator.name, tuple((k > 0) - (k < 0) for k in one.buckets))
            for one in wanted
        ),
        rolled.rolled_start,
        rolled.rolled_end,
        given,
    )
    statement = built_once(
        catalog, ("values", shape), lambda: _values_statement(catalog, shape)
    )
    found: list[dict[int, float]] = [{} for _ in wanted]
    counted = [0] * len(wanted)
    for j, v, rank, values in await conn.execute(statement, params):
        found[j][int(rank)] = float(v)
        counted[j] = int(values)
    return [
        ([found[j][rank] for rank in one.ranks], counted[j])
        for j, one in enumerate(wanted)
    ]


async def _distributions(
    conn: AsyncConnection,
    catalog: Mapping[str, Indicator],
    where: SliceFilter,
    cut: Cut,
    sums: Mapping[str, Sums],
) -> dict[str, dict[str, Any]]:
    """Per distribution: count, mean, exact nearest-rank percentiles and max, as
    catalog.result reads them."""
    rows: dict[str, dict[str, Any]] = {}
    wanted: list[_Wanted] = []
    held: list[int] = []
    for indicator in catalog.values():
        if indicator.kind is not Kind.DISTRIBUTION:
            continue
        name, summed = indicator.name, sums[indicator.name]
        edge_buckets = [bucket_of(v) for v in summed.edge_values]
        merged = Counter(summed.histogram)
        merged.update(edge_buckets)
        count = summed.n + len(summed.edge_values)
        rows[name] = {
            f"{name}__n": count,
            f"{name}__total": summed.total + sum(summed.edge_values),
            f"{name}__percentiles": None,
            f"{name}__max": None,
        }
        if not count:
            continue
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
        buckets = sorted({key for key, _ in located})
        chosen = set(buckets)
        # A rank inside a bucket, as a rank among the chosen buckets' values.
        wanted.append(
            _Wanted(
                indicator,
                buckets,
                [
                    sum(merged[other] for other in buckets if other < key) + inside
                    for key, inside in located
                ],
                [
                    v
                    for v, key in zip(summed.edge_values, edge_buckets, strict=True)
                    if key in chosen
                ],
            )
        )
        held.append(sum(merged[key] for key in buckets))
    if not wanted:
        return rows
    if cut.rolled is None:  # nothing rolled: every value is an edge value
        picked = [
            ([sorted(one.edge_values)[r - 1] for r in one.ranks], len(one.edge_values))
            for one in wanted
        ]
    else:
        picked = await _picked(conn, catalog, where, cut, wanted)
    for one, holds, (values, counted) in zip(wanted, held, picked, strict=True):
        name = one.indicator.name
        if counted != holds:
            raise RuntimeError(
                f"{name}: rollup buckets {one.buckets} hold {holds} values, "
                f"the facts {counted}"
            )
        rows[name][f"{name}__percentiles"] = values[:-1]
        rows[name][f"{name}__max"] = values[-1]
    return rows


async def rolled_indicators(
    conn: AsyncConnection,
    where: SliceFilter,
    catalog: Mapping[str, Indicator],
    sla: SlaTargets,
) -> dict[str, Any] | None:
    """Every catalog indicator for a slice from the rollups, or None (not rolled)."""
    chosen = rollup_dimension(where)
    if chosen is None or not await rollups_usable(conn, sla):
        return None
    cut = cut_window(where.start, where.end)
    shape = _shape(cut)
    params = _cut_params(cut)
    sums: dict[str, Sums] = {name: Sums() for name in catalog}
    if cut.rolled is not None:
        params["dimension"], params["member"] = chosen
        rows = await conn.execute(
            built_once(_Shape, ("indicators", shape), lambda: _indicator_rows(shape)),
            params,
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
                built_once(_Shape, ("ratings", shape), lambda: _rating_rows(shape)),
                params,
            )
        ).one()
        _add_ratings(sums, dict(counters._mapping))
    if cut.edges:
        given = _given(where)
        params |= {name: getattr(where, name) for name in given}
        statements = built_once(
            catalog,
            ("edges", len(cut.edges), given),
            lambda: _edge_statements(catalog, len(cut.edges), given),
        )
        for statement in statements:
            row = (await conn.execute(statement, params)).one()._mapping
            for name, found in sums.items():
                found.add(name, row)
    for name, ahead in (await _ahead_of_now(conn, catalog, where)).items():
        hits, n = ahead.get(None, (0, 0))
        sums[name].hits -= hits
        sums[name].n -= n
    distributions = await _distributions(conn, catalog, where, cut, sums)
    return {
        name: result(indicator, distributions.get(name) or sums[name].parts(name))
        for name, indicator in catalog.items()
    }


async def _ahead_of_now(
    conn: AsyncConnection,
    catalog: Mapping[str, Indicator],
    where: SliceFilter,
    *,
    per_technician: bool = False,
) -> dict[str, dict[str | None, tuple[int, int]]]:
    """Per censored SLA rate, (hits, n) of its rows in the window but after
    `where.now` (per technician, or all under None): the rollups hold a breach at
    its instant as soon as it is known, an open order's while still ahead; a window
    reaching past now subtracts them. Only orders created within their target of
    now can be ahead (indexed ranges)."""
    now = where.now
    if now is None or (where.end is not None and where.end <= now):
        return {}
    unbounded = replace(where, now=None)
    found: dict[str, dict[str | None, tuple[int, int]]] = {}
    for indicator in catalog.values():
        if indicator.censored_targets is None:
            continue
        technician = indicator.technician_column()
        key = technician if per_technician else literal(None, Text)
        rows = await conn.execute(
            select(
                key.label("technician"),
                func.count().filter(cast(indicator.value, Boolean)),
                func.count(),
            )
            .select_from(indicator.table)
            .where(*conditions(indicator, unbounded), *after_now(indicator, now))
            .group_by(key)
        )
        found[indicator.name] = {row[0]: (int(row[1]), int(row[2])) for row in rows}
    return found


# --- technician scores -------------------------------------------------------------


@dataclass
class TechnicianSums:
    rates: dict[
        str, dict[str, tuple[int, int]]
    ]  # indicator -> technician -> (num, den)
    ratings: dict[str, dict[str, int]]  # technician -> SCORE_COUNTER_COLUMNS


def _of_technicians(table: Table) -> list[Any]:
    found = [table.c.dimension == "technician_id"]
    if "indicator" in table.c:
        found.append(table.c.indicator.in_(SCORE_RATES))
    return found


def _edge_rating_counters() -> list[ColumnElement[Any]]:
    """The rating counters over facts rows, in RATING_COUNTERS' order (as
    domain.rating_counters counts one rating)."""
    r = rating.c
    levels = [
        func.count().filter(r[name.rsplit("_", 1)[0]] == int(name.rsplit("_", 1)[1]))
        for name in RATING_LEVEL_COLUMNS
    ]
    return [
        func.count(),
        func.count().filter(r.score >= 4),
        func.sum(r.score),
        func.sum(func.coalesce(r.attitude, r.score)),
        func.count(r.nps),
        func.count().filter(r.nps >= 9),
        func.count().filter(r.nps <= 6),
        *levels,
    ]


def _score_statements(
    catalog: Mapping[str, Indicator], shape: _Shape
) -> tuple[Select[Any], Select[Any]]:
    """Per technician: the score rates (technician, indicator, hits, n) and the
    rating counters, each one statement over the rollups' days and hours and the
    facts' partial hours."""

    def rate_columns(table: Table, sign: int) -> list[Any]:
        c = table.c
        counters = [_signed(c.hits, sign), _signed(c.n, sign)]
        return [c.dimension_value.label("technician"), c.indicator, *counters]

    def rating_columns(table: Table, sign: int) -> list[Any]:
        return [
            table.c.dimension_value.label("technician"),
            *(_signed(table.c[c], sign) for c in SCORE_COUNTER_COLUMNS),
        ]

    rate_parts = _rolled_parts(INDICATOR_ROLLUPS, shape, rate_columns, _of_technicians)
    rating_parts = _rolled_parts(RATING_ROLLUPS, shape, rating_columns, _of_technicians)
    for i in range(shape.edges):
        bounds = _edge_bounds(i)
        for name in SCORE_RATES:
            indicator = catalog[name]
            technician = indicator.technician_column()
            own = and_(*conditions(indicator, bounds))
            counted = {part.name: part for part in parts(indicator, own)}
            # Labelled as the rollup parts' columns: a union takes its column
            # names from its first part, and with no whole hour that is this one.
            rate_parts.append(
                select(
                    technician.label("technician"),
                    literal(name, Text).label("indicator"),
                    counted[f"{name}__hits"].element.label("hits"),
                    counted[f"{name}__n"].element.label("n"),
                )
                .where(own, technician.is_not(None))
                .group_by(technician)
            )
        rating_parts.append(
            select(
                rating.c.technician_id.label("technician"),
                *(
                    counter.label(name)
                    for counter, name in zip(
                        _edge_rating_counters(), RATING_COUNTERS, strict=True
                    )
                    if name in SCORE_COUNTER_COLUMNS
                ),
            )
            .where(
                *conditions(catalog["csat"], bounds),
                rating.c.technician_id.is_not(None),
            )
            .group_by(rating.c.technician_id)
        )
    rates = union_all(*rate_parts).subquery()
    ratings = union_all(*rating_parts).subquery()
    return (
        select(
            rates.c.technician,
            rates.c.indicator,
            _counted(rates.c.hits),
            _counted(rates.c.n),
        ).group_by(rates.c.technician, rates.c.indicator),
        select(
            ratings.c.technician,
            *(_counted(ratings.c[c]).label(c) for c in SCORE_COUNTER_COLUMNS),
        ).group_by(ratings.c.technician),
    )


async def rolled_technician_sums(
    conn: AsyncConnection,
    where: SliceFilter,
    catalog: Mapping[str, Indicator],
    sla: SlaTargets,
) -> TechnicianSums | None:
    """Per technician: the scores' rates and rating counters; None: not rolled."""
    if any(getattr(where, d) is not None for d in ATTRIBUTES):
        return None
    if where.technician_id is not None or not await rollups_usable(conn, sla):
        return None
    cut = cut_window(where.start, where.end)
    rates: dict[str, dict[str, tuple[int, int]]] = {name: {} for name in SCORE_RATES}
    ratings: dict[str, dict[str, int]] = {}
    shape = _shape(cut)
    if shape.empty:  # an empty window
        return TechnicianSums(rates=rates, ratings=ratings)
    params = _cut_params(cut)
    rate_statement, rating_statement = built_once(
        catalog, ("scores", shape), lambda: _score_statements(catalog, shape)
    )
    for technician, name, hits, n in await conn.execute(rate_statement, params):
        rates[name][technician] = (int(hits), int(n))
    ahead = await _ahead_of_now(conn, catalog, where, per_technician=True)
    for name, per_technician in ahead.items():
        for technician, (hits, n) in per_technician.items():
            if name in rates and technician in rates[name]:
                had_hits, had_n = rates[name][technician]
                rates[name][technician] = (had_hits - hits, had_n - n)
    for row in await conn.execute(rating_statement, params):
        ratings[row[0]] = {
            c: int(number or 0)
            for c, number in zip(SCORE_COUNTER_COLUMNS, row[1:], strict=True)
        }
    return TechnicianSums(rates=rates, ratings=ratings)
