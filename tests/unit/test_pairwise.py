"""Weights from pairwise judgements (shared.domain.pairwise) on hand-computed matrices.

The expected lambda_max and CR never come from the code under test: a consistent
matrix has lambda_max = 5 exactly, and a circulant reciprocal matrix (row i is row 0
shifted i places) has the uniform vector as its principal eigenvector, with
lambda_max = the sum of a row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pytest

from shared.domain.pairwise import (
    SEEDS_MATRIX,
    PairwiseError,
    analyse,
    consistent_weights,
)
from shared.domain.scoring import DEFAULT_WEIGHTS, SubScore

Rows = list[list[float]]


def consistent(priorities: Sequence[float]) -> Rows:
    """a_ij = p_i / p_j: perfectly consistent judgements."""
    return [[p / q for q in priorities] for p in priorities]


def circulant(first_row: Sequence[float]) -> Rows:
    """Row i is `first_row` shifted right i places (reciprocal if c_k x c_-k = 1)."""
    n = len(first_row)
    return [[first_row[(j - i) % n] for j in range(n)] for i in range(n)]


def with_entry(rows: Sequence[Sequence[float]], i: int, j: int, value: float) -> Rows:
    changed = [list(row) for row in rows]
    changed[i][j] = value
    return changed


def as_list(weights: Mapping[SubScore, float]) -> list[float]:
    return [weights[s] for s in SubScore]


class TestConsistentMatrices:
    def test_a_consistent_matrix_gives_its_priorities_and_cr_0(self) -> None:
        # Priorities 8 : 4 : 2 : 1 : 1 -> every ratio (2, 4, 8, 1, ...) is on the scale.
        result = consistent_weights(consistent([8, 4, 2, 1, 1]))

        assert as_list(result.weights) == pytest.approx(
            [0.5, 0.25, 0.125, 0.0625, 0.0625], abs=1e-12
        )
        assert result.lambda_max == pytest.approx(5.0, abs=1e-12)
        assert result.consistency_index == pytest.approx(0.0, abs=1e-12)
        assert result.consistency_ratio == pytest.approx(0.0, abs=1e-12)

    def test_all_ones_weighs_every_sub_score_equally(self) -> None:
        result = consistent_weights([[1.0] * 5 for _ in range(5)])

        assert as_list(result.weights) == pytest.approx([0.2] * 5, abs=1e-12)
        assert result.consistency_ratio == pytest.approx(0.0, abs=1e-12)


class TestInconsistentMatrices:
    @pytest.mark.parametrize(
        ("first_row", "row_sum"),
        [
            # quality > attitude > response > efficiency > satisfaction > quality, by 2.
            ((1, 2, 1, 1, 1 / 2), 5.5),
            # A 3-cycle one way and a 1/2-cycle the other: 1 + 3 + 1/2 + 2 + 1/3.
            ((1, 3, 1 / 2, 2, 1 / 3), 1 + 3 + 1 / 2 + 2 + 1 / 3),
        ],
    )
    def test_a_circulant_matrix_has_lambda_max_its_row_sum(
        self, first_row: tuple[float, ...], row_sum: float
    ) -> None:
        result = analyse(circulant(first_row))

        ci = (row_sum - 5) / 4
        assert as_list(result.weights) == pytest.approx([0.2] * 5, abs=1e-12)
        assert result.lambda_max == pytest.approx(row_sum, abs=1e-9)
        assert result.consistency_index == pytest.approx(ci, abs=1e-9)
        assert result.consistency_ratio == pytest.approx(ci / 1.12, abs=1e-9)
        assert not result.consistent

    def test_cr_0_10_or_more_is_refused_with_the_cr_in_the_message(self) -> None:
        # lambda_max 5.5: CI = 0.125, CR = 0.125 / 1.12 = 0.1116.
        with pytest.raises(PairwiseError, match=r"CR = 0\.1116"):
            consistent_weights(circulant((1, 2, 1, 1, 1 / 2)))

    def test_the_weights_are_the_principal_eigenvector(self) -> None:
        # Independently of how it was found: A w = lambda_max w, row by row.
        result = analyse(SEEDS_MATRIX)
        w = as_list(result.weights)

        assert sum(w) == pytest.approx(1.0, abs=1e-12)
        assert all(x > 0 for x in w)
        for row, w_i in zip(SEEDS_MATRIX, w, strict=True):
            product = sum(a * x for a, x in zip(row, w, strict=True))
            assert product / w_i == pytest.approx(result.lambda_max, abs=1e-9)


def by_matrix_squaring(rows: Sequence[Sequence[float]]) -> tuple[list[float], float]:
    """Weights and lambda_max the other way: w is a row-sum of A^(2^k), rescaled."""
    power = [list(row) for row in rows]
    for _ in range(60):
        square = [
            [sum(power[i][k] * power[k][j] for k in range(5)) for j in range(5)]
            for i in range(5)
        ]
        largest = max(max(row) for row in square)
        power = [[value / largest for value in row] for row in square]
    sums = [sum(row) for row in power]
    weights = [s / sum(sums) for s in sums]
    ratios = [
        sum(a * w for a, w in zip(row, weights, strict=True)) / w_i
        for row, w_i in zip(rows, weights, strict=True)
    ]
    return weights, sum(ratios) / 5


def test_an_uneven_matrix_agrees_with_matrix_squaring() -> None:
    # Judgements that disagree (quality 9x satisfaction but attitude only 1/2x it).
    rows: Rows = [
        [1, 3, 5, 7, 9],
        [1 / 3, 1, 3, 5, 1 / 2],
        [1 / 5, 1 / 3, 1, 3, 5],
        [1 / 7, 1 / 5, 1 / 3, 1, 3],
        [1 / 9, 2, 1 / 5, 1 / 3, 1],
    ]
    weights, lambda_max = by_matrix_squaring(rows)

    result = analyse(rows)

    assert as_list(result.weights) == pytest.approx(weights, abs=1e-9)
    assert result.lambda_max == pytest.approx(lambda_max, abs=1e-9)
    assert result.consistency_ratio == pytest.approx(
        (lambda_max - 5) / 4 / 1.12, abs=1e-9
    )
    assert result.lambda_max > 5.5  # clearly inconsistent


class TestSeedsMatrix:
    def test_it_reproduces_the_seeds_weights_to_2_decimals(self) -> None:
        result = consistent_weights(SEEDS_MATRIX)

        assert [round(w, 2) for w in as_list(result.weights)] == [
            DEFAULT_WEIGHTS[s] for s in SubScore
        ]
        assert result.consistency_ratio < 0.10
        # What the README states.
        assert [round(w, 4) for w in as_list(result.weights)] == [
            0.4510,
            0.2501,
            0.1518,
            0.0976,
            0.0495,
        ]
        assert round(result.lambda_max, 4) == 5.0788
        assert round(result.consistency_ratio, 3) == 0.018


SEEDS = [list(row) for row in SEEDS_MATRIX]


@pytest.mark.parametrize(
    ("rows", "complaint"),
    [
        (with_entry(SEEDS, 0, 1, 3), "must be reciprocals"),
        (with_entry(SEEDS, 1, 0, 1 / 3), "must be reciprocals"),
        (with_entry(SEEDS, 0, 4, 0), "finite positive"),
        (with_entry(SEEDS, 0, 4, -8), "finite positive"),
        (with_entry(SEEDS, 2, 3, math.nan), "finite positive"),
        (with_entry(SEEDS, 2, 3, math.inf), "finite positive"),
        (with_entry(with_entry(SEEDS, 0, 4, 10), 4, 0, 0.1), "Saaty's scale"),
        (with_entry(with_entry(SEEDS, 0, 1, 1 / 10), 1, 0, 10), "Saaty's scale"),
        (with_entry(with_entry(SEEDS, 0, 1, 2.5), 1, 0, 0.4), "Saaty's scale"),
        (with_entry(SEEDS, 3, 3, 2), "diagonal"),
        (SEEDS[:4], "5 rows of 5"),
        ([row[:4] for row in SEEDS[:4]], "5 rows of 5"),
        ([*SEEDS, [1, 1, 1, 1, 1]], "5 rows of 5"),
        ([*SEEDS[:4], SEEDS[4][:4]], "5 rows of 5"),
        ([], "5 rows of 5"),
    ],
)
def test_a_matrix_that_is_not_a_reciprocal_judgement_is_refused(
    rows: Rows, complaint: str
) -> None:
    with pytest.raises(PairwiseError, match=complaint):
        analyse(rows)


def test_decimals_of_fractions_are_accepted_within_the_tolerance() -> None:
    written = with_entry(with_entry(SEEDS, 0, 2, 3), 2, 0, 0.3333333333)

    assert analyse(written).weights == pytest.approx(analyse(SEEDS).weights)
