"""CUPED / regression adjustment with one or more pre-period covariates, from moments."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xpkit.moments import Moments
from xpkit.stats.effect import Effect
from xpkit.stats.lift import (
    NAN,
    build_effect,
    check_alpha,
    relative_lift,
    safe_div,
    safe_sqrt,
    welch_df,
)

# A covariate whose spread is below this fraction of its mean is constant up to rounding;
# float64 resolves ~1e-16 relative, so nothing real lives below 1e-12.
_CONSTANT_RTOL = 1e-12
# Directions of the covariates' correlation matrix weaker than this are treated as exact
# collinearity. Any fixed theta keeps the adjusted estimator unbiased, so dropping a
# near-degenerate direction only forgoes a sliver of variance reduction.
_RCOND = 1e-10


def pooled_theta(c: Moments, t: Moments) -> np.ndarray:
    """Regression coefficients of the first column on the others, within groups.

    ``c`` and ``t`` are the control and treatment moments over ``(value, *covariates)``.
    ``theta = C_xx^+ C_xy`` with ``C = C_control + C_treatment`` the summed centred
    co-moments. Pooling *within*-group co-moments (not the co-moments of the merged sample,
    which would absorb the treatment effect) makes the adjusted difference equal the OLS
    coefficient on the treatment dummy in ``y ~ 1 + T + X`` (Frisch–Waugh–Lovell).

    The system is solved on the correlation scale, so covariates in wildly different units
    do not look collinear, by least squares with truncated small singular values; a
    constant covariate gets ``theta = 0`` instead of breaking the solve.
    """
    k = len(c.columns) - 1
    theta = np.zeros(k)
    if k == 0:
        return theta
    comoment = c.comoment + t.comoment
    cxx, cxy = comoment[1:, 1:], comoment[1:, 0]
    n = c.n + t.n
    pooled_mean = c.merged_mean(t)[1:].tolist() if n > 0 else [0.0] * k
    diag = cxx.diagonal()
    # The screen runs on plain floats: numpy's per-call overhead would dwarf the arithmetic
    # on two or three covariates, and this runs once per estimate per day of history.
    active = [
        i
        for i, (d, m) in enumerate(zip(diag.tolist(), pooled_mean, strict=True))
        if d > 0.0 and math.isfinite(d) and math.sqrt(d / max(n, 1)) > _CONSTANT_RTOL * abs(m)
    ]
    if not active:
        return theta
    if len(active) < k:
        cxx, cxy, diag = cxx[np.ix_(active, active)], cxy[active], diag[active]
    scale = np.sqrt(diag)
    corr = cxx / (scale[:, None] * scale)  # np.outer(scale, scale), minus the call overhead
    phi = np.linalg.lstsq(corr, cxy / scale, rcond=_RCOND)[0]
    theta[active] = phi / scale
    return theta


@dataclass(frozen=True)
class Adjustment:
    """A regression-adjusted treatment-versus-control comparison, all from moments.

    ``var_mean_*`` are the sampling variances of each group's mean of the adjusted value
    ``y - theta'x``; ``adjusted_mean_*`` are ``mean(y) - theta'(mean(x) - pooled mean(x))``
    with their sampling variances and covariance (the pooled covariate mean ties them).
    """

    theta: tuple[float, ...]
    estimate: float
    var_mean_c: float
    var_mean_t: float
    unadjusted_var: float
    adjusted_mean_c: float
    adjusted_mean_t: float
    var_adjusted_mean_c: float
    var_adjusted_mean_t: float
    cov_adjusted_means: float

    @property
    def se(self) -> float:
        return safe_sqrt(self.var_mean_c + self.var_mean_t)

    @property
    def variance_reduction(self) -> float:
        """``1 - Var(adjusted effect) / Var(unadjusted effect)``."""
        return 1.0 - safe_div(self.var_mean_c + self.var_mean_t, self.unadjusted_var)


def regression_adjust(
    control: Moments, treatment: Moments, value: str, covariates: Sequence[str]
) -> Adjustment:
    """CUPED estimate ``(ybar_t - ybar_c) - theta'(xbar_t - xbar_c)`` and its variances.

    Per group the adjusted value ``y - theta'x`` has variance
    ``Var y - 2 theta' Cov(x, y) + theta' Cov(x) theta`` (ddof 1), read off the group's
    covariance matrix; the uncertainty of ``theta`` itself is ignored, as in Deng et al.
    (2013), since it is O(1/n) against the O(1/sqrt(n)) effect.

    The adjusted means are linear in the two groups' mean vectors ``m_c`` and ``m_t``: with
    ``a = n_t / N``, ``b = n_c / N`` and ``u = (1, -theta)``,

        adj_c = (1, -a theta)' m_c + (0, a theta)' m_t
        adj_t = (0, b theta)' m_c + (1, -b theta)' m_t

    so their variances and covariance are ``w' S_g w / n_g`` summed over groups.
    An empty group gives NaN everywhere except ``theta``.
    """
    columns = [value, *covariates]
    c, t = control.select(columns), treatment.select(columns)
    theta = pooled_theta(c, t)
    n_c, n_t = control.n, treatment.n
    if n_c == 0 or n_t == 0:
        return Adjustment(tuple(theta.tolist()), *([NAN] * 9))
    s_c, s_t = c.cov(), t.cov()
    n = n_c + n_t
    a, b = n_t / n, n_c / n
    zero = np.zeros(1)
    u = np.concatenate(([1.0], -theta))

    def quad(x: np.ndarray, s: np.ndarray, y: np.ndarray) -> float:
        return float(x @ s @ y)

    wc_c, wc_t = np.concatenate(([1.0], -a * theta)), np.concatenate((zero, a * theta))
    wt_c, wt_t = np.concatenate((zero, b * theta)), np.concatenate(([1.0], -b * theta))
    return Adjustment(
        theta=tuple(theta.tolist()),
        estimate=float(u @ (t.mean - c.mean)),
        var_mean_c=quad(u, s_c, u) / n_c,
        var_mean_t=quad(u, s_t, u) / n_t,
        unadjusted_var=float(s_c[0, 0] / n_c + s_t[0, 0] / n_t),
        adjusted_mean_c=float(wc_c @ c.mean + wc_t @ t.mean),
        adjusted_mean_t=float(wt_c @ c.mean + wt_t @ t.mean),
        var_adjusted_mean_c=quad(wc_c, s_c, wc_c) / n_c + quad(wc_t, s_t, wc_t) / n_t,
        var_adjusted_mean_t=quad(wt_c, s_c, wt_c) / n_c + quad(wt_t, s_t, wt_t) / n_t,
        cov_adjusted_means=quad(wc_c, s_c, wt_c) / n_c + quad(wc_t, s_t, wt_t) / n_t,
    )


def adjustment_extra(adjustment: Adjustment, covariates: Sequence[str]) -> dict[str, float]:
    """``theta_<covariate>`` and ``variance_reduction`` entries for ``Effect.extra``."""
    extra = {
        f"theta_{name}": value for name, value in zip(covariates, adjustment.theta, strict=True)
    }
    extra["variance_reduction"] = adjustment.variance_reduction
    return extra


def cuped_test(
    control: Moments,
    treatment: Moments,
    value: str,
    covariates: Sequence[str],
    alpha: float = 0.05,
) -> Effect:
    """CUPED-adjusted difference in means (method ``"cuped"``).

        effect = (ybar_t - ybar_c) - theta'(xbar_t - xbar_c),   theta = C_xx^+ C_xy

    with ``C`` the pooled within-group co-moments, which is exactly the OLS coefficient on
    the treatment dummy in ``y ~ 1 + T + X``. The standard error, degrees of freedom,
    interval and p-value are Welch's on the per-unit adjusted values ``y - theta'x``.
    Reference: Deng, Xu, Kohavi & Walker (2013), "Improving the Sensitivity of Online
    Controlled Experiments by Utilizing Pre-Experiment Data", WSDM.

    ``mean_control``/``mean_treatment`` are the adjusted means
    ``ybar_g - theta'(xbar_g - xbar_pooled)`` (their difference is the effect, and the
    relative lift uses them with their delta-method covariance); the raw means are in
    ``extra["raw_mean_control"]`` / ``extra["raw_mean_treatment"]``. ``extra`` also holds
    ``theta_<covariate>`` and ``variance_reduction`` (``1 - Var(adjusted)/Var(unadjusted)``);
    the degrees of freedom are ``Effect.df``.

    Degenerate input behaves as in :func:`xpkit.stats.means.welch_test` (NaN standard error,
    interval and p-value); a constant or collinear covariate is dropped from the fit
    (``theta = 0`` for a constant one) rather than raising.
    """
    alpha = check_alpha(alpha)
    adj = regression_adjust(control, treatment, value, covariates)
    df = welch_df(adj.var_mean_c, adj.var_mean_t, control.n, treatment.n)
    extra = adjustment_extra(adj, covariates)
    extra["raw_mean_control"] = control.mean_of(value) if control.n else NAN
    extra["raw_mean_treatment"] = treatment.mean_of(value) if treatment.n else NAN
    return adjusted_effect(
        adj,
        method="cuped",
        n_control=control.n,
        n_treatment=treatment.n,
        alpha=alpha,
        df=df,
        extra=extra,
    )


def adjusted_effect(
    adj: Adjustment,
    *,
    method: str,
    n_control: int,
    n_treatment: int,
    alpha: float,
    extra: dict[str, float],
    df: float | None = None,
) -> Effect:
    """The Effect of a regression-adjusted difference: absolute and relative lift on the
    adjusted means (t-based with ``df``, normal-based without)."""
    return build_effect(
        method=method,
        n_control=n_control,
        n_treatment=n_treatment,
        mean_control=adj.adjusted_mean_c,
        mean_treatment=adj.adjusted_mean_t,
        estimate=adj.estimate,
        se=adj.se,
        alpha=alpha,
        df=df,
        relative=relative_lift(
            adj.adjusted_mean_c,
            adj.adjusted_mean_t,
            adj.var_adjusted_mean_c,
            adj.var_adjusted_mean_t,
            adj.cov_adjusted_means,
            alpha,
        ),
        extra=extra,
    )
