"""Novelty and primacy: does the treatment effect drift with time since assignment?

A novelty effect (users poke at anything new) makes an early lift fade; a primacy or
learning effect (users need time to adopt a change) makes it grow. Either way the
experiment-long average misstates the long-run effect. The check here is deliberately
simple: a weighted least-squares line through per-day effect estimates ``y_d`` with known
standard errors ``s_d``, weights ``w_d = 1 / s_d^2``::

    slope    = sum w (d - dbar)(y - ybar) / sum w (d - dbar)^2      (weighted means dbar, ybar)
    se       = 1 / sqrt(sum w (d - dbar)^2)
    z        = slope / se,   p = 2 (1 - Phi(|z|))

the weighted (Aitken generalised) least-squares slope of a linear trend when the variances
are known (Draper & Smith, *Applied Regression Analysis*, 3rd ed., 1998, weighted least
squares).

What to pass. The z-test assumes the daily estimates are independent. Estimates *as of*
each day (cumulative data) are not: day 10's estimate contains days 1-9, the series is
smooth by construction and the test is far too liberal. Pass non-overlapping estimates
instead -- the effect among units first assigned on each day, measured at the same age
(a per-day cohort), or the effect on each day's activity alone (per-day increments).
The function accepts whatever it is given; the caller owns that choice.

Direction. "Declining" means the effect's *magnitude* shrinks: the slope has the opposite
sign to the weighted mean effect. A harmful change whose harm fades is declining just as a
positive lift that fades is. ``slope`` keeps its raw sign for anyone who needs it.

Day-to-day heterogeneity beyond sampling noise (weekday effects, outages) shows up in
``residual_chi2`` (``sum w r^2`` on ``n - 2`` degrees of freedom). ``scale="estimated"``
widens the slope's standard error by ``sqrt(max(1, chi2 / (n - 2)))`` and uses a t test on
``n - 2`` degrees of freedom, the usual remedy when that statistic is large.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from xpkit.stats.lift import check_alpha

DECLINING = "effect declining over time (novelty?)"
GROWING = "effect growing over time (primacy/learning?)"
NO_TREND = "no trend detected"


@dataclass(frozen=True)
class TrendResult:
    """A weighted linear trend of the effect on day index and its verdict."""

    slope: float  # change in the effect per day (raw sign)
    slope_se: float
    intercept: float  # fitted effect at day 0
    mean_effect: float  # inverse-variance weighted mean of the daily effects
    z: float  # slope / slope_se (a t statistic when scale="estimated")
    p_value: float
    residual_chi2: float
    n_days: int
    alpha: float
    verdict: str


def effect_trend(
    estimates: Sequence[float] | ArrayLike,
    ses: Sequence[float] | ArrayLike,
    days: Sequence[float] | ArrayLike | None = None,
    *,
    alpha: float = 0.05,
    scale: Literal["known", "estimated"] = "known",
) -> TrendResult:
    """Test for a linear trend in daily effect estimates (see the module docstring).

    ``days`` defaults to ``0, 1, 2, ...``; days with a missing or non-positive standard
    error are dropped. Needs at least three usable days with two distinct day values.
    """
    alpha = check_alpha(alpha)
    y = np.asarray(estimates, dtype=float).reshape(-1)
    se = np.asarray(ses, dtype=float).reshape(-1)
    d = np.arange(y.size, dtype=float) if days is None else np.asarray(days, dtype=float)
    d = d.reshape(-1)
    if not y.size == se.size == d.size:
        raise ValueError(f"got {y.size} estimates, {se.size} ses and {d.size} days")
    keep = np.isfinite(y) & np.isfinite(se) & (se > 0) & np.isfinite(d)
    y, se, d = y[keep], se[keep], d[keep]
    if y.size < 3 or np.ptp(d) == 0:
        raise ValueError("a trend needs at least three days with estimates on distinct days")

    w = 1 / se**2
    d_bar = np.sum(w * d) / np.sum(w)
    y_bar = np.sum(w * y) / np.sum(w)
    sxx = np.sum(w * (d - d_bar) ** 2)
    slope = float(np.sum(w * (d - d_bar) * (y - y_bar)) / sxx)
    intercept = float(y_bar - slope * d_bar)
    chi2 = float(np.sum(w * (y - intercept - slope * d) ** 2))
    dof = y.size - 2
    slope_se = 1 / math.sqrt(sxx)
    if scale == "estimated":
        slope_se *= math.sqrt(max(1.0, chi2 / dof))
        z = slope / slope_se
        p_value = float(2 * special.stdtr(dof, -abs(z)))  # t.sf(|z|, dof)
    elif scale == "known":
        z = slope / slope_se
        p_value = float(2 * special.ndtr(-abs(z)))  # norm.sf(|z|)
    else:
        raise ValueError(f"scale must be 'known' or 'estimated', got {scale!r}")

    if p_value >= alpha:
        verdict = NO_TREND
    else:
        # Magnitude shrinking = slope against the sign of the effect; a zero mean effect
        # falls back to the raw direction.
        direction = slope * (np.sign(y_bar) or 1.0)
        verdict = DECLINING if direction < 0 else GROWING
    return TrendResult(
        slope=slope,
        slope_se=slope_se,
        intercept=intercept,
        mean_effect=float(y_bar),
        z=float(z),
        p_value=p_value,
        residual_chi2=chi2,
        n_days=int(y.size),
        alpha=alpha,
        verdict=verdict,
    )
