"""Effects over time: the daily history of an experiment with always-valid inference.

Input is a MomentsTable per analysis date (from the one-statement history query); output
is one :class:`HistorySeries` per population x metric x treatment variant: the
fixed-horizon estimate of each day, the mSPRT's always-valid p-value and interval, which
stay valid however often the history is looked at (Johari et al., 2017), and the
novelty/primacy verdict of the series' daily increments.

The mixture scale ``tau`` is ``sequential_mde`` (a relative effect, 2% by default) times
the control mean at the latest look, i.e. the absolute effect the test should be fastest
at detecting (see :func:`xpkit.stats.sequential.tau_from_mde`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

from xpkit.config import ExperimentConfig
from xpkit.decide.analysis import MetricInfo, estimate_effects
from xpkit.readout import MomentsTable
from xpkit.stats.effect import Effect
from xpkit.stats.novelty import effect_trend
from xpkit.stats.sequential import msprt, tau_from_mde


@dataclass(frozen=True)
class AlwaysValid:
    """The always-valid (mSPRT) p-value and interval of one look; NaN when undefined.

    ``e_value`` is the mixture likelihood ratio at this look (an e-value, unlike
    ``1 / p_value``, which is its running maximum): what e-BH combines across a family.
    """

    p_value: float
    ci_low: float
    ci_high: float
    e_value: float = math.nan


@dataclass(frozen=True)
class HistorySeries:
    """One population x metric x variant over the analysis dates, oldest first."""

    population: str
    metric: str
    variant: str
    days: tuple[date, ...]
    effects: tuple[Effect, ...]
    always_valid: tuple[AlwaysValid, ...]
    msprt_tau: float
    trend: str  # the novelty/primacy verdict on the daily increments


def build_history(
    experiment: ExperimentConfig,
    metrics: Mapping[str, MetricInfo],
    by_date: Mapping[date, MomentsTable],
) -> list[HistorySeries]:
    """Every series of the history, in population, configured-metric, variant order."""
    # Only the headline estimates are kept, so each day skips what a full analysis adds on
    # top (unadjusted estimates, complier effects, multiple testing, guardrails): the
    # history multiplies every per-day cost by the number of days.
    looks_by_key: dict[tuple[str, str, str], list[tuple[date, Effect]]] = {}
    for day, table in by_date.items():
        for r in estimate_effects(experiment, metrics, table, unadjusted=False):
            looks_by_key.setdefault((r.population, r.metric, r.variant), []).append((day, r.effect))
    order = {name: i for i, name in enumerate(experiment.all_metrics)}

    def position(key: tuple[str, str, str]) -> tuple[str, int, str]:
        return key[0], order[key[1]], key[2]

    series = []
    for key in sorted(looks_by_key, key=position):
        looks = looks_by_key[key]
        effects = [e for _, e in looks]
        estimates = np.array([e.abs_effect for e in effects])
        ses = np.array([e.abs_se for e in effects])
        baseline = abs(effects[-1].mean_control)
        tau = tau_from_mde(experiment.sequential_mde * baseline) if baseline > 0 else math.nan
        if math.isfinite(tau) and tau > 0:
            seq = msprt(estimates, ses, tau, alpha=experiment.alpha)
            always_valid = [
                AlwaysValid(float(p), float(lo), float(hi), float(e))
                for p, lo, hi, e in zip(
                    seq.p_values, seq.ci_low, seq.ci_high, seq.e_values, strict=True
                )
            ]
        else:
            always_valid = [AlwaysValid(math.nan, math.nan, math.nan)] * len(looks)
        series.append(
            HistorySeries(
                population=key[0],
                metric=key[1],
                variant=key[2],
                days=tuple(day for day, _ in looks),
                effects=tuple(effects),
                always_valid=tuple(always_valid),
                msprt_tau=tau,
                trend=daily_trend(effects),
            )
        )
    return series


def last_looks(
    series: Sequence[HistorySeries], population: str
) -> dict[tuple[str, str], AlwaysValid]:
    """The always-valid result of the newest day, per (metric, variant) of ``population``."""
    days = [s.days[-1] for s in series if s.population == population and s.days]
    if not days:
        return {}
    last = max(days)
    return {
        (s.metric, s.variant): s.always_valid[-1]
        for s in series
        if s.population == population and s.days and s.days[-1] == last
    }


def daily_trend(effects: Sequence[Effect]) -> str:
    """Novelty/primacy verdict for one series, from non-overlapping daily estimates.

    Cumulative estimates are autocorrelated, so the trend test uses each day's increment
    (the estimate on the units whose windows completed that day), recovered from the
    cumulative series by inverse-variance differencing.
    """
    looks = [e for e in effects if math.isfinite(e.abs_se) and e.abs_se != 0]
    if len(looks) < 4:
        return "too few days for a trend test"
    est = np.array([e.abs_effect for e in looks])
    w = 1 / np.array([e.abs_se for e in looks]) ** 2
    inc_w = np.diff(w)
    keep = inc_w > 0
    inc = (w[1:] * est[1:] - w[:-1] * est[:-1])[keep] / inc_w[keep]
    if keep.sum() < 3:
        return "too few days for a trend test"
    return effect_trend(inc, 1 / np.sqrt(inc_w[keep])).verdict
