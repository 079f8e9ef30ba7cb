"""Scorecards: results + checks + decisions -> Arrow tables -> Parquet, and back to text.

Layout under the output folder (one folder per experiment and run date, so a re-run on
the same day replaces its files and never duplicates them)::

    OUT/experiment_id=homepage_ranking_v2/run_date=2024-04-05/scorecard.parquet
    OUT/experiment_id=homepage_ranking_v2/run_date=2024-04-05/checks.parquet

Files are written to a temporary name in the same folder and renamed into place, so a
crash never leaves a half-written scorecard.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from xpkit.analysis import POPULATION_NOTES, MetricInfo, MetricResult
from xpkit.config import ExperimentConfig
from xpkit.decision import Decision
from xpkit.errors import BadInputError
from xpkit.health import Check
from xpkit.stopping import StopVerdict

SCORECARD_FILE = "scorecard.parquet"
CHECKS_FILE = "checks.parquet"

SCORECARD_SCHEMA = pa.schema(
    [
        ("experiment_id", pa.string()),
        ("run_date", pa.date32()),
        ("as_of", pa.date32()),
        ("population", pa.string()),
        ("population_note", pa.string()),
        ("metric", pa.string()),
        ("metric_kind", pa.string()),
        ("role", pa.string()),
        ("higher_is_better", pa.bool_()),
        ("variant", pa.string()),
        ("control_variant", pa.string()),
        ("n_control", pa.int64()),
        ("n_variant", pa.int64()),
        ("mean_control", pa.float64()),
        ("mean_variant", pa.float64()),
        ("method", pa.string()),
        ("abs_effect", pa.float64()),
        ("abs_se", pa.float64()),
        ("abs_ci_low", pa.float64()),
        ("abs_ci_high", pa.float64()),
        ("rel_lift", pa.float64()),
        ("rel_ci_low", pa.float64()),
        ("rel_ci_high", pa.float64()),
        ("p_value", pa.float64()),
        ("p_value_adjusted", pa.float64()),
        ("correction", pa.string()),
        ("alpha", pa.float64()),
        ("unadjusted_abs_effect", pa.float64()),
        ("unadjusted_abs_ci_low", pa.float64()),
        ("unadjusted_abs_ci_high", pa.float64()),
        ("unadjusted_p_value", pa.float64()),
        ("variance_reduction", pa.float64()),
        ("guardrail_margin", pa.float64()),
        ("guardrail_relative", pa.bool_()),
        ("guardrail_bound", pa.float64()),
        ("guardrail_p_value", pa.float64()),
        ("guardrail_breached", pa.bool_()),
        ("guardrail_reason", pa.string()),
        ("stopping_rule", pa.string()),
        ("always_valid_p_value", pa.float64()),
        ("always_valid_ci_low", pa.float64()),
        ("always_valid_ci_high", pa.float64()),
        ("information_fraction", pa.float64()),
        ("sequential_z_bound", pa.float64()),
        ("srm_p_value", pa.float64()),
        ("valid", pa.bool_()),
        ("invalid_reason", pa.string()),
        ("decision", pa.string()),
        ("decision_reasons", pa.list_(pa.string())),
        ("computed_at", pa.timestamp("us", tz="UTC")),
        ("xpkit_version", pa.string()),
        ("sql_sha256", pa.string()),
        ("config_sha256", pa.string()),
        ("metric_sha256", pa.string()),
        ("rows_read", pa.string()),
    ]
)

CHECKS_SCHEMA = pa.schema(
    [
        ("experiment_id", pa.string()),
        ("run_date", pa.date32()),
        ("name", pa.string()),
        ("value", pa.float64()),
        ("threshold", pa.float64()),
        ("passed", pa.bool_()),
        ("gate", pa.bool_()),
        ("detail", pa.string()),
    ]
)

# Columns emptied on an invalid experiment unless the user asks to see them anyway.
EFFECT_COLUMNS = (
    "abs_effect",
    "abs_se",
    "abs_ci_low",
    "abs_ci_high",
    "rel_lift",
    "rel_ci_low",
    "rel_ci_high",
    "p_value",
    "p_value_adjusted",
    "unadjusted_abs_effect",
    "unadjusted_abs_ci_low",
    "unadjusted_abs_ci_high",
    "unadjusted_p_value",
    "variance_reduction",
    "guardrail_bound",
    "guardrail_p_value",
    "guardrail_breached",
    "always_valid_p_value",
    "always_valid_ci_low",
    "always_valid_ci_high",
)


@dataclass(frozen=True)
class Provenance:
    computed_at: datetime
    xpkit_version: str
    sql_sha256: str
    config_sha256: str
    metric_sha256: Mapping[str, str]
    rows_read: Mapping[str, int]


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
    always_valid: Mapping[tuple[str, str], tuple[float | None, ...]] | None = None,
    verdicts: Mapping[str, StopVerdict] | None = None,
) -> pa.Table:
    gates = [c for c in checks if c.gate and not c.passed]
    valid = not gates
    invalid_reason = "; ".join(f"{c.name}: {c.detail}" for c in gates) or None
    srm = next((c.value for c in checks if c.name == "srm_assignment"), None)
    by_variant = {d.variant: d for d in decisions}
    guards = {g.metric: g for g in experiment.guardrails}
    rows = []
    for r in results:
        e = r.effect
        u = r.unadjusted
        g = r.guardrail
        d = by_variant.get(r.variant)
        seq = (always_valid or {}).get((r.metric, r.variant)) if r.population == "itt" else None
        verdict = (verdicts or {}).get(r.variant)
        row = {
            "experiment_id": experiment.id,
            "run_date": run_date,
            "as_of": as_of,
            "population": r.population,
            "population_note": POPULATION_NOTES.get(r.population),
            "metric": r.metric,
            "metric_kind": metrics[r.metric].kind,
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
            "always_valid_p_value": _f(seq[0]) if seq else None,
            "always_valid_ci_low": _f(seq[1]) if seq else None,
            "always_valid_ci_high": _f(seq[2]) if seq else None,
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
            "rows_read": json.dumps(dict(provenance.rows_read), sort_keys=True),
        }
        if not valid and not allow_invalid:
            # Never lie: an invalid experiment shows no effect, CI or p-value by default.
            for col in EFFECT_COLUMNS:
                row[col] = None
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=SCORECARD_SCHEMA)


def build_checks(experiment_id: str, run_date: date, checks: Sequence[Check]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "experiment_id": experiment_id,
                "run_date": run_date,
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


def output_dir(out: Path, experiment_id: str, run_date: date) -> Path:
    safe = experiment_id.replace("/", "%2F")
    return out / f"experiment_id={safe}" / f"run_date={run_date.isoformat()}"


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write Parquet to a temp file in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise BadInputError(f"{path}: not a readable Parquet file ({err})") from None


def find_scorecards(path: Path) -> list[Path]:
    """A scorecard file, or every scorecard under a folder (newest run per experiment)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BadInputError(f"{path}: no such file or folder")
    latest: dict[Path, Path] = {}
    for f in sorted(path.rglob(SCORECARD_FILE)):
        latest[f.parent.parent] = f  # sorted: the last run_date wins
    if not latest:
        raise BadInputError(f"{path}: no {SCORECARD_FILE} found under this folder")
    return sorted(latest.values())


def recorded_fractions(out: Path, experiment_id: str, before: date) -> list[float]:
    """Information fractions of this experiment's runs filed before ``before``, in order.

    The group-sequential rule needs the earlier looks; the recorded scorecards are the
    run history, so a scheduled daily job applies the right boundary at every look.
    """
    folder = output_dir(out, experiment_id, before).parent
    fractions = []
    for path in sorted(folder.glob("run_date=*/" + SCORECARD_FILE)):
        day = date.fromisoformat(path.parent.name.split("=", 1)[1])
        if day >= before:
            continue
        values = pq.read_table(path, columns=["information_fraction"]).column(0).to_pylist()
        known = [v for v in values if v is not None]
        if known:
            fractions.append(float(known[0]))
    return fractions
