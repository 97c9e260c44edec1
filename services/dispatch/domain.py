"""The assignment engine: who gets an order, and when an assignment expires. Pure.

Rules (events.md v2, issue 13):
- Eligible: active, skills cover the order's category, regions cover its region,
  never declined this order nor let an assignment of it expire (an expiry counts
  as a decline, events.md v2; a dispatcher may still assign them by hand), and
  below the open-order capacity ("with room").
- The technician of the order's first final completion gets a reopened order back
  when eligible.
- Otherwise, among the eligible: those under the score floor (with enough samples
  to judge) only when nobody else can; then the best 30-day composite, the fewest
  open orders, the smallest id. A technician without enough samples ranks as if at
  the floor: neither preferred over proven good work nor pushed behind it.
  Deterministic, so a replay picks the same technician.
- An assignment not accepted within its urgency's accept target expires.

Must not import any I/O framework, nor read a clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final

from shared.domain.events import Urgency
from shared.domain.indicators import SlaPolicy

DEFAULT_MAX_OPEN_ORDERS: Final = 10
DEFAULT_SCORE_FLOOR: Final = 60.0
DEFAULT_MIN_SAMPLES: Final = 5
# One source of the accept targets: indicators.md's SLA defaults.
DEFAULT_ACCEPT_TARGETS: Final[Mapping[Urgency, timedelta]] = MappingProxyType(
    {urgency: SlaPolicy().accept_within(urgency) for urgency in Urgency}
)


@dataclass(frozen=True, slots=True)
class QualityScore:
    """A technician's 30-day composite (0..100, None: not computable) and samples."""

    composite: float | None
    samples: int


@dataclass(frozen=True, slots=True)
class Candidate:
    technician_id: str
    skills: frozenset[str]
    regions: frozenset[str]
    active: bool
    open_orders: int
    quality: QualityScore | None = None


@dataclass(frozen=True, slots=True)
class AssignmentPolicy:
    """The engine's configurable limits."""

    max_open_orders: int = DEFAULT_MAX_OPEN_ORDERS
    score_floor: float = DEFAULT_SCORE_FLOOR
    min_samples: int = DEFAULT_MIN_SAMPLES
    accept_targets: Mapping[Urgency, timedelta] = field(
        default_factory=lambda: DEFAULT_ACCEPT_TARGETS
    )

    def __post_init__(self) -> None:
        if self.max_open_orders < 1:
            raise ValueError("max_open_orders must be at least 1")
        if self.min_samples < 0:
            raise ValueError("min_samples must not be negative")
        missing = set(Urgency) - set(self.accept_targets)
        if missing:
            raise ValueError(f"accept targets missing for {sorted(missing)}")
        if any(t <= timedelta(0) for t in self.accept_targets.values()):
            raise ValueError("accept targets must be positive")

    def is_proven(self, quality: QualityScore | None) -> bool:
        """Enough final completions for the composite to judge the technician."""
        return (
            quality is not None
            and quality.composite is not None
            and quality.samples >= self.min_samples
        )

    def ranking_score(self, quality: QualityScore | None) -> float:
        """The composite that ranks a technician (the floor while unproven)."""
        if quality is None or quality.composite is None or not self.is_proven(quality):
            return self.score_floor
        return quality.composite

    def is_below_floor(self, quality: QualityScore | None) -> bool:
        return self.ranking_score(quality) < self.score_floor


@dataclass(frozen=True, slots=True)
class OrderNeeds:
    """What the engine needs to know of the order waiting for a technician."""

    category: str
    region: str
    declined_by: frozenset[str] = frozenset()
    expired_for: frozenset[str] = frozenset()
    # The technician of the first final completion (a reopened order).
    previous_technician: str | None = None


def covers(candidate: Candidate, needs: OrderNeeds) -> bool:
    """Whether the technician may be offered this order at all, load aside."""
    return (
        candidate.active
        and needs.category in candidate.skills
        and needs.region in candidate.regions
        and candidate.technician_id not in needs.declined_by
        and candidate.technician_id not in needs.expired_for
    )


def is_eligible(
    candidate: Candidate, needs: OrderNeeds, policy: AssignmentPolicy
) -> bool:
    """Covers the order and has room for another open order."""
    return covers(candidate, needs) and candidate.open_orders < policy.max_open_orders


def covered_with_room(
    candidates: Iterable[Candidate], policy: AssignmentPolicy
) -> frozenset[tuple[str, str]]:
    """The (category, region) pairs some active technician with room covers."""
    return frozenset(
        (skill, region)
        for c in candidates
        if c.active and c.open_orders < policy.max_open_orders
        for skill in c.skills
        for region in c.regions
    )


def choose_technician(
    candidates: Iterable[Candidate],
    needs: OrderNeeds,
    policy: AssignmentPolicy | None = None,
) -> Candidate | None:
    """The best eligible candidate, or None when nobody can take the order."""
    policy = policy or AssignmentPolicy()
    eligible = [c for c in candidates if is_eligible(c, needs, policy)]
    if not eligible:
        return None
    for candidate in eligible:
        if candidate.technician_id == needs.previous_technician:
            return candidate
    return min(
        eligible,
        key=lambda c: (
            policy.is_below_floor(c.quality),
            -policy.ranking_score(c.quality),
            c.open_orders,
            c.technician_id,
        ),
    )


def assignment_expires_at(
    assigned_at: datetime, urgency: Urgency | None, policy: AssignmentPolicy
) -> datetime:
    """When an unanswered assignment expires (an order without urgency: normal)."""
    return assigned_at + policy.accept_targets[urgency or Urgency.NORMAL]


def expiry_cutoffs(now: datetime, policy: AssignmentPolicy) -> dict[Urgency, datetime]:
    """Per urgency, the latest assignment time that has expired by `now`."""
    return {urgency: now - target for urgency, target in policy.accept_targets.items()}
