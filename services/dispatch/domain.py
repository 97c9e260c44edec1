"""The assignment engine: which technician gets an order. Pure functions.

Rule (api.md): an active technician whose skills cover the order's category and whose
regions cover its region, preferring the fewest open orders, then the best recent
quality score; never one who declined this order. Ties go to the smallest id, so the
choice is deterministic and a replay picks the same technician.

Must not import any I/O framework.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    technician_id: str
    skills: frozenset[str]
    regions: frozenset[str]
    active: bool
    open_orders: int


def is_eligible(
    candidate: Candidate, *, category: str, region: str, declined_by: frozenset[str]
) -> bool:
    """Whether the technician may be offered this order at all."""
    return (
        candidate.active
        and category in candidate.skills
        and region in candidate.regions
        and candidate.technician_id not in declined_by
    )


def choose_technician(
    candidates: Iterable[Candidate],
    *,
    category: str,
    region: str,
    declined_by: frozenset[str] = frozenset(),
    quality_scores: Mapping[str, float] | None = None,
) -> Candidate | None:
    """The best eligible candidate, or None when nobody fits."""
    scores = quality_scores or {}
    eligible = [
        c
        for c in candidates
        if is_eligible(c, category=category, region=region, declined_by=declined_by)
    ]
    if not eligible:
        return None
    return min(
        eligible,
        key=lambda c: (
            c.open_orders,
            -scores.get(c.technician_id, 0.0),
            c.technician_id,
        ),
    )
