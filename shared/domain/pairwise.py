"""Scoring weights from pairwise judgements (indicators.md v2, "Pairwise weights").

A 5x5 reciprocal matrix A over the sub-scores (quality, attitude, response,
efficiency, satisfaction): a_ij says how much more sub-score i matters than j on
Saaty's scale 1..9 (and a_ji = 1 / a_ij). The weights are A's normalised principal
eigenvector; lambda_max = mean of (A w)_i / w_i; CI = (lambda_max - 5) / 4 and
CR = CI / 1.12 (Saaty's random index for n = 5). A matrix with CR >= 0.10 is too
inconsistent to be a policy.

Pure domain: stdlib only (numpy is not a dependency); the eigenvector is found by
power iteration, which converges for a positive matrix (Perron-Frobenius).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import isfinite
from types import MappingProxyType
from typing import Final, TypeAlias

from shared.domain.scoring import SubScore

CRITERIA: Final = tuple(SubScore)
SIZE: Final = len(CRITERIA)
# Saaty's random consistency index for a 5x5 matrix.
RANDOM_INDEX: Final = 1.12
MAX_CONSISTENCY_RATIO: Final = 0.10
# Reciprocity, the unit diagonal and scale values are checked to this tolerance, so
# that 1/3 written as a decimal (0.3333333333) is accepted.
TOLERANCE: Final = 1e-9
CONVERGED: Final = 1e-12
MAX_ITERATIONS: Final = 100_000

Matrix: TypeAlias = tuple[tuple[float, ...], ...]


class PairwiseError(ValueError):
    """A matrix that is not a reciprocal Saaty-scale judgement, or too inconsistent."""


@dataclass(frozen=True, slots=True)
class PairwiseResult:
    """The weights a pairwise matrix gives, and how consistent its judgements are."""

    matrix: Matrix
    weights: Mapping[SubScore, float]
    lambda_max: float
    consistency_index: float
    consistency_ratio: float

    @property
    def consistent(self) -> bool:
        return self.consistency_ratio < MAX_CONSISTENCY_RATIO


def _on_saaty_scale(value: float) -> bool:
    # 1..9 or 1/9..1/2: whichever of value, 1/value is >= 1 is a whole number <= 9.
    judgement = value if value >= 1 else 1 / value
    nearest = round(judgement)
    return 1 <= nearest <= 9 and abs(judgement - nearest) <= TOLERANCE * nearest


def checked_matrix(rows: Sequence[Sequence[float]]) -> Matrix:
    """The matrix as a tuple of tuples of floats, or PairwiseError saying what is wrong."""
    order = ", ".join(CRITERIA)
    if len(rows) != SIZE or any(len(row) != SIZE for row in rows):
        raise PairwiseError(
            f"the pairwise matrix must be {SIZE} rows of {SIZE} numbers ({order})"
        )
    matrix = tuple(tuple(float(value) for value in row) for row in rows)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            cell = f"entry [{i}][{j}] ({CRITERIA[i]} vs {CRITERIA[j]})"
            if not isfinite(value) or value <= 0:
                raise PairwiseError(f"{cell} must be a finite positive number: {value}")
            if i == j and abs(value - 1) > TOLERANCE:
                raise PairwiseError(f"{cell} is on the diagonal and must be 1: {value}")
            if not _on_saaty_scale(value):
                raise PairwiseError(
                    f"{cell} must be on Saaty's scale 1..9 or 1/2..1/9: {value}"
                )
            if i < j and abs(value * matrix[j][i] - 1) > TOLERANCE:
                raise PairwiseError(
                    f"{cell} = {value} and entry [{j}][{i}] = {matrix[j][i]}"
                    " must be reciprocals"
                )
    return matrix


def _times(matrix: Matrix, vector: Sequence[float]) -> list[float]:
    return [sum(a * v for a, v in zip(row, vector, strict=True)) for row in matrix]


def _principal_eigenvector(matrix: Matrix) -> list[float]:
    weights = [1 / SIZE] * SIZE
    for _ in range(MAX_ITERATIONS):
        product = _times(matrix, weights)
        total = sum(product)
        following = [value / total for value in product]
        if max(abs(a - b) for a, b in zip(following, weights, strict=True)) < CONVERGED:
            return following
        weights = following
    # Not reached for a positive matrix (|lambda_2| < lambda_max); a guard, not a path.
    raise PairwiseError("the pairwise matrix's eigenvector did not converge")


def analyse(rows: Sequence[Sequence[float]]) -> PairwiseResult:
    """Weights, lambda_max, CI and CR of a pairwise matrix (not yet judged on CR)."""
    matrix = checked_matrix(rows)
    weights = _principal_eigenvector(matrix)
    product = _times(matrix, weights)
    lambda_max = sum(p / w for p, w in zip(product, weights, strict=True)) / SIZE
    # A consistent matrix has lambda_max = n exactly; rounding must not make CI < 0.
    consistency_index = max(0.0, (lambda_max - SIZE) / (SIZE - 1))
    return PairwiseResult(
        matrix=matrix,
        weights=MappingProxyType(dict(zip(CRITERIA, weights, strict=True))),
        lambda_max=lambda_max,
        consistency_index=consistency_index,
        consistency_ratio=consistency_index / RANDOM_INDEX,
    )


def consistent_weights(rows: Sequence[Sequence[float]]) -> PairwiseResult:
    """`analyse`, refusing a matrix whose CR is 0.10 or more (the message gives CR)."""
    result = analyse(rows)
    if not result.consistent:
        raise PairwiseError(
            f"the pairwise matrix is too inconsistent: CR = "
            f"{result.consistency_ratio:.4f} (must be below {MAX_CONSISTENCY_RATIO})"
        )
    return result


# The README's example: reproduces the seeds' analytic-hierarchy weights (0.45, 0.25,
# 0.15, 0.10, 0.05) to 2 decimals (0.4510, 0.2501, 0.1518, 0.0976, 0.0495) with
# CR = 0.018. Rows and columns: quality, attitude, response, efficiency, satisfaction.
SEEDS_MATRIX: Final[Matrix] = (
    (1, 2, 3, 5, 8),
    (1 / 2, 1, 2, 3, 4),
    (1 / 3, 1 / 2, 1, 2, 3),
    (1 / 5, 1 / 3, 1 / 2, 1, 3),
    (1 / 8, 1 / 4, 1 / 3, 1 / 3, 1),
)
