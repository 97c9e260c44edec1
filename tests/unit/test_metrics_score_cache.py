"""The scores listing keeps evaluated technicians per (policy, inputs): a cached
listing equals one evaluated afresh, whatever moved between two listings; and
statements built once per object are never handed to another object."""

from __future__ import annotations

import functools
import random
from typing import Any

from services.metrics import rollup
from services.metrics.rollup import built_once
from services.metrics.scores import scored_items
from shared.domain.scoring import LEVELS, Dimension, ScoringPolicy

TECHNICIANS = [f"tech-{i:03d}" for i in range(30)]


Rates = dict[str, tuple[int, int]]
Numbers = tuple[Rates, Rates, Rates, dict[str, dict[str, Any]]]


def _numbers(seed: int) -> Numbers:
    draw = random.Random(seed)

    def rates() -> dict[str, tuple[int, int]]:
        found = {}
        for t in TECHNICIANS:
            n = draw.randint(0, 12)
            if n:
                found[t] = (draw.randint(0, n), n)
        return found

    ratings: dict[str, dict[str, Any]] = {}
    for t in TECHNICIANS:
        if draw.random() < 0.7:
            levels = {
                f"{d.value}_{level}": draw.randint(0, 4)
                for d in Dimension
                for level in LEVELS
            }
            rated = draw.randint(1, 20)
            ratings[t] = {
                **levels,
                "ratings": rated,
                "satisfied": draw.randint(0, rated),
                "attitude_mean": draw.uniform(1, 5),
            }
    return rates(), rates(), rates(), ratings


def _half(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Every other technician's numbers from `before`, the rest from `after`."""
    found = {}
    for i, t in enumerate(TECHNICIANS):
        source = before if i % 2 else after
        if t in source:
            found[t] = source[t]
    return found


def _fresh(numbers: Numbers, scoring: ScoringPolicy) -> list[Any]:
    rollup._built.clear()
    return scored_items(TECHNICIANS, *numbers, scoring)


def test_a_cached_listing_equals_a_fresh_one_after_any_change() -> None:
    default = ScoringPolicy()
    other = ScoringPolicy(min_samples=2, level_scores=(90.0, 70.0, 50.0, 30.0, 10.0))
    for seed in range(20):
        before, after = _numbers(seed), _numbers(seed + 1000)
        # Some technicians keep their numbers, others move.
        mixed: Numbers = (
            _half(before[0], after[0]),
            _half(before[1], after[1]),
            _half(before[2], after[2]),
            _half(before[3], after[3]),
        )
        for scoring in (default, other):
            expected = _fresh(mixed, scoring)
            _fresh(before, default)  # the cache now holds the other numbers
            scored_items(TECHNICIANS, *before, other)
            assert scored_items(TECHNICIANS, *mixed, scoring) == expected
            assert [s.rank for s in expected] != [None] * len(expected)


def test_one_moved_number_of_one_technician_is_seen() -> None:
    scoring = ScoringPolicy(min_samples=1)
    numbers = _numbers(3)
    t = next(t for t in TECHNICIANS if all(t in part for part in numbers))
    fixes, accepts, arrivals, ratings = numbers
    moved_rating = dict(ratings[t])
    moved_rating["punctuality_1"] += 1
    for moved in (
        ({**fixes, t: (fixes[t][0], fixes[t][1] + 1)}, accepts, arrivals, ratings),
        (fixes, {**accepts, t: (accepts[t][0], accepts[t][1] + 1)}, arrivals, ratings),
        (
            fixes,
            accepts,
            {**arrivals, t: (arrivals[t][0], arrivals[t][1] + 1)},
            ratings,
        ),
        (fixes, accepts, arrivals, {**ratings, t: moved_rating}),
    ):
        expected = _fresh(moved, scoring)
        cached = _fresh(numbers, scoring)
        assert cached != expected
        assert scored_items(TECHNICIANS, *moved, scoring) == expected


class Owner:
    """A catalog stand-in: what is built for it depends on its content."""

    def __init__(self, content: int) -> None:
        self.content = content


def test_what_is_built_for_a_freed_object_is_not_given_to_the_next_at_its_address() -> (
    None
):
    # CPython reuses a freed object's address (its id) at once: an id()-keyed cache
    # handed a new catalog the statements built for a dead one.
    seen_ids = set()
    for content in range(1000):
        owner = Owner(content)
        seen_ids.add(id(owner))
        assert built_once(owner, "shape", functools.partial(int, content)) == content
        del owner
    assert len(seen_ids) < 1000, "no address was reused: the test proves nothing"


def test_an_object_gets_what_was_built_for_it_and_that_shape() -> None:
    owner = Owner(1)
    built = built_once(owner, ("a", 1), list[int])
    assert built_once(owner, ("a", 1), list[int]) is built
    assert built_once(owner, ("a", 2), list[int]) is not built
    assert built_once(Owner(1), ("a", 1), list[int]) is not built
