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

from dataclasses import dataclass

import numpy as np

from xpkit.errors import BadInputError
from xpkit.layout import MetricLayout
from xpkit.moments import Moments
from xpkit.stats.power import days_needed, minimum_detectable_effect, required_sample_size


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
) -> PowerPlan:
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
    with_cuped = required_sample_size(
        mde_relative,
        variance,
        power=power,
        variance_reduction=reduction,
        relative=True,
        baseline_mean=baseline,
        alpha=alpha,
        allocation=weights,
    )
    without = required_sample_size(
        mde_relative,
        variance,
        power=power,
        relative=True,
        baseline_mean=baseline,
        alpha=alpha,
        allocation=weights,
    )
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
        units_total=with_cuped.n_total,
        units_per_arm=with_cuped.n_per_arm,
        days=days_needed(units_per_day, with_cuped.n_total),
        units_total_without_cuped=without.n_total,
        mde_at_days={
            d: minimum_detectable_effect(
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
    )
