"""Sample size, minimum detectable effect and power for treatment-versus-control means.

Planning model: each arm's mean is estimated from ``n_i`` independent units with per-unit
variance ``sigma^2`` (for a proportion, ``p (1 - p)``), and the effect is tested two-sided
with the normal approximation. With ``N`` units in total split by allocation weights
``w_0`` (control) and ``w_j`` (treatment ``j``), and CUPED removing a fraction ``r`` of the
variance (``r`` is the squared correlation between the metric and its covariate)::

    se^2  = sigma^2 (1 - r) (1 / w_0 + 1 / w_j) / N
    power = Phi(delta / se - z) + Phi(-delta / se - z),     z = Phi^-1(1 - alpha / 2)

The second term (rejecting in the wrong direction) is kept so that the figures agree with
``statsmodels.stats.power.NormalIndPower`` exactly rather than to a rounding error; solving
for ``N`` or ``delta`` is then a one-dimensional root search around the familiar closed form
``N = (z + z_power)^2 sigma^2 (1 - r) (1/w_0 + 1/w_j) / delta^2`` (Chow, Shao & Wang,
*Sample Size Calculations in Clinical Research*, ch. 3).

A relative MDE is converted to an absolute one as ``delta = mde_rel * |baseline_mean|``:
the planning approximation that ignores the sampling noise of the control mean in the
denominator of the lift, which is second order at experiment sample sizes.

Multi-arm designs are planned per comparison (each treatment against arm 0): the plan is
the one under which *every* comparison has the stated power. ``alpha`` is per comparison;
pass ``alpha / m`` for a Bonferroni plan over ``m`` comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from xpkit.stats.lift import check_alpha
from xpkit.stats.roots import brentq


@dataclass(frozen=True)
class SampleSize:
    """Units needed so that every treatment-versus-control comparison has the stated power."""

    n_total: int  # all arms, each arm rounded up to whole units
    n_per_arm: tuple[int, ...]  # arm 0 is control
    n_total_exact: float  # before rounding
    n_per_arm_exact: tuple[float, ...]
    mde_abs: float  # the absolute effect the plan is powered for
    alpha: float
    power: float


def required_sample_size(
    mde: float,
    variance: float,
    *,
    relative: bool = False,
    baseline_mean: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    allocation: Sequence[float] = (0.5, 0.5),
    variance_reduction: float = 0.0,
) -> SampleSize:
    """Total and per-arm units to detect ``mde`` (two-sided ``alpha``) with ``power``.

    ``mde`` is absolute (same unit as the metric) unless ``relative=True``, in which case it
    is a fraction of ``|baseline_mean|`` (0.02 = a 2 % lift). ``allocation`` holds the
    traffic weights of every arm, control first; they are normalised to sum to one.
    """
    weights = _weights(allocation)
    delta = _absolute_effect(mde, relative, baseline_mean)
    if delta == 0:
        raise ValueError("mde must be non-zero: no finite sample detects a zero effect")
    unit_var = _unit_variance(variance, variance_reduction)
    k = _noncentrality(alpha, power)
    n_exact = max(k**2 * unit_var * (1 / weights[0] + 1 / w) / delta**2 for w in weights[1:])
    per_arm_exact = tuple(float(w * n_exact) for w in weights)
    # Round every arm up on its own so that no comparison falls short of the plan.
    per_arm = tuple(math.ceil(n - 1e-9 * n) for n in per_arm_exact)
    return SampleSize(
        n_total=sum(per_arm),
        n_per_arm=per_arm,
        n_total_exact=float(n_exact),
        n_per_arm_exact=per_arm_exact,
        mde_abs=abs(delta),
        alpha=alpha,
        power=power,
    )


def minimum_detectable_effect(
    n_total: float,
    variance: float,
    *,
    relative: bool = False,
    baseline_mean: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    allocation: Sequence[float] = (0.5, 0.5),
    variance_reduction: float = 0.0,
) -> float:
    """Smallest effect every comparison detects with ``power`` given ``n_total`` units.

    Returns the absolute effect, or the effect as a fraction of ``|baseline_mean|`` when
    ``relative=True``. With several treatment arms the worst (largest) per-comparison MDE
    is returned; with equal treatment weights they are all the same.
    """
    if n_total <= 0:
        raise ValueError(f"n_total must be positive, got {n_total}")
    weights = _weights(allocation)
    unit_var = _unit_variance(variance, variance_reduction)
    k = _noncentrality(alpha, power)
    delta = max(k * math.sqrt(unit_var * (1 / weights[0] + 1 / w) / n_total) for w in weights[1:])
    if not relative:
        return delta
    return delta / _baseline_scale(baseline_mean)


def power_at(
    effect: float,
    n_total: float,
    variance: float,
    *,
    relative: bool = False,
    baseline_mean: float | None = None,
    alpha: float = 0.05,
    allocation: Sequence[float] = (0.5, 0.5),
    variance_reduction: float = 0.0,
) -> float:
    """Two-sided power of the weakest comparison for a true ``effect`` and ``n_total`` units."""
    weights = _weights(allocation)
    delta = abs(_absolute_effect(effect, relative, baseline_mean))
    unit_var = _unit_variance(variance, variance_reduction)
    z = -special.ndtri(alpha / 2)
    ses = [math.sqrt(unit_var * (1 / weights[0] + 1 / w) / n_total) for w in weights[1:]]
    return min(_two_sided_power(delta / se, z) for se in ses)


def days_needed(units_per_day: float, required_units: float) -> int:
    """Whole days until ``required_units`` have entered, at ``units_per_day`` new units a day.

    ``units_per_day`` must count *newly assigned* units: returning units do not add
    information, so a daily-active count overstates accrual after the first day.
    """
    if units_per_day <= 0:
        raise ValueError(f"units_per_day must be positive, got {units_per_day}")
    if required_units <= 0:
        return 0
    # The tolerance keeps an exact multiple (1000 units at 100 a day) from rounding up.
    return math.ceil(required_units / units_per_day - 1e-9)


# -- helpers ---------------------------------------------------------------------------
def _two_sided_power(noncentrality: float, z: float) -> float:
    return float(special.ndtr(noncentrality - z) + special.ndtr(-noncentrality - z))


def _noncentrality(alpha: float, power: float) -> float:
    """``k = delta / se`` at which the two-sided level-``alpha`` z-test has ``power``."""
    alpha = check_alpha(alpha)
    if not alpha < power < 1:
        raise ValueError(f"power must be in (alpha, 1), got {power}")
    z = -special.ndtri(alpha / 2)
    closed_form = z + special.ndtri(power)  # ignores the wrong-direction tail: an upper bound
    if closed_form <= 0:
        return 0.0
    return brentq(
        lambda k: _two_sided_power(k, z) - power, 0.0, closed_form, xtol=1e-14, rtol=1e-15
    )


def _weights(allocation: Sequence[float]) -> np.ndarray:
    w = np.asarray(allocation, dtype=float)
    if w.ndim != 1 or w.size < 2:
        raise ValueError("allocation needs a weight for the control and at least one treatment")
    if np.any(~np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"allocation weights must be positive, got {tuple(allocation)}")
    return w / w.sum()


def _unit_variance(variance: float, variance_reduction: float) -> float:
    if not variance > 0:
        raise ValueError(f"variance must be positive, got {variance}")
    if not 0 <= variance_reduction < 1:
        raise ValueError(f"variance_reduction must be in [0, 1), got {variance_reduction}")
    return variance * (1 - variance_reduction)


def _absolute_effect(effect: float, relative: bool, baseline_mean: float | None) -> float:
    return effect * _baseline_scale(baseline_mean) if relative else effect


def _baseline_scale(baseline_mean: float | None) -> float:
    if baseline_mean is None or not math.isfinite(baseline_mean) or baseline_mean == 0:
        raise ValueError("a relative effect needs a finite, non-zero baseline_mean")
    return abs(baseline_mean)
