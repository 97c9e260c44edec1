"""The demo history's plan: its shape, its durations and its determinism."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Final

import pytest

from services.demo_history import (
    EXCELLENT,
    HISTORY_DAYS,
    POOR,
    TECHNICIANS,
    History,
    PlannedOrder,
    Route,
    Step,
    plan_history,
)
from services.simulator import UNCOVERED_REGION

NOW: Final = datetime(2026, 12, 4, 10, 17, tzinfo=UTC)


@pytest.fixture(scope="module")
def history() -> History:
    return plan_history(NOW)


def first(order: PlannedOrder, type_: str) -> Step | None:
    return next((step for step in order.steps if step.type == type_), None)


def first_final_completion(order: PlannedOrder) -> Step | None:
    return next(
        (
            step
            for step in order.steps
            if step.type == "completed"
            and step.body["data"]["outcome"] != "follow_up_required"
        ),
        None,
    )


def test_a_few_hundred_orders_span_the_past_thirty_days(history: History) -> None:
    created = [order.steps[0].at for order in history.orders]
    assert 250 <= len(history.orders) <= 350
    assert min(created) >= NOW - timedelta(days=HISTORY_DAYS)
    assert max(created) < NOW
    days = {(NOW - at).days for at in created}
    assert days == set(range(HISTORY_DAYS))  # every day has orders
    types = Counter(type_ for order in history.orders for type_ in order.types())
    for story in ("declined", "reopened", "complaint_filed", "quote_rejected"):
        assert types[story] >= 5, types
    assert types["rated"] > len(history.orders) / 2


def test_every_order_steps_forward_in_time_and_none_comes_after_now(
    history: History,
) -> None:
    for order in history.orders:
        times = [step.at for step in order.steps]
        assert times == sorted(times)
        assert times[-1] <= NOW
        assert order.steps[0].route is Route.CREATE
        for step in order.steps:
            assert datetime.fromisoformat(step.body["time"]) == step.at


def test_durations_are_those_of_field_work_not_of_a_script(history: History) -> None:
    accepts, arrivals, resolutions = [], [], []
    for order in history.orders:
        created = order.steps[0].at
        if (accepted := first(order, "accepted")) is not None:
            accepts.append((accepted.at - created).total_seconds())
        if (arrived := first(order, "arrived")) is not None:
            arrivals.append((arrived.at - created).total_seconds())
        if (done := first_final_completion(order)) is not None:
            resolutions.append((done.at - created).total_seconds())
    assert 5 * 60 <= statistics.median(accepts) <= 3 * 3600  # minutes
    assert 1 * 3600 <= statistics.median(arrivals) <= 24 * 3600  # hours
    assert 3 * 3600 <= statistics.median(resolutions) <= 48 * 3600  # hours
    assert min(resolutions) > 30 * 60


def test_the_strong_and_the_weak_technicians_are_clearly_apart(
    history: History,
) -> None:
    fixed, finals = Counter[str](), Counter[str]()
    for order in history.orders:
        if (done := first_final_completion(order)) is None:
            continue
        finals[done.subject] += 1
        if done.body["data"]["outcome"] == "fixed" and "reopened" not in order.types():
            fixed[done.subject] += 1
    rates = {t: fixed[t] / finals[t] for t in finals}
    strong = [t.technician_id for t in TECHNICIANS if t.profile is EXCELLENT]
    weak = [t.technician_id for t in TECHNICIANS if t.profile is POOR]
    assert min(finals[t] for t in strong + weak) >= 10
    assert min(rates[t] for t in strong) > max(rates[t] for t in weak) + 0.15


def test_the_live_end_waits_in_the_uncovered_district_and_on_a_silent_technician(
    history: History,
) -> None:
    uncovered = [o for o in history.orders if o.region == UNCOVERED_REGION]
    assert len(uncovered) >= 3
    assert all(o.types() == ["created"] for o in uncovered)
    unanswered = [o for o in history.orders if o.types() == ["created", "assigned"]]
    assert any(NOW - o.steps[-1].at > timedelta(minutes=15) for o in unanswered)


def test_the_plan_is_the_same_for_the_same_seed_and_now() -> None:
    one, two = plan_history(NOW, orders=40), plan_history(NOW, orders=40)
    assert one == two
    other = plan_history(NOW, orders=40, seed=16)
    assert {s.body["id"] for o in one.orders for s in o.steps}.isdisjoint(
        s.body["id"] for o in other.orders for s in o.steps
    )


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        plan_history(datetime(2026, 12, 4, 10, 17))  # noqa: DTZ001 - the point
