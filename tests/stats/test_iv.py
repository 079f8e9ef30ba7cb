"""Complier effect (Wald / 2SLS) against raw-data IV computations and a known truth."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
from linearmodels.iv import IV2SLS

from xpkit.moments import Moments
from xpkit.stats.cuped import cuped_test
from xpkit.stats.effect import Effect
from xpkit.stats.iv import complier_effect
from xpkit.stats.means import proportion_test

RTOL = 1e-9
TRUE_CACE = 2.0
COLUMNS = ["value", "exposed"]
COV_COLUMNS = ["value", "exposed", "x1", "x2"]


def _simulate(n_c: int, n_t: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One-sided non-compliance: 60% compliers; only treated compliers are exposed.

    Never-takers have a lower baseline than compliers, so the naive exposed-vs-unexposed
    comparison is biased while the Wald estimator is not."""

    def group(n: int, assigned: bool) -> np.ndarray:
        complier = rng.uniform(size=n) < 0.6
        baseline = np.where(complier, 10.0, 7.0) + rng.normal(0.0, 3.0, size=n)
        exposed = complier & assigned
        value = baseline + TRUE_CACE * exposed + rng.normal(0.0, 0.5, size=n) * exposed
        return np.column_stack([value, exposed.astype(float)])

    return group(n_c, False), group(n_t, True)


def _simulate_covariates(
    n_c: int, n_t: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`_simulate` with two pre-period covariates that predict the value and the
    chance of being a complier (columns ``COV_COLUMNS``)."""

    def group(n: int, assigned: bool) -> np.ndarray:
        x1 = rng.normal(size=n)
        x2 = rng.gamma(2.0, 1.0, size=n)
        complier = rng.uniform(size=n) < 0.55 + 0.2 * np.tanh(x1)
        baseline = np.where(complier, 10.0, 7.0) + 2.0 * x1 + 0.7 * x2 + rng.normal(0, 2, n)
        exposed = complier & assigned
        value = baseline + TRUE_CACE * exposed + rng.normal(0.0, 1.0, size=n) * exposed
        return np.column_stack([value, exposed.astype(float), x1, x2])

    return group(n_c, False), group(n_t, True)


def _run(
    control: np.ndarray,
    treatment: np.ndarray,
    alpha: float = 0.05,
    covariates: tuple[str, ...] = (),
    ddof: int = 1,
) -> Effect:
    columns = COLUMNS if control.shape[1] == 2 else COV_COLUMNS
    return complier_effect(
        Moments.from_rows(control, columns),
        Moments.from_rows(treatment, columns),
        "value",
        "exposed",
        covariates=covariates,
        alpha=alpha,
        ddof=ddof,
    )


def _iv2sls(
    control: np.ndarray, treatment: np.ndarray, covariates: tuple[str, ...]
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """linearmodels 2SLS of value on (1, exposed, covariates), instruments (1, z, covariates)."""
    rows = np.vstack([control, treatment])
    z = np.r_[np.zeros(len(control)), np.ones(len(treatment))]
    exog = np.column_stack(
        [np.ones(len(z))] + [rows[:, COV_COLUMNS.index(name)] for name in covariates]
    )
    fit = IV2SLS(rows[:, 0], exog, rows[:, 1], z).fit(cov_type="robust", debiased=False)
    return fit, rows, z, exog


def test_wald_estimate_and_linearised_se_match_raw_data() -> None:
    rng = np.random.default_rng(17)
    control, treatment = _simulate(1800, 2100, rng)
    eff = _run(control, treatment)

    rows = np.vstack([control, treatment])
    z = np.r_[np.zeros(len(control)), np.ones(len(treatment))]
    y, d = rows[:, 0], rows[:, 1]
    beta = np.cov(z, y)[0, 1] / np.cov(z, d)[0, 1]
    assert eff.method == "cace_wald"
    assert eff.abs_effect == pytest.approx(beta, rel=RTOL)

    itt_d = treatment[:, 1].mean() - control[:, 1].mean()
    u_c = control[:, 0] - beta * control[:, 1]
    u_t = treatment[:, 0] - beta * treatment[:, 1]
    var = (u_c.var(ddof=1) / u_c.size + u_t.var(ddof=1) / u_t.size) / itt_d**2
    assert eff.abs_se == pytest.approx(math.sqrt(var), rel=RTOL)
    assert eff.extra["exposure_rate_diff"] == pytest.approx(itt_d, rel=RTOL)
    assert eff.extra["itt_effect"] == pytest.approx(
        treatment[:, 0].mean() - control[:, 0].mean(), rel=RTOL
    )
    assert eff.abs_ci_low <= TRUE_CACE <= eff.abs_ci_high


def test_without_covariates_ddof0_equals_iv2sls_robust_exactly() -> None:
    """Unequal arms, no covariates: the HC0 sandwich of just-identified 2SLS is
    sum_g sum_{i in g} e_i^2 / n_g^2 / ITT_d^2 (the instrument centred is n_c/N or -n_t/N,
    and the 2SLS residuals have mean zero within each arm), i.e. the moments delta method
    with ddof 0. With ddof 1 each arm's term is larger by n_g / (n_g - 1)."""
    rng = np.random.default_rng(23)
    control, treatment = _simulate(1400, 1700, rng)
    fit, *_ = _iv2sls(control, treatment, ())
    eff0 = _run(control, treatment, ddof=0)
    eff1 = _run(control, treatment, ddof=1)
    assert eff0.abs_effect == pytest.approx(fit.params["endog"], rel=RTOL)
    assert eff0.abs_se**2 == pytest.approx(fit.cov.loc["endog", "endog"], rel=RTOL)

    beta = fit.params["endog"]
    itt_d = treatment[:, 1].mean() - control[:, 1].mean()
    var1 = (
        sum(np.var(g[:, 0] - beta * g[:, 1], ddof=1) / len(g) for g in (control, treatment))
        / itt_d**2
    )
    assert eff1.abs_se**2 == pytest.approx(var1, rel=RTOL)


@pytest.mark.parametrize("covariates", [("x1",), ("x1", "x2")])
def test_with_covariates_equals_2sls_and_its_robust_se(covariates: tuple[str, ...]) -> None:
    """Point estimate: indirect least squares = 2SLS exactly. Standard error: the HC0
    sandwich is sum_i zt_i^2 e_i^2 / (zt'd)^2 with zt the instrument residualised on
    (1, x), while the moments delta method uses the instrument centred only, z - zbar
    (theta held fixed). Hence, exactly,

        Var_moments(ddof 0) = HC0 * (1 - R2)^2 * sum (z - zbar)^2 e^2 / sum zt^2 e^2,

    with R2 of z on (1, x) (zt'd = A_d zt'zt and zt'zt = (1 - R2) sum (z - zbar)^2).
    The factor is 1 + O(1/sqrt(n)) — in a randomised experiment the covariates are
    balanced up to sampling noise — and is within 1% here."""
    rng = np.random.default_rng(41)
    control, treatment = _simulate_covariates(2000, 2300, rng)
    fit, rows, z, exog = _iv2sls(control, treatment, covariates)
    eff = _run(control, treatment, covariates=covariates, ddof=0)
    assert eff.method == "cace_2sls"
    assert eff.abs_effect == pytest.approx(fit.params["endog"], rel=RTOL)

    e = np.asarray(fit.resids)
    zt = z - exog @ np.linalg.lstsq(exog, z, rcond=None)[0]
    zc = z - z.mean()
    r2 = 1.0 - (zt @ zt) / (zc @ zc)
    factor = (1.0 - r2) ** 2 * np.sum(zc**2 * e**2) / np.sum(zt**2 * e**2)
    hc0 = fit.cov.loc["endog", "endog"]
    assert eff.abs_se**2 == pytest.approx(hc0 * factor, rel=RTOL)
    assert abs(factor - 1.0) < 0.01
    assert eff.abs_se == pytest.approx(math.sqrt(hc0), rel=0.005)


def test_itt_extra_is_the_cuped_row_and_first_stage_is_adjusted() -> None:
    rng = np.random.default_rng(43)
    control, treatment = _simulate_covariates(900, 1000, rng)
    covariates = ("x1", "x2")
    eff = _run(control, treatment, covariates=covariates)
    cuped = cuped_test(
        Moments.from_rows(control, COV_COLUMNS),
        Moments.from_rows(treatment, COV_COLUMNS),
        "value",
        covariates,
    )
    assert eff.extra["itt_effect"] == pytest.approx(cuped.abs_effect, rel=RTOL)
    assert eff.extra["itt_se"] == pytest.approx(cuped.abs_se, rel=RTOL)
    # First stage: OLS coefficient on z in exposed ~ 1 + z + x, from raw data.
    rows = np.vstack([control, treatment])
    z = np.r_[np.zeros(len(control)), np.ones(len(treatment))]
    design = np.column_stack([np.ones(len(z)), z, rows[:, 2:]])
    first = np.linalg.lstsq(design, rows[:, 1], rcond=None)[0][1]
    reduced = np.linalg.lstsq(design, rows[:, 0], rcond=None)[0][1]
    assert eff.extra["first_stage_effect"] == pytest.approx(first, rel=RTOL)
    assert eff.abs_effect == pytest.approx(reduced / first, rel=RTOL)


def test_proportion_metric_ddof0_matches_the_itt_row() -> None:
    """Without covariates a proportion's ITT row uses p (1 - p) / n; with ddof=0 the
    complier effect's ITT standard error is that same number."""
    rng = np.random.default_rng(3)
    n = 3000
    exposed = (rng.uniform(size=n) < 0.7).astype(float)
    y_t = (rng.uniform(size=n) < 0.10 + 0.03 * exposed).astype(float)
    y_c = (rng.uniform(size=n) < 0.10).astype(float)
    control = np.column_stack([y_c, np.zeros(n)])
    treatment = np.column_stack([y_t, exposed])
    eff = _run(control, treatment, ddof=0)
    itt = proportion_test(Moments.from_rows(y_c, ["value"]), Moments.from_rows(y_t, ["value"]))
    assert eff.extra["itt_se"] == pytest.approx(itt.abs_se, rel=RTOL)
    fit, *_ = _iv2sls(control, treatment, ())
    assert eff.abs_se**2 == pytest.approx(fit.cov.loc["endog", "endog"], rel=RTOL)


def _equal_within_covariance_arm(rng: np.random.Generator, n0: int, n1: int) -> np.ndarray:
    """A treatment arm whose unexposed (n0) and exposed (n1) units have exactly the same
    ddof-0 covariance matrix of (value, x1, x2) but different means: the one case in which
    the moments determine the co-moments of value * (1 - exposed) exactly."""
    target = np.array([[9.0, 2.0, 0.8], [2.0, 1.0, 0.1], [0.8, 0.1, 2.0]])
    chol = np.linalg.cholesky(target)
    blocks = []
    for size, mean, exposed in ((n0, [7.0, -0.2, 2.1], 0.0), (n1, [12.5, 0.2, 1.9], 1.0)):
        raw = rng.standard_normal((size, 3)) * [1.0, 1.0, 2.0] + [0.0, 0.0, 1.0]
        raw = raw - raw.mean(axis=0)
        white = raw @ np.linalg.inv(np.linalg.cholesky(raw.T @ raw / size)).T
        block = white @ chol.T + mean
        blocks.append(np.column_stack([block[:, 0], np.full(size, exposed), block[:, 1:]]))
    return np.vstack(blocks)


def _delta_method_rel_se(
    control: np.ndarray, treatment: np.ndarray, covariates: tuple[str, ...]
) -> tuple[float, float]:
    """Relative CACE beta / |mu0| and its delta-method SE, numerically, from the raw data
    with the per-unit column w = value * (1 - exposed) included (all moments exact).
    theta is held fixed at the pooled within-arm OLS fit, as the estimator does."""
    idx = [COV_COLUMNS.index(name) for name in covariates]

    def augment(g: np.ndarray) -> np.ndarray:
        return np.column_stack([g[:, 0], g[:, 1], g[:, idx], g[:, 0] * (1 - g[:, 1])])

    a_c, a_t = augment(control), augment(treatment)
    k = len(idx)
    centred = np.vstack([a_c - a_c.mean(0), a_t - a_t.mean(0)])
    xs = centred[:, 2 : 2 + k]
    theta_y = np.linalg.lstsq(xs, centred[:, 0], rcond=None)[0] if k else np.zeros(0)
    theta_d = np.linalg.lstsq(xs, centred[:, 1], rcond=None)[0] if k else np.zeros(0)

    def rel(vec: np.ndarray) -> float:
        m_c, m_t = vec[: k + 3], vec[k + 3 :]
        diff = m_t - m_c
        beta = (diff[0] - theta_y @ diff[2 : 2 + k]) / (diff[1] - theta_d @ diff[2 : 2 + k])
        mu0 = (m_c[-1] - m_t[-1]) / diff[1]
        return beta / abs(mu0)

    point = np.r_[a_c.mean(0), a_t.mean(0)]
    cov = np.zeros((2 * (k + 3), 2 * (k + 3)))
    cov[: k + 3, : k + 3] = np.cov(a_c, rowvar=False) / len(a_c)
    cov[k + 3 :, k + 3 :] = np.cov(a_t, rowvar=False) / len(a_t)
    grad = np.empty(point.size)
    for i in range(point.size):
        h = 1e-6 * max(abs(point[i]), 1.0)
        up, down = point.copy(), point.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (rel(up) - rel(down)) / (2 * h)
    return rel(point), math.sqrt(grad @ cov @ grad)


@pytest.mark.parametrize("covariates", [(), ("x1", "x2")])
def test_relative_cace_exact_when_arm_covariances_are_equal(covariates: tuple[str, ...]) -> None:
    rng = np.random.default_rng(31)
    treatment = _equal_within_covariance_arm(rng, 700, 1100)
    control = _simulate_covariates(1900, 10, rng)[0]
    eff = _run(control, treatment, covariates=covariates)

    # The compliers' untreated mean, one-sided: (ybar_c - (1 - d_t) m_nt) / d_t.
    d_t = treatment[:, 1].mean()
    m_nt = treatment[treatment[:, 1] == 0, 0].mean()
    mu0 = (control[:, 0].mean() - (1 - d_t) * m_nt) / d_t
    assert eff.extra["never_taker_mean"] == pytest.approx(m_nt, rel=RTOL)
    assert eff.extra["complier_mean_untreated"] == pytest.approx(mu0, rel=RTOL)
    assert eff.mean_control == pytest.approx(mu0, rel=RTOL)
    assert eff.mean_treatment - eff.mean_control == pytest.approx(eff.abs_effect, rel=RTOL)
    assert eff.extra["rel_variance_approximated"] == 1.0

    rel, rel_se = _delta_method_rel_se(control, treatment, covariates)
    assert eff.rel_lift is not None and eff.rel_se is not None
    assert eff.rel_lift == pytest.approx(eff.abs_effect / abs(mu0), rel=RTOL)
    assert eff.rel_lift == pytest.approx(rel, rel=1e-10)
    # Numerical differentiation limits the agreement to ~1e-7.
    assert eff.rel_se == pytest.approx(rel_se, rel=1e-6)


def test_relative_cace_se_close_to_exact_when_covariances_differ() -> None:
    """In _simulate_covariates the exposed have extra variance, so the equal-covariance
    assumption is off; it enters only terms scaled by the relative effect (~0.2 here), and
    the SE stays within 2% of the exact delta method with value * (1 - exposed) observed."""
    rng = np.random.default_rng(37)
    control, treatment = _simulate_covariates(2500, 2500, rng)
    for covariates in ((), ("x1", "x2")):
        eff = _run(control, treatment, covariates=covariates)
        rel, rel_se = _delta_method_rel_se(control, treatment, covariates)
        assert eff.rel_lift == pytest.approx(rel, rel=1e-10)
        assert eff.rel_se == pytest.approx(rel_se, rel=0.02)


def test_relative_cace_interval_coverage_by_simulation() -> None:
    """2000 replications, fixed seed; truth = CACE / E[Y(0) | complier] = 2 / 10."""
    rng = np.random.default_rng(2024)
    reps, covered, start = 2000, 0, time.perf_counter()
    for _ in range(reps):
        eff = _run(*_simulate(600, 600, rng))
        assert eff.rel_ci_low is not None and eff.rel_ci_high is not None
        covered += eff.rel_ci_low <= TRUE_CACE / 10.0 <= eff.rel_ci_high
    # Nominal 95%; binomial sd over 2000 reps is ~0.5 points.
    assert 0.935 <= covered / reps <= 0.965
    assert time.perf_counter() - start < 20.0


def test_interval_covers_true_complier_effect_by_simulation() -> None:
    rng = np.random.default_rng(5)
    reps = 300
    covered = sum(
        eff.abs_ci_low <= TRUE_CACE <= eff.abs_ci_high
        for eff in (_run(*_simulate(400, 400, rng)) for _ in range(reps))
    )
    # Nominal 95%; binomial sd over 300 reps is ~1.3 points.
    assert 0.91 <= covered / reps <= 0.985


@pytest.mark.parametrize("treated_exposure", [0.0, 0.01])
def test_missing_or_weak_first_stage_gives_nan(treated_exposure: float) -> None:
    rng = np.random.default_rng(2)
    control = np.column_stack([rng.normal(size=200), np.zeros(200)])
    exposed = (rng.uniform(size=200) < treated_exposure).astype(float)
    treatment = np.column_stack([rng.normal(size=200), exposed])
    eff = _run(control, treatment)
    assert math.isnan(eff.abs_effect) and math.isnan(eff.p_value) and math.isnan(eff.abs_ci_low)
    assert eff.rel_lift is None
    assert not math.isinf(eff.abs_se)


def test_negative_exposure_difference_gives_nan() -> None:
    control = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    treatment = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    assert math.isnan(_run(control, treatment).abs_effect)


def test_non_binary_exposure_has_no_relative_effect() -> None:
    rng = np.random.default_rng(8)
    control = np.column_stack([rng.normal(5.0, 1.0, 300), np.zeros(300)])
    treatment = np.column_stack([rng.normal(6.0, 1.0, 300), rng.uniform(0.5, 1.0, 300)])
    eff = _run(control, treatment)
    assert math.isfinite(eff.abs_effect) and eff.rel_lift is None


def test_full_compliance_equals_itt() -> None:
    rng = np.random.default_rng(4)
    control = np.column_stack([rng.normal(5.0, 1.0, size=300), np.zeros(300)])
    treatment = np.column_stack([rng.normal(5.4, 1.0, size=300), np.ones(300)])
    eff = _run(control, treatment)
    assert eff.abs_effect == pytest.approx(treatment[:, 0].mean() - control[:, 0].mean(), rel=RTOL)
    assert eff.abs_se == pytest.approx(eff.extra["itt_se"], rel=RTOL)
    # Everyone assigned is a complier: mu0 is the control mean and the relative effect
    # is the ordinary relative lift with its delta-method SE (independent arms).
    y_c, y_t = control[:, 0], treatment[:, 0]
    rel = (y_t.mean() - y_c.mean()) / abs(y_c.mean())
    ratio = y_t.mean() / y_c.mean()
    var = (y_t.var(ddof=1) / 300 + ratio**2 * y_c.var(ddof=1) / 300) / y_c.mean() ** 2
    assert eff.mean_control == pytest.approx(y_c.mean(), rel=RTOL)
    assert eff.rel_lift == pytest.approx(rel, rel=RTOL)
    assert eff.rel_se == pytest.approx(math.sqrt(var), rel=RTOL)
    assert eff.extra["rel_variance_approximated"] == 0.0
