"""Power and sample size from real data: per-unit variance and CUPED gain from moments.

Pure: takes the moments of one metric (from the same generated SQL a run uses) and turns
them into a plan with :mod:`xpkit.stats.power`.

- Per-unit variance: of the metric over a pre-assignment window as long as the analysis
  window when the metric has a pre-period covariate (the pre-period is untouched by any
  treatment), else of the analysis window in the control arm.
- CUPED variance reduction: the R^2 of the analysis-window value on the metric's
  covariates in the control arm, i.e. the share of variance regression adjustment removes.
- Baseline mean: the control arm's mean, for relative effects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xpkit.errors import BadInputError
from xpkit.layout import MetricLayout
from xpkit.moments import Moments
from xpkit.stats.group_sequential import SpendingShape, inflation_factor
from xpkit.stats.power import (
    SampleSize,
    days_needed,
    minimum_detectable_effect,
    required_sample_size,
)


@dataclass(frozen=True)
class PowerPlan:
    metric: str
    variance: float
    variance_source: str
    baseline_mean: float
    variance_reduction: float
    units_per_day: float
    mde_relative: float
    alpha: float
    power: float
    units_total: int
    units_per_arm: tuple[int, ...]
    days: int
    units_total_without_cuped: int
    mde_at_days: dict[int, float]
    rule: str = "fixed horizon"  # the stopping rule planned for, and its inflation
    inflation: float = 1.0
    units_total_fixed: int | None = None  # before the sequential inflation


def variance_reduction(control: Moments, layout: MetricLayout) -> float:
    """R^2 of the value on the covariates (0 when there are none)."""
    if not layout.covariates or control.n < 3:
        return 0.0
    cols = [layout.value, *layout.covariates]
    cov = control.select(cols).cov()
    var_y = cov[0, 0]
    if not var_y > 0:
        return 0.0
    sxx, sxy = cov[1:, 1:], cov[1:, 0]
    theta = np.linalg.lstsq(sxx, sxy, rcond=1e-10)[0]
    return float(np.clip(sxy @ theta / var_y, 0.0, 1.0))


def plan(
    metric: str,
    layout: MetricLayout,
    control: Moments,
    pooled: Moments,
    *,
    weights: list[float],
    units_per_day: float,
    mde_relative: float,
    alpha: float,
    power: float,
    horizons: tuple[int, ...] = (7, 14, 28),
    rule: str = "fixed horizon",
    inflation: float = 1.0,
) -> PowerPlan:
    """A plan for ``metric``; a sequential ``rule`` multiplies the fixed-horizon units by its
    ``inflation`` factor (the maximum sample of the group-sequential design)."""
    if layout.kind == "ratio":
        raise BadInputError(
            f"metric {metric!r}: power planning supports mean and proportion metrics; for a "
            f"ratio, plan on its numerator or denominator"
        )
    pre = layout.pre_value
    if pre is not None:
        variance, source = pooled.var_of(pre), "pre-period, all units"
    else:
        variance, source = control.var_of(layout.value), "analysis window, control arm"
    baseline = control.mean_of(layout.value)
    if not (variance > 0 and baseline != 0):
        raise BadInputError(
            f"metric {metric!r}: no variance or a zero baseline in the data; cannot plan"
        )
    reduction = variance_reduction(control, layout)

    def sized(variance_reduction: float) -> SampleSize:
        return required_sample_size(
            mde_relative,
            variance,
            power=power,
            variance_reduction=variance_reduction,
            relative=True,
            baseline_mean=baseline,
            alpha=alpha,
            allocation=weights,
        )

    with_cuped, without = sized(reduction), sized(0.0)
    return PowerPlan(
        metric=metric,
        variance=variance,
        variance_source=source,
        baseline_mean=baseline,
        variance_reduction=reduction,
        units_per_day=units_per_day,
        mde_relative=mde_relative,
        alpha=alpha,
        power=power,
        units_total=math.ceil(with_cuped.n_total * inflation),
        units_per_arm=tuple(math.ceil(n * inflation) for n in with_cuped.n_per_arm),
        days=days_needed(units_per_day, math.ceil(with_cuped.n_total * inflation)),
        units_total_without_cuped=math.ceil(without.n_total * inflation),
        # The design's detectable effect grows as the square root of its inflation.
        mde_at_days={
            d: math.sqrt(inflation)
            * minimum_detectable_effect(
                units_per_day * d,
                variance,
                power=power,
                variance_reduction=reduction,
                relative=True,
                baseline_mean=baseline,
                alpha=alpha,
                allocation=weights,
            )
            for d in horizons
        },
        rule=rule,
        inflation=inflation,
        units_total_fixed=with_cuped.n_total,
    )


# Daily looks over four weeks: the default rule's planned number of looks without max_days.
DEFAULT_PLANNED_LOOKS = 28


@dataclass(frozen=True)
class SequentialPlan:
    """The planned sample of the default group-sequential rule, and how it was found."""

    metric: str
    planned_units: int
    fixed_units: int
    inflation: float
    looks: int
    note: str


def plan_from_pre_period(
    metric: str,
    layout: MetricLayout,
    pooled: Moments,
    *,
    window_days: int,
    pre_window_days: int,
    mde_relative: float,
    power: float,
    alpha: float,
    weights: list[float],
    looks: int,
    shape: SpendingShape = "obrien_fleming",
) -> SequentialPlan | None:
    """Units to detect ``mde_relative`` with ``power`` from the pre-period alone.

    Only information from before the treatment is used: the coefficient of variation of
    the metric's pre-period value over the experiment's units (the pre-period is untouched
    by any variant), never the experiment's outcomes. A relative MDE needs only the CV:
    ``n = k^2 CV^2 (1/w_c + 1/w_t) / mde^2``. The pre-period may be longer than the
    analysis window; the CV of a sum of ``d`` independent days falls as ``1/sqrt(d)``, so
    ``CV_window^2 = CV_pre^2 * pre_days / window_days`` -- with positively correlated days
    the true CV is smaller, so this errs toward more units (power kept, never alpha
    spent early). The fixed-horizon size is then multiplied by the group-sequential
    inflation factor for ``looks`` equally spaced looks (Jennison & Turnbull, 2000, 2.5).
    None when the metric has no pre-period value or it has no spread.
    """
    if layout.pre_value is None or pooled.n < 3:
        return None
    mean = pooled.mean_of(layout.pre_value)
    variance = pooled.var_of(layout.pre_value)
    if not (variance > 0 and mean != 0):
        return None
    cv2 = variance / mean**2 * pre_window_days / window_days
    fixed = required_sample_size(
        mde_relative,
        cv2,
        relative=True,
        baseline_mean=1.0,
        alpha=alpha,
        power=power,
        allocation=weights,
    ).n_total
    fractions = np.arange(1, looks + 1) / looks
    inflation = inflation_factor(fractions, alpha, power, shape)
    planned = math.ceil(fixed * inflation)
    note = (
        f"{planned} planned units: {mde_relative:+.1%} on {metric} at {power:.0%} power, "
        f"alpha {alpha:.3g}, from its pre-period CV {math.sqrt(cv2):.3g}, x{inflation:.3f} "
        f"for {looks} looks"
    )
    return SequentialPlan(metric, planned, fixed, inflation, looks, note)
