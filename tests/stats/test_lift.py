"""Shared helpers: intervals, p-values and the delta-method relative lift."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from xpkit.moments import Moments
from xpkit.stats.lift import (
    normal_ci,
    normal_p_value,
    relative_lift,
    t_ci,
    t_p_value,
    welch_df,
)
from xpkit.stats.means import welch_test


def test_normal_and_t_helpers_match_scipy() -> None:
    est, se, df, alpha = 0.7, 0.3, 17.5, 0.1
    assert normal_ci(est, se, alpha) == pytest.approx(
        stats.norm.interval(1 - alpha, loc=est, scale=se), rel=1e-12
    )
    assert t_ci(est, se, df, alpha) == pytest.approx(
        stats.t.interval(1 - alpha, df, loc=est, scale=se), rel=1e-12
    )
    assert normal_p_value(est, se) == pytest.approx(2 * stats.norm.cdf(-est / se), rel=1e-12)
    assert t_p_value(-est, se, df) == pytest.approx(2 * stats.t.cdf(-est / se, df), rel=1e-12)


@pytest.mark.parametrize("se", [0.0, float("nan"), -1.0, float("inf")])
def test_unusable_standard_error_gives_nan(se: float) -> None:
    assert all(math.isnan(v) for v in normal_ci(1.0, se, 0.05))
    assert all(math.isnan(v) for v in t_ci(1.0, se, 10.0, 0.05))
    assert math.isnan(normal_p_value(1.0, se))
    assert math.isnan(t_p_value(1.0, se, 10.0))


def test_welch_df_degenerate_is_nan() -> None:
    assert math.isnan(welch_df(0.0, 0.0, 10, 10))
    assert math.isnan(welch_df(1.0, 1.0, 1, 10))
    assert welch_df(0.0, 2.0, 10, 7) == pytest.approx(6.0)


def _numeric_delta_variance(
    mean_c: float, mean_t: float, cov: np.ndarray, h: float = 1e-6
) -> tuple[float, float]:
    """Delta-method variance of (t - c)/|c| with a central-difference gradient."""

    def g(c: float, t: float) -> float:
        return (t - c) / abs(c)

    step_c, step_t = h * abs(mean_c), h * max(abs(mean_t), 1.0)
    grad = np.array(
        [
            (g(mean_c + step_c, mean_t) - g(mean_c - step_c, mean_t)) / (2 * step_c),
            (g(mean_c, mean_t + step_t) - g(mean_c, mean_t - step_t)) / (2 * step_t),
        ]
    )
    return g(mean_c, mean_t), float(grad @ cov @ grad)


@pytest.mark.parametrize(
    ("mean_c", "mean_t", "var_c", "var_t", "cov_ct"),
    [
        (10.0, 11.0, 0.04, 0.05, 0.0),
        (-4.0, -3.5, 0.01, 0.02, 0.0),  # negative baseline: sign of the lift must not flip
        (2.0, 2.3, 0.03, 0.025, 0.012),  # correlated means (e.g. CUPED-adjusted)
        (-2.0, -2.6, 0.03, 0.025, -0.01),
    ],
)
def test_relative_lift_matches_numeric_delta_method(
    mean_c: float, mean_t: float, var_c: float, var_t: float, cov_ct: float
) -> None:
    rel = relative_lift(mean_c, mean_t, var_c, var_t, cov_ct, alpha=0.05)
    assert rel is not None
    cov = np.array([[var_c, cov_ct], [cov_ct, var_t]])
    lift, variance = _numeric_delta_variance(mean_c, mean_t, cov)
    assert rel.lift == pytest.approx(lift, rel=1e-12)
    assert np.sign(rel.lift) == np.sign(mean_t - mean_c)
    assert rel.se == pytest.approx(math.sqrt(variance), rel=1e-6)
    z = stats.norm.ppf(0.975)
    assert (rel.ci_low, rel.ci_high) == pytest.approx(
        (lift - z * rel.se, lift + z * rel.se), rel=1e-12
    )


def test_relative_lift_undefined_near_zero_baseline() -> None:
    assert relative_lift(0.0, 1.0, 0.1, 0.1) is None
    # |mean_c| = 0.19 < 1.96 * 0.1: the baseline's sign is not established.
    assert relative_lift(0.19, 0.5, 0.01, 0.01) is None
    assert relative_lift(-0.19, 0.5, 0.01, 0.01) is None
    assert relative_lift(0.2, 0.5, 0.01, 0.01) is not None
    # A wider interval (smaller alpha) needs a baseline further from zero.
    assert relative_lift(0.2, 0.5, 0.01, 0.01, alpha=0.01) is None


def test_relative_lift_without_variance_keeps_point_estimate() -> None:
    rel = relative_lift(5.0, 6.0, float("nan"), float("nan"))
    assert rel is not None
    assert rel.lift == pytest.approx(0.2)
    assert math.isnan(rel.se) and math.isnan(rel.ci_low) and math.isnan(rel.ci_high)


def test_relative_lift_interval_coverage_by_simulation() -> None:
    rng = np.random.default_rng(20240611)
    true_lift = 0.05
    reps, covered = 600, 0
    for _ in range(reps):
        c = rng.normal(10.0, 4.0, size=150)
        t = rng.normal(10.0 * (1 + true_lift), 4.0, size=150)
        eff = welch_test(Moments.from_rows(c, ["value"]), Moments.from_rows(t, ["value"]))
        assert eff.rel_ci_low is not None and eff.rel_ci_high is not None
        covered += eff.rel_ci_low <= true_lift <= eff.rel_ci_high
    # Nominal 95%; binomial sd over 600 reps is ~0.9 points.
    assert 0.92 <= covered / reps <= 0.98
