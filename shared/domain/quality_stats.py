"""Statistics of indicators.md "(v2) Additions": alert-case effects and stability.

- An action's effect on an alert's indicator: rates by a two-sided two-proportion
  z-test (`two_proportion_z_test`), durations by a two-sided Mann-Whitney U test
  (`mann_whitney_u`).
- Stability: the weekly p-chart of a rate (`p_chart`), the individuals chart of the
  weekly median response time (`individuals_chart`), and the homogeneity of a rate
  across regions (`chi_square_homogeneity`).

Plain Python on purpose: the stdlib `math` and `statistics` only (scipy and numpy are
no dependencies of the project). A test that cannot be computed (an empty sample, a
rate of 0 or 1 everywhere) yields `p_value=None` with a `reason`, never NaN or a
crash; impossible inputs (negative counts, more successes than trials, non-finite
values, weeks out of order) are the caller's bug and raise `ValueError`.

Pure domain: imports only the stdlib, reads no clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from math import erfc, exp, fsum, isfinite, lgamma, log, sqrt
from statistics import fmean, median
from typing import Final

BASELINE_WEEKS: Final = 12
RUN_LENGTH: Final = 8
P_CHART_SIGMAS: Final = 3.0
# 3 / d2 with d2 = 1.128 for moving ranges of two: the classical XmR constant.
INDIVIDUALS_MR_FACTOR: Final = 2.66
# Below this expected count the chi-square approximation is weak (Cochran's rule).
MIN_EXPECTED_COUNT: Final = 5.0

# The incomplete gamma function stops when a term no longer moves the sum; the
# iteration cap only guards against a bug, convergence takes far fewer steps.
_GAMMA_EPSILON: Final = 1e-16
_GAMMA_MAX_ITERATIONS: Final = 100_000
_GAMMA_TINY: Final = 1e-300


def _normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z, via erfc to stay exact in the tail."""
    return min(1.0, erfc(abs(z) / sqrt(2.0)))


def _check_count(successes: int, n: int, what: str) -> None:
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"{what}: need 0 <= successes <= n, got {successes}/{n}")


# --- Alert cases: rates ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProportionTest:
    """Rate before (a) and after (b) an action; `difference` is b - a."""

    rate_a: float | None
    rate_b: float | None
    difference: float | None
    z: float | None
    p_value: float | None
    reason: str | None = None


def two_proportion_z_test(
    successes_a: int, n_a: int, successes_b: int, n_b: int
) -> ProportionTest:
    """Two-sided two-proportion z-test with the pooled standard error.

    z = (p_b - p_a) / sqrt(p (1 - p) (1/n_a + 1/n_b)), p the pooled rate; the
    p-value is 2 P(Z >= |z|). Pooled, because under the null hypothesis both windows
    share one rate.
    """
    _check_count(successes_a, n_a, "sample a")
    _check_count(successes_b, n_b, "sample b")
    rate_a = successes_a / n_a if n_a else None
    rate_b = successes_b / n_b if n_b else None
    if rate_a is None or rate_b is None:
        return ProportionTest(rate_a, rate_b, None, None, None, "empty sample")
    difference = rate_b - rate_a
    pooled_successes, pooled_n = successes_a + successes_b, n_a + n_b
    if pooled_successes in (0, pooled_n):
        # Every trial agrees: the standard error is 0 and no test is possible.
        return ProportionTest(
            rate_a, rate_b, difference, None, None, "pooled rate is 0 or 1"
        )
    pooled = pooled_successes / pooled_n
    standard_error = sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    z = difference / standard_error
    return ProportionTest(rate_a, rate_b, difference, z, _normal_two_sided_p(z))


# --- Alert cases: durations -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class RankTest:
    """Durations before (a) and after (b) an action.

    `u` is the U statistic of sample a (the pairs (x, y), x in a, y in b, with x > y,
    ties counting one half); `median_difference` is median(b) - median(a).
    """

    median_a: float | None
    median_b: float | None
    median_difference: float | None
    u: float | None
    p_value: float | None
    reason: str | None = None


def _average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of `values`, tied values sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        # Positions start..end (0-based) hold ranks start+1..end+1; their mean:
        shared_rank = (start + end) / 2.0 + 1.0
        for position in range(start, end + 1):
            ranks[order[position]] = shared_rank
        start = end + 1
    return ranks


def _tie_term(values: Sequence[float]) -> int:
    """Sum of t^3 - t over the groups of t equal values (t = 1 adds nothing)."""
    return sum(t**3 - t for t in Counter(values).values())


def mann_whitney_u(a: Sequence[float], b: Sequence[float]) -> RankTest:
    """Two-sided Mann-Whitney U test, normal approximation.

    Ranks are averaged over ties; the variance carries the tie correction
    n_a n_b / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1))); the continuity correction
    subtracts 1/2 from |U - n_a n_b / 2|. This is what
    `scipy.stats.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic",
    use_continuity=True)` computes. The approximation, not the exact distribution:
    the windows compared are usually large, and one method keeps results comparable.
    """
    if not all(isfinite(value) for value in (*a, *b)):
        raise ValueError("durations must be finite")
    median_a = float(median(a)) if a else None
    median_b = float(median(b)) if b else None
    if median_a is None or median_b is None:
        return RankTest(median_a, median_b, None, None, None, "empty sample")
    n_a, n_b = len(a), len(b)
    n = n_a + n_b
    pooled = [*a, *b]
    rank_sum_a = fsum(_average_ranks(pooled)[:n_a])
    u = rank_sum_a - n_a * (n_a + 1) / 2.0
    # In integers, so that "all values tied" is an exact 0, not a rounding residue.
    spread = (n + 1) * n * (n - 1) - _tie_term(pooled)
    difference = median_b - median_a
    if spread == 0:
        # All values equal: the ranks carry no information.
        return RankTest(
            median_a, median_b, difference, u, None, "all durations are tied"
        )
    variance = n_a * n_b * spread / (12.0 * n * (n - 1))
    z = max(0.0, abs(u - n_a * n_b / 2.0) - 0.5) / sqrt(variance)
    return RankTest(median_a, median_b, difference, u, _normal_two_sided_p(z))


# --- Stability: control charts --------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChartPoint:
    """One week on a control chart, judged against the weeks before it.

    `side` is +1 above the centre line, -1 below, 0 exactly on it; `run_length` counts
    the consecutive points on this side ending here (0 on the centre line).
    """

    week_start: date
    value: float
    centre: float
    lower: float
    upper: float
    side: int
    run_length: int

    @property
    def out_of_limits(self) -> bool:
        return not self.lower <= self.value <= self.upper

    @property
    def run_signal(self) -> bool:
        return self.run_length >= RUN_LENGTH

    @property
    def signal(self) -> bool:
        return self.out_of_limits or self.run_signal


def _run_length(previous: ChartPoint | None, side: int) -> int:
    """Extend the run of `previous` if this point stays on its side.

    A point on the centre line, or a week without a point (`previous` is None),
    breaks the run: neither is "on one side".
    """
    if side == 0:
        return 0
    if previous is not None and previous.side == side:
        return previous.run_length + 1
    return 1


def _sign(difference: float) -> int:
    return (difference > 0) - (difference < 0)


def _check_weeks_ascending(weeks: Sequence[date]) -> None:
    if any(later <= earlier for earlier, later in pairwise(weeks)):
        raise ValueError("weeks must be in strictly ascending order")


def p_chart(weeks: Sequence[tuple[date, int, int]]) -> tuple[ChartPoint, ...]:
    """Weekly p-chart of a rate from (week_start, successes, n), one entry per week.

    From the 13th week on, the centre is the pooled rate of the 12 preceding weeks
    and the limits are centre +- 3 sqrt(centre (1 - centre) / n_week), clipped to
    [0, 1]. The caller lists every calendar week, those without trials as n = 0: such
    a week has no point (and breaks a run), and it counts as one of the 12 baseline
    weeks all the same, so the baseline always spans 12 calendar weeks. A week whose
    baseline has no trials at all has no point either.
    """
    _check_weeks_ascending([week for week, _, _ in weeks])
    for week, successes, n in weeks:
        _check_count(successes, n, f"week {week.isoformat()}")
    points: list[ChartPoint] = []
    previous: ChartPoint | None = None
    for index in range(BASELINE_WEEKS, len(weeks)):
        week_start, successes, n = weeks[index]
        baseline = weeks[index - BASELINE_WEEKS : index]
        baseline_successes = sum(s for _, s, _ in baseline)
        baseline_n = sum(m for _, _, m in baseline)
        if n == 0 or baseline_n == 0:
            previous = None
            continue
        centre = baseline_successes / baseline_n
        half_width = P_CHART_SIGMAS * sqrt(centre * (1.0 - centre) / n)
        # The side in integers (s / n against S / N), so a rate equal to the centre
        # is exactly on it whatever the float rounding of either fraction.
        side = _sign(successes * baseline_n - baseline_successes * n)
        previous = ChartPoint(
            week_start=week_start,
            value=successes / n,
            centre=centre,
            lower=max(0.0, centre - half_width),
            upper=min(1.0, centre + half_width),
            side=side,
            run_length=_run_length(previous, side),
        )
        points.append(previous)
    return tuple(points)


def individuals_chart(
    weekly_medians: Sequence[tuple[date, float]],
) -> tuple[ChartPoint, ...]:
    """Individuals (XmR) chart of weekly medians from (week_start, median).

    From the 13th entry on, the centre is the mean of the 12 preceding medians and
    the limits are centre +- 2.66 x the mean of their 11 moving ranges. A week
    without a median has none to list: the entries are the weeks that have one.
    """
    _check_weeks_ascending([week for week, _ in weekly_medians])
    if not all(isfinite(value) for _, value in weekly_medians):
        raise ValueError("weekly medians must be finite")
    points: list[ChartPoint] = []
    previous: ChartPoint | None = None
    for index in range(BASELINE_WEEKS, len(weekly_medians)):
        week_start, value = weekly_medians[index]
        baseline = [v for _, v in weekly_medians[index - BASELINE_WEEKS : index]]
        centre = fmean(baseline)
        mean_moving_range = fmean(
            abs(later - earlier) for earlier, later in pairwise(baseline)
        )
        half_width = INDIVIDUALS_MR_FACTOR * mean_moving_range
        side = _sign(value - centre)
        previous = ChartPoint(
            week_start=week_start,
            value=value,
            centre=centre,
            lower=centre - half_width,
            upper=centre + half_width,
            side=side,
            run_length=_run_length(previous, side),
        )
        points.append(previous)
    return tuple(points)


# --- Stability: homogeneity across regions --------------------------------------


@dataclass(frozen=True, slots=True)
class HomogeneityTest:
    """Pearson chi-square on the regions x (success, failure) table.

    `regions` are the rows used (those with observations); `small_expected_counts`
    warns that some expected count is below 5, where the chi-square approximation is
    weak.
    """

    regions: tuple[str, ...]
    statistic: float | None
    degrees_of_freedom: int | None
    p_value: float | None
    small_expected_counts: bool = False
    reason: str | None = None


def chi_square_homogeneity(table: Mapping[str, tuple[int, int]]) -> HomogeneityTest:
    """Is a rate the same in every region? Rows are (successes, failures)."""
    for region, (successes, failures) in table.items():
        if successes < 0 or failures < 0:
            raise ValueError(f"region {region!r}: counts must be >= 0")
    rows = {region: row for region, row in table.items() if sum(row) > 0}
    regions = tuple(rows)
    if len(rows) < 2:
        return HomogeneityTest(
            regions, None, None, None, reason="fewer than 2 regions with observations"
        )
    success_total = sum(s for s, _ in rows.values())
    failure_total = sum(f for _, f in rows.values())
    if success_total == 0 or failure_total == 0:
        # One outcome everywhere: every region has the same rate, but the statistic
        # would divide by a zero expected count.
        return HomogeneityTest(
            regions, None, None, None, reason="all successes or all failures"
        )
    grand_total = success_total + failure_total
    statistic_terms: list[float] = []
    smallest_expected = float("inf")
    for row in rows.values():
        row_total = sum(row)
        for observed, column_total in zip(
            row, (success_total, failure_total), strict=True
        ):
            expected = row_total * column_total / grand_total
            smallest_expected = min(smallest_expected, expected)
            statistic_terms.append((observed - expected) ** 2 / expected)
    statistic = fsum(statistic_terms)
    degrees_of_freedom = len(rows) - 1
    return HomogeneityTest(
        regions,
        statistic,
        degrees_of_freedom,
        chi_square_survival(statistic, degrees_of_freedom),
        small_expected_counts=smallest_expected < MIN_EXPECTED_COUNT,
    )


def chi_square_survival(x: float, degrees_of_freedom: int) -> float:
    """P(X >= x) for X chi-square with `degrees_of_freedom`: Q(k / 2, x / 2)."""
    if degrees_of_freedom < 1 or not isfinite(x) or x < 0.0:
        raise ValueError("need degrees_of_freedom >= 1 and a finite x >= 0")
    return regularized_upper_gamma(degrees_of_freedom / 2.0, x / 2.0)


def regularized_upper_gamma(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a), as Numerical Recipes' `gammq`.

    Below x = a + 1 the series of P(a, x) converges fast and Q = 1 - P; above, the
    continued fraction of Q (modified Lentz) does, and avoids 1 - P losing the tail.
    """
    if a <= 0.0 or x < 0.0:
        raise ValueError("need a > 0 and x >= 0")
    if x == 0.0:
        return 1.0
    # x^a e^-x / Gamma(a), the factor both expansions share, in logs to avoid overflow.
    prefactor = exp(a * log(x) - x - lgamma(a))
    if x < a + 1.0:
        return max(0.0, 1.0 - prefactor * _lower_gamma_series(a, x))
    return min(1.0, prefactor * _upper_gamma_fraction(a, x))


def _lower_gamma_series(a: float, x: float) -> float:
    """sum_{n>=0} x^n / (a (a + 1) ... (a + n)); times the prefactor it is P(a, x)."""
    term = total = 1.0 / a
    denominator = a
    for _ in range(_GAMMA_MAX_ITERATIONS):
        denominator += 1.0
        term *= x / denominator
        total += term
        if abs(term) < abs(total) * _GAMMA_EPSILON:
            return total
    raise ArithmeticError("incomplete gamma series did not converge")


def _upper_gamma_fraction(a: float, x: float) -> float:
    """The continued fraction 1 / (x + 1 - a - 1 (1 - a) / (x + 3 - a - ...))."""
    b = x + 1.0 - a
    c = 1.0 / _GAMMA_TINY
    d = 1.0 / b
    fraction = d
    for i in range(1, _GAMMA_MAX_ITERATIONS):
        a_i = -i * (i - a)
        b += 2.0
        d = a_i * d + b
        d = d if abs(d) >= _GAMMA_TINY else _GAMMA_TINY
        c = b + a_i / c
        c = c if abs(c) >= _GAMMA_TINY else _GAMMA_TINY
        d = 1.0 / d
        step = d * c
        fraction *= step
        if abs(step - 1.0) < _GAMMA_EPSILON:
            return fraction
    raise ArithmeticError("incomplete gamma continued fraction did not converge")
