"""Quality statistics (shared.domain.quality_stats) on hand-computed fixtures.

The reference values are independent of the code under test: closed forms of the
normal and chi-square tails (chi-square with 1 df: erfc(sqrt(x / 2)); with even df k:
exp(-x / 2) sum_{i < k/2} (x / 2)^i / i!; with 3 df: erfc(sqrt(x / 2)) +
sqrt(2 x / pi) exp(-x / 2)), and ranks, rates and limits worked out in the comments.
"""

from __future__ import annotations

from datetime import date, timedelta
from math import erfc, exp, factorial, pi, sqrt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.quality_stats import (
    ChartPoint,
    chi_square_homogeneity,
    chi_square_survival,
    individuals_chart,
    mann_whitney_u,
    p_chart,
    regularized_upper_gamma,
    two_proportion_z_test,
)

MONDAY = date(2026, 1, 5)


def week(index: int) -> date:
    return MONDAY + timedelta(weeks=index)


def chi2_even_df_tail(x: float, df: int) -> float:
    half = x / 2.0
    return exp(-half) * sum(half**i / factorial(i) for i in range(df // 2))


def rate_weeks(
    counts: list[tuple[int, int]], first: int = 0
) -> list[tuple[date, int, int]]:
    return [(week(first + i), s, n) for i, (s, n) in enumerate(counts)]


# --- two-proportion z-test ------------------------------------------------------


def test_z_test_on_45_of_100_against_30_of_100() -> None:
    # p_a = 0.45, p_b = 0.30, difference -0.15; pooled p = 75/200 = 0.375;
    # SE = sqrt(0.375 * 0.625 * (1/100 + 1/100)) = sqrt(0.0046875);
    # z = -0.15 / SE = -2.19089..., z^2 = 0.0225 / 0.0046875 = 4.8 exactly.
    result = two_proportion_z_test(45, 100, 30, 100)
    assert result.rate_a == pytest.approx(0.45)
    assert result.rate_b == pytest.approx(0.30)
    assert result.difference == pytest.approx(-0.15)
    assert result.z is not None
    assert result.z == pytest.approx(-0.15 / sqrt(0.0046875))
    assert result.z**2 == pytest.approx(4.8)
    assert result.p_value == pytest.approx(erfc(0.15 / sqrt(0.0046875) / sqrt(2)))
    assert result.p_value == pytest.approx(0.02846, abs=1e-5)
    assert result.reason is None


def test_z_test_with_equal_rates_has_p_one() -> None:
    result = two_proportion_z_test(20, 100, 10, 50)
    assert result.z == 0.0
    assert result.p_value == 1.0


@pytest.mark.parametrize(
    ("counts", "reason"),
    [
        ((0, 0, 3, 10), "empty sample"),
        ((3, 10, 0, 0), "empty sample"),
        ((0, 0, 0, 0), "empty sample"),
        ((0, 10, 0, 20), "pooled rate is 0 or 1"),
        ((10, 10, 20, 20), "pooled rate is 0 or 1"),
    ],
)
def test_z_test_degenerate_inputs_give_no_p_value(
    counts: tuple[int, int, int, int], reason: str
) -> None:
    result = two_proportion_z_test(*counts)
    assert result.p_value is None
    assert result.z is None
    assert result.reason == reason


def test_z_test_keeps_the_rates_it_can_compute() -> None:
    result = two_proportion_z_test(0, 0, 3, 10)
    assert result.rate_a is None
    assert result.rate_b == pytest.approx(0.3)
    assert two_proportion_z_test(10, 10, 20, 20).difference == 0.0


@pytest.mark.parametrize("counts", [(11, 10, 1, 2), (-1, 10, 1, 2), (1, 2, 3, -1)])
def test_z_test_refuses_impossible_counts(counts: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError, match="successes"):
        two_proportion_z_test(*counts)


counts_pair = st.integers(min_value=0, max_value=10_000).flatmap(
    lambda n: st.tuples(st.integers(min_value=0, max_value=n), st.just(n))
)


@given(counts_pair, counts_pair)
def test_z_test_p_in_unit_interval_and_symmetric(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    forward = two_proportion_z_test(*a, *b)
    backward = two_proportion_z_test(*b, *a)
    assert forward.p_value == backward.p_value
    assert forward.reason == backward.reason
    if forward.p_value is None:
        assert forward.reason is not None
        return
    assert 0.0 <= forward.p_value <= 1.0
    assert forward.z is not None
    assert backward.z is not None
    assert backward.z == -forward.z


# --- Mann-Whitney U -------------------------------------------------------------


def test_mann_whitney_separated_samples() -> None:
    # Pooled 1..6 ranks 1..6; a holds ranks 1, 2, 3: R_a = 6, U_a = 6 - 3*4/2 = 0.
    # mean U = 3*3/2 = 4.5; variance = 9/12 * 7 = 5.25 (no ties);
    # z = (|0 - 4.5| - 0.5) / sqrt(5.25) = 4 / sqrt(5.25).
    result = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert result.u == 0.0
    assert result.median_difference == 3.0
    assert result.p_value == pytest.approx(erfc(4 / sqrt(5.25) / sqrt(2)))
    assert result.p_value == pytest.approx(0.0808556, abs=1e-7)


def test_mann_whitney_with_ties() -> None:
    # Pooled sorted: 1, 2, 2, 2, 3, 4 -> ranks 1, 3, 3, 3, 5, 6 (the three 2s share
    # (2 + 3 + 4) / 3 = 3). a = [1, 2, 2] holds ranks 1, 3, 3: R_a = 7, U_a = 7 - 6 = 1.
    # Tie term: one group of t = 3, t^3 - t = 24; n = 6, n (n - 1) = 30;
    # variance = 9/12 * (7 - 24/30) = 0.75 * 6.2 = 4.65;
    # z = (|1 - 4.5| - 0.5) / sqrt(4.65) = 3 / sqrt(4.65).
    result = mann_whitney_u([1, 2, 2], [2, 3, 4])
    assert result.u == 1.0
    assert result.median_a == 2.0
    assert result.median_b == 3.0
    assert result.median_difference == 1.0
    assert result.p_value == pytest.approx(erfc(3 / sqrt(4.65) / sqrt(2)))


def test_mann_whitney_unordered_input_and_swap() -> None:
    # The same ties sample shuffled; b's U is n_a n_b - U_a = 9 - 1 = 8.
    forward = mann_whitney_u([2, 1, 2], [4, 2, 3])
    backward = mann_whitney_u([4, 2, 3], [2, 1, 2])
    assert forward.u == 1.0
    assert backward.u == 8.0
    assert backward.p_value == forward.p_value
    assert backward.median_difference == -1.0


def test_mann_whitney_continuity_caps_p_at_one() -> None:
    # U_a = 2 = n_a n_b / 2: |U - mean| - 0.5 would be negative; it is floored at 0.
    result = mann_whitney_u([1, 4], [2, 3])
    assert result.u == 2.0
    assert result.p_value == 1.0


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ([], [1.0], "empty sample"),
        ([1.0], [], "empty sample"),
        ([], [], "empty sample"),
        ([5.0, 5.0], [5.0], "all durations are tied"),
    ],
)
def test_mann_whitney_degenerate_inputs(
    a: list[float], b: list[float], reason: str
) -> None:
    result = mann_whitney_u(a, b)
    assert result.p_value is None
    assert result.reason == reason


def test_mann_whitney_all_tied_still_reports_u_and_medians() -> None:
    result = mann_whitney_u([5.0, 5.0], [5.0])
    assert result.u == 1.0  # two pairs, each a tie counting one half
    assert result.median_difference == 0.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_mann_whitney_refuses_non_finite_durations(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        mann_whitney_u([1.0, bad], [2.0])


durations = st.lists(
    st.integers(min_value=0, max_value=50).map(float), min_size=0, max_size=30
)


@given(durations, durations)
def test_mann_whitney_p_in_unit_interval_and_u_complements(
    a: list[float], b: list[float]
) -> None:
    forward = mann_whitney_u(a, b)
    backward = mann_whitney_u(b, a)
    assert forward.p_value == backward.p_value
    if forward.u is None:
        return
    assert backward.u is not None
    assert forward.u + backward.u == len(a) * len(b)
    if forward.p_value is not None:
        assert 0.0 <= forward.p_value <= 1.0


# --- p-chart --------------------------------------------------------------------

BASELINE_20_OF_100 = [(20, 100)] * 12


def test_p_chart_limits_worked_by_hand() -> None:
    # Centre = 240 / 1200 = 0.2; sigma = sqrt(0.2 * 0.8 / 100) = 0.04;
    # limits 0.2 +- 3 * 0.04 = [0.08, 0.32]. 31/100 is inside, 33/100 above.
    (point,) = p_chart(rate_weeks([*BASELINE_20_OF_100, (31, 100)]))
    assert point.week_start == week(12)
    assert point.centre == pytest.approx(0.2)
    assert point.lower == pytest.approx(0.08)
    assert point.upper == pytest.approx(0.32)
    assert point.value == pytest.approx(0.31)
    assert point.side == 1
    assert not point.out_of_limits
    assert not point.signal
    (above,) = p_chart(rate_weeks([*BASELINE_20_OF_100, (33, 100)]))
    assert above.out_of_limits
    assert above.signal
    (below,) = p_chart(rate_weeks([*BASELINE_20_OF_100, (7, 100)]))
    assert below.side == -1
    assert below.out_of_limits


def test_p_chart_limits_use_this_weeks_n() -> None:
    # Same centre 0.2, n = 400: sigma = sqrt(0.16 / 400) = 0.02, limits [0.14, 0.26].
    (point,) = p_chart(rate_weeks([*BASELINE_20_OF_100, (100, 400)]))
    assert point.lower == pytest.approx(0.14)
    assert point.upper == pytest.approx(0.26)


def test_p_chart_limits_are_clipped_to_the_unit_interval() -> None:
    # Centre 12 / 120 = 0.1, n = 10: 3 sqrt(0.09 / 10) = 0.2846 > 0.1 -> lower 0.
    (low,) = p_chart(rate_weeks([(1, 10)] * 12 + [(1, 10)]))
    assert low.lower == 0.0
    assert low.upper == pytest.approx(0.1 + 3 * sqrt(0.009))
    # Centre 0.9: the upper limit would pass 1.
    (high,) = p_chart(rate_weeks([(9, 10)] * 12 + [(10, 10)]))
    assert high.upper == 1.0
    assert not high.out_of_limits


def test_p_chart_first_point_is_the_thirteenth_week() -> None:
    assert p_chart(rate_weeks(BASELINE_20_OF_100)) == ()
    assert p_chart([]) == ()


def test_p_chart_centre_moves_with_the_preceding_twelve_weeks() -> None:
    # Week 13 (index 12) joins the baseline of week 14 and the first week leaves it:
    # centre = (11 * 20 + 50) / 1200 = 270 / 1200 = 0.225.
    points = p_chart(rate_weeks([(0, 100), *[(20, 100)] * 11, (50, 100), (20, 100)]))
    assert points[0].centre == pytest.approx(220 / 1200)
    assert points[1].centre == pytest.approx(270 / 1200)


def run_lengths(points: tuple[ChartPoint, ...]) -> list[int]:
    return [point.run_length for point in points]


@pytest.mark.parametrize(("successes", "side"), [(25, 1), (15, -1)])
def test_p_chart_run_of_eight_on_one_side(successes: int, side: int) -> None:
    # Every weekly rate stays on the same side of a centre that drifts towards it
    # but, with some 20/100 weeks still in the baseline, never reaches it; all
    # within the limits (0.2 +- 0.12 at most).
    points = p_chart(rate_weeks([*BASELINE_20_OF_100, *[(successes, 100)] * 9]))
    assert [point.side for point in points] == [side] * 9
    assert not any(point.out_of_limits for point in points)
    assert run_lengths(points) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert [point.run_signal for point in points] == [False] * 7 + [True] * 2


def test_p_chart_point_on_the_centre_breaks_the_run() -> None:
    # After 7 weeks at 25/100 the baseline is 5 weeks of 20/100 and 7 of 25/100:
    # centre = (100 + 175) / 1200 = 275 / 1200, so 275 successes of 1200 sit on it.
    counts = [*BASELINE_20_OF_100, *[(25, 100)] * 7, (275, 1200), *[(25, 100)] * 7]
    points = p_chart(rate_weeks(counts))
    assert points[7].side == 0
    assert points[7].value == points[7].centre
    assert run_lengths(points) == [1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7]
    assert not any(point.run_signal for point in points)


def test_p_chart_side_change_restarts_the_run() -> None:
    counts = [*BASELINE_20_OF_100, *[(25, 100)] * 5, (10, 100), *[(25, 100)] * 3]
    points = p_chart(rate_weeks(counts))
    assert run_lengths(points) == [1, 2, 3, 4, 5, 1, 1, 2, 3]


def test_p_chart_week_without_trials_has_no_point_and_breaks_the_run() -> None:
    counts = [*BASELINE_20_OF_100, *[(25, 100)] * 4, (0, 0), *[(25, 100)] * 4]
    points = p_chart(rate_weeks(counts))
    assert week(16) not in [point.week_start for point in points]
    assert len(points) == 8
    assert run_lengths(points) == [1, 2, 3, 4, 1, 2, 3, 4]
    # The empty week still counts as one of the 12 baseline weeks: the last week's
    # baseline is weeks 8..19, four of 20/100, the empty week 16 and seven of 25/100.
    assert points[-1].centre == pytest.approx((4 * 20 + 7 * 25) / 1100)


def test_p_chart_baseline_without_trials_has_no_point() -> None:
    assert p_chart(rate_weeks([(0, 0)] * 12 + [(5, 10)])) == ()


@pytest.mark.parametrize(
    ("weeks", "message"),
    [
        ([(week(0), 11, 10)], "successes"),
        ([(week(0), -1, 10)], "successes"),
        ([(week(1), 1, 10), (week(0), 1, 10)], "ascending"),
        ([(week(0), 1, 10), (week(0), 1, 10)], "ascending"),
    ],
)
def test_p_chart_refuses_impossible_weeks(
    weeks: list[tuple[date, int, int]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        p_chart(weeks)


# --- individuals chart ----------------------------------------------------------

# Sum 1240, mean 1240 / 12 = 103.333...; moving ranges 10, 5, 10, 5, 20, 10, 10,
# 10, 10, 5, 0: sum 95, MR-bar = 95 / 11 = 8.636...; 2.66 * 95 / 11 = 22.9727...;
# limits [80.3606..., 126.3060...].
MEDIANS = [100.0, 110, 105, 95, 100, 120, 110, 100, 90, 100, 105, 105]


def median_weeks(values: list[float]) -> list[tuple[date, float]]:
    return [(week(i), value) for i, value in enumerate(values)]


def test_individuals_chart_limits_worked_by_hand() -> None:
    (point,) = individuals_chart(median_weeks([*MEDIANS, 126.0]))
    assert point.week_start == week(12)
    assert point.centre == pytest.approx(1240 / 12)
    assert point.lower == pytest.approx(1240 / 12 - 2.66 * 95 / 11)
    assert point.upper == pytest.approx(1240 / 12 + 2.66 * 95 / 11)
    assert point.upper == pytest.approx(126.3061, abs=1e-4)
    assert point.side == 1
    assert not point.out_of_limits
    (above,) = individuals_chart(median_weeks([*MEDIANS, 127.0]))
    assert above.out_of_limits
    (below,) = individuals_chart(median_weeks([*MEDIANS, 80.0]))
    assert below.side == -1
    assert below.out_of_limits
    assert below.signal


def test_individuals_chart_limits_are_not_clipped() -> None:
    # Durations cannot be negative, but the chart's limits are what they compute:
    # centre 11, MR-bar 10 -> lower 11 - 26.6.
    (point,) = individuals_chart(median_weeks([6.0, 16.0] * 6 + [11.0]))
    assert point.lower == pytest.approx(11 - 26.6)
    assert point.side == 0
    assert point.run_length == 0


@pytest.mark.parametrize(("value", "side"), [(11.5, 1), (10.5, -1)])
def test_individuals_chart_run_of_eight(value: float, side: int) -> None:
    # Baseline 10, 12 alternating: centre 11, MR-bar 2, limits 11 +- 5.32. While
    # alternating weeks remain in the baseline the centre stays between 11 and the
    # new value, so each new week is on the same side.
    points = individuals_chart(median_weeks([10.0, 12.0] * 6 + [value] * 8))
    assert [point.side for point in points] == [side] * 8
    assert not any(point.out_of_limits for point in points)
    assert [point.run_signal for point in points] == [False] * 7 + [True]


def test_individuals_chart_first_point_is_the_thirteenth_week() -> None:
    assert individuals_chart(median_weeks(MEDIANS)) == ()


@pytest.mark.parametrize(
    ("weeks", "message"),
    [
        ([(week(0), float("nan"))], "finite"),
        ([(week(0), float("inf"))], "finite"),
        ([(week(1), 1.0), (week(0), 1.0)], "ascending"),
    ],
)
def test_individuals_chart_refuses_bad_weeks(
    weeks: list[tuple[date, float]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        individuals_chart(weeks)


# --- chi-square homogeneity -----------------------------------------------------


def test_chi_square_two_regions_is_the_z_test_squared() -> None:
    # The 2 x 2 table of the z-test fixture: chi-square = z^2 = 4.8, 1 df,
    # p = erfc(sqrt(4.8 / 2)), the z-test's p-value.
    result = chi_square_homogeneity({"north": (45, 55), "south": (30, 70)})
    assert result.statistic == pytest.approx(4.8)
    assert result.degrees_of_freedom == 1
    assert result.p_value == pytest.approx(erfc(sqrt(2.4)))
    assert result.p_value == pytest.approx(
        two_proportion_z_test(45, 100, 30, 100).p_value
    )
    assert not result.small_expected_counts


def test_chi_square_three_regions_worked_by_hand() -> None:
    # Column totals 75, 75 of 150, each row 50: every expected count is 25.
    # (30 - 25)^2 / 25 + (20 - 25)^2 / 25 = 2 for each of the first two rows, 0 for
    # the third: chi-square 4 on 2 df, p = exp(-4 / 2).
    result = chi_square_homogeneity(
        {"north": (30, 20), "south": (20, 30), "east": (25, 25)}
    )
    assert result.statistic == pytest.approx(4.0)
    assert result.degrees_of_freedom == 2
    assert result.p_value == pytest.approx(exp(-2.0), abs=1e-12)


def test_chi_square_five_regions_even_df_closed_form() -> None:
    # Two more rows of (25, 25) add nothing: chi-square 4 on 4 df,
    # p = exp(-2) (1 + 2) = 3 exp(-2).
    table = {
        "north": (30, 20),
        "south": (20, 30),
        "east": (25, 25),
        "west": (25, 25),
        "centre": (25, 25),
    }
    result = chi_square_homogeneity(table)
    assert result.statistic == pytest.approx(4.0)
    assert result.degrees_of_freedom == 4
    assert result.p_value == pytest.approx(3 * exp(-2.0), abs=1e-12)


def test_chi_square_drops_empty_regions_and_flags_small_expected_counts() -> None:
    # Rows (3, 1) and (1, 3): expected 2 each -> chi-square 4 * (1 / 2) = 2, 1 df.
    result = chi_square_homogeneity({"a": (3, 1), "empty": (0, 0), "b": (1, 3)})
    assert result.regions == ("a", "b")
    assert result.statistic == pytest.approx(2.0)
    assert result.degrees_of_freedom == 1
    assert result.p_value == pytest.approx(erfc(1.0))
    assert result.small_expected_counts


def test_chi_square_equal_rates_give_p_one() -> None:
    result = chi_square_homogeneity({"a": (10, 30), "b": (5, 15)})
    assert result.statistic == pytest.approx(0.0)
    assert result.p_value == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ({}, "fewer than 2 regions with observations"),
        ({"a": (3, 4)}, "fewer than 2 regions with observations"),
        ({"a": (3, 4), "b": (0, 0)}, "fewer than 2 regions with observations"),
        ({"a": (3, 0), "b": (5, 0)}, "all successes or all failures"),
        ({"a": (0, 3), "b": (0, 5)}, "all successes or all failures"),
    ],
)
def test_chi_square_degenerate_tables(
    table: dict[str, tuple[int, int]], reason: str
) -> None:
    result = chi_square_homogeneity(table)
    assert result.p_value is None
    assert result.statistic is None
    assert result.reason == reason


def test_chi_square_refuses_negative_counts() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        chi_square_homogeneity({"a": (-1, 3), "b": (2, 2)})


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=3),
        st.tuples(
            st.integers(min_value=0, max_value=1000),
            st.integers(min_value=0, max_value=1000),
        ),
        max_size=8,
    )
)
def test_chi_square_p_in_unit_interval(table: dict[str, tuple[int, int]]) -> None:
    result = chi_square_homogeneity(table)
    if result.p_value is None:
        assert result.reason is not None
    else:
        assert 0.0 <= result.p_value <= 1.0


# --- the chi-square tail --------------------------------------------------------

TAIL_POINTS = [0.0, 0.01, 0.5, 1.0, 2.0, 3.9, 4.0, 7.5, 20.0, 60.0, 150.0]


@pytest.mark.parametrize("x", TAIL_POINTS)
@pytest.mark.parametrize("df", [2, 4, 6, 10, 30])
def test_chi_square_survival_even_df_closed_form(x: float, df: int) -> None:
    # Both branches (series below x/2 = df/2 + 1, continued fraction above) are hit.
    expected = chi2_even_df_tail(x, df)
    assert chi_square_survival(x, df) == pytest.approx(expected, abs=1e-10, rel=1e-9)


@pytest.mark.parametrize("x", TAIL_POINTS)
def test_chi_square_survival_odd_df_closed_forms(x: float) -> None:
    one_df = erfc(sqrt(x / 2))
    three_df = one_df + sqrt(2 * x / pi) * exp(-x / 2)
    assert chi_square_survival(x, 1) == pytest.approx(one_df, abs=1e-10, rel=1e-9)
    assert chi_square_survival(x, 3) == pytest.approx(three_df, abs=1e-10, rel=1e-9)


def test_regularized_upper_gamma_of_one_is_the_exponential_tail() -> None:
    # Q(1, x) = exp(-x).
    for x in (0.1, 1.0, 2.0, 5.0, 40.0):
        assert regularized_upper_gamma(1.0, x) == pytest.approx(exp(-x), rel=1e-12)


@pytest.mark.parametrize(
    ("x", "df"), [(-1.0, 1), (float("nan"), 1), (float("inf"), 2), (1.0, 0)]
)
def test_chi_square_survival_refuses_bad_arguments(x: float, df: int) -> None:
    with pytest.raises(ValueError, match="degrees_of_freedom"):
        chi_square_survival(x, df)
