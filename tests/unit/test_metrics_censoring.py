"""domain.sla_measure and holder_at: the censoring rule row by row, as the rollups
count it (the catalog's SQL is held to it by the integration tests)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.metrics.domain import (
    DEFAULT_SLA,
    SlaMeasure,
    holder_at,
    sla_measure,
    sla_technician,
)
from services.metrics.settings import AlertRuleSetting, MetricsSettings

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


def accept(of: dict[str, Any]) -> tuple[datetime, bool, str | None] | None:
    """(at, met, charged technician) of the accept SLA."""
    measure = sla_measure(of, "first_accepted_at", DEFAULT_SLA.accept)
    if measure is None:
        return None
    assert isinstance(measure, SlaMeasure)
    return (
        measure.at,
        measure.met,
        sla_technician(of, measure, "accepted_technician_id"),
    )


def test_accepted_at_or_before_the_target_is_met_then() -> None:
    on_time = row(first_accepted_at=DUE, accepted_technician_id="a")
    assert accept(on_time) == (DUE, True, "a")


def test_late_or_never_accepted_is_a_breach_at_the_target() -> None:
    held = spans(("a", 1, None))
    late = row(first_accepted_at=at(300), accepted_technician_id="b", assignments=held)
    assert accept(late) == (DUE, False, "a")
    assert accept(row(assignments=held)) == (DUE, False, "a")
    assert accept(row()) == (DUE, False, None)  # nobody held it


def test_cancelled_at_or_before_the_target_is_left_out_after_it_is_a_breach() -> None:
    assert accept(row(cancelled_at=DUE)) is None
    assert accept(row(cancelled_at=at(241))) == (DUE, False, None)


def test_the_holder_at_an_instant_includes_an_end_at_that_instant() -> None:
    held = spans(("a", 1, 240), ("b", 240, None))
    assert holder_at(held, DUE) == "a"  # expired as the target passed
    assert holder_at(held, at(241)) == "b"
    assert holder_at(held, at(0)) is None
    assert holder_at(spans(("a", 1, 100)), DUE) is None  # declined long before


def test_a_rule_on_the_overdue_count_is_read_now_and_per_order_attribute() -> None:
    rule = {
        "name": "overdue",
        "indicator": "orders_unaccepted_overdue",
        "statistic": "value",
        "scope": "region",
        "window": timedelta(0),
        "above": True,
        "threshold": 2.5,
        "min_samples": 1,
    }
    assert AlertRuleSetting.model_validate(rule).window == timedelta(0)
    for hostile in (
        {"window": timedelta(hours=1)},  # a count kept now has no window
        {"statistic": "p90"},
        {"scope": "technician_id"},
    ):
        with pytest.raises(ValidationError):
            AlertRuleSetting.model_validate(rule | hostile)
    # Every other indicator still needs a positive window.
    with pytest.raises(ValidationError):
        AlertRuleSetting.model_validate(
            rule | {"indicator": "csat", "window": timedelta(0)}
        )
    # The default rules include it, and the settings accept them as they are.
    defaults = MetricsSettings().alert_rules
    assert any(r.indicator == "orders_unaccepted_overdue" for r in defaults)
