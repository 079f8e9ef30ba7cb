"""Effects over time: the daily history of an experiment with always-valid inference.

Input is a MomentsTable per analysis date (from the one-statement history query); output
is a long Arrow table, one row per date x population x metric x treatment variant, with
the fixed-horizon estimate of that day and the mSPRT's always-valid p-value and interval,
which stay valid however often the history is looked at (Johari et al., 2017).

The mixture scale ``tau`` is ``sequential_mde`` (a relative effect, 2% by default) times
the control mean at the latest look, i.e. the absolute effect the test should be fastest
at detecting (see :func:`xpkit.stats.sequential.tau_from_mde`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date

import numpy as np
import pyarrow as pa

from xpkit.analysis import MetricInfo, MetricResult, analyse
from xpkit.config import ExperimentConfig
from xpkit.readout import MomentsTable
from xpkit.stats.novelty import effect_trend
from xpkit.stats.sequential import msprt, tau_from_mde

HISTORY_FILE = "history.parquet"

HISTORY_SCHEMA = pa.schema(
    [
        ("experiment_id", pa.string()),
        ("run_date", pa.date32()),
        ("analysis_date", pa.date32()),
        ("population", pa.string()),
        ("metric", pa.string()),
        ("variant", pa.string()),
        ("n_control", pa.int64()),
        ("n_variant", pa.int64()),
        ("method", pa.string()),
        ("abs_effect", pa.float64()),
        ("abs_se", pa.float64()),
        ("abs_ci_low", pa.float64()),
        ("abs_ci_high", pa.float64()),
        ("rel_lift", pa.float64()),
        ("p_value", pa.float64()),
        ("always_valid_p_value", pa.float64()),
        ("always_valid_ci_low", pa.float64()),
        ("always_valid_ci_high", pa.float64()),
        ("msprt_tau", pa.float64()),
    ]
)


def _f(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def build_history(
    experiment: ExperimentConfig,
    metrics: Mapping[str, MetricInfo],
    by_date: Mapping[date, MomentsTable],
    run_date: date,
) -> pa.Table:
    series: dict[tuple[str, str, str], list[tuple[date, MetricResult]]] = {}
    for day, table in by_date.items():
        for r in analyse(experiment, metrics, table):
            if r.population == "cace":
                continue
            series.setdefault((r.population, r.metric, r.variant), []).append((day, r))
    rows = []
    order = experiment.all_metrics

    def position(key: tuple[str, str, str]) -> tuple[str, int, str]:
        return key[0], order.index(key[1]), key[2]

    for (population, metric, variant), looks in sorted(
        series.items(), key=lambda kv: position(kv[0])
    ):
        estimates = np.array([r.effect.abs_effect for _, r in looks])
        ses = np.array([r.effect.abs_se for _, r in looks])
        baseline = abs(looks[-1][1].effect.mean_control)
        tau = tau_from_mde(experiment.sequential_mde * baseline) if baseline > 0 else math.nan
        seq = (
            msprt(estimates, ses, tau, alpha=experiment.alpha)
            if math.isfinite(tau) and tau > 0
            else None
        )
        for k, (day, r) in enumerate(looks):
            e = r.effect
            rows.append(
                {
                    "experiment_id": experiment.id,
                    "run_date": run_date,
                    "analysis_date": day,
                    "population": population,
                    "metric": metric,
                    "variant": variant,
                    "n_control": e.n_control,
                    "n_variant": e.n_treatment,
                    "method": e.method,
                    "abs_effect": _f(e.abs_effect),
                    "abs_se": _f(e.abs_se),
                    "abs_ci_low": _f(e.abs_ci_low),
                    "abs_ci_high": _f(e.abs_ci_high),
                    "rel_lift": _f(e.rel_lift),
                    "p_value": _f(e.p_value),
                    "always_valid_p_value": _f(seq.p_values[k]) if seq else None,
                    "always_valid_ci_low": _f(seq.ci_low[k]) if seq else None,
                    "always_valid_ci_high": _f(seq.ci_high[k]) if seq else None,
                    "msprt_tau": _f(tau),
                }
            )
    return pa.Table.from_pylist(rows, schema=HISTORY_SCHEMA)


def daily_increments(history: pa.Table, population: str, metric: str, variant: str) -> str:
    """Novelty/primacy verdict for one series, from non-overlapping daily estimates.

    Cumulative estimates are autocorrelated, so the trend test uses each day's increment
    (the estimate on the units whose windows completed that day), recovered from the
    cumulative series by inverse-variance differencing.
    """
    rows = [
        r
        for r in history.to_pylist()
        if (r["population"], r["metric"], r["variant"]) == (population, metric, variant)
        and r["abs_se"]
    ]
    if len(rows) < 4:
        return "too few days for a trend test"
    est = np.array([r["abs_effect"] for r in rows])
    w = 1 / np.array([r["abs_se"] for r in rows]) ** 2
    inc_w = np.diff(w)
    keep = inc_w > 0
    inc = (w[1:] * est[1:] - w[:-1] * est[:-1])[keep] / inc_w[keep]
    if keep.sum() < 3:
        return "too few days for a trend test"
    trend = effect_trend(inc, 1 / np.sqrt(inc_w[keep]))
    return trend.verdict
