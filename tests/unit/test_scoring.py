"""Technician evaluation (shared.domain.scoring) on hand-computed inputs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import pytest

from shared.domain import events
from shared.domain.actors import Actor
from shared.domain.indicators import (
    OrderFacts,
    RatingFact,
    SlaPolicy,
    derive_facts,
    rating_fact,
)
from shared.domain.lifecycle import OrderStatus
from shared.domain.scoring import (
    Dimension,
    FuzzyResult,
    Grade,
    LevelCounts,
    ScoringPolicy,
    SubScore,
    TechnicianInputs,
    TechnicianScore,
    composite,
    count_levels,
    evaluate,
    fuzzy_evaluation,
    rank,
    sub_scores,
    technician_inputs,
)
from tests.builders import T0, Story, advance_to, make_technician, story_at

POLICY = ScoringPolicy()
NO_RATINGS: LevelCounts = (0, 0, 0, 0, 0)


def inputs(**overrides: object) -> TechnicianInputs:
    """A technician with data for every sub-score (hand-computed below)."""
    fields: dict[str, object] = {
        "technician_id": "tech-a",
        "final_completions": 10,
        "first_time_fix_rate": 0.8,
        "attitude_mean": 4.5,
        "sla_accept_rate": 0.9,
        "sla_arrival_rate": 0.75,
        "csat": 0.6,
    }
    fields.update(overrides)
    return TechnicianInputs.model_validate(fields)


class TestSubScores:
    def test_each_sub_score_scales_its_input_to_0_100(self) -> None:
        assert sub_scores(inputs()) == {
            SubScore.QUALITY: pytest.approx(80.0),  # 100 x 0.8
            SubScore.ATTITUDE: pytest.approx(87.5),  # 100 x (4.5 - 1) / 4
            SubScore.RESPONSE: pytest.approx(90.0),  # 100 x 0.9
            SubScore.EFFICIENCY: pytest.approx(75.0),  # 100 x 0.75
            SubScore.SATISFACTION: pytest.approx(60.0),  # 100 x 0.6
        }

    def test_attitude_spans_one_to_five_stars(self) -> None:
        assert sub_scores(inputs(attitude_mean=1.0))[SubScore.ATTITUDE] == 0.0
        assert sub_scores(inputs(attitude_mean=5.0))[SubScore.ATTITUDE] == 100.0

    def test_missing_data_gives_no_sub_score(self) -> None:
        scores = sub_scores(inputs(csat=None, attitude_mean=None))

        assert scores[SubScore.SATISFACTION] is None
        assert scores[SubScore.ATTITUDE] is None
        assert scores[SubScore.QUALITY] == pytest.approx(80.0)


class TestComposite:
    def test_all_sub_scores_weighted(self) -> None:
        # 0.45 x 80 + 0.25 x 87.5 + 0.15 x 90 + 0.10 x 75 + 0.05 x 60
        # = 36 + 21.875 + 13.5 + 7.5 + 3 = 81.875, over weights summing to 1
        assert composite(sub_scores(inputs()), POLICY) == pytest.approx(81.875)

    def test_missing_sub_scores_are_left_out_and_the_weights_renormalised(
        self,
    ) -> None:
        scores = sub_scores(inputs(attitude_mean=None, csat=None))

        # (0.45 x 80 + 0.15 x 90 + 0.10 x 75) / (0.45 + 0.15 + 0.10)
        # = (36 + 13.5 + 7.5) / 0.70 = 57 / 0.7 = 81.428571...
        assert composite(scores, POLICY) == pytest.approx(57 / 0.7)

    def test_only_one_sub_score_is_that_sub_score(self) -> None:
        scores: Mapping[SubScore, float | None] = {
            SubScore.QUALITY: None,
            SubScore.ATTITUDE: 40.0,
            SubScore.RESPONSE: None,
            SubScore.EFFICIENCY: None,
            SubScore.SATISFACTION: None,
        }

        assert composite(scores, POLICY) == pytest.approx(40.0)

    def test_no_data_has_no_composite(self) -> None:
        empty = inputs(
            first_time_fix_rate=None,
            attitude_mean=None,
            sla_accept_rate=None,
            sla_arrival_rate=None,
            csat=None,
        )

        assert composite(sub_scores(empty), POLICY) is None

    def test_weights_are_configurable(self) -> None:
        quality_only = ScoringPolicy(
            weights={
                SubScore.QUALITY: 1.0,
                SubScore.ATTITUDE: 0.0,
                SubScore.RESPONSE: 0.0,
                SubScore.EFFICIENCY: 0.0,
                SubScore.SATISFACTION: 0.0,
            }
        )

        assert composite(sub_scores(inputs()), quality_only) == pytest.approx(80.0)

    def test_a_policy_must_weigh_every_sub_score(self) -> None:
        with pytest.raises(ValueError, match="weight"):
            ScoringPolicy(weights={SubScore.QUALITY: 1.0})


# attitude: 6 x 5 stars, 3 x 4, 1 x 3 -> row (0.6, 0.3, 0.1, 0, 0)
ATTITUDE: LevelCounts = (6, 3, 1, 0, 0)
# punctuality: 2, 4, 2, 1, 1 of 10 -> row (0.2, 0.4, 0.2, 0.1, 0.1)
PUNCTUALITY: LevelCounts = (2, 4, 2, 1, 1)


def memberships(result: FuzzyResult | None) -> list[float]:
    assert result is not None
    return list(result.membership)


class TestFuzzyEvaluation:
    def test_two_rated_dimensions_with_equal_weights(self) -> None:
        result = fuzzy_evaluation(
            {
                Dimension.ATTITUDE: ATTITUDE,
                Dimension.PUNCTUALITY: PUNCTUALITY,
                # rated by nobody: left out, not counted as zeros
                Dimension.COMMUNICATION: NO_RATINGS,
            },
            POLICY,
        )

        # B = (row_attitude + row_punctuality) / 2
        #   = ((0.6+0.2)/2, (0.3+0.4)/2, (0.1+0.2)/2, (0+0.1)/2, (0+0.1)/2)
        #   = (0.4, 0.35, 0.15, 0.05, 0.05)
        assert memberships(result) == pytest.approx([0.4, 0.35, 0.15, 0.05, 0.05])
        assert result is not None
        assert sum(result.membership) == pytest.approx(1.0)
        assert result.grade is Grade.VERY_SATISFIED  # 0.4 is the largest
        # 0.4 x 100 + 0.35 x 80 + 0.15 x 60 + 0.05 x 40 + 0.05 x 20
        # = 40 + 28 + 9 + 2 + 1 = 80
        assert result.score == pytest.approx(80.0)
        assert result.dimensions == (Dimension.ATTITUDE, Dimension.PUNCTUALITY)

    def test_dimension_weights_are_renormalised_over_the_rated_ones(self) -> None:
        policy = ScoringPolicy(
            dimension_weights={
                Dimension.ATTITUDE: 0.3,
                Dimension.PROFESSIONALISM: 0.3,  # unrated: its weight drops out
                Dimension.COMMUNICATION: 0.2,
                Dimension.PUNCTUALITY: 0.1,
                Dimension.PRICE_FAIRNESS: 0.1,
            }
        )
        result = fuzzy_evaluation(
            {Dimension.ATTITUDE: ATTITUDE, Dimension.PUNCTUALITY: PUNCTUALITY}, policy
        )

        # weights 0.3 and 0.1 renormalised to 0.75 and 0.25:
        # B = 0.75 x (0.6, 0.3, 0.1, 0, 0) + 0.25 x (0.2, 0.4, 0.2, 0.1, 0.1)
        #   = (0.45 + 0.05, 0.225 + 0.1, 0.075 + 0.05, 0.025, 0.025)
        #   = (0.5, 0.325, 0.125, 0.025, 0.025)
        assert memberships(result) == pytest.approx([0.5, 0.325, 0.125, 0.025, 0.025])
        assert result is not None
        # 50 + 26 + 7.5 + 1 + 0.5 = 85
        assert result.score == pytest.approx(85.0)

    def test_a_tie_goes_to_the_better_level(self) -> None:
        # attitude: 2 x 4 stars -> (0, 1, 0, 0, 0); punctuality: 3 x 2 stars
        # -> (0, 0, 0, 1, 0); B = (0, 0.5, 0, 0.5, 0): satisfied and dissatisfied tie
        result = fuzzy_evaluation(
            {
                Dimension.ATTITUDE: (0, 2, 0, 0, 0),
                Dimension.PUNCTUALITY: (0, 0, 0, 3, 0),
            },
            POLICY,
        )

        assert memberships(result) == [0.0, 0.5, 0.0, 0.5, 0.0]
        assert result is not None
        assert result.grade is Grade.SATISFIED
        assert result.score == pytest.approx(60.0)  # 0.5 x 80 + 0.5 x 40

    def test_a_tie_of_thirds_is_exact(self) -> None:
        # three dimensions, one level each: B = (1/3, 1/3, 1/3, 0, 0) exactly, which
        # float sums could split by an ulp
        result = fuzzy_evaluation(
            {
                Dimension.ATTITUDE: (0, 0, 7, 0, 0),
                Dimension.COMMUNICATION: (0, 3, 0, 0, 0),
                Dimension.PRICE_FAIRNESS: (1, 0, 0, 0, 0),
            },
            POLICY,
        )

        assert result is not None
        assert result.grade is Grade.VERY_SATISFIED
        assert result.score == pytest.approx(80.0)  # (100 + 80 + 60) / 3

    def test_no_ratings_have_no_fuzzy_evaluation(self) -> None:
        assert fuzzy_evaluation({}, POLICY) is None
        assert fuzzy_evaluation({Dimension.ATTITUDE: NO_RATINGS}, POLICY) is None

    def test_negative_counts_are_refused(self) -> None:
        with pytest.raises(ValueError, match="negative"):
            fuzzy_evaluation({Dimension.ATTITUDE: (1, -1, 0, 0, 0)}, POLICY)


def scored(
    technician_id: str, composite_from: float, completions: int = 10
) -> TechnicianScore:
    """A technician whose only sub-score (quality) makes the composite."""
    return evaluate(
        TechnicianInputs(
            technician_id=technician_id,
            final_completions=completions,
            first_time_fix_rate=composite_from / 100,
        ),
        POLICY,
    )


class TestEvaluate:
    def test_a_technician_with_enough_completions_is_scored_fully(self) -> None:
        score = evaluate(inputs(level_counts={Dimension.ATTITUDE: ATTITUDE}), POLICY)

        assert score.technician_id == "tech-a"
        assert score.composite == pytest.approx(81.875)
        assert score.fuzzy is not None
        # one dimension: B is its row (0.6, 0.3, 0.1, 0, 0); 60 + 24 + 6 = 90
        assert score.fuzzy.score == pytest.approx(90.0)
        assert score.insufficient_data is False
        assert score.policy_version == POLICY.version
        assert score.rank is None  # only `rank` ranks

    def test_fewer_than_min_samples_final_completions_is_insufficient_data(
        self,
    ) -> None:
        assert evaluate(inputs(final_completions=4), POLICY).insufficient_data
        assert not evaluate(inputs(final_completions=5), POLICY).insufficient_data
        lenient = ScoringPolicy(min_samples=1)
        assert not evaluate(inputs(final_completions=1), lenient).insufficient_data


class TestRank:
    def test_by_composite_descending_ties_by_id_insufficient_data_unranked(
        self,
    ) -> None:
        ranked = rank(
            [
                scored("tech-b", 85.0),
                scored("tech-c", 90.0),
                scored("tech-d", 99.0, completions=4),  # best, but too few samples
                scored("tech-a", 90.0),  # ties with tech-c: the id decides
            ]
        )

        assert [(s.technician_id, s.rank) for s in ranked] == [
            ("tech-a", 1),
            ("tech-c", 2),
            ("tech-b", 3),
            ("tech-d", None),
        ]
        assert ranked[3].insufficient_data is True

    def test_a_technician_without_any_sub_score_is_not_ranked(self) -> None:
        nothing = evaluate(
            TechnicianInputs(technician_id="tech-x", final_completions=9), POLICY
        )

        assert [s.rank for s in rank([nothing, scored("tech-y", 50.0)])] == [1, None]


def completed_order(
    technician: Actor, *, follow_up: bool = False, rating: events.Rated | None = None
) -> tuple[OrderFacts, RatingFact | None]:
    """An order the technician fixed (accepted 09:21, arrived 09:28), maybe rated.

    With `follow_up`, the fix comes on a second visit.
    """
    story = advance_to(Story(technician=technician), OrderStatus.APPROVED)
    if follow_up:
        story.complete(0, outcome=events.Outcome.FOLLOW_UP_REQUIRED)
        story.arrive()
        story.diagnose()
        story.price()
        story.approve()
    story.complete()
    rated = None if rating is None else story.post(story.customer, rating)
    facts = derive_facts(story.history)
    assert facts is not None
    return facts, None if rated is None else rating_fact(facts, rated)


class TestTechnicianInputs:
    def test_aggregates_facts_and_ratings_as_indicators_md_attributes_them(
        self,
    ) -> None:
        tech = make_technician("tech-7")
        done = [
            # one visit, rated 5 with attitude 5
            completed_order(
                tech,
                rating=events.Rated(score=5, dimensions=events.Dimensions(attitude=5)),
            ),
            # one visit, rated 2 without dimensions
            completed_order(tech, rating=events.Rated(score=2)),
            # two visits, not rated
            completed_order(tech, follow_up=True),
        ]
        orders = [facts for facts, _ in done]
        ratings = [rating for _, rating in done if rating is not None]

        result = technician_inputs(
            "tech-7", orders=orders, ratings=ratings, sla=SlaPolicy()
        )

        assert result.final_completions == 3
        assert result.first_time_fix_rate == pytest.approx(2 / 3)  # 2 of 3
        # attitude 5 (dimension) and 2 (score stands in): (5 + 2) / 2
        assert result.attitude_mean == pytest.approx(3.5)
        assert result.csat == pytest.approx(0.5)  # 5 >= 4, 2 < 4
        # every accept 14 min, arrival 21 min after creation: within 240 / 2880
        assert result.sla_accept_rate == 1.0
        assert result.sla_arrival_rate == 1.0
        assert result.level_counts[Dimension.ATTITUDE] == (1, 0, 0, 0, 0)
        assert result.level_counts[Dimension.PUNCTUALITY] == NO_RATINGS

        # A window that ends before any completion: no outcome data, yet accepts.
        early = technician_inputs(
            "tech-7",
            orders=orders,
            ratings=ratings,
            sla=SlaPolicy(),
            start=T0,
            end=T0 + timedelta(minutes=25),  # accepted 09:21, arrived 09:28
        )
        assert early.final_completions == 0
        assert early.first_time_fix_rate is None
        assert early.sla_accept_rate == 1.0
        assert early.sla_arrival_rate is None
        assert early.csat is None

        other = technician_inputs(
            "tech-8", orders=orders, ratings=ratings, sla=SlaPolicy()
        )
        assert other.final_completions == 0
        assert other.attitude_mean is None


def test_count_levels_counts_each_given_dimension() -> None:
    story = story_at(OrderStatus.COMPLETED)
    rated = story.post(
        story.customer,
        events.Rated(
            score=4, dimensions=events.Dimensions(attitude=5, communication=3)
        ),
    )
    facts = derive_facts(story.history)
    assert facts is not None
    rating = rating_fact(facts, rated)
    assert rating is not None

    counts = count_levels([rating, rating])

    assert counts[Dimension.ATTITUDE] == (2, 0, 0, 0, 0)
    assert counts[Dimension.COMMUNICATION] == (0, 0, 2, 0, 0)
    assert counts[Dimension.PRICE_FAIRNESS] == NO_RATINGS
