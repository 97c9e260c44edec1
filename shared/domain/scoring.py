"""Technician evaluation of indicators.md: weighted composite and fuzzy grade.

Two independent views of one technician, both from the same window of facts:

- the composite: five sub-scores on 0..100, weighted (the seeds' analytic-hierarchy
  weights), renormalised over the sub-scores that have data;
- the fuzzy comprehensive evaluation: B = W x R over the rating dimensions, its
  grade (the level of largest membership) and score B . (100, 80, 60, 40, 20).

The inputs are aggregates (`TechnicianInputs`); the metrics service computes them in
SQL, and `technician_inputs` is the same aggregation over in-memory facts, the
reference the SQL is tested against.

The fuzzy evaluation uses exact fractions, so that equal memberships are equal and
a tie between grades is decided by the rule, not by rounding.

Pure domain: imports only the stdlib and pydantic, never an I/O framework, and reads
no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from math import isfinite, lcm
from types import MappingProxyType
from typing import Annotated, Final, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.indicators import OrderFacts, RatingFact, SlaPolicy


class SubScore(StrEnum):
    QUALITY = "quality"
    ATTITUDE = "attitude"
    RESPONSE = "response"
    EFFICIENCY = "efficiency"
    SATISFACTION = "satisfaction"


class Dimension(StrEnum):
    """The rating dimensions of a `rated` event's `dimensions`."""

    ATTITUDE = "attitude"
    PROFESSIONALISM = "professionalism"
    COMMUNICATION = "communication"
    PUNCTUALITY = "punctuality"
    PRICE_FAIRNESS = "price_fairness"


class Grade(StrEnum):
    VERY_SATISFIED = "very_satisfied"
    SATISFIED = "satisfied"
    NEUTRAL = "neutral"
    DISSATISFIED = "dissatisfied"
    VERY_DISSATISFIED = "very_dissatisfied"


# Membership vectors, counts and level scores are all ordered by level 5, 4, 3, 2, 1.
LEVELS: Final = (5, 4, 3, 2, 1)
GRADES: Final = (
    Grade.VERY_SATISFIED,
    Grade.SATISFIED,
    Grade.NEUTRAL,
    Grade.DISSATISFIED,
    Grade.VERY_DISSATISFIED,
)

Count: TypeAlias = Annotated[int, Field(ge=0)]
# Ratings at levels 5, 4, 3, 2, 1 of one dimension.
LevelCounts: TypeAlias = tuple[Count, Count, Count, Count, Count]
LevelScores: TypeAlias = tuple[float, float, float, float, float]
Rate: TypeAlias = Annotated[float, Field(ge=0.0, le=1.0)]
Mean: TypeAlias = Annotated[float, Field(ge=1.0, le=5.0)]

_Key = TypeVar("_Key", bound=StrEnum)

DEFAULT_WEIGHTS: Final[Mapping[SubScore, float]] = MappingProxyType(
    {
        SubScore.QUALITY: 0.45,
        SubScore.ATTITUDE: 0.25,
        SubScore.RESPONSE: 0.15,
        SubScore.EFFICIENCY: 0.10,
        SubScore.SATISFACTION: 0.05,
    }
)
DEFAULT_DIMENSION_WEIGHTS: Final[Mapping[Dimension, float]] = MappingProxyType(
    dict.fromkeys(Dimension, 0.2)
)


def _checked_weights(
    weights: Mapping[_Key, float], keys: type[_Key], name: str
) -> Mapping[_Key, float]:
    if set(weights) != set(keys):
        raise ValueError(
            f"{name} must give a weight to each of {[str(k) for k in keys]}"
        )
    if any(not isfinite(w) or w < 0 for w in weights.values()):
        raise ValueError(f"{name} must be finite and not negative")
    if sum(weights.values()) <= 0:
        raise ValueError(f"{name} must not all be zero")
    # A private read-only copy: the caller's dict cannot change a policy later.
    return MappingProxyType({key: weights[key] for key in keys})


@dataclass(frozen=True, slots=True)
class ScoringPolicy:
    """Weights and thresholds of the technician evaluation (indicators.md defaults).

    Weights need not sum to 1: only their ratios matter, since both the composite
    and B are renormalised over what has data.
    """

    weights: Mapping[SubScore, float] = field(default_factory=lambda: DEFAULT_WEIGHTS)
    dimension_weights: Mapping[Dimension, float] = field(
        default_factory=lambda: DEFAULT_DIMENSION_WEIGHTS
    )
    level_scores: LevelScores = (100.0, 80.0, 60.0, 40.0, 20.0)
    # Fewer final completions than this in the window: listed, not ranked.
    min_samples: int = 5
    version: str = "scoring-1"

    def __post_init__(self) -> None:
        # object.__setattr__: the documented way to set a frozen dataclass's field
        # in __post_init__.
        object.__setattr__(
            self, "weights", _checked_weights(self.weights, SubScore, "weights")
        )
        object.__setattr__(
            self,
            "dimension_weights",
            _checked_weights(self.dimension_weights, Dimension, "dimension_weights"),
        )
        if not all(isfinite(score) for score in self.level_scores):
            raise ValueError("level_scores must be finite")
        if self.min_samples < 0:
            raise ValueError("min_samples must not be negative")


_VALUE = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TechnicianInputs(BaseModel):
    """One technician's aggregates over a window; None where there is no data.

    Attribution (indicators.md, "Time base"): first_time_fix_rate and
    final_completions over the orders whose first final completion the technician
    posted; sla_accept_rate over the orders they accepted first, sla_arrival_rate
    over those they arrived at first; attitude_mean, csat and level_counts over the
    ratings attributed to them.
    """

    model_config = _VALUE

    technician_id: str
    final_completions: Count
    first_time_fix_rate: Rate | None = None
    # Per rating, `dimensions.attitude` if given, else its overall `score`
    # (RatingFact.attitude_value); then the mean over the technician's ratings.
    attitude_mean: Mean | None = None
    sla_accept_rate: Rate | None = None
    sla_arrival_rate: Rate | None = None
    csat: Rate | None = None
    # Ratings per level 5..1 for each dimension; a rating that leaves a dimension out
    # is not counted in it (the overall score does not stand in for a dimension).
    level_counts: Mapping[Dimension, LevelCounts] = Field(default_factory=dict)


class FuzzyResult(BaseModel):
    """The fuzzy comprehensive evaluation of one technician."""

    model_config = _VALUE

    # B: membership of levels 5..1, summing to 1.
    membership: tuple[float, float, float, float, float]
    grade: Grade
    score: float
    # The dimensions that had ratings, so took part in B.
    dimensions: tuple[Dimension, ...]


class TechnicianScore(BaseModel):
    """Everything /v1/technicians/scores reports for one technician."""

    model_config = _VALUE

    technician_id: str
    sub_scores: Mapping[SubScore, float | None]
    composite: float | None
    fuzzy: FuzzyResult | None
    final_completions: int
    insufficient_data: bool
    policy_version: str
    # Set by `rank`; None when not ranked (insufficient data, or no sub-score).
    rank: int | None = None


def _percent(rate: float | None) -> float | None:
    return None if rate is None else 100.0 * rate


def sub_scores(inputs: TechnicianInputs) -> dict[SubScore, float | None]:
    """Each sub-score on 0..100, None where the technician has no data for it."""
    attitude = inputs.attitude_mean
    return {
        SubScore.QUALITY: _percent(inputs.first_time_fix_rate),
        # Stars 1..5 mapped linearly onto 0..100.
        SubScore.ATTITUDE: None if attitude is None else 100.0 * (attitude - 1) / 4,
        SubScore.RESPONSE: _percent(inputs.sla_accept_rate),
        SubScore.EFFICIENCY: _percent(inputs.sla_arrival_rate),
        SubScore.SATISFACTION: _percent(inputs.csat),
    }


def composite(
    scores: Mapping[SubScore, float | None], policy: ScoringPolicy
) -> float | None:
    """Weighted mean of the sub-scores that have data (None if none has)."""
    present = [
        (policy.weights[name], score)
        for name, score in scores.items()
        if score is not None
    ]
    total_weight = sum(weight for weight, _ in present)
    if total_weight <= 0:
        return None
    return sum(weight * score for weight, score in present) / total_weight


def fuzzy_evaluation(
    counts_by_dimension: Mapping[Dimension, LevelCounts], policy: ScoringPolicy
) -> FuzzyResult | None:
    """B = W x R over the rated dimensions, its grade and score (None: no ratings).

    R's row for a dimension is the share of its ratings at levels 5..1; dimensions
    without ratings are left out and the remaining weights renormalised. The grade is
    the level of largest membership; a tie goes to the better level, so a grade is
    never lowered by a tie (and the result does not depend on float rounding: the
    arithmetic is exact).
    """
    # Exact in integers (Fractions cost ~1 ms per technician, most of a listing of
    # 400): the row of a dimension weighted p/q with n ratings adds p x count / (q x n)
    # to a level; over the common denominator `scale` a level's membership is
    # numerators[level] / (scale x total weight), and int / int rounds correctly.
    rows: list[tuple[Dimension, int, int, LevelCounts, int]] = []
    for dimension in Dimension:  # a fixed order, whatever the mapping's
        counts = counts_by_dimension.get(dimension, (0, 0, 0, 0, 0))
        if any(count < 0 for count in counts):
            raise ValueError(f"{dimension} has a negative rating count: {counts}")
        rated = sum(counts)
        p, q = policy.dimension_weights[dimension].as_integer_ratio()
        if rated == 0 or p == 0:
            continue
        rows.append((dimension, p, q, counts, rated))
    if not rows:
        return None
    weights_scale = lcm(*(q for _, _, q, _, _ in rows))
    total_weight = sum(p * (weights_scale // q) for _, p, q, _, _ in rows)
    if total_weight == 0:
        return None
    scale = lcm(*(q * rated for _, _, q, _, rated in rows))
    numerators = [
        sum(
            p * counts[level] * (scale // (q * rated))
            for _, p, q, counts, rated in rows
        )
        for level in range(len(LEVELS))
    ]
    # membership = numerators[level] x weights_scale / (scale x total_weight)
    denominator = scale * total_weight
    membership = [n * weights_scale / denominator for n in numerators]
    # max() keeps the first of equal maxima, and levels run from best to worst.
    best = max(range(len(LEVELS)), key=numerators.__getitem__)
    ratios = [s.as_integer_ratio() for s in policy.level_scores]
    scores_scale = lcm(*(b for _, b in ratios))
    weighted = sum(
        n * a * (scores_scale // b)
        for n, (a, b) in zip(numerators, ratios, strict=True)
    )
    score = weighted * weights_scale / (denominator * scores_scale)
    b5, b4, b3, b2, b1 = membership
    return FuzzyResult(
        membership=(b5, b4, b3, b2, b1),
        grade=GRADES[best],
        score=score,
        dimensions=tuple(dimension for dimension, _, _, _, _ in rows),
    )


def evaluate(inputs: TechnicianInputs, policy: ScoringPolicy) -> TechnicianScore:
    """Sub-scores, composite and fuzzy evaluation of one technician."""
    scores = sub_scores(inputs)
    return TechnicianScore(
        technician_id=inputs.technician_id,
        sub_scores=scores,
        composite=composite(scores, policy),
        fuzzy=fuzzy_evaluation(inputs.level_counts, policy),
        final_completions=inputs.final_completions,
        insufficient_data=inputs.final_completions < policy.min_samples,
        policy_version=policy.version,
    )


def rank(scores: Iterable[TechnicianScore]) -> list[TechnicianScore]:
    """All scores, the ranked ones first with rank 1, 2, ...; then the unranked.

    Ranked: enough data and a composite, by composite descending; equal composites
    by technician id, and every technician gets a distinct rank. Unranked
    (insufficient data or no composite) follow by technician id, with rank None.
    """
    ranked: list[TechnicianScore] = []
    unranked: list[TechnicianScore] = []
    for score in scores:
        if score.insufficient_data or score.composite is None:
            unranked.append(score.model_copy(update={"rank": None}))
        else:
            ranked.append(score)
    ranked.sort(key=lambda s: (-(s.composite or 0.0), s.technician_id))
    unranked.sort(key=lambda s: s.technician_id)
    return [
        *(s.model_copy(update={"rank": n}) for n, s in enumerate(ranked, start=1)),
        *unranked,
    ]


# --- the reference aggregation -----------------------------------------------------


def _within(at: datetime | None, start: datetime | None, end: datetime | None) -> bool:
    # indicators.md: `from` inclusive, `to` exclusive.
    return (
        at is not None and (start is None or at >= start) and (end is None or at < end)
    )


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _dimension_stars(rating: RatingFact) -> tuple[tuple[Dimension, int | None], ...]:
    return (
        (Dimension.ATTITUDE, rating.attitude),
        (Dimension.PROFESSIONALISM, rating.professionalism),
        (Dimension.COMMUNICATION, rating.communication),
        (Dimension.PUNCTUALITY, rating.punctuality),
        (Dimension.PRICE_FAIRNESS, rating.price_fairness),
    )


def count_levels(ratings: Iterable[RatingFact]) -> dict[Dimension, LevelCounts]:
    """Ratings per level 5..1 of each dimension (dimensions nobody rated: zeros)."""
    counts = {dimension: [0, 0, 0, 0, 0] for dimension in Dimension}
    for rating in ratings:
        for dimension, stars in _dimension_stars(rating):
            if stars is not None:
                counts[dimension][LEVELS.index(stars)] += 1
    return {d: (c[0], c[1], c[2], c[3], c[4]) for d, c in counts.items()}


def technician_inputs(
    technician_id: str,
    *,
    orders: Iterable[OrderFacts],
    ratings: Iterable[RatingFact],
    sla: SlaPolicy,
    start: datetime | None = None,
    end: datetime | None = None,
) -> TechnicianInputs:
    """One technician's inputs over a window, from facts and ratings in memory.

    Each measurement is counted in the window of its own "at" time and attributed
    as `TechnicianInputs` describes; what the SQL aggregates must agree with.
    """
    orders = list(orders)
    finals = [
        f.first_time_fix
        for f in orders
        if f.first_final_technician_id == technician_id
        and _within(f.first_final_at, start, end)
        and f.first_time_fix is not None
    ]
    accepts = [
        met
        for f in orders
        if f.accepted_technician_id == technician_id
        and _within(f.first_accepted_at, start, end)
        and (met := f.sla_accept_met(sla)) is not None
    ]
    arrivals = [
        met
        for f in orders
        if f.arrived_technician_id == technician_id
        and _within(f.first_arrived_at, start, end)
        and (met := f.sla_arrival_met(sla)) is not None
    ]
    own = [
        r
        for r in ratings
        if r.technician_id == technician_id and _within(r.rated_at, start, end)
    ]
    return TechnicianInputs(
        technician_id=technician_id,
        final_completions=len(finals),
        first_time_fix_rate=_share(finals),
        attitude_mean=(sum(r.attitude_value for r in own) / len(own) if own else None),
        sla_accept_rate=_share(accepts),
        sla_arrival_rate=_share(arrivals),
        csat=_share([r.score >= 4 for r in own]),
        level_counts=count_levels(own),
    )
