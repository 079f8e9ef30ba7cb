"""Sample size, MDE and power against statsmodels' normal and t power calculations."""

from __future__ import annotations

import math

import pytest
from statsmodels.stats.power import NormalIndPower, tt_ind_solve_power

from xpkit.stats.power import (
    days_needed,
    minimum_detectable_effect,
    power_at,
    required_sample_size,
)

CASES = [
    # (delta, variance, alpha, power, control weight, treatment weight)
    (0.1, 1.0, 0.05, 0.8, 0.5, 0.5),
    (2.5, 400.0, 0.01, 0.9, 0.5, 0.5),
    (0.03, 0.2475, 0.05, 0.8, 0.7, 0.3),
    (1.0, 9.0, 0.10, 0.95, 0.2, 0.8),
]


@pytest.mark.parametrize(("delta", "variance", "alpha", "power", "w0", "w1"), CASES)
def test_sample_size_matches_normal_ind_power(
    delta: float, variance: float, alpha: float, power: float, w0: float, w1: float
) -> None:
    plan = required_sample_size(delta, variance, alpha=alpha, power=power, allocation=(w0, w1))
    nobs1 = NormalIndPower().solve_power(
        effect_size=delta / math.sqrt(variance), alpha=alpha, power=power, ratio=w1 / w0
    )
    assert plan.n_per_arm_exact[0] == pytest.approx(nobs1, rel=1e-6)
    assert plan.n_per_arm_exact[1] == pytest.approx(nobs1 * w1 / w0, rel=1e-6)
    assert plan.n_per_arm == (math.ceil(nobs1), math.ceil(nobs1 * w1 / w0))
    assert plan.n_total == sum(plan.n_per_arm)


@pytest.mark.parametrize(("delta", "variance", "alpha", "power", "w0", "w1"), CASES)
def test_mde_has_the_stated_power_in_statsmodels(
    delta: float, variance: float, alpha: float, power: float, w0: float, w1: float
) -> None:
    n_total = 20_000
    mde = minimum_detectable_effect(
        n_total, variance, alpha=alpha, power=power, allocation=(w0, w1)
    )
    achieved = NormalIndPower().power(
        mde / math.sqrt(variance), nobs1=n_total * w0, alpha=alpha, ratio=w1 / w0
    )
    assert achieved == pytest.approx(power, abs=1e-9)
    # statsmodels' own effect-size solver stops at a looser tolerance (~1e-5 in power).
    solved = NormalIndPower().solve_power(
        nobs1=n_total * w0, alpha=alpha, power=power, ratio=w1 / w0
    )
    assert mde == pytest.approx(solved * math.sqrt(variance), rel=1e-4)


@pytest.mark.parametrize(("delta", "variance", "alpha", "power", "w0", "w1"), CASES)
def test_power_matches_normal_ind_power(
    delta: float, variance: float, alpha: float, power: float, w0: float, w1: float
) -> None:
    n_total = 5_000
    expected = NormalIndPower().power(
        delta / math.sqrt(variance), nobs1=n_total * w0, alpha=alpha, ratio=w1 / w0
    )
    got = power_at(delta, n_total, variance, alpha=alpha, allocation=(w0, w1))
    assert got == pytest.approx(expected, rel=1e-12)


def test_cuped_variance_reduction_scales_the_variance() -> None:
    r = 0.36  # a covariate with correlation 0.6
    plan = required_sample_size(0.05, 1.0, variance_reduction=r)
    nobs1 = NormalIndPower().solve_power(
        effect_size=0.05 / math.sqrt(1 - r), alpha=0.05, power=0.8, ratio=1.0
    )
    assert plan.n_per_arm_exact[0] == pytest.approx(nobs1, rel=1e-6)
    plain = required_sample_size(0.05, 1.0)
    assert plan.n_total_exact == pytest.approx(plain.n_total_exact * (1 - r), rel=1e-12)


def test_relative_mde_uses_the_baseline() -> None:
    baseline, sd = 40.0, 25.0
    plan = required_sample_size(0.02, sd**2, relative=True, baseline_mean=baseline)
    nobs1 = NormalIndPower().solve_power(
        effect_size=0.02 * baseline / sd, alpha=0.05, power=0.8, ratio=1.0
    )
    assert plan.n_per_arm_exact[0] == pytest.approx(nobs1, rel=1e-6)
    assert plan.mde_abs == pytest.approx(0.8)
    # A negative baseline gives the same plan: the lift is relative to |baseline|.
    negative = required_sample_size(0.02, sd**2, relative=True, baseline_mean=-baseline)
    assert negative.n_total == plan.n_total
    mde_rel = minimum_detectable_effect(
        plan.n_total_exact, sd**2, relative=True, baseline_mean=baseline
    )
    assert mde_rel == pytest.approx(0.02, rel=1e-9)
    with pytest.raises(ValueError, match="baseline_mean"):
        required_sample_size(0.02, 1.0, relative=True)


def test_multi_arm_is_planned_per_comparison() -> None:
    # Control gets 40 %, two treatments 30 % each: each comparison is a 0.4 : 0.3 split.
    plan = required_sample_size(0.1, 1.0, allocation=(0.4, 0.3, 0.3))
    nobs_control = NormalIndPower().solve_power(
        effect_size=0.1, alpha=0.05, power=0.8, ratio=0.3 / 0.4
    )
    assert plan.n_per_arm_exact[0] == pytest.approx(nobs_control, rel=1e-6)
    assert len(plan.n_per_arm) == 3 and plan.n_per_arm[1] == plan.n_per_arm[2]
    # Unequal treatment arms: the smaller arm's comparison drives the plan.
    uneven = required_sample_size(0.1, 1.0, allocation=(0.5, 0.3, 0.2))
    nobs_small = NormalIndPower().solve_power(
        effect_size=0.1, alpha=0.05, power=0.8, ratio=0.2 / 0.5
    )
    assert uneven.n_per_arm_exact[0] == pytest.approx(nobs_small, rel=1e-6)
    assert power_at(0.1, uneven.n_total_exact, 1.0, allocation=(0.5, 0.3, 0.2)) == (
        pytest.approx(0.8, abs=1e-9)
    )


def test_t_test_plan_agrees_for_large_samples() -> None:
    # The t-based plan needs slightly more units; the gap is O(1/n).
    plan = required_sample_size(0.05, 1.0)
    nobs1 = tt_ind_solve_power(effect_size=0.05, alpha=0.05, power=0.8, ratio=1.0)
    assert plan.n_per_arm_exact[0] == pytest.approx(nobs1, rel=1e-3)
    assert plan.n_per_arm_exact[0] < nobs1


def test_days_needed() -> None:
    assert days_needed(1_000, 10_000) == 10
    assert days_needed(1_000, 10_001) == 11
    assert days_needed(333.3, 1_000) == 4
    assert days_needed(10, 0) == 0
    with pytest.raises(ValueError):
        days_needed(0, 100)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mde": 0.0, "variance": 1.0},
        {"mde": 0.1, "variance": -1.0},
        {"mde": 0.1, "variance": 1.0, "variance_reduction": 1.0},
        {"mde": 0.1, "variance": 1.0, "power": 0.01},
        {"mde": 0.1, "variance": 1.0, "allocation": (1.0,)},
    ],
)
def test_bad_inputs_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        required_sample_size(**kwargs)  # type: ignore[arg-type]
