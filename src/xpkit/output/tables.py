"""Results + checks + decisions + history -> the Arrow tables a run publishes.

``run_id`` is left empty here: publishing (output/storage.py) stamps it into every table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import pyarrow as pa

from xpkit.config import ALL_SLICES, ExperimentConfig
from xpkit.decide.analysis import POPULATION_NOTES, MetricInfo, MetricResult
from xpkit.decide.decision import Decision
from xpkit.decide.health import Check
from xpkit.decide.history import AlwaysValid, HistorySeries
from xpkit.decide.slices import SliceResult
from xpkit.decide.stopping import StopVerdict
from xpkit.output.schemas import (
    CHECKS_SCHEMA,
    EFFECT_COLUMNS,
    HISTOGRAMS_METADATA_KEY,
    HISTORY_SCHEMA,
    SCORECARD_SCHEMA,
    SQL_METADATA_KEY,
)
from xpkit.output.validate import run_is_valid as run_is_valid  # where it was


@dataclass(frozen=True)
class Provenance:
    computed_at: datetime
    xpkit_version: str
    sql_sha256: str
    config_sha256: str
    metric_sha256: Mapping[str, str]
    rows_read: Mapping[str, int]
    sql: str = ""  # the statement itself, kept in the scorecard file's metadata


def _f(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def build_scorecard(
    experiment: ExperimentConfig,
    metrics: Mapping[str, MetricInfo],
    results: Sequence[MetricResult],
    checks: Sequence[Check],
    decisions: Sequence[Decision],
    provenance: Provenance,
    *,
    run_date: date,
    as_of: date,
    allow_invalid: bool = False,
    always_valid: Mapping[tuple[str, str], AlwaysValid] | None = None,
    verdicts: Mapping[str, StopVerdict] | None = None,
    slices: Sequence[SliceResult] = (),
    distributions: Mapping[str, object] | None = None,
) -> pa.Table:
    """One row per population x metric x treatment variant, then the slices' rows."""
    gates = [c for c in checks if c.gate and not c.passed]
    valid = not gates
    invalid_reason = "; ".join(f"{c.name}: {c.detail}" for c in gates) or None
    srm = next((c.value for c in checks if c.name == "srm_assignment"), None)
    by_variant = {d.variant: d for d in decisions}
    guards = {g.metric: g for g in experiment.guardrails}

    def row_for(r: MetricResult) -> dict:
        e = r.effect
        u = r.unadjusted
        g = r.guardrail
        d = by_variant.get(r.variant)
        seq = (always_valid or {}).get((r.metric, r.variant)) if r.population == "itt" else None
        verdict = (verdicts or {}).get(r.variant)
        row = {
            "experiment_id": experiment.id,
            "run_date": run_date,
            "run_id": None,
            "as_of": as_of,
            "population": r.population,
            "population_note": POPULATION_NOTES.get(r.population),
            "metric": r.metric,
            "metric_description": metrics[r.metric].description or None,
            "metric_kind": metrics[r.metric].kind,
            "quantile_level": _f(e.extra.get("q"))
            if metrics[r.metric].kind == "quantile"
            else None,
            "role": r.role,
            "higher_is_better": metrics[r.metric].higher_is_better,
            "variant": r.variant,
            "control_variant": experiment.control,
            "n_control": e.n_control,
            "n_variant": e.n_treatment,
            # Observed means; a covariate-adjusted estimate shifts the effect, not the data.
            "mean_control": _f((u or e).mean_control),
            "mean_variant": _f((u or e).mean_treatment),
            "method": e.method,
            "abs_effect": _f(e.abs_effect),
            "abs_se": _f(e.abs_se),
            "abs_ci_low": _f(e.abs_ci_low),
            "abs_ci_high": _f(e.abs_ci_high),
            "rel_lift": _f(e.rel_lift),
            "rel_ci_low": _f(e.rel_ci_low),
            "rel_ci_high": _f(e.rel_ci_high),
            "p_value": _f(e.p_value),
            "p_value_adjusted": _f(r.p_value_adjusted),
            "correction": experiment.correction if r.p_value_adjusted is not None else None,
            "alpha": experiment.alpha,
            "unadjusted_abs_effect": _f(u.abs_effect) if u else None,
            "unadjusted_abs_ci_low": _f(u.abs_ci_low) if u else None,
            "unadjusted_abs_ci_high": _f(u.abs_ci_high) if u else None,
            "unadjusted_p_value": _f(u.p_value) if u else None,
            "variance_reduction": _f(e.extra.get("variance_reduction")),
            "guardrail_margin": guards[r.metric].margin if r.metric in guards else None,
            "guardrail_relative": guards[r.metric].relative if r.metric in guards else None,
            "guardrail_bound": _f(g.bound) if g else None,
            "guardrail_p_value": _f(g.p_value) if g else None,
            "guardrail_breached": g.breached if g else None,
            "guardrail_reason": g.reason if g else None,
            "stopping_rule": experiment.stopping_rule,
            "always_valid_p_value": _f(seq.p_value) if seq else None,
            "always_valid_ci_low": _f(seq.ci_low) if seq else None,
            "always_valid_ci_high": _f(seq.ci_high) if seq else None,
            "information_fraction": _f(verdict.information_fraction) if verdict else None,
            "sequential_z_bound": _f(verdict.z_bound) if verdict else None,
            "srm_p_value": _f(srm),
            "valid": valid,
            "invalid_reason": invalid_reason,
            "decision": d.decision if d else None,
            "decision_reasons": list(d.reasons) if d else None,
            "computed_at": provenance.computed_at,
            "xpkit_version": provenance.xpkit_version,
            "sql_sha256": provenance.sql_sha256,
            "config_sha256": provenance.config_sha256,
            "metric_sha256": provenance.metric_sha256.get(r.metric),
            "rows_read": sorted(provenance.rows_read.items()),
            "slice_dimension": ALL_SLICES,
            "slice_value": ALL_SLICES,
        }
        return row

    rows = [row_for(r) for r in results]
    for s in slices:
        row = row_for(s.result)
        row.update(
            {
                "slice_dimension": s.key.dimension,
                "slice_value": s.key.value,
                "slice_family": s.family,
                "correction": "bh" if s.result.p_value_adjusted is not None else None,
                "heterogeneity_p_value": s.heterogeneity_p_value,
                "heterogeneity_i2": s.heterogeneity_i2,
                "vs_rest_abs_effect": s.vs_rest_abs_effect,
                "vs_rest_p_value": s.vs_rest_p_value,
                "vs_rest_p_value_adjusted": s.vs_rest_p_value_adjusted,
                "shrunk_abs_effect": s.shrunk_abs_effect,
                "shrunk_abs_ci_low": s.shrunk_abs_ci_low,
                "shrunk_abs_ci_high": s.shrunk_abs_ci_high,
                "srm_p_value": s.srm_p_value,
                # A slice's sequential monitoring and decision are the experiment's own:
                # slices never decide.
                "always_valid_p_value": None,
                "always_valid_ci_low": None,
                "always_valid_ci_high": None,
                "information_fraction": None,
                "sequential_z_bound": None,
                "decision": None,
                "decision_reasons": None,
            }
        )
        if valid and not s.valid:
            row["valid"] = False
            row["invalid_reason"] = s.invalid_reason
        rows.append(row)
    for row in rows:
        if not row["valid"] and not allow_invalid:
            # Never lie: an invalid result shows no effect, CI or p-value by default.
            for col in EFFECT_COLUMNS:
                row[col] = None
    metadata = {}
    if provenance.sql:
        metadata[SQL_METADATA_KEY] = provenance.sql.encode()
    if distributions:
        metadata[HISTOGRAMS_METADATA_KEY] = json.dumps(distributions).encode()
    schema = SCORECARD_SCHEMA.with_metadata(metadata) if metadata else SCORECARD_SCHEMA
    return pa.Table.from_pylist(rows, schema=schema)


def build_checks(experiment_id: str, run_date: date, checks: Sequence[Check]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "experiment_id": experiment_id,
                "run_date": run_date,
                "run_id": None,
                "name": c.name,
                "value": _f(c.value),
                "threshold": _f(c.threshold),
                "passed": c.passed,
                "gate": c.gate,
                "detail": c.detail,
            }
            for c in checks
        ],
        schema=CHECKS_SCHEMA,
    )


def _floats(values: Sequence[float | None]) -> pa.Array:
    """A float64 column with NaN and None both stored as null."""
    return pa.array(values, type=pa.float64(), from_pandas=True)


def build_history_table(
    experiment_id: str, run_date: date, series: Sequence[HistorySeries]
) -> pa.Table:
    """One row per analysis date x population x metric x treatment variant."""
    rows = [
        (s, day, e, av)
        for s in series
        for day, e, av in zip(s.days, s.effects, s.always_valid, strict=True)
    ]
    effects = [e for _, _, e, _ in rows]
    looks = [av for _, _, _, av in rows]
    columns = {
        "experiment_id": [experiment_id] * len(rows),
        "run_date": [run_date] * len(rows),
        "run_id": pa.nulls(len(rows), pa.string()),
        "analysis_date": [day for _, day, _, _ in rows],
        "population": [s.population for s, _, _, _ in rows],
        "metric": [s.metric for s, _, _, _ in rows],
        "variant": [s.variant for s, _, _, _ in rows],
        "n_control": [e.n_control for e in effects],
        "n_variant": [e.n_treatment for e in effects],
        "method": [e.method for e in effects],
        "abs_effect": _floats([e.abs_effect for e in effects]),
        "abs_se": _floats([e.abs_se for e in effects]),
        "abs_ci_low": _floats([e.abs_ci_low for e in effects]),
        "abs_ci_high": _floats([e.abs_ci_high for e in effects]),
        "rel_lift": _floats([e.rel_lift for e in effects]),
        "p_value": _floats([e.p_value for e in effects]),
        "always_valid_p_value": _floats([a.p_value for a in looks]),
        "always_valid_ci_low": _floats([a.ci_low for a in looks]),
        "always_valid_ci_high": _floats([a.ci_high for a in looks]),
        "msprt_tau": _floats([s.msprt_tau for s, _, _, _ in rows]),
        "trend": [s.trend for s, _, _, _ in rows],
    }
    return pa.table(columns, schema=HISTORY_SCHEMA)
