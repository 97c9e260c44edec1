"""The assignment engine's choice and the expiry clock: pure functions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.dispatch.domain import (
    DEFAULT_ACCEPT_TARGETS,
    AssignmentPolicy,
    Candidate,
    OrderNeeds,
    QualityScore,
    assignment_expires_at,
    choose_technician,
    covered_with_room,
    expiry_cutoffs,
)
from services.dispatch.settings import DispatchSettings
from shared.domain.events import Urgency
from shared.domain.indicators import SlaPolicy

CATEGORY = "air_conditioner"
REGION = "shanghai-pudong"
NEEDS = OrderNeeds(category=CATEGORY, region=REGION)
POLICY = AssignmentPolicy(max_open_orders=3, score_floor=60.0, min_samples=5)
NOW = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def tech(
    technician_id: str,
    *,
    open_orders: int = 0,
    composite: float | None = None,
    samples: int = 10,
    scored: bool = True,
    active: bool = True,
    skills: frozenset[str] = frozenset({CATEGORY}),
    regions: frozenset[str] = frozenset({REGION}),
) -> Candidate:
    return Candidate(
        technician_id=technician_id,
        skills=skills,
        regions=regions,
        active=active,
        open_orders=open_orders,
        quality=QualityScore(composite, samples) if scored else None,
    )


def chosen(*candidates: Candidate, needs: OrderNeeds = NEEDS) -> str | None:
    found = choose_technician(candidates, needs, POLICY)
    return None if found is None else found.technician_id


class TestChooseTechnician:
    def test_the_best_composite_wins_over_fewer_open_orders(self) -> None:
        assert (
            chosen(
                tech("a", open_orders=0, composite=70),
                tech("b", open_orders=2, composite=90),
            )
            == "b"
        )

    def test_equal_scores_go_to_the_fewest_open_orders_then_the_smallest_id(
        self,
    ) -> None:
        assert (
            chosen(tech("c", open_orders=1, composite=80), tech("d", composite=80))
            == "d"
        )
        assert chosen(tech("f", composite=80), tech("e", composite=80)) == "e"

    def test_a_technician_at_capacity_gets_nothing(self) -> None:
        assert chosen(tech("full", open_orders=3, composite=99)) is None
        assert (
            chosen(
                tech("full", open_orders=3, composite=99),
                tech("room", open_orders=2, composite=61),
            )
            == "room"
        )

    def test_below_the_floor_only_when_nobody_else_can(self) -> None:
        weak = tech("weak", composite=40)
        assert chosen(weak, tech("ok", open_orders=2, composite=60)) == "ok"
        assert chosen(weak, tech("full", open_orders=3, composite=95)) == "weak"

    def test_too_few_samples_rank_at_the_floor_not_below_it(self) -> None:
        newcomer = tech("newcomer", composite=10, samples=4)
        assert chosen(newcomer, tech("weak", composite=59)) == "newcomer"
        assert chosen(newcomer, tech("good", composite=61)) == "good"
        # At the floor exactly: a tie, decided by load.
        assert (
            chosen(tech("n", scored=False, open_orders=1), tech("p", composite=60))
            == "p"
        )

    def test_unscored_technicians_rank_by_load(self) -> None:
        assert (
            chosen(tech("x", scored=False, open_orders=2), tech("y", scored=False))
            == "y"
        )
        assert chosen(tech("z", composite=None, samples=50)) == "z"

    def test_ineligible_technicians_are_never_chosen(self) -> None:
        needs = OrderNeeds(
            category=CATEGORY, region=REGION, declined_by=frozenset({"d"})
        )
        assert (
            chosen(
                tech("d", composite=100),
                tech("i", composite=100, active=False),
                tech("s", composite=100, skills=frozenset({"fridge"})),
                tech("r", composite=100, regions=frozenset({"beijing"})),
                needs=needs,
            )
            is None
        )

    def test_a_technician_whose_assignment_expired_is_not_offered_it_again(
        self,
    ) -> None:
        needs = OrderNeeds(
            category=CATEGORY, region=REGION, expired_for=frozenset({"silent"})
        )
        silent = tech("silent", composite=100)
        assert chosen(silent, tech("weak", composite=10), needs=needs) == "weak"
        assert chosen(silent, needs=needs) is None

    def test_the_previous_technician_gets_a_reopened_order_back(self) -> None:
        needs = OrderNeeds(category=CATEGORY, region=REGION, previous_technician="prev")
        assert (
            chosen(
                tech("prev", open_orders=2, composite=61),
                tech("best", composite=99),
                needs=needs,
            )
            == "prev"
        )

    @pytest.mark.parametrize(
        ("previous", "needs_extra"),
        [
            (tech("prev", open_orders=3), {}),
            (tech("prev", active=False), {}),
            (tech("prev"), {"declined_by": frozenset({"prev"})}),
            (tech("prev"), {"expired_for": frozenset({"prev"})}),
        ],
        ids=["at-capacity", "inactive", "declined", "expired"],
    )
    def test_the_previous_technician_is_passed_over_when_not_free(
        self, previous: Candidate, needs_extra: dict[str, frozenset[str]]
    ) -> None:
        needs = OrderNeeds(
            category=CATEGORY,
            region=REGION,
            previous_technician="prev",
            **needs_extra,
        )
        assert chosen(previous, tech("other", composite=50), needs=needs) == "other"


def test_only_active_technicians_with_room_cover_waiting_orders() -> None:
    covered = covered_with_room(
        [
            tech("a", regions=frozenset({REGION, "beijing"})),
            tech("full", open_orders=3, skills=frozenset({"fridge"})),
            tech("off", active=False, skills=frozenset({"boiler"})),
        ],
        POLICY,
    )
    assert covered == {(CATEGORY, REGION), (CATEGORY, "beijing")}


class TestExpiry:
    def test_the_default_targets_are_the_sla_accept_targets(self) -> None:
        sla = SlaPolicy()
        assert {u: sla.accept_within(u) for u in Urgency} == DEFAULT_ACCEPT_TARGETS
        assert DEFAULT_ACCEPT_TARGETS[Urgency.EMERGENCY] == timedelta(minutes=15)
        assert DEFAULT_ACCEPT_TARGETS[Urgency.URGENT] == timedelta(minutes=60)
        assert DEFAULT_ACCEPT_TARGETS[Urgency.NORMAL] == timedelta(minutes=240)

    def test_an_assignment_expires_after_its_urgencys_target(self) -> None:
        policy = AssignmentPolicy()
        assert assignment_expires_at(NOW, Urgency.EMERGENCY, policy) == NOW + timedelta(
            minutes=15
        )
        # Without an urgency (a damaged stream): the normal target.
        assert assignment_expires_at(NOW, None, policy) == NOW + timedelta(minutes=240)

    def test_the_cutoffs_are_now_minus_each_target(self) -> None:
        cutoffs = expiry_cutoffs(NOW, AssignmentPolicy())
        for urgency, cutoff in cutoffs.items():
            assert assignment_expires_at(cutoff, urgency, AssignmentPolicy()) == NOW

    @pytest.mark.parametrize(
        "targets",
        [
            {Urgency.EMERGENCY: timedelta(minutes=1)},
            {u: timedelta(0) for u in Urgency},
        ],
    )
    def test_incomplete_or_empty_targets_are_refused(
        self, targets: dict[Urgency, timedelta]
    ) -> None:
        with pytest.raises(ValueError, match="accept targets"):
            AssignmentPolicy(accept_targets=targets)

    def test_settings_take_fractional_minutes_and_refuse_nonsense(self) -> None:
        seconds = DispatchSettings(
            accept_targets_minutes=dict.fromkeys(Urgency, 0.05)
        ).assignment_policy()
        assert seconds.accept_targets[Urgency.NORMAL] == timedelta(seconds=3)
        assert DispatchSettings().assignment_policy().accept_targets == dict(
            DEFAULT_ACCEPT_TARGETS
        )
        for hostile in ({Urgency.NORMAL: 5.0}, dict.fromkeys(Urgency, -1.0)):
            with pytest.raises(ValueError, match="accept targets"):
                DispatchSettings(accept_targets_minutes=hostile)
