"""Delta-method ratio metrics against the per-unit linearisation on raw data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from xpkit.moments import Moments
from xpkit.stats.ratio import ratio_test

RTOL = 1e-9
COLUMNS = ["clicks", "sessions", "pre_clicks", "pre_sessions"]


def _simulate(n: int, ctr: float, rng: np.random.Generator) -> np.ndarray:
    """Per-unit clicks and sessions, now and in a pre-period, driven by a unit's activity."""
    activity = rng.gamma(2.0, 2.0, size=n)
    sessions = 1 + rng.poisson(activity)
    clicks = rng.binomial(sessions, ctr * rng.beta(8, 8, size=n) * 2)
    pre_sessions = 1 + rng.poisson(activity)
    pre_clicks = rng.binomial(pre_sessions, ctr)
    return np.column_stack([clicks, sessions, pre_clicks, pre_sessions]).astype(float)


def _linearised(rows: np.ndarray) -> np.ndarray:
    """Per-unit R + (y - R x) / xbar, computed directly from the raw rows."""
    y, x = rows[:, 0], rows[:, 1]
    ratio = y.sum() / x.sum()
    return ratio + (y - ratio * x) / x.mean()


@pytest.fixture(scope="module")
def groups() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    return _simulate(1500, 0.20, rng), _simulate(1400, 0.21, rng)


def test_ratio_delta_matches_raw_linearisation(groups: tuple[np.ndarray, np.ndarray]) -> None:
    control, treatment = groups
    eff = ratio_test(
        Moments.from_rows(control, COLUMNS),
        Moments.from_rows(treatment, COLUMNS),
        "clicks",
        "sessions",
    )
    r_c = control[:, 0].sum() / control[:, 1].sum()
    r_t = treatment[:, 0].sum() / treatment[:, 1].sum()
    lin_c, lin_t = _linearised(control), _linearised(treatment)
    var = lin_c.var(ddof=1) / lin_c.size + lin_t.var(ddof=1) / lin_t.size
    assert eff.method == "ratio_delta"
    assert (eff.mean_control, eff.mean_treatment) == pytest.approx((r_c, r_t), rel=1e-12)
    assert eff.abs_effect == pytest.approx(r_t - r_c, rel=RTOL)
    assert eff.abs_se == pytest.approx(math.sqrt(var), rel=RTOL)
    assert eff.p_value == pytest.approx(
        2 * stats.norm.sf(abs(r_t - r_c) / math.sqrt(var)), rel=RTOL
    )

    # The same variance written as Deng et al.'s formula with numpy's covariance matrix.
    cov = np.cov(control[:, :2], rowvar=False)
    x_bar = control[:, 1].mean()
    deng = (cov[0, 0] - 2 * r_c * cov[0, 1] + r_c**2 * cov[1, 1]) / (len(control) * x_bar**2)
    assert deng == pytest.approx(lin_c.var(ddof=1) / lin_c.size, rel=RTOL)

    # Relative lift: independent groups, Var(R_t) and Var(R_c) from the linearisation.
    rel_var = (
        lin_t.var(ddof=1) / lin_t.size + (r_t / r_c) ** 2 * lin_c.var(ddof=1) / lin_c.size
    ) / r_c**2
    assert eff.rel_lift == pytest.approx((r_t - r_c) / r_c, rel=RTOL)
    assert eff.rel_se == pytest.approx(math.sqrt(rel_var), rel=RTOL)


@pytest.mark.parametrize("covariates", [["pre_clicks"], ["pre_clicks", "pre_sessions"]])
def test_ratio_cuped_matches_ols_on_linearised_values(
    groups: tuple[np.ndarray, np.ndarray], covariates: list[str]
) -> None:
    control, treatment = groups
    eff = ratio_test(
        Moments.from_rows(control, COLUMNS),
        Moments.from_rows(treatment, COLUMNS),
        "clicks",
        "sessions",
        covariates=covariates,
    )
    idx = [COLUMNS.index(c) for c in covariates]
    lin = np.r_[_linearised(control), _linearised(treatment)]
    z = np.vstack([control[:, idx], treatment[:, idx]])
    t = np.r_[np.zeros(len(control)), np.ones(len(treatment))]
    coef = np.linalg.lstsq(np.column_stack([np.ones(t.size), t, z]), lin, rcond=None)[0]
    assert eff.method == "ratio_delta_cuped"
    assert eff.abs_effect == pytest.approx(coef[1], rel=RTOL)
    theta = np.array([eff.extra[f"theta_{c}"] for c in covariates])
    np.testing.assert_allclose(theta, coef[2:], rtol=RTOL)

    adjusted = lin - z @ theta
    adj_c, adj_t = adjusted[t == 0], adjusted[t == 1]
    var = adj_c.var(ddof=1) / adj_c.size + adj_t.var(ddof=1) / adj_t.size
    assert eff.abs_se == pytest.approx(math.sqrt(var), rel=RTOL)
    raw_var = _linearised(control).var(ddof=1) / len(control) + _linearised(treatment).var(
        ddof=1
    ) / len(treatment)
    assert eff.extra["variance_reduction"] == pytest.approx(1 - var / raw_var, rel=RTOL)
    assert eff.extra["variance_reduction"] > 0.0
    assert eff.p_value == pytest.approx(2 * stats.norm.sf(abs(coef[1]) / math.sqrt(var)), rel=RTOL)


def test_zero_denominator_mean_is_nan() -> None:
    rows = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    ok = np.array([[1.0, 2.0], [2.0, 3.0], [0.0, 1.0]])
    eff = ratio_test(
        Moments.from_rows(rows, ["y", "x"]), Moments.from_rows(ok, ["y", "x"]), "y", "x"
    )
    assert math.isnan(eff.mean_control) and eff.mean_treatment == pytest.approx(0.5)
    assert math.isnan(eff.abs_effect) and math.isnan(eff.p_value) and eff.rel_lift is None


def test_single_unit_group_gives_nan_se() -> None:
    one = Moments.from_rows(np.array([[1.0, 2.0]]), ["y", "x"])
    ok = Moments.from_rows(np.array([[1.0, 2.0], [2.0, 3.0], [0.0, 1.0]]), ["y", "x"])
    eff = ratio_test(one, ok, "y", "x")
    assert eff.abs_effect == pytest.approx(0.5 - 0.5)
    assert math.isnan(eff.abs_se) and math.isnan(eff.p_value)
