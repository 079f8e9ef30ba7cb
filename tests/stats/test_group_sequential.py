"""Lan-DeMets boundaries and design quantities against published tables, independent
quadrature written here (scipy ``quad``; a Simpson recursion with Richardson
extrapolation) and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from xpkit.stats.group_sequential import (
    alpha_spending,
    check_look,
    crossing_probability,
    design_power,
    inflation_factor,
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
    # The table has three decimals: each bound must round to it.
    np.testing.assert_allclose(bounds.z, PUBLISHED[shape], atol=5e-4 + 1e-12)


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


# -- independent quadrature ------------------------------------------------------------
QUAD = {"epsabs": 1e-14, "epsrel": 1e-13, "limit": 200}


def tails(x: float, b: float, sd: float, shift: float = 0.0) -> float:
    """P(|x + shift + sd W| >= b): the exit probability from ``x`` over one increment."""
    return float(stats.norm.sf((b - x - shift) / sd) + stats.norm.cdf((-b - x - shift) / sd))


def quad_exits(t: np.ndarray, z: np.ndarray, drift: float = 0.0) -> np.ndarray:
    """P(first crossing at look k) for two or three looks by (nested) adaptive quadrature.

    With ``S_k = Z_k sqrt(t_k)``, ``S_1 ~ N(drift t_1, t_1)`` and independent increments,
    ``P(exit 2) = int_{|u|<b_1} phi_1(u) P(|u + dS_2| >= b_2) du`` and ``P(exit 3)`` the
    same with an inner integral over ``|v| < b_2``.
    """
    b = z * np.sqrt(t)
    sd = np.sqrt(np.diff(t, prepend=0.0))
    shift = drift * np.diff(t, prepend=0.0)
    first = stats.norm(shift[0], sd[0])
    out = [float(first.sf(b[0]) + first.cdf(-b[0]))]
    out.append(
        integrate.quad(
            lambda u: first.pdf(u) * tails(u, b[1], sd[1], shift[1]), -b[0], b[0], **QUAD
        )[0]
    )
    if len(t) == 3:

        def inner(u: float) -> float:
            def g(v: float) -> float:
                return stats.norm.pdf(v, u + shift[1], sd[1]) * tails(v, b[2], sd[2], shift[2])

            return first.pdf(u) * integrate.quad(g, -b[1], b[1], **QUAD)[0]

        out.append(integrate.quad(inner, -b[0], b[0], **QUAD)[0])
    return np.array(out)


@pytest.mark.parametrize("shape", ["obrien_fleming", "pocock"])
@pytest.mark.parametrize(
    "t", [[0.5, 1.0], [0.2, 1.0], [0.9, 1.0], [0.3, 0.7, 1.0], [0.5, 0.999, 1.0]]
)
def test_exit_probabilities_match_quadrature(shape: str, t: list[float]) -> None:
    tt = np.asarray(t)
    bounds = spending_boundaries(tt, alpha=0.05, shape=shape)
    increments = np.diff(spend(tt, 0.05, shape), prepend=0.0)
    np.testing.assert_allclose(quad_exits(tt, bounds.z), increments, rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape", ["obrien_fleming", "pocock"])
@pytest.mark.parametrize("t", [[0.5, 1.0], [0.25, 1.0], [0.6, 0.95]])
def test_two_look_bounds_solved_independently(shape: str, t: list[float]) -> None:
    tt = np.asarray(t)
    cumulative = spend(tt, 0.05, shape)
    c1 = stats.norm.isf(cumulative[0] / 2)
    target = cumulative[1] - cumulative[0]

    def excess(c2: float) -> float:
        return quad_exits(tt, np.array([c1, c2]))[1] - target

    c2 = optimize.brentq(excess, 0.5, 10.0, xtol=1e-13)
    z = spending_boundaries(tt, alpha=0.05, shape=shape).z
    np.testing.assert_allclose(z, [c1, c2], rtol=0, atol=1e-9)


def simpson_exits(t: np.ndarray, z: np.ndarray, step: float) -> np.ndarray:
    """P(first crossing at each look) by composite Simpson on uniform grids.

    The continuation region ``|S_k| < b_k`` (cut at 10 sd, beyond which the mass is below
    1e-22) gets an even number of intervals at most ``step`` times the narrower of the
    increments into and out of look ``k``; the sub-density is carried as in Armitage,
    McPherson & Rowe (1969).
    """
    sd = np.sqrt(np.diff(t, prepend=0.0))

    def nodes(k: int) -> tuple[np.ndarray, np.ndarray]:
        half = min(z[k], 10.0) * math.sqrt(t[k])
        h = step * min(sd[k], sd[k + 1])
        n = 2 * max(1, math.ceil(half / h))
        x = np.linspace(-half, half, n + 1)
        w = np.full(n + 1, 2.0)
        w[1::2], w[0], w[-1] = 4.0, 1.0, 1.0
        return x, w * (2 * half / n) / 3

    exits = np.empty(t.size)
    exits[0] = 2 * stats.norm.sf(z[0])
    x, w = nodes(0)
    mass = w * stats.norm.pdf(x, 0, sd[0])
    for k in range(1, t.size):
        b = z[k] * math.sqrt(t[k])
        exits[k] = mass @ (stats.norm.sf((b - x) / sd[k]) + stats.norm.cdf((-b - x) / sd[k]))
        if k + 1 < t.size:
            x_new, w_new = nodes(k)
            mass = w_new * (stats.norm.pdf((x_new[:, None] - x[None, :]) / sd[k]) / sd[k] @ mass)
            x = x_new
    return exits


@pytest.mark.parametrize("shape", ["obrien_fleming", "pocock"])
def test_twenty_eight_looks_spend_alpha(shape: str) -> None:
    # Daily looks over four weeks. Simpson's error is O(h^4) here, so Richardson's
    # (16 S(h/2) - S(h)) / 15 removes it; this reference shares no code with the module and
    # is itself checked against quad above through the two- and three-look cases.
    t = np.arange(1, 29) / 28
    bounds = spending_boundaries(t, alpha=0.05, shape=shape)
    coarse = simpson_exits(t, bounds.z, 0.1)
    fine = simpson_exits(t, bounds.z, 0.05)
    exits = (16 * fine - coarse) / 15
    assert np.max(np.abs(fine - coarse)) < 1e-8  # the extrapolation is a small correction
    assert exits.sum() == pytest.approx(0.05, abs=1e-9)
    np.testing.assert_allclose(exits, np.diff(spend(t, 0.05, shape), prepend=0.0), atol=1e-10)


def test_simpson_reference_agrees_with_quadrature() -> None:
    t = np.array([0.3, 0.7, 1.0])
    z = np.array([3.0, 2.5, 2.0])
    coarse, fine = simpson_exits(t, z, 0.1), simpson_exits(t, z, 0.05)
    np.testing.assert_allclose((16 * fine - coarse) / 15, quad_exits(t, z), atol=1e-11)


# -- design: crossing probability, power, inflation ------------------------------------
def simulate_first_crossing(
    t: np.ndarray, z: np.ndarray, drift: float, sims: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative share of paths stopped through the upper and lower bound by each look."""
    rng = np.random.default_rng(seed)
    steps = np.diff(t, prepend=0.0)
    s = np.cumsum(drift * steps + rng.standard_normal((sims, t.size)) * np.sqrt(steps), axis=1)
    zs = s / np.sqrt(t)
    crossed = np.abs(zs) >= z
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), t.size)
    sign = np.sign(zs[np.arange(sims), np.minimum(first, t.size - 1)])
    up = np.array([np.mean((first <= k) & (sign > 0)) for k in range(t.size)])
    down = np.array([np.mean((first <= k) & (sign < 0)) for k in range(t.size)])
    return up, down


@pytest.mark.parametrize("shape", ["obrien_fleming", "pocock"])
@pytest.mark.parametrize("drift", [0.0, 1.5, 3.0, -2.5])
def test_crossing_probability_by_side_by_simulation(shape: str, drift: float) -> None:
    sims = 200_000
    bounds = spending_boundaries(FIVE_LOOKS, alpha=0.05, shape=shape)
    up, down = simulate_first_crossing(FIVE_LOOKS, bounds.z, drift, sims, seed=20240602)
    for side, mc in (("upper", up), ("lower", down), ("both", up + down)):
        p = crossing_probability(FIVE_LOOKS, bounds.z, drift, side=side)
        se = np.sqrt(np.maximum(p * (1 - p), 1e-12) / sims)
        assert np.all(np.abs(mc - p) <= 4.5 * se + 1e-12), (side, mc, p)
    if drift == 0.0:
        np.testing.assert_allclose(
            crossing_probability(FIVE_LOOKS, bounds.z), spend(FIVE_LOOKS, 0.05, shape), atol=1e-12
        )


@pytest.mark.parametrize("drift", [0.7, 2.8])
def test_crossing_probability_with_drift_matches_quadrature(drift: float) -> None:
    t = np.array([0.3, 0.7, 1.0])
    z = spending_boundaries(t, 0.05, "pocock").z
    expected = np.cumsum(quad_exits(t, z, drift))
    np.testing.assert_allclose(crossing_probability(t, z, drift), expected, atol=1e-10)


def test_single_look_power_is_the_fixed_horizon_power() -> None:
    drift = 2.8
    expected = stats.norm.cdf(drift - stats.norm.isf(0.025))
    assert design_power([1.0], 0.05, "obrien_fleming", drift) == pytest.approx(expected, abs=1e-13)
    assert design_power([1.0], 0.05, "pocock", -drift) == pytest.approx(expected, abs=1e-13)
    assert inflation_factor([1.0], 0.05, 0.9) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("shape", ["obrien_fleming", "pocock"])
def test_design_power_by_simulation(shape: str) -> None:
    drift = 3.0
    sims = 200_000
    bounds = spending_boundaries(FIVE_LOOKS, alpha=0.05, shape=shape)
    up, _ = simulate_first_crossing(FIVE_LOOKS, bounds.z, drift, sims, seed=7)
    power = design_power(FIVE_LOOKS, 0.05, shape, drift)
    assert abs(up[-1] - power) < 4.5 * math.sqrt(power * (1 - power) / sims)


def solve_drift(t: np.ndarray, z: np.ndarray, power: float) -> float:
    """The drift at which the upper crossing probability reaches ``power``."""
    return optimize.brentq(
        lambda d: crossing_probability(t, z, d, side="upper")[-1] - power, 0.5, 10.0, xtol=1e-12
    )


@pytest.mark.parametrize(
    ("name", "published_bound", "published_factor"),
    [
        # Jennison & Turnbull (2000), Tables 2.1-2.4: K = 5, alpha = 0.05 two-sided,
        # power 0.9. Pocock: constant bound C_P = 2.413, R_P = 1.207. O'Brien-Fleming:
        # bound C_B sqrt(K / k) with C_B = 2.040, R_B = 1.026.
        ("pocock", 2.413, 1.207),
        ("obrien_fleming", 2.040, 1.026),
    ],
)
def test_crossing_probability_reproduces_published_inflation(
    name: str, published_bound: float, published_factor: float
) -> None:
    # crossing_probability takes any bounds: with the classical constant-shape designs it
    # must give their published sample-size ratios. The bound is quoted to 3 decimals, so
    # the published ratio must lie within what +/- half a unit of the bound allows.
    k = np.arange(1, 6)
    shape = np.ones(5) if name == "pocock" else np.sqrt(5 / k)
    fixed = stats.norm.isf(0.025) + stats.norm.isf(0.1)
    factors = [
        (solve_drift(FIVE_LOOKS, c * shape, 0.9) / fixed) ** 2
        for c in (published_bound - 5e-4, published_bound + 5e-4)
    ]
    assert min(factors) - 5e-4 <= published_factor <= max(factors) + 5e-4
    # And the level of the classical design is 0.05 (to the table's precision).
    level = crossing_probability(FIVE_LOOKS, published_bound * shape)[-1]
    assert level == pytest.approx(0.05, abs=2e-4)


@pytest.mark.parametrize("shape", ["obrien_fleming", "pocock"])
def test_inflation_factor_two_looks_by_quadrature(shape: str) -> None:
    t = np.array([0.5, 1.0])
    z = spending_boundaries(t, 0.05, shape).z

    def upper_power(d: float) -> float:
        # upper crossing at look 1, plus paths inside at look 1 that end above b_2
        first = stats.norm.sf(z[0] - d * math.sqrt(t[0]))
        sd = math.sqrt(t[1] - t[0])
        b1, b2 = z * np.sqrt(t)
        second = integrate.quad(
            lambda u: (
                stats.norm.pdf(u, d * t[0], math.sqrt(t[0]))
                * stats.norm.sf((b2 - u - d * (t[1] - t[0])) / sd)
            ),
            -b1,
            b1,
            **QUAD,
        )[0]
        return first + second - 0.9

    fixed = stats.norm.isf(0.025) + stats.norm.isf(0.1)
    expected = (optimize.brentq(upper_power, 2.0, 6.0, xtol=1e-13) / fixed) ** 2
    assert inflation_factor(t, 0.05, 0.9, shape) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("shape", ["obrien_fleming", "pocock"])
def test_inflation_factor_gives_the_planned_power_by_simulation(shape: str) -> None:
    # Sized by the inflation factor, the design must have the planned power of 0.9.
    factor = inflation_factor(FIVE_LOOKS, 0.05, 0.9, shape)
    drift = math.sqrt(factor) * (stats.norm.isf(0.025) + stats.norm.isf(0.1))
    sims = 200_000
    bounds = spending_boundaries(FIVE_LOOKS, alpha=0.05, shape=shape)
    up, _ = simulate_first_crossing(FIVE_LOOKS, bounds.z, drift, sims, seed=11)
    assert abs(up[-1] - 0.9) < 4.5 * math.sqrt(0.09 / sims)
    # Spending designs sit near the classical ones of the same shape (1.026, 1.207).
    assert 1.0 < factor < (1.03 if shape == "obrien_fleming" else 1.21)


def test_design_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="one bound per look"):
        crossing_probability([0.5, 1.0], [2.0])
    with pytest.raises(ValueError, match="fraction 1"):
        inflation_factor([0.5, 0.9])
    with pytest.raises(ValueError, match="power"):
        inflation_factor([0.5, 1.0], power=1.0)


def test_a_look_that_spends_nothing_never_stops() -> None:
    z = np.array([np.inf, 1.96])
    p = crossing_probability([0.5, 1.0], z)
    assert p[0] == 0.0
    # No stopping at the first look: the second is the fixed-horizon test at 1.96.
    assert p[1] == pytest.approx(2 * stats.norm.sf(1.96), abs=1e-13)
