"""domain.sla_measure and holder_at: the censoring rule row by row, as the rollups
count it (the catalog's SQL is held to it by the integration tests)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from services.metrics.domain import DEFAULT_SLA, SlaMeasure, holder_at, sla_measure

CREATED = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DUE = CREATED + timedelta(minutes=240)  # normal accept target


def at(minutes: float) -> datetime:
    return CREATED + timedelta(minutes=minutes)


def spans(*held: tuple[str, float, float | None]) -> str:
    return json.dumps(
        [
            [t, at(a).isoformat(), None if b is None else at(b).isoformat()]
            for t, a, b in held
        ]
    )


def row(**given: Any) -> dict[str, Any]:
    return {
        "urgency": "normal",
        "created_at": CREATED,
        "first_accepted_at": None,
        "accepted_technician_id": None,
        "cancelled_at": None,
        "assignments": "[]",
    } | given


def accept(of: dict[str, Any]) -> SlaMeasure | None:
    return sla_measure(
        of, "first_accepted_at", "accepted_technician_id", DEFAULT_SLA.accept
    )


def test_accepted_at_or_before_the_target_is_met_then() -> None:
    on_time = row(first_accepted_at=DUE, accepted_technician_id="a")
    assert accept(on_time) == SlaMeasure(DUE, True, "a")


def test_late_or_never_accepted_is_a_breach_at_the_target() -> None:
    held = spans(("a", 1, None))
    late = row(first_accepted_at=at(300), accepted_technician_id="b", assignments=held)
    assert accept(late) == SlaMeasure(DUE, False, "a")
    assert accept(row(assignments=held)) == SlaMeasure(DUE, False, "a")
    assert accept(row()) == SlaMeasure(DUE, False, None)  # nobody held it


def test_cancelled_at_or_before_the_target_is_left_out_after_it_is_a_breach() -> None:
    assert accept(row(cancelled_at=DUE)) is None
    assert accept(row(cancelled_at=at(241))) == SlaMeasure(DUE, False, None)


def test_the_holder_at_an_instant_includes_an_end_at_that_instant() -> None:
    held = spans(("a", 1, 240), ("b", 240, None))
    assert holder_at(held, DUE) == "a"  # expired as the target passed
    assert holder_at(held, at(241)) == "b"
    assert holder_at(held, at(0)) is None
    assert holder_at(spans(("a", 1, 100)), DUE) is None  # declined long before
