"""Quality statistics against scipy's values, computed once and written down here.

scipy is not a dependency; these numbers came from scipy 1.17.1 with:

    chi2_contingency([[a, n - a], [b, m - b]], correction=False).pvalue  # z-test p
    chi2_contingency(rows, correction=False)  # statistic, dof, pvalue
    mannwhitneyu(a, b, alternative="two-sided", method="asymptotic",
                 use_continuity=True)  # statistic (U of a), pvalue

(The two-sided two-proportion z-test and the 2x2 Pearson chi-square without
continuity correction are the same test: z^2 = chi^2.)
"""

from __future__ import annotations

from typing import Final

import pytest

from shared.domain.quality_stats import (
    chi_square_homogeneity,
    mann_whitney_u,
    two_proportion_z_test,
)

Z_TESTS: Final = [
    ((45, 100, 30, 100), 0.028459736916310638),
    ((7, 40, 19, 45), 0.013549239904667505),
    ((180, 200, 150, 190), 0.0024959763133562884),
    ((1, 3, 9, 12), 0.17090352023079358),
]

CHI_SQUARE_TESTS: Final = [
    (
        {"north": (30, 20), "south": (25, 25), "east": (40, 10)},
        (10.047846889952154, 2, 0.006578664978890964),
    ),
    (
        {"a": (5, 95), "b": (12, 88), "c": (9, 91), "d": (20, 80)},
        (11.888970768852861, 3, 0.00777334060251855),
    ),
    ({"x": (3, 4), "y": (6, 1)}, (2.8, 1, 0.09426430684121058)),
]

MANN_WHITNEY_TESTS: Final = [
    (([1, 2, 3], [4, 5, 6]), (0.0, 0.08085559837005224)),
    (([1, 2, 2], [2, 3, 4]), (1.0, 0.16415972847851523)),
    (
        ([12.5, 30, 45, 60, 61, 90, 120], [20, 22, 25, 26, 40, 41]),
        (34.0, 0.07414553111140683),
    ),
    (
        (
            [300, 420, 600, 900, 1200, 1500, 3600, 7200],
            [240, 250, 260, 400, 410, 600, 610, 620, 700],
        ),
        (58.5, 0.03415395725471483),
    ),
]


@pytest.mark.parametrize(("counts", "p_value"), Z_TESTS)
def test_z_test_p_values_match_scipy(
    counts: tuple[int, int, int, int], p_value: float
) -> None:
    assert two_proportion_z_test(*counts).p_value == pytest.approx(p_value, rel=1e-9)


@pytest.mark.parametrize(("table", "expected"), CHI_SQUARE_TESTS)
def test_chi_square_homogeneity_matches_scipy(
    table: dict[str, tuple[int, int]], expected: tuple[float, int, float]
) -> None:
    statistic, degrees_of_freedom, p_value = expected
    result = chi_square_homogeneity(table)
    assert result.statistic == pytest.approx(statistic, rel=1e-9)
    assert result.degrees_of_freedom == degrees_of_freedom
    assert result.p_value == pytest.approx(p_value, rel=1e-9)


@pytest.mark.parametrize(("samples", "expected"), MANN_WHITNEY_TESTS)
def test_mann_whitney_matches_scipy(
    samples: tuple[list[float], list[float]], expected: tuple[float, float]
) -> None:
    u, p_value = expected
    result = mann_whitney_u(*samples)
    assert result.u == u
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
