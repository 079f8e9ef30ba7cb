"""mSPRT and confidence sequences against direct evaluation on raw data and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats
from statsmodels.stats.power import NormalIndPower

from xpkit.stats.group_sequential import spending_boundaries
from xpkit.stats.sequential import (
    confidence_sequence,
    cs_rho,
    msprt,
    msprt_log_likelihood_ratio,
    tau_from_mde,
    tau_from_variance,
)

SIGMA = 2.0  # known per-unit standard deviation in both arms


def paired_data(n: int, effect: float, seed: int) -> np.ndarray:
    """Per-pair differences treatment - control of raw per-unit normal data."""
    rng = np.random.default_rng(seed)
    control = rng.normal(10.0, SIGMA, n)
    treatment = rng.normal(10.0 + effect, SIGMA, n)
    return treatment - control


def mixture_lr_by_quadrature(d: np.ndarray, tau: float, theta0: float = 0.0) -> float:
    """int prod N(d_i | theta, 2 sigma^2) N(theta; theta0, tau^2) dtheta / prod N(d_i | theta0).

    Evaluated from the raw differences, not from their mean, by adaptive quadrature.
    """
    var = 2 * SIGMA**2

    def log_ratio(theta: float) -> float:
        return float(np.sum((d - theta0) ** 2 - (d - theta) ** 2) / (2 * var))

    def integrand(theta: float) -> float:
        return math.exp(log_ratio(theta)) * stats.norm.pdf(theta, theta0, tau)

    centre, spread = float(np.mean(d)), math.sqrt(var / d.size)
    lo = min(centre - 30 * spread, theta0 - 30 * tau)
    hi = max(centre + 30 * spread, theta0 + 30 * tau)
    value, _ = integrate.quad(
        integrand, lo, hi, points=[centre, theta0], epsabs=0, epsrel=1e-11, limit=500
    )
    return value


def looks_of(d: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    estimates = np.array([d[:n].mean() for n in sizes])
    ses = np.array([math.sqrt(2 * SIGMA**2 / n) for n in sizes])
    return estimates, ses


# -- mSPRT -----------------------------------------------------------------------------
@pytest.mark.parametrize("theta0", [0.0, 0.3])
def test_msprt_likelihood_ratio_matches_quadrature_on_raw_data(theta0: float) -> None:
    d = paired_data(600, effect=0.5, seed=11)
    sizes = [20, 50, 100, 200, 400, 600]
    estimates, ses = looks_of(d, sizes)
    tau = 0.4
    closed = np.exp(msprt_log_likelihood_ratio(estimates, ses, tau, theta0))
    direct = [mixture_lr_by_quadrature(d[:n], tau, theta0) for n in sizes]
    np.testing.assert_allclose(closed, direct, rtol=1e-6)


def test_msprt_p_values_are_running_minimum_of_inverse_lr() -> None:
    d = paired_data(400, effect=0.6, seed=3)
    sizes = [10, 40, 80, 160, 240, 320, 400]
    estimates, ses = looks_of(d, sizes)
    result = msprt(estimates, ses, tau=0.5, alpha=0.05)
    direct = np.array([mixture_lr_by_quadrature(d[:n], 0.5) for n in sizes])
    expected = np.minimum.accumulate(np.minimum(1.0, 1 / direct))
    np.testing.assert_allclose(result.p_values, expected, rtol=1e-6)
    assert np.array_equal(result.rejected, expected <= 0.05)


def test_msprt_interval_edge_is_where_the_lr_reaches_one_over_alpha() -> None:
    d = paired_data(150, effect=0.4, seed=5)
    estimates, ses = looks_of(d, [150])
    alpha, tau = 0.05, 0.3
    result = msprt(estimates, ses, tau=tau, alpha=alpha)

    def gap(theta0: float) -> float:
        return math.log(mixture_lr_by_quadrature(d, tau, theta0)) - math.log(1 / alpha)

    mean, se = estimates[0], ses[0]
    low = optimize.brentq(gap, mean - 20 * se, mean, xtol=1e-12)
    high = optimize.brentq(gap, mean, mean + 20 * se, xtol=1e-12)
    assert result.ci_low[0] == pytest.approx(low, abs=1e-7)
    assert result.ci_high[0] == pytest.approx(high, abs=1e-7)


def test_msprt_interval_is_a_running_intersection_and_skips_empty_looks() -> None:
    estimates = np.array([0.5, np.nan, -0.1, 0.2])
    ses = np.array([0.3, 0.2, 0.1, 0.0])  # look 2 has no estimate, look 4 no variance
    result = msprt(estimates, ses, tau=0.2)
    assert np.all(np.diff(result.ci_low) >= 0) and np.all(np.diff(result.ci_high) <= 0)
    assert result.ci_low[1] == result.ci_low[0] and result.p_values[1] == result.p_values[0]
    assert result.ci_high[3] == result.ci_high[2] and result.p_values[3] == result.p_values[2]
    assert np.isnan(result.estimates[1])


def test_tau_equal_to_the_effect_maximises_expected_log_lr() -> None:
    # E[ln Lambda] over est ~ N(delta, V) by Gauss-Hermite quadrature, maximised over tau.
    delta, var = 0.3, 0.01
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    est = delta + math.sqrt(var) * nodes

    def neg_expected(log_tau: float) -> float:
        log_lr = msprt_log_likelihood_ratio(est, math.sqrt(var), math.exp(log_tau))
        return -float(np.sum(weights * log_lr) / np.sum(weights))

    best = optimize.minimize_scalar(neg_expected, bounds=(-6, 2), method="bounded")
    assert math.exp(best.x) == pytest.approx(tau_from_mde(delta), rel=1e-4)


def test_tau_from_variance_is_the_planned_mde() -> None:
    # 80 % power, alpha 0.05, 10 000 units split evenly, unit variance 4.
    n, variance = 10_000, 4.0
    effect_size = tau_from_variance(variance, n) / math.sqrt(variance)
    power = NormalIndPower().power(effect_size, nobs1=n / 2, alpha=0.05, ratio=1.0)
    assert power == pytest.approx(0.8, abs=1e-9)


# -- confidence sequences --------------------------------------------------------------
def mixture_martingale(x: np.ndarray, theta0: float, rho: float) -> float:
    """int exp(lam S_t - lam^2 t / 2) N(lam; 0, rho^2) dlam with S_t = sum (x - theta0) / sigma."""
    s, t = float(np.sum((x - theta0) / SIGMA)), x.size

    def integrand(lam: float) -> float:
        return math.exp(lam * s - lam**2 * t / 2) * stats.norm.pdf(lam, 0.0, rho)

    peak = s / (t + 1 / rho**2)
    width = 1 / math.sqrt(t + 1 / rho**2)
    value, _ = integrate.quad(
        integrand, peak - 40 * width, peak + 40 * width, epsabs=0, epsrel=1e-12, limit=500
    )
    return value


def test_confidence_sequence_boundary_matches_direct_evaluation() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(1.0, SIGMA, 500)
    alpha, rho = 0.05, 0.08
    result = confidence_sequence([x.mean()], [SIGMA / math.sqrt(x.size)], [x.size], rho=rho)

    def gap(theta0: float) -> float:
        return math.log(mixture_martingale(x, theta0, rho)) - math.log(1 / alpha)

    se = SIGMA / math.sqrt(x.size)
    low = optimize.brentq(gap, x.mean() - 20 * se, x.mean(), xtol=1e-13)
    high = optimize.brentq(gap, x.mean(), x.mean() + 20 * se, xtol=1e-13)
    assert result.ci_low[0] == pytest.approx(low, abs=1e-8)
    assert result.ci_high[0] == pytest.approx(high, abs=1e-8)
    assert result.p_values[0] == pytest.approx(1 / mixture_martingale(x, 0.0, rho), rel=1e-8)


def test_confidence_sequence_with_rho_tau_over_sigma_is_the_msprt() -> None:
    n = np.array([50, 100, 400, 1600])
    se = SIGMA / np.sqrt(n)
    est = np.array([0.9, 0.4, 0.35, 0.3])
    cs = confidence_sequence(est, se, n, rho=0.1)
    ms = msprt(est, se, tau=0.1 * SIGMA)
    np.testing.assert_allclose(cs.ci_low, ms.ci_low, rtol=1e-12)
    np.testing.assert_allclose(cs.p_values, ms.p_values, rtol=1e-12)


def test_confidence_sequence_width_shrinks_with_n() -> None:
    n = np.array([100, 400, 1_600, 6_400, 25_600, 102_400])
    result = confidence_sequence(np.zeros(n.size), SIGMA / np.sqrt(n), n, t_opt=1_000)
    width = result.ci_high - result.ci_low
    assert np.all(np.diff(width) < 0)
    # Quadrupling n halves a fixed-horizon interval. Past t_opt the sequence pays a slowly
    # growing log factor on top (ratio just above 1/2); before it, the boundary is loose and
    # tightens faster than 1/sqrt(n).
    ratios = width[1:] / width[:-1]
    assert np.all(ratios < 0.75)
    assert np.all((ratios[n[:-1] >= 1_000] > 0.5) & (ratios[n[:-1] >= 1_000] < 0.55))


def test_rho_from_t_opt_gives_the_narrowest_boundary_there() -> None:
    t_opt, se = 5_000, SIGMA / math.sqrt(5_000)

    def width(rho: float) -> float:
        r = confidence_sequence([0.0], [se], [t_opt], rho=rho)
        return float(r.ci_high[0] - r.ci_low[0])

    best = optimize.minimize_scalar(
        lambda lr: width(math.exp(lr)), bounds=(-10, 0), method="bounded"
    )
    assert width(cs_rho(t_opt)) == pytest.approx(width(math.exp(best.x)), rel=1e-4)


def test_confidence_sequence_covers_under_continuous_monitoring() -> None:
    # Two arms of skewed (exponential) data, plug-in variance, 40 looks of 50 units per arm.
    rng = np.random.default_rng(2024)
    sims, looks, batch, alpha = 1_000, 40, 50, 0.05
    true_diff = 0.25
    control = rng.exponential(1.0, (sims, looks * batch)).reshape(sims, looks, batch)
    treatment = rng.exponential(1.25, (sims, looks * batch)).reshape(sims, looks, batch)
    n = batch * np.arange(1, looks + 1)

    def running(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s1 = np.cumsum(x.sum(axis=2), axis=1)
        s2 = np.cumsum((x**2).sum(axis=2), axis=1)
        mean = s1 / n
        return mean, (s2 - n * mean**2) / (n - 1)

    mc, vc = running(control)
    mt, vt = running(treatment)
    result = confidence_sequence(
        mt - mc, np.sqrt(vc / n + vt / n), 2 * n, t_opt=2 * n[-1], alpha=alpha
    )
    covered = (result.ci_low[:, -1] <= true_diff) & (true_diff <= result.ci_high[:, -1])
    mc_se = math.sqrt(alpha * (1 - alpha) / sims)
    assert covered.mean() >= 1 - alpha - 3 * mc_se


# -- A/A: peeking ----------------------------------------------------------------------
def test_aa_peeking_inflates_naive_but_not_sequential_error() -> None:
    rng = np.random.default_rng(7)
    sims, looks, batch, alpha = 2_000, 20, 100, 0.05
    # Per-look batch means of unit-variance data in each arm, accumulated into running means.
    batch_diff = rng.normal(0.0, math.sqrt(2 / batch), (sims, looks))
    n = batch * np.arange(1, looks + 1)  # units per arm
    estimates = np.cumsum(batch_diff * batch, axis=1) / n
    ses = np.sqrt(2 / n)
    z = estimates / ses

    naive = np.any(2 * stats.norm.sf(np.abs(z)) < alpha, axis=1).mean()
    always_valid = msprt(estimates, ses, tau_from_variance(1.0, 2 * n[-1]), alpha).rejected
    obf = spending_boundaries(np.arange(1, looks + 1) / looks, alpha).z
    group_seq = np.any(np.abs(z) >= obf, axis=1).mean()

    mc_se = math.sqrt(alpha * (1 - alpha) / sims)
    assert naive > alpha + 8 * mc_se  # ~0.2 for 20 looks
    assert always_valid[:, -1].mean() <= alpha + 3 * mc_se
    assert group_seq <= alpha + 3 * mc_se


# -- e-values --------------------------------------------------------------------------
def test_e_values_are_the_current_likelihood_ratio_from_raw_data() -> None:
    d = paired_data(400, effect=0.3, seed=21)
    sizes = [10, 40, 80, 160, 240, 320, 400]
    estimates, ses = looks_of(d, sizes)
    result = msprt(estimates, ses, tau=0.4)
    direct = np.array([mixture_lr_by_quadrature(d[:n], 0.4) for n in sizes])
    np.testing.assert_allclose(result.e_values, direct, rtol=1e-6)
    assert result.e_value == pytest.approx(direct[-1], rel=1e-6)
    # The e-value may fall back; the p-value keeps 1 / running maximum.
    np.testing.assert_allclose(
        result.p_values, np.minimum(1.0, 1 / np.maximum.accumulate(direct)), rtol=1e-6
    )


def test_confidence_sequence_e_values_are_its_mixture_martingale() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0.3, SIGMA, 900)
    sizes = [100, 300, 900]
    est = [x[:n].mean() for n in sizes]
    se = [SIGMA / math.sqrt(n) for n in sizes]
    result = confidence_sequence(est, se, sizes, rho=0.1)
    direct = [mixture_martingale(x[:n], 0.0, 0.1) for n in sizes]
    np.testing.assert_allclose(result.e_values, direct, rtol=1e-8)


def test_e_values_carry_over_looks_without_information() -> None:
    estimates = np.array([np.nan, 0.5, np.nan, -0.1, 0.2])
    ses = np.array([0.3, 0.3, 0.2, 0.1, 0.0])  # looks 1 and 3 no estimate, look 5 no variance
    result = msprt(estimates, ses, tau=0.2)
    lr = np.exp(msprt_log_likelihood_ratio([0.5, -0.1], [0.3, 0.1], 0.2))
    np.testing.assert_allclose(result.e_values, [1.0, lr[0], lr[0], lr[1], lr[1]], rtol=1e-12)
    # Several sequences at once: looks along the last axis, the property takes the last.
    many = msprt(np.array([[0.5, 0.1], [0.2, 0.9]]), np.array([[0.3, 0.2], [0.3, 0.2]]), 0.2)
    assert many.e_value.shape == (2,)
    np.testing.assert_array_equal(many.e_value, many.e_values[:, -1])


def test_current_lr_is_an_e_value_and_its_running_maximum_is_not() -> None:
    # Exact at one look: E_H0[Lambda] = int Lambda(z) phi(z) dz = 1 for est ~ N(0, V).
    var, tau = 0.04, 0.3

    def weighted(z: float) -> float:
        est = z * math.sqrt(var)
        log_lr = float(msprt_log_likelihood_ratio(est, math.sqrt(var), tau))
        return math.exp(log_lr + stats.norm.logpdf(z))

    mean_lr, _ = integrate.quad(weighted, -np.inf, np.inf, epsabs=0, epsrel=1e-10)
    assert mean_lr == pytest.approx(1.0, abs=1e-8)
    # Over 28 looks: at a stopping time (first look with Lambda >= 3, else the last) the mean
    # stays at 1; the running maximum's mean is well above 1.
    rng = np.random.default_rng(99)
    sims, looks, batch = 20_000, 28, 200
    n = batch * np.arange(1, looks + 1)
    estimates = np.cumsum(rng.normal(0.0, 1.0, (sims, looks)) * math.sqrt(batch), axis=1) / n
    ses = 1 / np.sqrt(n)
    result = msprt(estimates, ses, tau=0.1)
    hit = result.e_values >= 3
    stop = np.where(hit.any(axis=1), hit.argmax(axis=1), looks - 1)
    at_stop = result.e_values[np.arange(sims), stop]
    se_stop = at_stop.std(ddof=1) / math.sqrt(sims)
    assert abs(at_stop.mean() - 1.0) < 4 * se_stop
    running_max = 1 / result.p_values[:, -1]
    assert running_max.mean() > 1.3
