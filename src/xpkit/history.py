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
from collections.abc import Mapping, Sequence
from datetime import date

import numpy as np
import pyarrow as pa

from xpkit.analysis import MetricInfo, estimate_effects
from xpkit.config import ExperimentConfig
from xpkit.readout import MomentsTable
from xpkit.scorecard import SCORECARD_SCHEMA
from xpkit.stats.effect import Effect
from xpkit.stats.novelty import effect_trend
from xpkit.stats.sequential import msprt, tau_from_mde

HISTORY_FILE = "history.parquet"

# The history's columns are the scorecard's, under the same names and types, plus the day
# each row is as of and the mSPRT mixture scale.
HISTORY_SCHEMA = pa.schema(
    [SCORECARD_SCHEMA.field(name) for name in ("experiment_id", "run_date")]
    + [pa.field("analysis_date", pa.date32())]
    + [
        SCORECARD_SCHEMA.field(name)
        for name in (
            "population",
            "metric",
            "variant",
            "n_control",
            "n_variant",
            "method",
            "abs_effect",
            "abs_se",
            "abs_ci_low",
            "abs_ci_high",
            "rel_lift",
            "p_value",
            "always_valid_p_value",
            "always_valid_ci_low",
            "always_valid_ci_high",
        )
    ]
    + [pa.field("msprt_tau", pa.float64())]
)


def _floats(values: Sequence[float | None] | np.ndarray) -> pa.Array:
    """A float64 column with NaN and None both stored as null."""
    return pa.array(values, type=pa.float64(), from_pandas=True)


def build_history(
    experiment: ExperimentConfig,
    metrics: Mapping[str, MetricInfo],
    by_date: Mapping[date, MomentsTable],
    run_date: date,
) -> pa.Table:
    # Only the headline estimates are kept, so each day skips what a full analysis adds on
    # top (unadjusted estimates, complier effects, multiple testing, guardrails): the
    # history multiplies every per-day cost by the number of days.
    series: dict[tuple[str, str, str], list[tuple[date, Effect]]] = {}
    for day, table in by_date.items():
        for r in estimate_effects(experiment, metrics, table, unadjusted=False):
            series.setdefault((r.population, r.metric, r.variant), []).append((day, r.effect))
    order = {name: i for i, name in enumerate(experiment.all_metrics)}

    def position(key: tuple[str, str, str]) -> tuple[str, int, str]:
        return key[0], order[key[1]], key[2]

    keys: list[tuple[str, str, str]] = []
    days: list[date] = []
    effects: list[Effect] = []
    always_valid: list[np.ndarray] = []  # per series: p-value, interval low, interval high
    taus: list[float] = []
    for key in sorted(series, key=position):
        looks = series[key]
        estimates = np.array([e.abs_effect for _, e in looks])
        ses = np.array([e.abs_se for _, e in looks])
        baseline = abs(looks[-1][1].mean_control)
        tau = tau_from_mde(experiment.sequential_mde * baseline) if baseline > 0 else math.nan
        if math.isfinite(tau) and tau > 0:
            seq = msprt(estimates, ses, tau, alpha=experiment.alpha)
            always_valid.append(np.stack([seq.p_values, seq.ci_low, seq.ci_high]))
        else:
            always_valid.append(np.full((3, len(looks)), np.nan))
        keys += [key] * len(looks)
        days += [day for day, _ in looks]
        effects += [e for _, e in looks]
        taus += [tau] * len(looks)
    av = np.concatenate(always_valid, axis=1) if always_valid else np.empty((3, 0))
    columns = {
        "experiment_id": [experiment.id] * len(keys),
        "run_date": [run_date] * len(keys),
        "analysis_date": days,
        "population": [k[0] for k in keys],
        "metric": [k[1] for k in keys],
        "variant": [k[2] for k in keys],
        "n_control": [e.n_control for e in effects],
        "n_variant": [e.n_treatment for e in effects],
        "method": [e.method for e in effects],
        "abs_effect": _floats([e.abs_effect for e in effects]),
        "abs_se": _floats([e.abs_se for e in effects]),
        "abs_ci_low": _floats([e.abs_ci_low for e in effects]),
        "abs_ci_high": _floats([e.abs_ci_high for e in effects]),
        "rel_lift": _floats([e.rel_lift for e in effects]),
        "p_value": _floats([e.p_value for e in effects]),
        "always_valid_p_value": _floats(av[0]),
        "always_valid_ci_low": _floats(av[1]),
        "always_valid_ci_high": _floats(av[2]),
        "msprt_tau": _floats(taus),
    }
    return pa.table(columns, schema=HISTORY_SCHEMA)


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
