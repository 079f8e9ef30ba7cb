"""Complier average causal effect under non-compliance (instrumental variables, Wald)."""

from __future__ import annotations

import math

from xpkit.moments import Moments
from xpkit.stats.effect import Effect
from xpkit.stats.lift import (
    NAN,
    build_effect,
    check_alpha,
    normal_quantile,
    relative_lift,
    safe_div,
    safe_sqrt,
)


def complier_effect(
    control: Moments,
    treatment: Moments,
    value: str,
    exposure: str,
    alpha: float = 0.05,
) -> Effect:
    """Complier average causal effect by the Wald (Bloom) estimator (method ``"cace_wald"``).

    Assignment is the instrument, ``exposure`` the per-unit 0/1 indicator of actually
    receiving the treatment, both columns of the same moments. With
    ``ITT_y = ybar_t - ybar_c`` and ``ITT_d = dbar_t - dbar_c``:

        beta = ITT_y / ITT_d,
        Var(beta) ~= [Var(ITT_y) - 2 beta Cov(ITT_y, ITT_d) + beta^2 Var(ITT_d)] / ITT_d^2,

    where ``Var(ITT_y) = s_yc^2/n_c + s_yt^2/n_t``, ``Cov(ITT_y, ITT_d)`` uses each group's
    within-group covariance of value and exposure, and likewise for ``Var(ITT_d)`` (ddof 1).
    This is the Welch variance of the linearised value ``(y - beta d) / ITT_d`` and, up to
    ddof, the heteroskedasticity-robust 2SLS variance. Interval and p-value are normal.
    References: Bloom (1984), "Accounting for No-Shows in Experimental Evaluation Designs",
    *Evaluation Review* 8; Angrist, Imbens & Rubin (1996), JASA 91.

    Under one-sided non-compliance (control cannot be exposed) ``beta`` is the effect on
    those exposed; with exposure in control too it is the LATE under monotonicity.

    ``mean_control``/``mean_treatment`` are the observed (intention-to-treat) means of
    ``value``, so ``abs_effect`` is *not* their difference. The relative lift is
    ``beta / |ybar_c|`` by the delta method (its numerator ``ybar_c + beta`` is correlated
    with ``ybar_c``, which the covariance term accounts for). ``extra`` holds
    ``itt_effect``, ``itt_se``, ``exposure_rate_control``, ``exposure_rate_treatment`` and
    ``exposure_rate_diff``.

    Degenerate input: the effect, standard error, interval and p-value are NaN (and the
    relative lift ``None``) when a group is empty, when ``ITT_d <= 0``, or when
    ``ITT_d < z_{1-alpha/2} se(ITT_d)`` — a weak first stage whose sign is not established
    makes the ratio meaningless, the same rule as for relative lifts. Fewer than two units
    or no variance gives a NaN standard error as elsewhere.
    """
    alpha = check_alpha(alpha)
    n_c, n_t = control.n, treatment.n
    c, t = control.select([value, exposure]), treatment.select([value, exposure])
    y_c, d_c = (float(v) for v in c.mean) if n_c else (NAN, NAN)
    y_t, d_t = (float(v) for v in t.mean) if n_t else (NAN, NAN)
    s_c, s_t = c.cov(), t.cov()
    itt_y, itt_d = y_t - y_c, d_t - d_c
    var_y_c, var_y_t = safe_div(s_c[0, 0], n_c), safe_div(s_t[0, 0], n_t)
    var_itt_y = var_y_c + var_y_t
    var_itt_d = safe_div(s_c[1, 1], n_c) + safe_div(s_t[1, 1], n_t)
    cov_itt = safe_div(s_c[0, 1], n_c) + safe_div(s_t[0, 1], n_t)
    se_itt_d = safe_sqrt(var_itt_d)
    extra = {
        "itt_effect": itt_y,
        "itt_se": safe_sqrt(var_itt_y),
        "exposure_rate_control": d_c,
        "exposure_rate_treatment": d_t,
        "exposure_rate_diff": itt_d,
    }
    first_stage_ok = (
        math.isfinite(itt_d)
        and itt_d > 0.0
        and not (math.isfinite(se_itt_d) and itt_d < normal_quantile(alpha) * se_itt_d)
    )
    if not first_stage_ok:
        return build_effect(
            method="cace_wald",
            n_control=n_c,
            n_treatment=n_t,
            mean_control=y_c,
            mean_treatment=y_t,
            estimate=NAN,
            se=NAN,
            alpha=alpha,
            relative=None,
            extra=extra,
        )
    beta = itt_y / itt_d
    var_beta = (var_itt_y - 2.0 * beta * cov_itt + beta**2 * var_itt_d) / itt_d**2
    # Cov(ybar_c, beta): beta's linearisation has -(ybar_c - beta dbar_c) / ITT_d as the
    # only term that moves with the control group's value mean.
    cov_yc_beta = -safe_div(s_c[0, 0] - beta * s_c[0, 1], n_c) / itt_d
    relative = relative_lift(
        y_c,
        y_c + beta,
        var_y_c,
        var_y_c + var_beta + 2.0 * cov_yc_beta,
        var_y_c + cov_yc_beta,
        alpha,
    )
    return build_effect(
        method="cace_wald",
        n_control=n_c,
        n_treatment=n_t,
        mean_control=y_c,
        mean_treatment=y_t,
        estimate=beta,
        se=safe_sqrt(var_beta),
        alpha=alpha,
        relative=relative,
        extra=extra,
    )
