"""Guardrail non-inferiority: known-truth cases and p-values recomputed from effect and se."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from xpkit.moments import Moments
from xpkit.stats.effect import Effect
from xpkit.stats.guardrail import non_inferiority_test
from xpkit.stats.means import welch_test


def _effect(
    abs_effect: float,
    abs_se: float,
    rel_lift: float | None = None,
    rel_se: float | None = None,
    df: float | None = None,
) -> Effect:
    return Effect(
        method="test",
        n_control=1000,
        n_treatment=1000,
        mean_control=10.0,
        mean_treatment=10.0 + abs_effect,
        abs_effect=abs_effect,
        abs_se=abs_se,
        abs_ci_low=math.nan,
        abs_ci_high=math.nan,
        rel_lift=rel_lift,
        rel_se=rel_se,
        rel_ci_low=None,
        rel_ci_high=None,
        p_value=math.nan,
        alpha=0.05,
        df=df,
    )


def test_clear_harm_is_breached() -> None:
    result = non_inferiority_test(
        _effect(-5.0, 1.0), margin=1.0, relative=False, higher_is_better=True, metric="revenue"
    )
    bound = -5.0 - stats.norm.ppf(0.95) * 1.0
    assert result.breached and result.significant_harm
    assert result.p_value == pytest.approx(stats.norm.cdf((5.0 - 1.0) / 1.0), rel=1e-12)
    assert result.bound == pytest.approx(bound, rel=1e-12)
    assert result.reason.startswith(
        f"revenue: cannot rule out a drop of more than 1 (lower bound {bound:+.4g})"
    )
    assert "significant drop of -5" in result.reason


def test_well_powered_and_within_margin_passes() -> None:
    result = non_inferiority_test(
        _effect(0.01, 0.1), margin=1.0, relative=False, higher_is_better=True
    )
    assert not result.breached and not result.significant_harm
    assert result.p_value == pytest.approx(stats.norm.cdf((-0.01 - 1.0) / 0.1), rel=1e-12)
    assert result.p_value < 1e-20
    assert result.reason.startswith("rules out a drop of more than 1 (lower bound")


def test_t_distribution_used_when_effect_has_df() -> None:
    df = 12.5
    result = non_inferiority_test(
        _effect(0.4, 0.5, df=df), margin=1.5, relative=False, higher_is_better=False
    )
    assert result.p_value == pytest.approx(stats.t.cdf((0.4 - 1.5) / 0.5, df), rel=1e-12)
    assert result.bound == pytest.approx(0.4 + stats.t.ppf(0.95, df) * 0.5, rel=1e-12)
    assert result.breached == (result.p_value >= 0.05)


def test_relative_margin_on_lower_is_better_metric() -> None:
    result = non_inferiority_test(
        _effect(0.1, 0.1, rel_lift=0.01, rel_se=0.0125),
        margin=0.02,
        relative=True,
        higher_is_better=False,
        metric="errors",
    )
    upper = 0.01 + stats.norm.ppf(0.95) * 0.0125
    assert result.relative and result.breached and not result.significant_harm
    assert result.p_value == pytest.approx(stats.norm.cdf((0.01 - 0.02) / 0.0125), rel=1e-12)
    assert result.bound == pytest.approx(upper, rel=1e-12)
    assert result.reason == (
        f"errors: cannot rule out a rise of more than 2% (upper bound {100 * upper:+.3g}%)"
    )
    assert result.reason == "errors: cannot rule out a rise of more than 2% (upper bound +3.06%)"


def test_significant_harm_inside_margin_still_breaches() -> None:
    result = non_inferiority_test(
        _effect(-0.5, 0.1), margin=2.0, relative=False, higher_is_better=True
    )
    assert result.p_value < 0.05  # non-inferior at the margin ...
    assert result.significant_harm  # ... but the harm is real
    assert result.breached
    assert "rules out a drop of more than 2" in result.reason
    assert "significant drop of -0.5" in result.reason


def test_improvement_is_not_harm() -> None:
    result = non_inferiority_test(
        _effect(-0.5, 0.1), margin=0.1, relative=False, higher_is_better=False
    )
    assert not result.significant_harm and not result.breached


def test_undefined_relative_lift_is_breached() -> None:
    result = non_inferiority_test(
        _effect(0.1, 0.1), margin=0.02, relative=True, higher_is_better=True, metric="m"
    )
    assert result.breached and math.isnan(result.p_value)
    assert "relative lift undefined" in result.reason


@pytest.mark.parametrize("se", [0.0, math.nan])
def test_missing_standard_error_is_breached(se: float) -> None:
    result = non_inferiority_test(
        _effect(0.0, se), margin=1.0, relative=False, higher_is_better=True
    )
    assert result.breached and math.isnan(result.bound)
    assert "no usable standard error" in result.reason


def test_negative_margin_is_rejected() -> None:
    with pytest.raises(ValueError, match="margin"):
        non_inferiority_test(_effect(0.0, 1.0), margin=-1.0, relative=False, higher_is_better=True)


def test_on_simulated_data_known_truth() -> None:
    rng = np.random.default_rng(8)
    control = rng.normal(100.0, 10.0, size=4000)
    same = rng.normal(100.0, 10.0, size=4000)
    worse = rng.normal(97.0, 10.0, size=4000)

    def run(treatment: np.ndarray) -> Effect:
        return welch_test(
            Moments.from_rows(control, ["value"]), Moments.from_rows(treatment, ["value"])
        )

    ok = non_inferiority_test(run(same), margin=0.02, relative=True, higher_is_better=True)
    bad = non_inferiority_test(run(worse), margin=0.02, relative=True, higher_is_better=True)
    assert not ok.breached
    assert bad.breached and bad.significant_harm


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_bound_and_p_value_agree(higher_is_better: bool) -> None:
    h = -1.0 if higher_is_better else 1.0
    for estimate in np.linspace(-3.0, 3.0, 61):
        result = non_inferiority_test(
            _effect(float(estimate), 0.8, df=40.0),
            margin=1.0,
            relative=False,
            higher_is_better=higher_is_better,
        )
        safe_side = h * result.bound < 1.0
        assert safe_side == (result.p_value < 0.05)
