"""Ratio metrics (sum of y over sum of x per group) by the delta method, with optional CUPED."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xpkit.moments import Moments
from xpkit.stats.cuped import adjusted_effect, adjustment_extra, regression_adjust
from xpkit.stats.effect import Effect
from xpkit.stats.lift import NAN, build_effect, check_alpha, safe_div

LINEARISED = "__ratio_linearised__"


def linearise(
    moments: Moments, numerator: str, denominator: str, covariates: Sequence[str] = ()
) -> Moments | None:
    """Moments of the per-unit linearised ratio ``M = R + (y - R x) / xbar`` and covariates.

    ``R = ybar / xbar`` is the group's ratio; ``M`` has mean exactly ``R`` and
    ``Var(M) / n`` is the delta-method variance of ``R``. ``M`` is a fixed linear map ``A``
    of ``(y, x)`` within the group, so its co-moments with everything are ``A C A'`` — no
    per-unit data needed. Returns ``None`` when the group is empty or ``xbar`` is 0 (the
    ratio does not exist).
    """
    columns = [numerator, denominator, *covariates]
    m = moments.select(columns)
    y_bar, x_bar = float(m.mean[0]), float(m.mean[1])
    if m.n == 0 or x_bar == 0.0 or not np.isfinite(x_bar):
        return None
    ratio = y_bar / x_bar
    k = len(covariates)
    transform = np.zeros((1 + k, 2 + k))
    transform[0, :2] = (1.0 / x_bar, -ratio / x_bar)
    transform[1:, 2:] = np.eye(k)
    return Moments(
        n=m.n,
        columns=(LINEARISED, *covariates),
        mean=np.concatenate(([ratio], m.mean[2:])),
        comoment=transform @ m.comoment @ transform.T,
    )


def ratio_test(
    control: Moments,
    treatment: Moments,
    numerator: str,
    denominator: str,
    covariates: Sequence[str] = (),
    alpha: float = 0.05,
) -> Effect:
    """Difference of ratios ``R_t - R_c`` with ``R = ybar / xbar`` (methods ``"ratio_delta"``,
    ``"ratio_delta_cuped"`` with covariates).

    Delta method (Deng, Knoblich & Lu, 2018, "Applying the Delta Method in Metric
    Analytics: A Practical Guide with Novel Ideas", KDD):

        Var(R) ~= (Var y - 2 R Cov(x, y) + R^2 Var x) / (n xbar^2),

    i.e. the variance of the mean of the linearised per-unit value
    ``M = R + (y - R x) / xbar`` (ddof 1). Groups are independent, so
    ``se^2 = Var(R_c) + Var(R_t)``; interval and p-value use normal quantiles, the delta
    method being a large-sample approximation.

    With covariates, ``M`` is regression-adjusted exactly like a mean in
    :func:`xpkit.stats.cuped.cuped_test`: ``theta`` from the pooled within-group co-moments
    of ``(M, covariates)``, effect ``(R_t - R_c) - theta'(zbar_t - zbar_c)`` (the OLS
    coefficient on the treatment dummy in ``M ~ 1 + T + Z``), variance from
    ``Var M - 2 theta' Cov(z, M) + theta' Cov(z) theta`` per group. ``extra`` then holds
    ``theta_<covariate>`` and ``variance_reduction``.

    ``mean_control``/``mean_treatment`` are the ratios (CUPED-adjusted towards the pooled
    covariate mean when covariates are given; raw ratios in ``extra["raw_ratio_*"]``).
    Degenerate input: an empty group or a denominator mean of 0 leaves that ratio NaN and
    the effect, standard error, interval and p-value NaN; fewer than two units or zero
    variance gives a NaN standard error, interval and p-value.
    """
    alpha = check_alpha(alpha)
    method = "ratio_delta_cuped" if covariates else "ratio_delta"
    lin_c = linearise(control, numerator, denominator, covariates)
    lin_t = linearise(treatment, numerator, denominator, covariates)
    if lin_c is None or lin_t is None:
        ratio_c = NAN if lin_c is None else float(lin_c.mean[0])
        ratio_t = NAN if lin_t is None else float(lin_t.mean[0])
        return build_effect(
            method=method,
            n_control=control.n,
            n_treatment=treatment.n,
            mean_control=ratio_c,
            mean_treatment=ratio_t,
            estimate=NAN,
            se=NAN,
            alpha=alpha,
            relative=None,
            extra={"raw_ratio_control": ratio_c, "raw_ratio_treatment": ratio_t},
        )
    adj = regression_adjust(lin_c, lin_t, LINEARISED, covariates)
    extra = adjustment_extra(adj, covariates) if covariates else {}
    extra["raw_ratio_control"] = float(lin_c.mean[0])
    extra["raw_ratio_treatment"] = float(lin_t.mean[0])
    extra["z"] = safe_div(adj.estimate, adj.se)
    return adjusted_effect(
        adj, method=method, n_control=control.n, n_treatment=treatment.n, alpha=alpha, extra=extra
    )
