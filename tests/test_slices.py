"""Slices: per-slice cells from the same statement, checked against independent computations.

- per-slice n and means against a hand-written GROUP BY over the raw tables;
- per-slice effects (CUPED with its own theta, ratios, proportions, CACE) against an
  unsliced run on that slice's units alone;
- the heterogeneity test against statsmodels OLS with treatment x slice interactions;
- BH within the family against statsmodels' multipletests;
- per-slice SRM invalidating that slice only; top-K, "(other)" and "(missing)";
- slices never change the experiment's own rows; fact columns are refused as slices.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from click.testing import CliRunner
from statsmodels.stats.multitest import multipletests

from tests.conftest import METRICS_DIR, write_parquet
from xpkit.cli import main
from xpkit.config import load_config
from xpkit.define.registry import load_metrics
from xpkit.runner import engine_for, run_experiment

EXPERIMENT = "homepage_ranking_v2"
RUN_DATE = date(2024, 4, 5)
NUMBERS = ("n_control", "n_variant", "mean_control", "mean_variant", "abs_effect", "abs_se")
NUMBERS += ("p_value", "rel_lift", "variance_reduction", "unadjusted_abs_effect")


def _run(config_path: Path, experiment: str = EXPERIMENT, **kw):
    config = load_config(config_path)
    engine = engine_for(config, threads=1)
    try:
        return run_experiment(
            config, load_metrics(METRICS_DIR), experiment, engine, run_date=RUN_DATE, **kw
        )
    finally:
        engine.close()


@pytest.fixture(scope="module")
def sliced(sample_dir: Path) -> pd.DataFrame:
    run = _run(sample_dir / "experiments.toml", slices=["device", "country", "device*country"])
    return run.scorecard.to_pandas()


def _row(frame: pd.DataFrame, dimension: str, value: str, metric: str, population="itt"):
    got = frame[
        (frame.slice_dimension == dimension)
        & (frame.slice_value == value)
        & (frame.metric == metric)
        & (frame.population == population)
    ]
    assert len(got) == 1, (dimension, value, metric, population)
    return got.iloc[0]


def test_slice_n_and_means_equal_a_hand_written_group_by(sliced, sample_dir: Path) -> None:
    a = sample_dir / "experiment_assignments.parquet"
    d = sample_dir / "engagement_daily.parquet"
    truth = (
        duckdb.connect()
        .execute(
            f"""
        WITH units AS (
          SELECT member_id, MIN(variant) AS variant, MIN(assignment_timestamp)::DATE AS day,
                 ARG_MIN(device, assignment_timestamp) AS device
          FROM '{a}' WHERE experiment_id = '{EXPERIMENT}'
          GROUP BY member_id HAVING COUNT(DISTINCT variant) = 1
        ), last_day AS (SELECT MAX(date) AS last FROM '{d}'),
        per_member AS (
          SELECT u.member_id, u.variant, u.device, COALESCE(SUM(e.watch_seconds), 0) AS watch,
                 COALESCE(SUM(e.errors), 0) AS errors, COALESCE(SUM(e.plays), 0) AS plays
          FROM units u CROSS JOIN last_day
          LEFT JOIN '{d}' e ON e.member_id = u.member_id
               AND e.date BETWEEN u.day AND u.day + INTERVAL 6 DAY
          WHERE u.day + INTERVAL 6 DAY <= last_day.last
          GROUP BY ALL
        )
        SELECT device, variant, COUNT(*), AVG(watch), SUM(errors) / SUM(plays)
        FROM per_member GROUP BY device, variant
        """
        )
        .fetchall()
    )
    assert len(truth) == 6
    for device, variant, n, watch, errors_per_play in truth:
        got = _row(sliced, "device", device, "watch_seconds")
        side = "control" if variant == "control" else "variant"
        assert got[f"n_{side}"] == n
        assert got[f"mean_{side}"] == pytest.approx(watch, rel=1e-12)
        ratio = _row(sliced, "device", device, "errors_per_play")
        assert ratio[f"mean_{side}"] == pytest.approx(errors_per_play, rel=1e-12)


def test_slices_of_a_dimension_add_up_to_the_experiment(sliced) -> None:
    overall = _row(sliced, "(all)", "(all)", "sessions")
    for dimension in ("device", "country", "device*country"):
        rows = sliced[
            (sliced.slice_dimension == dimension)
            & (sliced.metric == "sessions")
            & (sliced.population == "itt")
        ]
        assert rows.n_control.sum() == overall.n_control
        assert rows.n_variant.sum() == overall.n_variant
    cross = sliced[sliced.slice_dimension == "device*country"]
    assert set(cross.slice_value) >= {"tv*US", "mobile*JP"}


@pytest.fixture(scope="module")
def tv_only(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The experiment run unsliced on the tv members' assignment rows alone."""
    root = tmp_path_factory.mktemp("tv")
    con = duckdb.connect()
    write_parquet(
        con,
        f"SELECT * FROM '{sample_dir / 'experiment_assignments.parquet'}' WHERE device = 'tv'",
        root / "experiment_assignments.parquet",
    )
    text = (sample_dir / "experiments.toml").read_text()
    for table in ("engagement_daily.parquet", "plays.parquet"):
        text = text.replace(f'"{table}"', f'"{sample_dir / table}"')
    (root / "experiments.toml").write_text(text)
    return _run(root / "experiments.toml").scorecard.to_pandas()


@pytest.mark.parametrize("population", ["itt", "tot", "cace"])
def test_a_slice_equals_the_unsliced_estimator_on_its_own_units(
    sliced, tv_only, population: str
) -> None:
    own = tv_only[(tv_only.population == population) & (tv_only.metric_kind != "quantile")]
    metrics = set(own.metric)  # quantile metrics are not sliced
    assert {"watch_seconds", "errors_per_play"} <= metrics or population == "cace"
    for metric in sorted(metrics):
        got = _row(sliced, "device", "tv", metric, population)
        want = _row(tv_only, "(all)", "(all)", metric, population)
        assert got.method == want.method
        for column in NUMBERS:
            if pd.isna(want[column]):
                assert pd.isna(got[column]), (metric, column)
            else:
                assert got[column] == pytest.approx(want[column], rel=1e-9, abs=1e-12), (
                    metric,
                    column,
                )


def test_slice_p_values_are_bh_adjusted_within_their_family(sliced) -> None:
    rows = sliced[
        (sliced.slice_dimension == "country")
        & (sliced.metric == "sessions")
        & (sliced.population == "itt")
    ]
    assert set(rows.slice_family) == {"itt/sessions/treatment by country"}
    _, expected, _, _ = multipletests(rows.p_value.to_numpy(), method="fdr_bh")
    np.testing.assert_allclose(rows.p_value_adjusted.to_numpy(), expected, rtol=1e-12)
    assert set(rows.correction) == {"bh"}


def test_slices_never_change_the_experiments_own_rows(sample_dir: Path, sliced) -> None:
    plain = _run(sample_dir / "experiments.toml", slices=[]).scorecard.to_pandas()
    overall = sliced[sliced.slice_dimension == "(all)"].reset_index(drop=True)
    assert len(overall) == len(plain)
    volatile = {"computed_at", "sql_sha256", "rows_read", "run_id"}
    for column in plain.columns:
        if column in volatile:
            continue
        left, right = overall[column], plain[column]
        if left.dtype.kind == "f":
            np.testing.assert_allclose(left, right, rtol=1e-9, err_msg=column)
        else:
            assert left.astype(str).tolist() == right.astype(str).tolist(), column
    assert (
        set(overall.decision.dropna())
        and sliced[sliced.slice_dimension != "(all)"].decision.isna().all()
    )


# --------------------------------------------------------------------------------------
# Hand-made data: known slices, a slice with a broken split, NULLs and many values.

METRIC = '''
from xpkit import Metric, Source

class Daily(Source):
    table = "daily"
    unit = "member_id"
    time = "day"

class Minutes(Metric):
    """Minutes per member (no covariate: Welch per slice)."""
    source = Daily
    expression = "SUM(minutes)"
'''


def _world(root: Path, extra: str = "", top: str = "") -> Path:
    """3000 members over 5 days; region decides the effect, so region is heterogeneous.

    ``city`` has 12 values, some NULL; in ``cohort`` k1 loses 60% of its treatment members
    and k2 60% of its control members: two slices with a broken split in an experiment
    whose overall split is fine.
    """
    con = duckdb.connect()
    write_parquet(
        con,
        """
        WITH m AS (
          SELECT i AS member_id,
                 CASE WHEN hash(i * 7) % 2 = 0 THEN 'control' ELSE 'treatment' END AS variant,
                 ['north', 'south', 'east'][1 + (i % 3)::INT] AS region,
                 CASE WHEN i % 17 = 0 THEN NULL ELSE 'c' || ((i // 3) % 12)::VARCHAR END AS city,
                 'k' || ((i // 7) % 4)::VARCHAR AS cohort
          FROM range(3000) t(i)
        )
        SELECT 'x' AS experiment_id, member_id, variant,
               TIMESTAMP '2024-01-01 10:00:00' + INTERVAL (member_id % 5) DAY AS assignment_timestamp,
               TRUE AS exposed_flag, region, city, cohort
        FROM m
        WHERE NOT (cohort = 'k1' AND variant = 'treatment' AND member_id % 5 < 3)
          AND NOT (cohort = 'k2' AND variant = 'control' AND member_id % 5 < 3)
        """,
        root / "assignments.parquet",
    )
    write_parquet(
        con,
        """
        SELECT a.member_id, DATE '2024-01-01' + INTERVAL (d) DAY AS day,
               (hash(a.member_id * 31 + d) % 1000) / 100.0
               + CASE WHEN a.variant = 'treatment' AND a.region = 'north' THEN 3.0 ELSE 0 END
               AS minutes, a.region AS fact_region
        FROM 'ASSIGN' a, range(12) t(d)
        """.replace("ASSIGN", str(root / "assignments.parquet")),
        root / "daily.parquet",
    )
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics" / "minutes.py").write_text(METRIC)
    config = root / "experiments.toml"
    config.write_text(
        f"""
{top}
metrics_dir = "metrics"
[tables]
experiment_assignments = "assignments.parquet"
daily = "daily.parquet"
{extra}
[[experiment]]
id = "x"
control = "control"
weights = {{ control = 0.5, treatment = 0.5 }}
window = [0, 2]
metrics = ["minutes"]
populations = ["itt"]
min_days = 1
slices = ["region", "city", "cohort"]
slice_top_k = 5
stopping_rule = "fixed_horizon"
"""
    )
    return config


def _world_run(config: Path, **kw):
    cfg = load_config(config)
    engine = engine_for(cfg, threads=1)
    try:
        return run_experiment(
            cfg, load_metrics(config.parent / "metrics"), "x", engine, run_date=RUN_DATE, **kw
        )
    finally:
        engine.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    config = _world(tmp_path_factory.mktemp("world"))
    run = _world_run(config)
    return config, run.scorecard.to_pandas(), run.checks.to_pandas()


def test_top_k_values_then_other_and_missing(world) -> None:
    config, card, _ = world
    cities = card[card.slice_dimension == "city"]
    values = set(cities.slice_value)
    assert "(missing)" in values and "(other)" in values
    assert len(values) == 5 + 2
    # The 5 most common cities by units, independently: every city has 250 members less
    # those with i % 17 == 0 and the lost south treatment rows; ties go to the smaller name.
    a = config.parent / "assignments.parquet"
    top = (
        duckdb.connect()
        .execute(
            f"""SELECT city FROM '{a}' WHERE city IS NOT NULL GROUP BY city
            ORDER BY COUNT(*) DESC, city LIMIT 5"""
        )
        .fetchall()
    )
    assert values - {"(missing)", "(other)"} == {c for (c,) in top}
    missing = duckdb.connect().execute(f"SELECT COUNT(*) FROM '{a}' WHERE city IS NULL").fetchone()
    row = cities[cities.slice_value == "(missing)"].iloc[0]
    assert row.n_control + row.n_variant <= missing[0]


def test_a_slice_with_a_broken_split_is_invalid_alone(world) -> None:
    _, card, checks = world
    cohort = card[card.slice_dimension == "cohort"].set_index("slice_value")
    for broken in ("k1", "k2"):
        assert not cohort.loc[broken, "valid"], broken
        assert f"srm_slice:cohort={broken}" in cohort.loc[broken, "invalid_reason"]
        assert pd.isna(cohort.loc[broken, "abs_effect"])  # withheld like any invalid result
        check = checks[checks.name == f"srm_slice:cohort={broken}"].iloc[0]
        assert not check.passed and not check.gate
    for fine in ("k0", "k3"):
        assert cohort.loc[fine, "valid"] and not pd.isna(cohort.loc[fine, "abs_effect"])
    # The experiment's own gates are unchanged: its split as a whole is fine.
    overall = card[card.slice_dimension == "(all)"].iloc[0]
    assert overall.valid and overall.decision is not None
    assert checks[checks.name == "srm_assignment"].passed.iloc[0]
    # Invalid slices take no part in their dimension's comparisons.
    assert pd.isna(cohort.loc["k1", "p_value_adjusted"])
    assert not pd.isna(cohort.loc["k0", "heterogeneity_p_value"])


def test_heterogeneity_equals_statsmodels_interaction_wald_test(world) -> None:
    """No covariates: per-slice Welch SEs are OLS with HC2 errors in the saturated model."""
    config, card, _ = world
    a, d = config.parent / "assignments.parquet", config.parent / "daily.parquet"
    units = (
        duckdb.connect()
        .execute(
            f"""
        SELECT a.member_id, a.variant = 'treatment' AS treated, a.city,
               COALESCE(SUM(e.minutes) FILTER (WHERE e.day BETWEEN a.assignment_timestamp::DATE
                 AND a.assignment_timestamp::DATE + INTERVAL 2 DAY), 0) AS y
        FROM '{a}' a LEFT JOIN '{d}' e ON e.member_id = a.member_id
        GROUP BY ALL
        """
        )
        .df()
    )
    top = units.city.dropna().value_counts()
    top = set(sorted(top.index, key=lambda c: (-top[c], c))[:5])
    units["slice"] = np.where(
        units.city.isna(), "(missing)", np.where(units.city.isin(top), units.city, "(other)")
    )
    units["treated"] = units.treated.astype(float)
    fit = smf.ols("y ~ treated * C(slice)", data=units).fit(cov_type="HC2")
    names = [n for n in fit.params.index if n.startswith("treated:")]
    wald = fit.wald_test(" = 0, ".join(names) + " = 0", use_f=False, scalar=True)
    got = card[card.slice_dimension == "city"].heterogeneity_p_value.unique()
    assert len(got) == 1
    assert got[0] == pytest.approx(float(wald.pvalue), rel=1e-9)


def test_planted_heterogeneity_is_found_and_none_where_none(world) -> None:
    _, card, _ = world
    region = card[card.slice_dimension == "region"]
    # north's effect is +3 per day over 3 days, the others' 0.
    assert region.heterogeneity_p_value.iloc[0] < 1e-6
    assert region.heterogeneity_i2.iloc[0] > 0.9
    north = region[region.slice_value == "north"].iloc[0]
    assert north.vs_rest_p_value_adjusted < 1e-6 and north.vs_rest_abs_effect > 5
    city = card[card.slice_dimension == "city"]
    assert city.heterogeneity_p_value.iloc[0] > 0.01
    # Shrinkage pulls every city towards their common effect: less spread than raw.
    assert city.shrunk_abs_effect.std() < city.abs_effect.std()


def test_fact_table_columns_are_refused_as_slices(tmp_path: Path) -> None:
    config = _world(tmp_path)
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "out"),
            "--experiment",
            "x",
            "--slice",
            "fact_region",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "slice 'fact_region' is a column of the fact table 'daily'" in result.output
    assert "treatment can change it" in result.output
    assert not (tmp_path / "out" / "runs").exists()


def test_unknown_slice_column_names_the_tables(tmp_path: Path) -> None:
    config = _world(tmp_path)
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "out"),
            "--experiment",
            "x",
            "--slice",
            "regoin",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "slice 'regoin': no such column in 'experiment_assignments'" in result.output
    assert "did you mean 'region'?" in result.output


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("region,region", "slice 'region' is listed more than once"),
        ("region*region", "names the same column twice"),
        ("region+city", "is not a slice"),
    ],
)
def test_bad_slice_options_are_usage_errors(tmp_path: Path, option: str, message: str) -> None:
    config = _world(tmp_path)
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "o"),
            "--experiment",
            "x",
            "--slice",
            option,
        ],
    )
    assert result.exit_code == 2 and message in result.output, result.output


def test_slice_on_demand_needs_one_experiment(sample_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--config",
            str(sample_dir / "experiments.toml"),
            "--out",
            str(tmp_path),
            "--slice",
            "device",
        ],
    )
    assert result.exit_code == 2
    assert "--slice computes slices on demand for one experiment" in result.output


def test_unit_attributes_are_taken_as_of_assignment(tmp_path: Path) -> None:
    """A plan attribute kept in its own table, changing over time: each unit's plan is the
    one valid at its first assignment, never a later one."""
    con = duckdb.connect()
    write_parquet(
        con,
        """
        SELECT i AS member_id, 'basic' AS plan, TIMESTAMP '2023-01-01' AS valid_from
        FROM range(3000) t(i)
        UNION ALL
        SELECT i, 'premium', TIMESTAMP '2023-06-01' FROM range(3000) t(i) WHERE i % 4 = 0
        UNION ALL
        -- upgrades after assignment must not move a unit between slices
        SELECT i, 'premium', TIMESTAMP '2024-01-09' FROM range(3000) t(i) WHERE i % 4 = 1
        """,
        tmp_path / "plans.parquet",
    )
    config = _world(
        tmp_path,
        extra='members = "plans.parquet"\n[unit_attributes]\ntable = "members"\ntime = "valid_from"\n',
    )
    run = _world_run(config, slices=["plan"])
    card = run.scorecard.to_pandas()
    plans = card[card.slice_dimension == "plan"].set_index("slice_value")
    a = config.parent / "assignments.parquet"
    premium = (
        duckdb.connect()
        .execute(f"SELECT COUNT(*) FROM '{a}' WHERE member_id % 4 = 0")
        .fetchone()[0]
    )
    # window [0, 2] and data to 2024-01-12: every unit's window is complete.
    assert set(plans.index) == {"basic", "premium"}
    n = plans.n_control + plans.n_variant
    assert n["premium"] == premium
    assert (
        n["basic"] + n["premium"]
        == duckdb.connect().execute(f"SELECT COUNT(*) FROM '{a}'").fetchone()[0]
    )


def test_discovery_is_bh_across_every_slice_of_the_metric(world) -> None:
    _, card, _ = world
    rows = card[(card.slice_dimension != "(all)") & (card.population == "itt")]
    rows = rows[rows.vs_rest_p_value.notna()]
    assert set(rows.slice_dimension) == {"region", "city", "cohort"}
    _, expected, _, _ = multipletests(rows.vs_rest_p_value.to_numpy(), method="fdr_bh")
    np.testing.assert_allclose(rows.vs_rest_p_value_adjusted.to_numpy(), expected, rtol=1e-12)
    # A slice against the rest is the difference of two independent estimates.
    north = rows[(rows.slice_dimension == "region") & (rows.slice_value == "north")].iloc[0]
    rest = rows[(rows.slice_dimension == "region") & (rows.slice_value != "north")]
    assert north.vs_rest_abs_effect > 0 and north.abs_effect > rest.abs_effect.max()


def test_sample_heterogeneity_found_where_planted_and_not_elsewhere(sliced, sample_dir) -> None:
    """The sample's watch-time lift is planted on tv members (outside JP); errors have no
    effect at all and sessions a uniform one across countries (manifest.json)."""
    import json

    manifest = json.loads((sample_dir / "manifest.json").read_text())
    (spec,) = [e for e in manifest["experiments"] if e["experiment_id"] == EXPERIMENT]
    planted = spec["heterogeneity"]["treatment"]
    assert planted["watch_seconds"]["device"]["source"] == "planted"
    itt = sliced[sliced.population == "itt"]

    def dimension(metric: str, name: str) -> pd.DataFrame:
        return itt[(itt.metric == metric) & (itt.slice_dimension == name)]

    watch = dimension("watch_seconds", "device").set_index("slice_value")
    assert watch.heterogeneity_p_value.iloc[0] < 0.01
    assert watch.loc["tv", "vs_rest_p_value_adjusted"] < 0.05
    assert watch.loc["tv", "vs_rest_abs_effect"] > 0
    truths = spec["slice_truths"]["device"]
    for device, row in watch.iterrows():
        truth = truths[device]["true_effects"]["treatment"]["watch_seconds"]["true_itt_abs"]
        assert row.abs_ci_low <= truth <= row.abs_ci_high, device
    for metric, name in (("errors", "device"), ("errors", "country"), ("sessions", "country")):
        assert not planted[metric][name]["absolute"]
        rows = dimension(metric, name)
        assert rows.heterogeneity_p_value.iloc[0] > 0.05, (metric, name)
        assert (rows.vs_rest_p_value_adjusted > 0.05).all(), (metric, name)


def test_heterogeneity_with_cuped_against_ols_with_covariates(sliced, sample_dir: Path) -> None:
    """With CUPED (each slice's own theta), the Q test against OLS of the outcome on
    treatment x device with the pre-period covariates interacted with device, HC2 errors.

    The point estimates coincide (within-slice CUPED with a pooled theta is the OLS
    coefficient of treatment given the covariates); the standard errors differ in how they
    treat theta's estimation, so the p-values agree to a documented 3% relative tolerance
    (measured on the sample: 1.6%)."""
    a = sample_dir / "experiment_assignments.parquet"
    d = sample_dir / "engagement_daily.parquet"
    units = (
        duckdb.connect()
        .execute(
            f"""
        WITH units AS (
          SELECT member_id, MIN(variant) AS variant, MIN(assignment_timestamp)::DATE AS day,
                 ARG_MIN(device, assignment_timestamp) AS device
          FROM '{a}' WHERE experiment_id = '{EXPERIMENT}'
          GROUP BY member_id HAVING COUNT(DISTINCT variant) = 1
        ), last_day AS (SELECT MAX(date) AS last FROM '{d}')
        SELECT u.member_id, u.device, (u.variant = 'treatment')::DOUBLE AS treated,
               COALESCE(SUM(e.sessions) FILTER (WHERE e.date BETWEEN u.day
                        AND u.day + INTERVAL 6 DAY), 0)::DOUBLE AS y,
               COALESCE(SUM(e.sessions) FILTER (WHERE e.date BETWEEN u.day - INTERVAL 14 DAY
                        AND u.day - INTERVAL 1 DAY), 0)::DOUBLE AS pre,
               (COUNT(e.date) FILTER (WHERE e.date BETWEEN u.day - INTERVAL 14 DAY
                        AND u.day - INTERVAL 1 DAY) > 0)::DOUBLE AS history
        FROM units u CROSS JOIN last_day
        LEFT JOIN '{d}' e ON e.member_id = u.member_id
        WHERE u.day + INTERVAL 6 DAY <= last_day.last
        GROUP BY ALL
        """
        )
        .df()
    )
    # The has-history flag is a covariate only where it varies (constant, it is the intercept).
    varies = units.groupby("device").history.nunique().min() > 1
    covariates = "treated + pre + history" if varies else "treated + pre"
    fit = smf.ols(f"y ~ C(device) * ({covariates})", data=units).fit(cov_type="HC2")
    names = [n for n in fit.params.index if n.startswith("C(device)") and n.endswith(":treated")]
    assert len(names) == 2
    wald = fit.wald_test(" = 0, ".join(names) + " = 0", use_f=False, scalar=True)
    rows = sliced[
        (sliced.slice_dimension == "device")
        & (sliced.metric == "sessions")
        & (sliced.population == "itt")
    ].set_index("slice_value")
    # Per slice, the effect is the OLS treatment coefficient of that slice.
    base = fit.params["treated"]
    for device in rows.index:
        term = f"C(device)[T.{device}]:treated"
        coef = base + fit.params.get(term, 0.0)
        assert rows.loc[device, "abs_effect"] == pytest.approx(coef, rel=1e-9)
    got, want = rows.heterogeneity_p_value.iloc[0], float(wald.pvalue)
    print(
        f"CUPED Q p = {got:.6g}, OLS HC2 Wald p = {want:.6g}, relative {abs(got - want) / want:.2%}"
    )
    assert got == pytest.approx(want, rel=0.03)
