"""CUPED against OLS and Welch computed on raw per-unit data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from xpkit.moments import Moments
from xpkit.stats.cuped import cuped_test
from xpkit.stats.means import welch_test

RTOL = 1e-9


def _simulate(k: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rows (y, x_1..x_k) for control and treatment; y depends on the covariates."""
    rng = np.random.default_rng(seed)
    names = [f"x{i}" for i in range(1, k + 1)]
    beta = np.array([0.9, -0.4, 0.25])[:k]

    def group(n: int, effect: float, shift: float) -> np.ndarray:
        x = rng.normal(5.0 + shift, 2.0, size=(n, k)) + rng.normal(size=(n, 1))
        y = 3.0 + x @ beta + effect + rng.normal(0.0, 1.5, size=n)
        return np.column_stack([y, x])

    # A small covariate imbalance so the adjustment visibly moves the estimate.
    return group(700, 0.0, 0.0), group(650, 0.3, 0.05), names


def _ols_treatment(control: np.ndarray, treatment: np.ndarray) -> np.ndarray:
    """Coefficients of y ~ 1 + T + X by least squares on the raw rows."""
    rows = np.vstack([control, treatment])
    t = np.r_[np.zeros(len(control)), np.ones(len(treatment))]
    design = np.column_stack([np.ones(len(rows)), t, rows[:, 1:]])
    return np.linalg.lstsq(design, rows[:, 0], rcond=None)[0]


@pytest.mark.parametrize("k", [1, 3])
def test_cuped_matches_ols_and_welch_on_adjusted_values(k: int) -> None:
    control, treatment, names = _simulate(k)
    columns = ["y", *names]
    eff = cuped_test(
        Moments.from_rows(control, columns), Moments.from_rows(treatment, columns), "y", names
    )
    coef = _ols_treatment(control, treatment)
    assert eff.method == "cuped"
    assert eff.abs_effect == pytest.approx(coef[1], rel=RTOL)
    theta = np.array([eff.extra[f"theta_{name}"] for name in names])
    np.testing.assert_allclose(theta, coef[2:], rtol=RTOL)

    adj_c = control[:, 0] - control[:, 1:] @ theta
    adj_t = treatment[:, 0] - treatment[:, 1:] @ theta
    ref = stats.ttest_ind(adj_t, adj_c, equal_var=False)
    ci = ref.confidence_interval()
    se = math.sqrt(adj_c.var(ddof=1) / adj_c.size + adj_t.var(ddof=1) / adj_t.size)
    assert eff.abs_se == pytest.approx(se, rel=RTOL)
    assert eff.p_value == pytest.approx(ref.pvalue, rel=RTOL)
    assert eff.df == pytest.approx(ref.df, rel=RTOL)
    assert (eff.abs_ci_low, eff.abs_ci_high) == pytest.approx((ci.low, ci.high), rel=RTOL)

    raw_var = control[:, 0].var(ddof=1) / len(control) + treatment[:, 0].var(ddof=1) / len(
        treatment
    )
    assert eff.extra["variance_reduction"] == pytest.approx(1 - se**2 / raw_var, rel=RTOL)
    assert eff.extra["variance_reduction"] > 0.3


def test_adjusted_means_and_relative_lift_delta_method() -> None:
    control, treatment, names = _simulate(3, seed=9)
    columns = ["y", *names]
    eff = cuped_test(
        Moments.from_rows(control, columns), Moments.from_rows(treatment, columns), "y", names
    )
    theta = np.array([eff.extra[f"theta_{name}"] for name in names])
    n_c, n_t = len(control), len(treatment)
    m_c, m_t = control.mean(axis=0), treatment.mean(axis=0)

    def adjusted(mc: np.ndarray, mt: np.ndarray) -> tuple[float, float]:
        pooled_x = (n_c * mc[1:] + n_t * mt[1:]) / (n_c + n_t)
        return mc[0] - theta @ (mc[1:] - pooled_x), mt[0] - theta @ (mt[1:] - pooled_x)

    adj_c, adj_t = adjusted(m_c, m_t)
    assert eff.mean_control == pytest.approx(adj_c, rel=RTOL)
    assert eff.mean_treatment == pytest.approx(adj_t, rel=RTOL)
    assert eff.mean_treatment - eff.mean_control == pytest.approx(eff.abs_effect, rel=1e-9)
    assert eff.extra["raw_mean_control"] == pytest.approx(m_c[0], rel=RTOL)

    # Numeric gradient of (adj_t - adj_c) / |adj_c| in the stacked mean vector, theta fixed.
    def lift(v: np.ndarray) -> float:
        a_c, a_t = adjusted(v[: len(m_c)], v[len(m_c) :])
        return (a_t - a_c) / abs(a_c)

    point = np.r_[m_c, m_t]
    grad = np.empty_like(point)
    for i in range(point.size):
        h = 1e-6 * max(abs(point[i]), 1.0)
        up, down = point.copy(), point.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (lift(up) - lift(down)) / (2 * h)
    k = len(m_c)
    cov = np.zeros((2 * k, 2 * k))
    cov[:k, :k] = np.cov(control, rowvar=False) / n_c
    cov[k:, k:] = np.cov(treatment, rowvar=False) / n_t
    assert eff.rel_lift == pytest.approx(lift(point), rel=1e-12)
    assert eff.rel_se == pytest.approx(math.sqrt(grad @ cov @ grad), rel=1e-6)


def test_constant_covariate_does_not_crash_and_changes_nothing() -> None:
    control, treatment, names = _simulate(1, seed=4)
    const_c = np.column_stack([control, np.full(len(control), 7.3)])
    const_t = np.column_stack([treatment, np.full(len(treatment), 7.3)])
    columns = ["y", "x1", "flat"]
    with_flat = cuped_test(
        Moments.from_rows(const_c, columns),
        Moments.from_rows(const_t, columns),
        "y",
        ["x1", "flat"],
    )
    without = cuped_test(
        Moments.from_rows(control, columns[:2]),
        Moments.from_rows(treatment, columns[:2]),
        "y",
        ["x1"],
    )
    assert with_flat.extra["theta_flat"] == 0.0
    assert with_flat.abs_effect == pytest.approx(without.abs_effect, rel=RTOL)
    assert with_flat.abs_se == pytest.approx(without.abs_se, rel=RTOL)

    only_flat = cuped_test(
        Moments.from_rows(const_c[:, [0, 2]], ["y", "flat"]),
        Moments.from_rows(const_t[:, [0, 2]], ["y", "flat"]),
        "y",
        ["flat"],
    )
    plain = welch_test(
        Moments.from_rows(control[:, 0], ["y"]), Moments.from_rows(treatment[:, 0], ["y"]), "y"
    )
    assert only_flat.abs_effect == pytest.approx(plain.abs_effect, rel=RTOL)
    assert only_flat.p_value == pytest.approx(plain.p_value, rel=RTOL)
    assert only_flat.extra["variance_reduction"] == pytest.approx(0.0, abs=1e-12)


def test_collinear_covariates_give_the_single_covariate_answer() -> None:
    control, treatment, _ = _simulate(1, seed=6)
    twice_c = np.column_stack([control, 2 * control[:, 1] + 1])
    twice_t = np.column_stack([treatment, 2 * treatment[:, 1] + 1])
    columns = ["y", "x1", "x1_twice"]
    both = cuped_test(
        Moments.from_rows(twice_c, columns), Moments.from_rows(twice_t, columns), "y", columns[1:]
    )
    single = cuped_test(
        Moments.from_rows(control, columns[:2]),
        Moments.from_rows(treatment, columns[:2]),
        "y",
        ["x1"],
    )
    assert both.abs_effect == pytest.approx(single.abs_effect, rel=1e-8)
    assert both.abs_se == pytest.approx(single.abs_se, rel=1e-8)


def test_degenerate_groups_give_nan() -> None:
    columns = ["y", "x"]
    one = Moments.from_rows(np.array([[1.0, 2.0]]), columns)
    many = Moments.from_rows(np.random.default_rng(0).normal(size=(10, 2)), columns)
    for control, treatment in [(one, many), (Moments.empty(columns), many)]:
        eff = cuped_test(control, treatment, "y", ["x"])
        assert math.isnan(eff.p_value) and math.isnan(eff.abs_ci_low)
        assert not math.isinf(eff.abs_se)
