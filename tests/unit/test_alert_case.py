"""The alert case as a fold of its steps: what is allowed when, what the fold keeps,
and an action's effect (hand-computed z-test and Mann-Whitney U p-values)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from math import erfc, sqrt
from typing import Final
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.domain.alert_case import (
    MAX_ACTIONS,
    MAX_CASE_STEPS,
    MAX_DUE_AHEAD,
    Acknowledged,
    Action,
    ActionClosed,
    ActionOpened,
    AlertCase,
    CaseEvent,
    CaseFull,
    CaseState,
    CaseStep,
    Closed,
    EffectTest,
    Owned,
    decide,
    duration_effect,
    effect_windows,
    evolve,
    fold,
    parse_scope,
    rate_effect,
)
from shared.domain.errors import InvalidRequest, TransitionNotAllowed

RAISED: Final = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ALERT: Final = UUID("00000000-0000-4000-8000-000000000001")
ACTION: Final = UUID("00000000-0000-4000-8000-0000000000a1")


def at(minutes: float) -> datetime:
    return RAISED + timedelta(minutes=minutes)


def opened(action_id: UUID = ACTION, *, due_minutes: float = 600) -> ActionOpened:
    return ActionOpened(
        action_id=action_id, text="retrain", due=at(due_minutes), owner="lead-1"
    )


def apply(steps: list[tuple[float, CaseStep]]) -> AlertCase:
    """Each step decided, then applied, at its minute after the raise."""
    case = AlertCase(ALERT, RAISED)
    for minute, step in steps:
        decide(case, step, now=at(minute))
        event = CaseEvent(
            uuid4(), ALERT, case.version + 1, "dispatcher:d", at(minute), step
        )
        case = evolve(case, event)
    return case


class TestDecide:
    def test_a_full_case_runs_acknowledge_own_act_close(self) -> None:
        case = apply(
            [
                (5, Owned(owner="lead-1")),
                (10, Acknowledged()),
                (20, opened()),
                (80, ActionClosed(action_id=ACTION, result="done")),
                (90, Closed(resolution="fixed")),
            ]
        )
        assert case.state is CaseState.CLOSED
        assert case.version == 5
        assert (case.owner, case.resolution) == ("lead-1", "fixed")
        assert case.acknowledged_by == "dispatcher:d"
        assert (case.ack_time_s, case.close_time_s) == (600.0, 5400.0)
        (action,) = case.actions
        assert (action.opened_at, action.closed_at, action.result) == (
            at(20),
            at(80),
            "done",
        )
        assert case.open_actions == 0

    @pytest.mark.parametrize(
        ("history", "step"),
        [
            pytest.param([(1, Acknowledged())], Acknowledged(), id="acknowledge-twice"),
            pytest.param([], opened(), id="action-before-acknowledging"),
            pytest.param([], Closed(resolution="x"), id="close-before-acknowledging"),
            pytest.param(
                [(1, Acknowledged())],
                ActionClosed(action_id=ACTION, result="x"),
                id="close-an-unknown-action",
            ),
            pytest.param(
                [
                    (1, Acknowledged()),
                    (2, opened()),
                    (3, ActionClosed(action_id=ACTION, result="x")),
                ],
                ActionClosed(action_id=ACTION, result="again"),
                id="close-a-closed-action",
            ),
            pytest.param(
                [(1, Acknowledged()), (2, opened())],
                opened(),
                id="the-same-action-twice",
            ),
            pytest.param(
                [(1, Acknowledged()), (2, opened())],
                Closed(resolution="x"),
                id="close-with-an-open-action",
            ),
            *(
                pytest.param(
                    [(1, Acknowledged()), (2, Closed(resolution="x"))],
                    step,
                    id=f"{step.TYPE}-after-the-close",
                )
                for step in (
                    Acknowledged(),
                    Owned(owner="o"),
                    opened(),
                    ActionClosed(action_id=ACTION, result="x"),
                    Closed(resolution="again"),
                )
            ),
        ],
    )
    def test_steps_out_of_place_are_refused(
        self, history: list[tuple[float, CaseStep]], step: CaseStep
    ) -> None:
        case = apply(history)
        with pytest.raises(TransitionNotAllowed):
            decide(case, step, now=at(10))

    @pytest.mark.parametrize(
        "due",
        [
            pytest.param(at(9), id="in-the-past"),
            pytest.param(at(10) + MAX_DUE_AHEAD + timedelta(seconds=1), id="too-far"),
        ],
    )
    def test_a_due_date_outside_the_next_year_is_invalid(self, due: datetime) -> None:
        case = apply([(1, Acknowledged())])
        step = ActionOpened(action_id=ACTION, text="t", due=due, owner="o")
        with pytest.raises(InvalidRequest) as refused:
            decide(case, step, now=at(10))
        assert [e.field for e in refused.value.errors] == ["due"]

    def test_a_due_date_at_the_bounds_is_fine(self) -> None:
        case = apply([(1, Acknowledged())])
        for due in (at(10), at(10) + MAX_DUE_AHEAD):
            decide(
                case,
                opened(due_minutes=(due - RAISED).total_seconds() / 60),
                now=at(10),
            )

    def test_a_case_holds_at_most_max_actions(self) -> None:
        history: list[tuple[float, CaseStep]] = [(1, Acknowledged())]
        history += [(2, opened(uuid4())) for _ in range(MAX_ACTIONS)]
        case = apply(history)
        with pytest.raises(CaseFull):
            decide(case, opened(uuid4()), now=at(10))

    def test_a_full_case_still_closes_its_actions_and_itself(self) -> None:
        history: list[tuple[float, CaseStep]] = [(1, Acknowledged()), (2, opened())]
        history += [(3, Owned(owner=f"o-{n}")) for n in range(MAX_CASE_STEPS - 2)]
        case = apply(history)
        assert case.version == MAX_CASE_STEPS
        with pytest.raises(CaseFull):
            decide(case, Owned(owner="one-more"), now=at(10))
        case = apply([*history, (4, ActionClosed(action_id=ACTION, result="r"))])
        decide(case, Closed(resolution="done"), now=at(10))


class TestStepFields:
    @pytest.mark.parametrize(
        "owner", ["", "x" * 129, "has space", "bad/slash", "nul\x00", "é"]
    )
    def test_an_owner_is_a_token_subject(self, owner: str) -> None:
        with pytest.raises(ValidationError):
            Owned(owner=owner)

    def test_the_longest_owner_and_text_fit(self) -> None:
        assert Owned(owner="a" * 128).owner == "a" * 128
        assert Closed(resolution="r" * 2000).resolution == "r" * 2000

    @pytest.mark.parametrize("text", ["", "   ", "r" * 2001, "nul\x00", "\ud800"])
    def test_text_is_bounded_storable_and_not_blank(self, text: str) -> None:
        with pytest.raises(ValidationError):
            Closed(resolution=text)


class TestFold:
    def test_replay_ignores_nothing_and_refuses_nothing(self) -> None:
        # evolve never refuses: a stored history out of the table's order still folds.
        step = ActionClosed(action_id=ACTION, result="r")
        event = CaseEvent(uuid4(), ALERT, 1, "admin:a", at(1), step)
        assert fold(ALERT, RAISED, [event]).version == 1

    @given(
        st.lists(
            st.sampled_from(
                [
                    Acknowledged(),
                    Owned(owner="o"),
                    opened(),
                    ActionClosed(action_id=ACTION, result="r"),
                    Closed(resolution="z"),
                ]
            ),
            max_size=12,
        )
    )
    def test_the_fold_equals_step_by_step_application(
        self, steps: list[CaseStep]
    ) -> None:
        case, events = AlertCase(ALERT, RAISED), []
        for minute, step in enumerate(steps, start=1):
            try:
                decide(case, step, now=at(minute))
            except TransitionNotAllowed:
                continue
            event = CaseEvent(uuid4(), ALERT, case.version + 1, "d:x", at(minute), step)
            events.append(event)
            case = evolve(case, event)
        assert fold(ALERT, RAISED, events) == case
        assert case.version == len(events)


class TestEffect:
    def test_the_windows_are_the_rule_length_before_opening_and_after_closing(
        self,
    ) -> None:
        action = Action(ACTION, "t", at(600), "o", at(20), "d:x", closed_at=at(80))
        windows = effect_windows(action, timedelta(hours=1))
        assert windows is not None
        assert (windows.before_start, windows.before_end) == (at(-40), at(20))
        assert (windows.after_start, windows.after_end) == (at(80), at(140))
        open_action = Action(ACTION, "t", at(600), "o", at(20), "d:x")
        assert effect_windows(open_action, timedelta(hours=1)) is None

    def test_rates_by_the_two_proportion_z_test(self) -> None:
        # 5/20 before, 15/20 after: pooled 0.5, se = sqrt(0.25 x 0.1), z = 0.5 / se
        # = sqrt(10) = 3.1623; p = erfc(z / sqrt 2) = 0.0015654.
        effect = rate_effect((5, 20), (15, 20))
        assert effect.test is EffectTest.TWO_PROPORTION_Z
        assert (effect.before, effect.after) == (0.25, 0.75)
        assert effect.difference == pytest.approx(0.5)
        assert effect.p_value == pytest.approx(erfc(sqrt(10) / sqrt(2)))
        assert effect.p_value == pytest.approx(0.0015654, abs=1e-7)
        assert (effect.samples_before, effect.samples_after) == (20, 20)

    def test_durations_by_the_mann_whitney_u_test(self) -> None:
        # U = 0 of 9 pairs; mean 4.5; variance 3 x 3 x 7 / 12 = 5.25; continuity:
        # z = (4.5 - 0.5) / sqrt(5.25) = 1.7457; p = 0.080856.
        effect = duration_effect([10.0, 20.0, 30.0], [40.0, 50.0, 60.0])
        assert effect.test is EffectTest.MANN_WHITNEY_U
        assert (effect.statistic, effect.before, effect.after) == ("median", 20.0, 50.0)
        assert effect.difference == 30.0
        assert effect.p_value == pytest.approx(erfc(4 / sqrt(5.25) / sqrt(2)))
        assert effect.p_value == pytest.approx(0.0808556, abs=1e-7)

    def test_an_empty_window_has_no_test_and_says_why(self) -> None:
        assert rate_effect((0, 0), (3, 4)).reason == "empty sample"
        assert duration_effect([], [1.0]).p_value is None


def test_a_scope_splits_at_its_first_colon() -> None:
    assert parse_scope("technician_id:ops:7") == ("technician_id", "ops:7")
    assert parse_scope("region:r-1") == ("region", "r-1")
