"""Shared pieces of every estimator: intervals, p-values, relative lift, Effect assembly.

All helpers are total: a missing or non-positive standard error, a non-finite estimate or
an unusable number of degrees of freedom gives NaN, never an exception and never an
infinity produced by dividing by zero.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import special

from xpkit.stats.effect import Effect

NAN = float("nan")


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float after checking ``0 < alpha < 1``."""
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha}")
    return alpha


def safe_div(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or NaN when the denominator is zero or not finite."""
    if denominator == 0.0 or not math.isfinite(denominator):
        return NAN
    return numerator / denominator


def safe_sqrt(value: float) -> float:
    """Square root of a variance; NaN for a NaN or negative input.

    A variance assembled from co-moments (e.g. ``Var y - 2 theta Cov(x, y) + ...``) can come
    out a few ulps below zero when the true value is zero; either way there is no usable
    standard error, so both end up as NaN p-values and intervals downstream.
    """
    if not math.isfinite(value) or value < 0.0:
        return NAN
    return math.sqrt(value)


def _usable(estimate: float, se: float) -> bool:
    return math.isfinite(estimate) and math.isfinite(se) and se > 0.0


# The scipy.special functions are the ufuncs behind scipy.stats.norm / scipy.stats.t: the same
# numbers without the distribution objects' argument checking, which cost ~0.2 ms a call
# and dominated a run's Python time once the daily history multiplied the calls.
@functools.lru_cache(maxsize=16)  # a run uses one alpha, several times per estimate
def normal_quantile(alpha: float) -> float:
    """Two-sided normal critical value ``z_{1 - alpha/2}``."""
    return float(special.ndtri(1.0 - alpha / 2.0))


def normal_ci(estimate: float, se: float, alpha: float) -> tuple[float, float]:
    """Wald interval ``estimate -/+ z_{1-alpha/2} * se``; NaNs when ``se`` is not positive."""
    if not _usable(estimate, se):
        return NAN, NAN
    half = normal_quantile(alpha) * se
    return estimate - half, estimate + half


def normal_p_value(estimate: float, se: float) -> float:
    """Two-sided p-value ``2 * (1 - Phi(|estimate| / se))`` of H0: true value 0."""
    if not _usable(estimate, se):
        return NAN
    return float(2.0 * special.ndtr(-abs(estimate) / se))


def t_ci(estimate: float, se: float, df: float, alpha: float) -> tuple[float, float]:
    """Interval ``estimate -/+ t_{df, 1-alpha/2} * se``; NaNs when ``se`` or ``df`` is unusable."""
    if not _usable(estimate, se) or not (math.isfinite(df) and df > 0.0):
        return NAN, NAN
    half = float(special.stdtrit(df, 1.0 - alpha / 2.0)) * se
    return estimate - half, estimate + half


def t_p_value(estimate: float, se: float, df: float) -> float:
    """Two-sided p-value ``2 * P(T_df > |estimate| / se)``."""
    if not _usable(estimate, se) or not (math.isfinite(df) and df > 0.0):
        return NAN
    return float(2.0 * special.stdtr(df, -abs(estimate) / se))


def welch_df(var_mean_c: float, var_mean_t: float, n_c: int, n_t: int) -> float:
    """Welch–Satterthwaite degrees of freedom from the variances of the two group means.

    ``df = (a + b)^2 / (a^2 / (n_c - 1) + b^2 / (n_t - 1))`` with ``a = s_c^2 / n_c`` and
    ``b = s_t^2 / n_t`` (Welch, 1947; Satterthwaite, 1946). NaN when both are zero.
    """
    if n_c < 2 or n_t < 2:
        return NAN
    denominator = var_mean_c**2 / (n_c - 1) + var_mean_t**2 / (n_t - 1)
    return safe_div((var_mean_c + var_mean_t) ** 2, denominator)


@dataclass(frozen=True)
class RelativeLift:
    """``(mean_t - mean_c) / |mean_c|`` with its delta-method standard error and interval."""

    lift: float
    se: float
    ci_low: float
    ci_high: float


def relative_lift(
    mean_c: float,
    mean_t: float,
    var_c: float,
    var_t: float,
    cov_ct: float = 0.0,
    alpha: float = 0.05,
) -> RelativeLift | None:
    """Relative lift ``g = (mean_t - mean_c) / |mean_c|`` by the delta method.

    ``var_c`` and ``var_t`` are the sampling variances of the two *means* (not of the
    per-unit values) and ``cov_ct`` their covariance, which is non-zero when both means
    come from one fit (CUPED-adjusted means share the pooled covariate mean). With
    ``R = mean_t / mean_c`` the gradient of ``g`` is ``(-R / mean_c, 1 / mean_c)`` times
    ``sign(mean_c)``, so

        Var(g) = (var_t - 2 R cov_ct + R^2 var_c) / mean_c^2

    (the sign cancels in the square). The interval is ``g -/+ z_{1-alpha/2} * se``
    (normal quantiles: the delta method is a large-sample approximation anyway).
    Reference: Kohavi, Tang & Xu (2020), *Trustworthy Online Controlled Experiments*, ch. 18.

    Returns ``None`` when ``mean_c`` is zero or not finite, or when
    ``|mean_c| < z_{1-alpha/2} * sqrt(var_c)``: the sign of the baseline is not established,
    so the ratio and its interval would be made-up numbers. When ``var_c`` is NaN (fewer
    than two units) the point lift is kept and its standard error and interval are NaN.
    """
    if mean_c == 0.0 or not math.isfinite(mean_c) or not math.isfinite(mean_t):
        return None
    if math.isfinite(var_c) and abs(mean_c) < normal_quantile(alpha) * safe_sqrt(max(var_c, 0.0)):
        return None
    lift = (mean_t - mean_c) / abs(mean_c)
    ratio = mean_t / mean_c
    variance = (var_t - 2.0 * ratio * cov_ct + ratio**2 * var_c) / mean_c**2
    se = safe_sqrt(variance)
    low, high = normal_ci(lift, se, alpha)
    return RelativeLift(lift=lift, se=se, ci_low=low, ci_high=high)


def build_effect(
    *,
    method: str,
    n_control: int,
    n_treatment: int,
    mean_control: float,
    mean_treatment: float,
    estimate: float,
    se: float,
    alpha: float,
    relative: RelativeLift | None,
    df: float | None = None,
    extra: Mapping[str, float] | None = None,
) -> Effect:
    """Assemble an :class:`Effect`: t-based interval and p-value when ``df`` is given,
    normal-based otherwise, so every estimator reports the same way."""
    if df is None:
        low, high = normal_ci(estimate, se, alpha)
        p_value = normal_p_value(estimate, se)
    else:
        low, high = t_ci(estimate, se, df, alpha)
        p_value = t_p_value(estimate, se, df)
    return Effect(
        method=method,
        n_control=int(n_control),
        n_treatment=int(n_treatment),
        mean_control=float(mean_control),
        mean_treatment=float(mean_treatment),
        abs_effect=float(estimate),
        abs_se=float(se),
        abs_ci_low=float(low),
        abs_ci_high=float(high),
        rel_lift=None if relative is None else relative.lift,
        rel_se=None if relative is None else relative.se,
        rel_ci_low=None if relative is None else relative.ci_low,
        rel_ci_high=None if relative is None else relative.ci_high,
        p_value=float(p_value),
        alpha=float(alpha),
        df=None if df is None else float(df),
        extra={key: float(value) for key, value in (extra or {}).items()},
    )
