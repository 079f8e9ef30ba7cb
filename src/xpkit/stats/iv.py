"""Complier average causal effect under non-compliance (instrumental variables).

Assignment is the instrument, exposure the treatment received. The estimator is the Wald
ratio of two intention-to-treat differences, both regression-adjusted by the same
covariates as the CUPED row beside it, which is two-stage least squares exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from xpkit.moments import Moments
from xpkit.stats.cuped import pooled_theta
from xpkit.stats.effect import Effect
from xpkit.stats.lift import (
    NAN,
    RelativeLift,
    build_effect,
    check_alpha,
    normal_ci,
    normal_quantile,
    safe_sqrt,
)

# Relative tolerance of the 0/1 check on the exposure column's sum of squares (as in
# xpkit.stats.means): accumulated float sums of an indicator agree far better than this.
_BINARY_RTOL = 1e-6


def _is_binary(n: int, mean: float, ss: float) -> bool:
    """True when ``n`` values with this mean and centred sum of squares can all be 0 or 1
    (``ss = n p (1 - p)`` holds only for 0/1 values with mean ``p`` in [0, 1])."""
    if not (-1e-12 <= mean <= 1.0 + 1e-12):
        return False
    expected = n * mean * (1.0 - mean)
    return abs(ss - expected) <= _BINARY_RTOL * max(expected, 1.0)


def _append_untreated_value(m: Moments) -> tuple[np.ndarray, np.ndarray, bool]:
    """Mean vector and centred co-moments of ``(y, d, x..., w)`` with ``w = y (1 - d)``.

    ``m`` is over ``(y, d, x...)`` with ``d`` a 0/1 indicator. Everything about ``w``
    that is a second moment of ``(y, d, x)`` is exact: its mean ``ybar - mean(y d)``, and
    (because ``d (1 - d) = 0``) its co-moment with ``d``, ``-n0 mu0_y n1 / n``. Its
    co-moments with ``y`` and ``x`` involve third moments (``sum y^2 (1 - d)``), which
    moments do not hold; they are filled in by assuming the within-exposure-status
    co-moment matrix of ``(y, x)`` splits between the ``n0`` unexposed and ``n1`` exposed
    units in proportion to their numbers (equal covariance among exposed and unexposed).
    With ``C`` the co-moments, ``c = C[:, d]`` and the unexposed means
    ``mu0 = mean - c / n0``, the within part is ``W = C - c c' / C_dd`` and

        C_wv = (n0 / n) W_yv + n0 mu0_y (mu0_v - mean_v),
        C_ww = (n0 / n) W_yy + n0 mu0_y^2 (1 - n0 / n).

    A group with constant ``d`` needs no assumption (``w = y`` or ``w = 0``); the third
    value says whether the assumption was used.
    """
    n, mean, comoment = m.n, m.mean, m.comoment
    k = mean.size
    n1 = n * float(mean[1])
    n0 = n - n1
    c_dd = float(comoment[1, 1])
    aug_mean = np.empty(k + 1)
    aug = np.zeros((k + 1, k + 1))
    aug[:k, :k] = comoment
    approximated = False
    if n1 <= 0.5 or (c_dd <= 0.0 and mean[1] < 0.5):  # nobody exposed: w = y
        aug_mean[k] = mean[0]
        aug[k, :k] = comoment[0]
        aug[k, k] = comoment[0, 0]
    elif n0 <= 0.5 or c_dd <= 0.0:  # everybody exposed: w = 0
        aug_mean[k] = 0.0
    else:
        c = comoment[:, 1]
        mu0 = mean - c / n0
        within = comoment - np.outer(c, c) / c_dd
        share0 = n0 / n
        aug_mean[k] = n0 * mu0[0] / n
        aug[k, :k] = share0 * within[0] + n0 * mu0[0] * (mu0 - mean)
        aug[k, k] = share0 * within[0, 0] + n0 * mu0[0] ** 2 * (1.0 - share0)
        approximated = True
    aug_mean[:k] = mean
    aug[:k, k] = aug[k, :k]
    return aug_mean, aug, approximated


def complier_effect(
    control: Moments,
    treatment: Moments,
    value: str,
    exposure: str,
    covariates: Sequence[str] = (),
    alpha: float = 0.05,
    ddof: int = 1,
) -> Effect:
    """Complier average causal effect by indirect least squares (method ``"cace_wald"``
    without covariates, ``"cace_2sls"`` with them).

    Assignment ``z`` is the instrument and ``exposure`` the per-unit 0/1 treatment received
    ``d``, both columns of the same moments, as are the ``covariates`` ``x``. The reduced
    form (value) and the first stage (exposure) are adjusted with the pooled within-group
    regression coefficients of CUPED (:func:`xpkit.stats.cuped.pooled_theta`):

        A_y = (ybar_t - ybar_c) - theta_y'(xbar_t - xbar_c),
        A_d = (dbar_t - dbar_c) - theta_d'(xbar_t - xbar_c),     beta = A_y / A_d.

    ``A_y`` and ``A_d`` are the OLS coefficients on ``z`` in ``y ~ 1 + z + x`` and
    ``d ~ 1 + z + x``, so with one binary instrument ``beta`` *is* the 2SLS coefficient on
    ``d`` in ``y ~ 1 + d + x`` with instruments ``(1, z, x)`` (indirect least squares);
    without covariates it is the Wald (Bloom) ratio ``ITT_y / ITT_d``.

    Standard error by the delta method with ``theta`` held fixed (as in CUPED): with
    ``beta`` the linearisation is ``(A_y - beta A_d) / A_d``, the adjusted difference of
    the per-unit value ``e = y - beta d - (theta_y - beta theta_d)'x``, so

        Var(beta) = [Var_c(e) / n_c + Var_t(e) / n_t] / A_d^2,

    which carries the first stage's uncertainty and its covariance with the ITT effect.
    Variances use ``ddof`` (1 by default; 0 matches a proportion metric's ``p (1 - p) / n``).
    With ``ddof=0`` this is exactly the heteroskedasticity-robust (HC0) 2SLS variance when
    the covariate means are equal in both arms, and differs from it otherwise only through
    the sample imbalance of the covariates, O(1/sqrt(n)) relative. Interval and p-value are
    normal. References: Bloom (1984), *Evaluation Review* 8; Angrist, Imbens & Rubin
    (1996), JASA 91; Wooldridge (2010), *Econometric Analysis of Cross Section and Panel
    Data*, 2nd ed., ch. 5.

    Relative effect. Under monotonicity the compliers' mean without treatment is
    identified (Imbens & Rubin 1997, *Review of Economic Studies* 64; Abadie 2002, JASA 97)
    from ``w = y (1 - d)``:

        mu0 = (wbar_c - wbar_t) / (dbar_t - dbar_c).

    Under one-sided non-compliance (``d = 0`` in control) ``wbar_c = ybar_c`` and
    ``wbar_t = (1 - dbar_t) * m_nt``, with ``m_nt`` the treatment arm's mean of ``y`` over its
    unexposed units (the never-takers), ``(sum y - sum y d) / (n_t - sum d)``, read off the
    co-moment of ``y`` and ``d``. The relative effect is ``beta / |mu0|`` (unadjusted ``mu0``:
    it is a level, not a contrast); ``mean_control`` is ``mu0`` and ``mean_treatment`` is
    ``mu0 + beta``, the compliers' means, so ``abs_effect = mean_treatment - mean_control``
    and ``rel_lift = abs_effect / |mean_control|`` as for every Effect. Its standard error
    is the delta method over both arms' means of ``(y, d, x, w)`` (first stage, ITT
    and never-takers' mean all included). The moments of ``w`` with ``y`` and ``x`` within
    an arm in which ``d`` varies need third moments; they are approximated by assuming the
    exposed and unexposed units of that arm have the same covariance of ``(y, x)`` (see
    :func:`_append_untreated_value`). That approximation enters only the terms multiplied
    by the relative effect itself, so it is negligible for lifts of a few percent; its
    coverage is checked by simulation in ``bench/cace_coverage.py``.

    ``extra``: ``itt_effect``/``itt_se`` (the adjusted ITT effect on the value, equal to
    the CUPED row with the same covariates and ``ddof=1``), ``itt_mean_control``/
    ``itt_mean_treatment`` (raw value means), ``exposure_rate_control``/
    ``exposure_rate_treatment``/``exposure_rate_diff`` (raw), ``first_stage_effect``/
    ``first_stage_se`` (adjusted ``A_d``), ``complier_share`` (``dbar_t - dbar_c``),
    ``never_taker_share``/``never_taker_mean`` (treatment arm's unexposed units),
    ``complier_mean_untreated`` (``mu0``) with ``complier_mean_untreated_se``,
    ``rel_variance_approximated`` (1 when the equal-covariance assumption was used), and
    ``theta_<covariate>`` for the value (``theta_d_<covariate>`` for the exposure).

    Degenerate input: the effect, standard error, interval and p-value (and the compliers'
    means) are NaN, and the relative lift ``None``, when a group is empty, when
    ``A_d <= 0``, or when ``A_d < z_{1-alpha/2} se(A_d)``: a weak first stage whose sign
    is not established makes the ratio meaningless, the same rule as for relative lifts.
    The relative lift is also ``None`` when ``exposure`` is not 0/1 or when
    ``|mu0| < z_{1-alpha/2} se(mu0)``. Too few units or no variance gives a NaN standard
    error as elsewhere.
    """
    alpha = check_alpha(alpha)
    covariates = tuple(covariates)
    k = len(covariates)
    columns = [value, exposure, *covariates]
    c, t = control.select(columns), treatment.select(columns)
    n_c, n_t = c.n, t.n
    method = "cace_2sls" if covariates else "cace_wald"
    theta_y = pooled_theta(c.select([value, *covariates]), t.select([value, *covariates]))
    theta_d = pooled_theta(c.select([exposure, *covariates]), t.select([exposure, *covariates]))
    extra: dict[str, float] = {
        f"theta_{name}": v for name, v in zip(covariates, theta_y.tolist(), strict=True)
    }
    extra |= {f"theta_d_{name}": v for name, v in zip(covariates, theta_d.tolist(), strict=True)}

    def nan_effect() -> Effect:
        return build_effect(
            method=method,
            n_control=n_c,
            n_treatment=n_t,
            mean_control=NAN,
            mean_treatment=NAN,
            estimate=NAN,
            se=NAN,
            alpha=alpha,
            relative=None,
            extra=extra,
        )

    if n_c == 0 or n_t == 0:
        return nan_effect()

    u = np.concatenate(([1.0, 0.0], -theta_y))  # adjusted value
    v = np.concatenate(([0.0, 1.0], -theta_d))  # adjusted exposure
    diff = t.mean - c.mean
    s_c, s_t = c.cov(ddof), t.cov(ddof)

    def var(g: np.ndarray, h: np.ndarray) -> float:
        """Covariance of the adjusted differences ``g'(m_t - m_c)`` and ``h'(m_t - m_c)``."""
        return float(g @ s_c @ h) / n_c + float(g @ s_t @ h) / n_t

    itt_y, itt_d = float(u @ diff), float(v @ diff)
    se_itt_d = safe_sqrt(var(v, v))
    extra |= {
        "itt_effect": itt_y,
        "itt_se": safe_sqrt(var(u, u)),
        "itt_mean_control": float(c.mean[0]),
        "itt_mean_treatment": float(t.mean[0]),
        "exposure_rate_control": float(c.mean[1]),
        "exposure_rate_treatment": float(t.mean[1]),
        "exposure_rate_diff": float(diff[1]),
        "first_stage_effect": itt_d,
        "first_stage_se": se_itt_d,
    }
    z = normal_quantile(alpha)
    first_stage_ok = (
        math.isfinite(itt_d)
        and itt_d > 0.0
        and not (math.isfinite(se_itt_d) and itt_d < z * se_itt_d)
    )
    if not first_stage_ok:
        return nan_effect()
    beta = itt_y / itt_d
    se_beta = safe_sqrt(var(u - beta * v, u - beta * v)) / itt_d

    mu0, relative = NAN, None
    binary = all(_is_binary(m.n, float(m.mean[1]), float(m.comoment[1, 1])) for m in (c, t))
    complier_share = float(diff[1])
    if binary and complier_share > 0.0:
        mean_c, aug_c, approx_c = _append_untreated_value(c)
        mean_t, aug_t, approx_t = _append_untreated_value(t)
        w, d = k + 2, 1
        mu0 = float(mean_c[w] - mean_t[w]) / complier_share
        # Gradients of beta and mu0 with respect to the treatment arm's mean vector of
        # (y, d, x, w); the control arm's are their negatives (both are functions of
        # m_t - m_c).
        g_beta = np.concatenate((u - beta * v, [0.0])) / itt_d
        g_mu0 = np.zeros(k + 3)
        g_mu0[w] = -1.0 / complier_share
        g_mu0[d] = -mu0 / complier_share
        cov_c = aug_c / (n_c - ddof) if n_c > ddof else np.full_like(aug_c, NAN)
        cov_t = aug_t / (n_t - ddof) if n_t > ddof else np.full_like(aug_t, NAN)

        def avar(g: np.ndarray) -> float:
            return float(g @ cov_c @ g) / n_c + float(g @ cov_t @ g) / n_t

        se_mu0 = safe_sqrt(avar(g_mu0))
        never_share = 1.0 - float(t.mean[1])
        extra |= {
            "complier_share": complier_share,
            "never_taker_share": never_share,
            "never_taker_mean": float(mean_t[w]) / never_share if never_share > 0.0 else NAN,
            "complier_mean_untreated": mu0,
            "complier_mean_untreated_se": se_mu0,
            "rel_variance_approximated": float(approx_c or approx_t),
        }
        baseline_ok = (
            math.isfinite(mu0)
            and mu0 != 0.0
            and not (math.isfinite(se_mu0) and abs(mu0) < z * se_mu0)
        )
        if baseline_ok:
            rel = beta / abs(mu0)
            rel_se = safe_sqrt(avar(g_beta / abs(mu0) - rel * g_mu0 / mu0))
            low, high = normal_ci(rel, rel_se, alpha)
            relative = RelativeLift(lift=rel, se=rel_se, ci_low=low, ci_high=high)
    return build_effect(
        method=method,
        n_control=n_c,
        n_treatment=n_t,
        mean_control=mu0,
        mean_treatment=mu0 + beta,
        estimate=beta,
        se=se_beta,
        alpha=alpha,
        relative=relative,
        extra=extra,
    )
