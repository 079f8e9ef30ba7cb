"""Trend test for novelty/primacy against numpy and statsmodels weighted least squares."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

from xpkit.stats.novelty import DECLINING, GROWING, NO_TREND, effect_trend


def daily(effect: np.ndarray, se: np.ndarray, seed: int) -> np.ndarray:
    return effect + np.random.default_rng(seed).normal(0.0, se)


def test_fading_lift_is_declining() -> None:
    days = np.arange(21)
    se = np.full(21, 0.05)
    y = daily(0.2 + 0.8 * np.exp(-days / 5), se, seed=1)
    result = effect_trend(y, se)
    assert result.verdict == DECLINING
    assert result.slope < 0 and result.p_value < 1e-6


def test_fading_harm_is_declining_too() -> None:
    days = np.arange(21)
    se = np.full(21, 0.05)
    y = daily(-0.2 - 0.8 * np.exp(-days / 5), se, seed=2)
    result = effect_trend(y, se)
    assert result.slope > 0
    assert result.verdict == DECLINING


def test_growing_lift_is_primacy() -> None:
    days = np.arange(28)
    se = np.linspace(0.2, 0.1, 28)
    y = daily(0.1 + 0.03 * days, se, seed=3)
    assert effect_trend(y, se).verdict == GROWING


def test_flat_series_is_not_flagged() -> None:
    se = np.full(28, 0.1)
    result = effect_trend(daily(np.full(28, 0.5), se, seed=4), se)
    assert result.verdict == NO_TREND


def test_flat_series_false_alarm_rate_is_alpha() -> None:
    rng = np.random.default_rng(5)
    sims, alpha = 2_000, 0.05
    se = rng.uniform(0.05, 0.3, 14)
    flagged = sum(
        effect_trend(0.3 + rng.normal(0.0, se), se, alpha=alpha).p_value < alpha
        for _ in range(sims)
    )
    mc_se = np.sqrt(alpha * (1 - alpha) / sims)
    assert abs(flagged / sims - alpha) < 3.5 * mc_se


def test_slope_matches_weighted_polyfit_and_statsmodels() -> None:
    rng = np.random.default_rng(6)
    days = np.array([0, 1, 2, 4, 5, 7, 8, 9, 12, 13], dtype=float)
    se = rng.uniform(0.1, 0.5, days.size)
    y = 1.0 - 0.02 * days + rng.normal(0.0, se)
    result = effect_trend(y, se, days)

    slope, intercept = np.polyfit(days, y, 1, w=1 / se)  # polyfit weights multiply residuals
    assert result.slope == pytest.approx(slope, rel=1e-10)
    assert result.intercept == pytest.approx(intercept, rel=1e-10)

    fit = sm.WLS(y, sm.add_constant(days), weights=1 / se**2).fit(
        cov_type="fixed scale", cov_kwds={"scale": 1.0}
    )
    assert result.slope == pytest.approx(fit.params[1], rel=1e-10)
    assert result.slope_se == pytest.approx(fit.bse[1], rel=1e-10)
    assert result.p_value == pytest.approx(fit.pvalues[1], rel=1e-8)
    assert result.residual_chi2 == pytest.approx(fit.ssr, rel=1e-10)


def test_estimated_scale_matches_statsmodels_when_overdispersed() -> None:
    rng = np.random.default_rng(7)
    days = np.arange(20, dtype=float)
    se = np.full(20, 0.05)
    y = 0.5 + 0.004 * days + rng.normal(0.0, 0.15, 20)  # noise three times the stated se
    result = effect_trend(y, se, scale="estimated")
    fit = sm.WLS(y, sm.add_constant(days), weights=1 / se**2).fit()
    assert fit.scale > 1
    assert result.slope_se == pytest.approx(fit.bse[1], rel=1e-10)
    assert result.p_value == pytest.approx(fit.pvalues[1], rel=1e-8)
    naive = effect_trend(y, se)
    assert naive.p_value < result.p_value
    assert result.residual_chi2 / (20 - 2) == pytest.approx(fit.scale, rel=1e-10)
    assert stats.chi2.sf(result.residual_chi2, 18) < 1e-6  # the heterogeneity is visible


def test_unusable_days_are_dropped_and_short_series_rejected() -> None:
    y = np.array([1.0, np.nan, 0.8, 0.7, 0.6])
    se = np.array([0.1, 0.1, 0.0, 0.1, 0.1])
    assert effect_trend(y, se).n_days == 3
    with pytest.raises(ValueError, match="at least three"):
        effect_trend([1.0, 0.9], [0.1, 0.1])
    with pytest.raises(ValueError):
        effect_trend([1.0, 0.9, 0.8], [0.1, 0.1])
