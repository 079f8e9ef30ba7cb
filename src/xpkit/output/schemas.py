"""The Arrow schemas of every table xpkit writes (where they go on disk: output/storage.py).

Every table carries the run it belongs to: ``experiment_id`` (the real id, whatever its
folder name), ``run_date`` (a date) and ``run_id`` (the id of the publish, equal to the
run's manifest's; readers check it so a file never mixes into another run).
"""

from __future__ import annotations

import pyarrow as pa

DESCRIPTION_KEY = b"description"


def _field(name: str, dtype: pa.DataType, description: str) -> pa.Field:
    """A column with its description in the field's metadata (the Parquet file keeps it)."""
    return pa.field(name, dtype, metadata={DESCRIPTION_KEY: description.encode()})


def description(field: pa.Field) -> str:
    """A column's description, from its field metadata ("" when it has none)."""
    return (field.metadata or {}).get(DESCRIPTION_KEY, b"").decode()


RUN_ID_FIELD = _field(
    "run_id",
    pa.string(),
    "The id of the publish that wrote this row; equal to the run manifest's run_id.",
)

# The scorecard file's key-value metadata holds the run's SQL statement under this key
# (its SHA-256 is the ``sql_sha256`` column), so a report shows the exact SQL of a run.
SQL_METADATA_KEY = b"xpkit.sql"
# ... and each quantile metric's histogram per population and variant (JSON: metric ->
# population -> variant -> {"values": bin values, "counts": units or events}), for plots.
HISTOGRAMS_METADATA_KEY = b"xpkit.histograms"

SCORECARD_SCHEMA = pa.schema(
    [
        _field(
            "experiment_id",
            pa.string(),
            (
                "The experiment's id as configured (its folder name on disk may be encoded; this "
                "column is the real id)."
            ),
        ),
        _field(
            "run_date",
            pa.date32(),
            "The date the run is filed under: --run-date, else the day it ran (UTC).",
        ),
        RUN_ID_FIELD,
        _field(
            "as_of",
            pa.date32(),
            "The last date of data analysed: a unit counts when its window ends by this date.",
        ),
        _field(
            "population",
            pa.string(),
            (
                "itt (every assigned unit), tot (exposed units only: selection-biased) or cace (the"
                " complier effect, from ITT)."
            ),
        ),
        _field("population_note", pa.string(), "What the population's effect means, in words."),
        _field(
            "slice_dimension",
            pa.string(),
            (
                "\"(all)\" on the experiment's own rows; else the slice's dimension (device, or "
                "device*country for a two-way breakdown)."
            ),
        ),
        _field(
            "slice_value",
            pa.string(),
            (
                "\"(all)\" on the experiment's own rows; else the slice's value (tv, or tv*BR); "
                '"(missing)" for NULL, "(other)" beyond the dimension\'s top slice_top_k '
                "values."
            ),
        ),
        _field("metric", pa.string(), "The metric's name."),
        _field(
            "metric_description",
            pa.string(),
            "The metric's description (its class docstring) when the run was made.",
        ),
        _field(
            "metric_kind",
            pa.string(),
            "mean, proportion (0/1 per unit), ratio (a ratio of per-unit sums, delta method) or "
            "quantile (the difference of the arms' q-quantiles).",
        ),
        _field(
            "quantile_level",
            pa.float64(),
            "Quantile metrics only: the level q. Their mean_control/mean_variant hold the "
            "arms' q-quantiles and abs_effect their difference.",
        ),
        _field("role", pa.string(), "primary, secondary or guardrail, as configured."),
        _field(
            "higher_is_better",
            pa.bool_(),
            "The metric's direction, read by decisions and guardrails.",
        ),
        _field("variant", pa.string(), "The treatment variant compared with control on this row."),
        _field("control_variant", pa.string(), "The control variant."),
        _field(
            "n_control",
            pa.int64(),
            "Units analysed in control: a complete window, assigned to one variant only.",
        ),
        _field(
            "n_variant",
            pa.int64(),
            "Units analysed in the variant: a complete window, assigned to one variant only.",
        ),
        _field(
            "mean_control",
            pa.float64(),
            (
                "Observed mean per unit in control (a ratio metric: the ratio of the arm's sums; "
                "CACE: the compliers')."
            ),
        ),
        _field(
            "mean_variant",
            pa.float64(),
            (
                "Observed mean per unit in the variant (a ratio metric: the ratio of the arm's "
                "sums; CACE: the compliers')."
            ),
        ),
        _field(
            "method",
            pa.string(),
            (
                "The estimator: welch, cuped, two_proportion_z, two_proportion_score, ratio_delta, "
                "ratio_delta_cuped, cace_wald or cace_2sls."
            ),
        ),
        _field(
            "abs_effect",
            pa.float64(),
            "Variant minus control, adjusted for the covariates when the method uses them.",
        ),
        _field("abs_se", pa.float64(), "Standard error of abs_effect."),
        _field(
            "abs_ci_low",
            pa.float64(),
            (
                "Lower end of the confidence interval of abs_effect at level 1 - alpha (fixed "
                "horizon)."
            ),
        ),
        _field(
            "abs_ci_high",
            pa.float64(),
            (
                "Upper end of the confidence interval of abs_effect at level 1 - alpha (fixed "
                "horizon)."
            ),
        ),
        _field(
            "rel_lift", pa.float64(), "Relative lift: abs_effect over the absolute control mean."
        ),
        _field(
            "rel_ci_low",
            pa.float64(),
            (
                "Lower end of the confidence interval of rel_lift (delta method, or the score "
                "interval for proportions)."
            ),
        ),
        _field(
            "rel_ci_high",
            pa.float64(),
            (
                "Upper end of the confidence interval of rel_lift (delta method, or the score "
                "interval for proportions)."
            ),
        ),
        _field("p_value", pa.float64(), "Two-sided fixed-horizon p-value of no effect."),
        _field(
            "p_value_adjusted",
            pa.float64(),
            (
                "p_value adjusted for multiple testing (correction) across the primary and "
                "secondary metrics; on slice rows, BH across the values of one dimension "
                "(slice_family)."
            ),
        ),
        _field(
            "correction",
            pa.string(),
            "How p_value_adjusted was adjusted: bh, holm or none; null when it was not.",
        ),
        _field("alpha", pa.float64(), "The experiment's significance level."),
        _field(
            "unadjusted_abs_effect",
            pa.float64(),
            "abs_effect without the covariates (CUPED off); null when the method uses none.",
        ),
        _field(
            "unadjusted_abs_ci_low",
            pa.float64(),
            "Lower end of the interval of unadjusted_abs_effect.",
        ),
        _field(
            "unadjusted_abs_ci_high",
            pa.float64(),
            "Upper end of the interval of unadjusted_abs_effect.",
        ),
        _field("unadjusted_p_value", pa.float64(), "p_value without the covariates."),
        _field(
            "variance_reduction",
            pa.float64(),
            "Share of the variance of the effect that the covariates (CUPED) removed.",
        ),
        _field(
            "guardrail_margin", pa.float64(), "Guardrails: the configured non-inferiority margin."
        ),
        _field(
            "guardrail_relative",
            pa.bool_(),
            (
                "Guardrails: true when the margin is relative to the control mean, false when "
                "absolute."
            ),
        ),
        _field(
            "guardrail_bound",
            pa.float64(),
            "Guardrails: the one-sided confidence bound of the harm, compared with the margin.",
        ),
        _field(
            "guardrail_p_value",
            pa.float64(),
            (
                "Guardrails: p-value of the non-inferiority test (a harm beyond the margin is the "
                "null)."
            ),
        ),
        _field(
            "guardrail_breached",
            pa.bool_(),
            "Guardrails: true when a harm beyond the margin cannot be ruled out.",
        ),
        _field("guardrail_reason", pa.string(), "Guardrails: the verdict in words."),
        _field(
            "stopping_rule",
            pa.string(),
            "group_sequential, always_valid or fixed_horizon, as configured.",
        ),
        _field(
            "always_valid_p_value",
            pa.float64(),
            (
                "ITT rows: the mSPRT's always-valid p-value, valid however often the experiment is "
                "looked at."
            ),
        ),
        _field(
            "always_valid_ci_low",
            pa.float64(),
            "ITT rows: lower end of the always-valid (mSPRT) confidence interval of abs_effect.",
        ),
        _field(
            "always_valid_ci_high",
            pa.float64(),
            "ITT rows: upper end of the always-valid (mSPRT) confidence interval of abs_effect.",
        ),
        _field(
            "information_fraction",
            pa.float64(),
            "Group-sequential rule: the share of the planned units observed at this look.",
        ),
        _field(
            "sequential_z_bound",
            pa.float64(),
            (
                "Group-sequential rule: the z boundary the primary metric's statistic must cross at"
                " this look."
            ),
        ),
        _field(
            "srm_p_value",
            pa.float64(),
            (
                "Sample-ratio mismatch: p-value of the sequential test that the split matches the "
                "weights; on slice rows, the slice's own."
            ),
        ),
        _field(
            "slice_family",
            pa.string(),
            (
                "Slice rows: the family that p_value_adjusted was adjusted across (population, "
                "metric, variant and dimension)."
            ),
        ),
        _field(
            "heterogeneity_p_value",
            pa.float64(),
            "Slice rows: Cochran's Q test that the dimension's slices share one absolute effect.",
        ),
        _field(
            "heterogeneity_i2",
            pa.float64(),
            "Slice rows: I^2, the share of the spread of the slices' effects beyond noise.",
        ),
        _field(
            "vs_rest_abs_effect",
            pa.float64(),
            "Slice rows (ITT): the slice's effect minus the effect on all other units.",
        ),
        _field("vs_rest_p_value", pa.float64(), "Slice rows (ITT): p-value of vs_rest_abs_effect."),
        _field(
            "vs_rest_p_value_adjusted",
            pa.float64(),
            (
                "Slice rows (ITT): vs_rest_p_value, BH across every slice of every dimension of the"
                " metric and variant."
            ),
        ),
        _field(
            "shrunk_abs_effect",
            pa.float64(),
            (
                "Slice rows: empirical-Bayes effect (normal-normal across the dimension's slices, "
                "between-slice variance by REML)."
            ),
        ),
        _field(
            "shrunk_abs_ci_low",
            pa.float64(),
            "Slice rows: lower end of the posterior interval of shrunk_abs_effect.",
        ),
        _field(
            "shrunk_abs_ci_high",
            pa.float64(),
            "Slice rows: upper end of the posterior interval of shrunk_abs_effect.",
        ),
        _field(
            "valid",
            pa.bool_(),
            (
                "False when a health gate failed (on slice rows: also when the slice's own split is"
                " broken); the effects are then withheld unless the run used --allow-invalid."
            ),
        ),
        _field(
            "invalid_reason", pa.string(), "The failed gates and their details; null when valid."
        ),
        _field(
            "decision",
            pa.string(),
            "Per variant: ship, no_ship, keep_running or invalid; null on slice rows.",
        ),
        _field(
            "decision_reasons",
            pa.list_(pa.string()),
            "Why the decision was made, one sentence each.",
        ),
        _field("computed_at", pa.timestamp("us", tz="UTC"), "When the run computed the row (UTC)."),
        _field("xpkit_version", pa.string(), "The xpkit version that computed the row."),
        _field(
            "sql_sha256",
            pa.string(),
            (
                "SHA-256 of the run's SQL statement (the statement itself is in the scorecard "
                "file's metadata under the key xpkit.sql)."
            ),
        ),
        _field("config_sha256", pa.string(), "SHA-256 of the configuration file's bytes."),
        _field(
            "metric_sha256",
            pa.string(),
            (
                "SHA-256 of everything that defines the metric's numbers (name, kind, source, "
                "expressions, cap, direction)."
            ),
        ),
        _field(
            "rows_read",
            pa.map_(pa.string(), pa.int64()),
            "Rows read from each table (table name to rows).",
        ),
    ]
)

CHECKS_SCHEMA = pa.schema(
    [
        # The run's key columns, as the scorecard's.
        *(SCORECARD_SCHEMA.field(name) for name in ("experiment_id", "run_date", "run_id")),
        _field(
            "name",
            pa.string(),
            (
                "The check's name, e.g. srm_assignment, multi_variant_units; "
                "srm_slice:<dimension>=<value> for a slice's split."
            ),
        ),
        _field("value", pa.float64(), "What the check measured (a p-value, a share, a count)."),
        _field("threshold", pa.float64(), "The value the check compares it with."),
        _field("passed", pa.bool_(), "True when the check passed."),
        _field(
            "gate",
            pa.bool_(),
            "True for a health gate (failing it invalidates the result); false for a warning.",
        ),
        _field(
            "detail",
            pa.string(),
            "The check in words: what was measured, against what, and what it means.",
        ),
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
    "heterogeneity_p_value",
    "heterogeneity_i2",
    "vs_rest_abs_effect",
    "vs_rest_p_value",
    "vs_rest_p_value_adjusted",
    "shrunk_abs_effect",
    "shrunk_abs_ci_low",
    "shrunk_abs_ci_high",
)

# Columns that scorecards written by earlier versions lack, with the value such a file
# means (its rows are all the experiment's own); readers add them.
ADDED_SCORECARD_COLUMNS: dict[str, str | None] = {
    "metric_description": None,
    "quantile_level": None,
    "slice_dimension": "(all)",
    "slice_value": "(all)",
    "slice_family": None,
    "heterogeneity_p_value": None,
    "heterogeneity_i2": None,
    "vs_rest_abs_effect": None,
    "vs_rest_p_value": None,
    "vs_rest_p_value_adjusted": None,
    "shrunk_abs_effect": None,
    "shrunk_abs_ci_low": None,
    "shrunk_abs_ci_high": None,
}

# The history's columns are the scorecard's, under the same names and types, plus the day
# each row is as of, the mSPRT mixture scale and the series' novelty/primacy verdict.
HISTORY_SCHEMA = pa.schema(
    [SCORECARD_SCHEMA.field(name) for name in ("experiment_id", "run_date", "run_id")]
    + [
        _field(
            "analysis_date",
            pa.date32(),
            (
                "The day this row is as of: the units whose window is complete by then, each with "
                "its full window."
            ),
        )
    ]
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
    + [
        _field(
            "msprt_tau",
            pa.float64(),
            "The mSPRT mixture's scale for the series (sequential_mde times the control mean).",
        ),
        _field(
            "trend",
            pa.string(),
            "The series' novelty/primacy verdict: a weighted trend test on the daily increments.",
        ),
    ]
)
