"""Complier effect (Wald / Bloom) against raw-data IV computations and a known truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xpkit.moments import Moments
from xpkit.stats.effect import Effect
from xpkit.stats.iv import complier_effect

RTOL = 1e-9
TRUE_CACE = 2.0
COLUMNS = ["value", "exposed"]


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


def _run(control: np.ndarray, treatment: np.ndarray, alpha: float = 0.05) -> Effect:
    return complier_effect(
        Moments.from_rows(control, COLUMNS),
        Moments.from_rows(treatment, COLUMNS),
        "value",
        "exposed",
        alpha=alpha,
    )


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


def test_matches_two_stage_least_squares_with_robust_se() -> None:
    """Just-identified 2SLS of y on (1, d) with instruments (1, z) and an HC0 sandwich.

    With equal group sizes HC0 equals the moment-based variance times (n - 1) / n."""
    rng = np.random.default_rng(23)
    n = 1500
    control, treatment = _simulate(n, n, rng)
    eff = _run(control, treatment)

    rows = np.vstack([control, treatment])
    y = rows[:, 0]
    x = np.column_stack([np.ones(2 * n), rows[:, 1]])
    zmat = np.column_stack([np.ones(2 * n), np.r_[np.zeros(n), np.ones(n)]])
    zx_inv = np.linalg.inv(zmat.T @ x)
    coef = zx_inv @ zmat.T @ y
    resid = y - x @ coef
    meat = (zmat * resid[:, None] ** 2).T @ zmat
    hc0 = zx_inv @ meat @ zx_inv.T
    assert eff.abs_effect == pytest.approx(coef[1], rel=RTOL)
    assert eff.abs_se**2 * (n - 1) / n == pytest.approx(hc0[1, 1], rel=RTOL)


def test_relative_lift_matches_numeric_delta_method() -> None:
    rng = np.random.default_rng(31)
    control, treatment = _simulate(1200, 1300, rng)
    eff = _run(control, treatment)

    def rel(v: np.ndarray) -> float:
        y_c, d_c, y_t, d_t = v
        return (y_t - y_c) / (d_t - d_c) / abs(y_c)

    point = np.r_[control.mean(axis=0), treatment.mean(axis=0)]
    cov = np.zeros((4, 4))
    cov[:2, :2] = np.cov(control, rowvar=False) / len(control)
    cov[2:, 2:] = np.cov(treatment, rowvar=False) / len(treatment)
    grad = np.empty(4)
    for i in range(4):
        h = 1e-6 * max(abs(point[i]), 1.0)
        up, down = point.copy(), point.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (rel(up) - rel(down)) / (2 * h)
    assert eff.rel_lift == pytest.approx(rel(point), rel=1e-12)
    assert eff.rel_se == pytest.approx(math.sqrt(grad @ cov @ grad), rel=1e-6)


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


def test_full_compliance_equals_itt() -> None:
    rng = np.random.default_rng(4)
    control = np.column_stack([rng.normal(5.0, 1.0, size=300), np.zeros(300)])
    treatment = np.column_stack([rng.normal(5.4, 1.0, size=300), np.ones(300)])
    eff = _run(control, treatment)
    assert eff.abs_effect == pytest.approx(treatment[:, 0].mean() - control[:, 0].mean(), rel=RTOL)
    assert eff.abs_se == pytest.approx(eff.extra["itt_se"], rel=RTOL)
