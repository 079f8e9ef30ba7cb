"""The Arrow schemas of every table xpkit writes (where they go on disk: output/storage.py).

Every table carries the run it belongs to: ``experiment_id`` (the real id, whatever its
folder name), ``run_date`` (a date) and ``run_id`` (the id of the publish, equal to the
run's manifest's; readers check it so a file never mixes into another run).
"""

from __future__ import annotations

import pyarrow as pa

RUN_ID_FIELD = pa.field("run_id", pa.string())

# The scorecard file's key-value metadata holds the run's SQL statement under this key
# (its SHA-256 is the ``sql_sha256`` column), so a report shows the exact SQL of a run.
SQL_METADATA_KEY = b"xpkit.sql"
# ... and each quantile metric's histogram per population and variant (JSON: metric ->
# population -> variant -> {"values": bin values, "counts": units or events}), for plots.
HISTOGRAMS_METADATA_KEY = b"xpkit.histograms"

SCORECARD_SCHEMA = pa.schema(
    [
        ("experiment_id", pa.string()),
        ("run_date", pa.date32()),
        RUN_ID_FIELD,
        ("as_of", pa.date32()),
        ("population", pa.string()),
        ("population_note", pa.string()),
        # "(all)" in both for the experiment's own rows; else the slice's dimension
        # ("device", or "device*country" for a two-way breakdown) and value ("tv", "tv*BR").
        ("slice_dimension", pa.string()),
        ("slice_value", pa.string()),
        ("metric", pa.string()),
        ("metric_kind", pa.string()),
        # Quantile metrics (metric_kind "quantile"): the level q; their mean_* columns hold
        # the arms' q-quantiles and abs_effect their difference.
        ("quantile_level", pa.float64()),
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
        # Slice rows only: the BH family of p_value_adjusted, the test of equal effects
        # across the family's slices, the slice against the rest (ITT; BH across every
        # slice of the metric and variant) and the empirical-Bayes shrunken effect.
        ("slice_family", pa.string()),
        ("heterogeneity_p_value", pa.float64()),
        ("heterogeneity_i2", pa.float64()),
        ("vs_rest_abs_effect", pa.float64()),
        ("vs_rest_p_value", pa.float64()),
        ("vs_rest_p_value_adjusted", pa.float64()),
        ("shrunk_abs_effect", pa.float64()),
        ("shrunk_abs_ci_low", pa.float64()),
        ("shrunk_abs_ci_high", pa.float64()),
        ("valid", pa.bool_()),
        ("invalid_reason", pa.string()),
        ("decision", pa.string()),
        ("decision_reasons", pa.list_(pa.string())),
        ("computed_at", pa.timestamp("us", tz="UTC")),
        ("xpkit_version", pa.string()),
        ("sql_sha256", pa.string()),
        ("config_sha256", pa.string()),
        ("metric_sha256", pa.string()),
        ("rows_read", pa.map_(pa.string(), pa.int64())),
    ]
)

CHECKS_SCHEMA = pa.schema(
    [
        ("experiment_id", pa.string()),
        ("run_date", pa.date32()),
        RUN_ID_FIELD,
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
    + [pa.field("msprt_tau", pa.float64()), pa.field("trend", pa.string())]
)
