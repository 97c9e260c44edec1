"""Technician evaluation: per-technician aggregates in SQL, scoring in the pure domain."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.metrics.catalog import Indicator, SliceFilter, conditions
from services.metrics.policy import IndicatorPolicy
from services.metrics.queries import provenance, slice_filter
from services.metrics.rollup import SCORE_RATES, rolled_technician_sums
from services.metrics.schemas import FuzzyOut, Slice, TechnicianScore, TechnicianScores
from services.metrics.store import rating
from shared.domain.scoring import (
    GRADES,
    LEVELS,
    Dimension,
    ScoringPolicy,
    TechnicianInputs,
    evaluate,
    rank,
)
from shared.domain.scoring import TechnicianScore as DomainScore


async def _rates(
    conn: AsyncConnection, indicator: Indicator, where: SliceFilter
) -> dict[str, tuple[int, int]]:
    """(numerator, denominator) of a rate indicator per technician."""
    technician = indicator.table.c[indicator.technician]
    rows = await conn.execute(
        select(
            technician.label("technician_id"),
            func.count().filter(indicator.value).label("numerator"),
            func.count().label("denominator"),
        )
        .where(and_(*conditions(indicator, where)), technician.is_not(None))
        .group_by(technician)
    )
    return {r.technician_id: (int(r.numerator), int(r.denominator)) for r in rows}


async def _ratings(
    conn: AsyncConnection, where: SliceFilter, catalog: Mapping[str, Indicator]
) -> dict[str, dict[str, Any]]:
    columns = [
        rating.c.technician_id,
        func.avg(func.coalesce(rating.c.attitude, rating.c.score)).label(
            "attitude_mean"
        ),
        func.count().label("ratings"),
        func.count().filter(rating.c.score >= 4).label("satisfied"),
    ]
    for dimension in Dimension:
        column = rating.c[dimension.value]
        columns += [
            func.count().filter(column == level).label(f"{dimension.value}_{level}")
            for level in LEVELS
        ]
    csat = catalog["csat"]
    rows = await conn.execute(
        select(*columns)
        .where(and_(*conditions(csat, where)), rating.c.technician_id.is_not(None))
        .group_by(rating.c.technician_id)
    )
    return {row.technician_id: dict(row._mapping) for row in rows}


def _inputs(
    technician_id: str,
    fixes: dict[str, tuple[int, int]],
    accepts: dict[str, tuple[int, int]],
    arrivals: dict[str, tuple[int, int]],
    ratings: dict[str, dict[str, Any]],
) -> TechnicianInputs:
    def share(table: dict[str, tuple[int, int]]) -> float | None:
        numerator, denominator = table.get(technician_id, (0, 0))
        return numerator / denominator if denominator else None

    rated = ratings.get(technician_id)
    counts: dict[Dimension, tuple[int, int, int, int, int]] = {}
    if rated is not None:
        for dimension in Dimension:
            levels = tuple(int(rated[f"{dimension.value}_{level}"]) for level in LEVELS)
            if any(levels):
                counts[dimension] = levels  # type: ignore[assignment]  # five counts
    return TechnicianInputs(
        technician_id=technician_id,
        final_completions=fixes.get(technician_id, (0, 0))[1],
        first_time_fix_rate=share(fixes),
        attitude_mean=None if rated is None else float(rated["attitude_mean"]),
        sla_accept_rate=share(accepts),
        sla_arrival_rate=share(arrivals),
        csat=None if rated is None else int(rated["satisfied"]) / int(rated["ratings"]),
        level_counts=counts,
    )


async def get_scores(
    conn: AsyncConnection, slice_: Slice, *, policy: IndicatorPolicy
) -> TechnicianScores:
    """Every technician with data in the window, scored and ranked."""
    where = slice_filter(slice_)
    async with conn.begin():
        await conn.exec_driver_sql(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
        )
        as_of = await provenance(conn, policy_version=policy.version)
        catalog = policy.catalog
        rolled = await rolled_technician_sums(conn, where, catalog, policy.sla)
        if rolled is not None:
            fixes, accepts, arrivals = (
                {t: v for t, v in rolled.rates[name].items() if v[1]}
                for name in SCORE_RATES
            )
            ratings = {
                technician: {
                    **counters,
                    "attitude_mean": counters["attitude_sum"] / counters["ratings"],
                }
                for technician, counters in rolled.ratings.items()
                if counters["ratings"]
            }
        else:
            fixes = await _rates(conn, catalog["first_time_fix_rate"], where)
            accepts = await _rates(conn, catalog["sla_accept_rate"], where)
            arrivals = await _rates(conn, catalog["sla_arrival_rate"], where)
            ratings = await _ratings(conn, where, catalog)
    technicians = sorted(set(fixes) | set(accepts) | set(arrivals) | set(ratings))
    return TechnicianScores(
        window=slice_.window,
        as_of=as_of,
        items=scored_items(
            technicians, fixes, accepts, arrivals, ratings, policy.scoring
        ),
    )


# A technician's score is a pure function of its inputs and the scoring policy: kept
# per (policy, inputs), a listing re-evaluates only the technicians whose numbers
# moved (evaluate's exact fuzzy arithmetic costs ~0.2 ms each, 400 per listing).
_SCORED: dict[tuple[Any, ...], tuple[DomainScore, TechnicianScore]] = {}
_SCORED_MAX: Final = 10_000  # ~25 listings of 400 all-new technicians
_LISTINGS: dict[tuple[Any, ...], tuple[TechnicianScore, ...]] = {}
_LISTINGS_MAX: Final = 8


def _policy_key(scoring: ScoringPolicy) -> tuple[Any, ...]:
    return (
        tuple(sorted(scoring.weights.items())),
        tuple(sorted(scoring.dimension_weights.items())),
        tuple(scoring.level_scores),
        scoring.min_samples,
        scoring.version,
    )


_RATED: Final = (
    "attitude_mean",
    "ratings",
    "satisfied",
    *(f"{d.value}_{level}" for d in Dimension for level in LEVELS),
)


def _rating_key(rated: dict[str, Any] | None) -> tuple[Any, ...] | None:
    return None if rated is None else tuple(map(rated.__getitem__, _RATED))


def _item(s: DomainScore) -> TechnicianScore:
    return TechnicianScore(
        technician_id=s.technician_id,
        final_completions=s.final_completions,
        sub_scores={k.value: v for k, v in s.sub_scores.items()},
        composite=s.composite,
        fuzzy=FuzzyOut(
            grade=None if s.fuzzy is None else s.fuzzy.grade.value,
            score=None if s.fuzzy is None else s.fuzzy.score,
            membership={}
            if s.fuzzy is None
            else {g.value: m for g, m in zip(GRADES, s.fuzzy.membership, strict=True)},
        ),
        insufficient_data=s.insufficient_data,
        rank=s.rank,
    )


def scored_items(
    technicians: list[str],
    fixes: dict[str, tuple[int, int]],
    accepts: dict[str, tuple[int, int]],
    arrivals: dict[str, tuple[int, int]],
    ratings: dict[str, dict[str, Any]],
    scoring: ScoringPolicy,
) -> list[TechnicianScore]:
    """The technicians evaluated and ranked, as the listing's items."""
    policy_key = _policy_key(scoring)
    if len(_SCORED) > _SCORED_MAX:
        _SCORED.clear()
    keys = [
        (
            policy_key,
            t,
            fixes.get(t),
            accepts.get(t),
            arrivals.get(t),
            _rating_key(ratings.get(t)),
        )
        for t in technicians
    ]
    listing = tuple(keys)
    if (items := _LISTINGS.get(listing)) is not None:
        return list(items)
    by_technician: dict[str, tuple[DomainScore, TechnicianScore]] = {}
    for t, key in zip(technicians, keys, strict=True):
        if (found := _SCORED.get(key)) is None:
            score = evaluate(_inputs(t, fixes, accepts, arrivals, ratings), scoring)
            found = _SCORED[key] = (score, _item(score))
        by_technician[t] = found
    items = tuple(
        by_technician[s.technician_id][1].model_copy(update={"rank": s.rank})
        for s in rank(score for score, _ in by_technician.values())
    )
    # The last few listings whole (every technician's inputs unchanged: same ranks).
    if len(_LISTINGS) >= _LISTINGS_MAX:
        _LISTINGS.pop(next(iter(_LISTINGS)))
    _LISTINGS[listing] = items
    return list(items)
