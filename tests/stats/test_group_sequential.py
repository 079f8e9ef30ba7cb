"""Lan-DeMets boundaries against published tables, the multivariate normal CDF and simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from xpkit.stats.group_sequential import (
    alpha_spending,
    check_look,
    information_fraction,
    spending_boundaries,
)

FIVE_LOOKS = np.arange(1, 6) / 5

# Two-sided alpha = 0.05, five equally spaced looks (DeMets & Lan, 1994, Stat. Med. 13,
# Table; reproduced by gsDesign sfLDOF/sfLDPocock, rpact asOF/asP and ldbounds).
PUBLISHED = {
    "obrien_fleming": [4.877, 3.357, 2.680, 2.290, 2.031],
    "pocock": [2.438, 2.427, 2.410, 2.397, 2.386],
}


def spend(t: np.ndarray, alpha: float, shape: str) -> np.ndarray:
    """The spending functions written out here, independently of the module."""
    t = np.asarray(t, dtype=float)
    if shape == "obrien_fleming":
        # 2 - 2 Phi(x), written with the survival function to keep tiny spends exact.
        per_side = 2 * stats.norm.sf(stats.norm.isf(alpha / 4) / np.sqrt(t))
        return 2 * per_side
    return alpha * np.log(1 + (np.e - 1) * t)


def brownian_corr(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=float)
    return np.minimum.outer(t, t) / np.sqrt(np.outer(t, t))


def mvn_crossing(t: np.ndarray, bounds: np.ndarray) -> float:
    """P(|Z_k| >= c_k for some k) under H0 by Genz's multivariate normal integration."""
    inside = stats.multivariate_normal.cdf(
        bounds,
        mean=np.zeros(len(t)),
        cov=brownian_corr(t),
        lower_limit=-bounds,
        abseps=1e-9,
        releps=1e-9,
        maxpts=2_000_000,
        rng=1,
    )
    return 1 - float(inside)


@pytest.mark.parametrize("shape", ["obrien_fleming", "pocock"])
def test_published_five_look_boundaries(shape: str) -> None:
    bounds = spending_boundaries(FIVE_LOOKS, alpha=0.05, shape=shape)
    np.testing.assert_allclose(bounds.z, PUBLISHED[shape], atol=1e-3)


def test_single_look_is_the_fixed_horizon_test() -> None:
    bounds = spending_boundaries([1.0], alpha=0.05)
    assert bounds.z[0] == pytest.approx(stats.norm.ppf(0.975), rel=1e-12)
    assert bounds.nominal_p[0] == pytest.approx(0.05, rel=1e-12)


@pytest.mark.parametrize("shape", ["obrien_fleming", "pocock"])
@pytest.mark.parametrize("t", [[0.5, 1.0], [0.3, 0.7, 1.0], [0.25, 0.6, 0.9], [0.5, 0.999, 1.0]])
def test_cumulative_crossing_matches_multivariate_normal(shape: str, t: list[float]) -> None:
    tt = np.asarray(t)
    bounds = spending_boundaries(tt, alpha=0.05, shape=shape)
    expected = spend(tt, 0.05, shape)
    for k in range(1, len(tt) + 1):
        assert mvn_crossing(tt[:k], bounds.z[:k]) == pytest.approx(expected[k - 1], abs=2e-6)
    np.testing.assert_allclose(bounds.alpha_spent, expected, rtol=1e-12)


@pytest.mark.parametrize("shape", ["obrien_fleming", "pocock"])
def test_crossing_probability_by_simulation(shape: str) -> None:
    rng = np.random.default_rng(20240601)
    sims = 200_000
    increments = rng.standard_normal((sims, 5)) * np.sqrt(np.diff(FIVE_LOOKS, prepend=0.0))
    z = np.cumsum(increments, axis=1) / np.sqrt(FIVE_LOOKS)
    bounds = spending_boundaries(FIVE_LOOKS, alpha=0.05, shape=shape)
    crossed = np.any(np.abs(z) >= bounds.z, axis=1).mean()
    mc_se = np.sqrt(0.05 * 0.95 / sims)
    assert abs(crossed - 0.05) < 4 * mc_se


def test_spending_functions_reach_alpha_and_increase() -> None:
    t = np.linspace(0.01, 1, 100)
    for shape in ("obrien_fleming", "pocock"):
        a = alpha_spending(t, 0.05, shape)
        np.testing.assert_allclose(a, spend(t, 0.05, shape), rtol=1e-12)
        assert np.all(np.diff(a) > 0)
        assert a[-1] == pytest.approx(0.05, rel=1e-12)


def test_check_look_uses_the_looks_taken() -> None:
    # Looks so far at 0.2 and 0.4; current at 0.6 -> the third published bound.
    decision = check_look([0.2, 0.4], 0.6, z=2.70)
    assert decision.z_bound == pytest.approx(PUBLISHED["obrien_fleming"][2], abs=1e-3)
    assert decision.crossed and not decision.final
    assert not check_look([0.2, 0.4], 0.6, z=-2.60).crossed
    assert check_look([0.2, 0.4], 0.6, z=-2.70).crossed  # two-sided


def test_final_look_spends_what_is_left() -> None:
    # The experiment ends at 80 % of its planned sample: the last look spends all of alpha.
    past = [0.25, 0.5]
    decision = check_look(past, 0.8, z=0.0, final=True)
    assert decision.final
    assert decision.alpha_spent == pytest.approx(0.05)
    bounds = spending_boundaries([*past, 0.8], spend_all_at_last=True).z
    assert bounds[-1] == pytest.approx(decision.z_bound)
    assert mvn_crossing(np.array([*past, 0.8]), bounds) == pytest.approx(0.05, abs=2e-6)


def test_overrun_is_capped_at_the_final_look() -> None:
    decision = check_look([0.5], 1.3, z=1.0)
    assert decision.information_fraction == 1.0 and decision.final
    first = stats.norm.isf(spend(np.array([0.5]), 0.05, "obrien_fleming")[0] / 2)
    both = np.array([first, decision.z_bound])
    assert mvn_crossing(np.array([0.5, 1.0]), both) == pytest.approx(0.05, abs=2e-6)
    with pytest.raises(ValueError, match="complete"):
        check_look([0.5, 1.0], 1.0, z=1.0)


def test_information_fraction() -> None:
    assert information_fraction(250, 1000) == 0.25
    assert information_fraction(1500, 1000) == 1.0
    with pytest.raises(ValueError):
        information_fraction(10, 0)


@pytest.mark.parametrize("t", [[0.5, 0.5], [0.6, 0.3], [0.0, 1.0], [0.5, 1.2]])
def test_rejects_fractions_that_are_not_increasing_in_unit_interval(t: list[float]) -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        spending_boundaries(t)
