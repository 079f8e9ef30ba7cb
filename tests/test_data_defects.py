"""Defects of real data end in a failed check or a message, never in wrong numbers.

NULL unit ids and timestamps are counted and left out (never merged into one "unit"),
fact rows dated in the future fail a gate, an as-of date past the data is refused, and
units assigned after the as-of date enter no denominator.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
from click.testing import CliRunner

from tests.conftest import METRICS_DIR
from xpkit.cli import main
from xpkit.config import load_config
from xpkit.define.registry import load_metrics
from xpkit.engines import open_engine
from xpkit.runner import ExperimentRun, run_experiment

EXPERIMENT = "homepage_ranking_v2"


def rewrite(path: Path, sql: str) -> None:
    """Replace a Parquet file by a query over it (``t`` is the old table)."""
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{path}')")
    con.execute(f"COPY ({sql}) TO '{path}' (FORMAT PARQUET)")


def run(sample: Path, **kw: object) -> ExperimentRun:
    config = load_config(sample / "experiments.toml")
    engine = open_engine("duckdb", config.run.tables)
    try:
        return run_experiment(
            config, load_metrics(METRICS_DIR), EXPERIMENT, engine, run_date=date(2024, 4, 5), **kw
        )  # type: ignore[arg-type]
    finally:
        engine.close()


def checks(run: ExperimentRun) -> dict[str, dict]:
    return {r["name"]: r for r in run.checks.to_pylist()}


def test_null_unit_ids_are_counted_and_left_out(sample_copy: Path) -> None:
    before = run(sample_copy)
    path = sample_copy / "experiment_assignments.parquet"
    # One in ten of the experiment's rows loses its unit id: far above the gate's share.
    rewrite(
        path,
        f"SELECT * REPLACE (CASE WHEN experiment_id = '{EXPERIMENT}' AND hash(member_id) % 10 = 0 "
        "THEN NULL ELSE member_id END AS member_id) FROM t",
    )
    after = run(sample_copy)
    check = checks(after)["null_assignment_keys"]
    assert not check["passed"] and check["gate"] and not after.valid
    assert "assignment rows without a unit id" in check["detail"]
    itt = [r for r in after.scorecard.to_pylist() if r["population"] == "itt"]
    n_before = [r for r in before.scorecard.to_pylist() if r["population"] == "itt"]
    # The NULL rows are not one giant unit: the analysed units shrink by about a tenth.
    assert 0.85 < itt[0]["n_control"] / n_before[0]["n_control"] < 0.95


def test_a_fact_row_in_the_future_fails_a_gate(sample_copy: Path) -> None:
    path = sample_copy / "engagement_daily.parquet"
    rewrite(
        path,
        "SELECT * FROM t UNION ALL (SELECT * REPLACE (DATE '2034-01-01' AS date) FROM t LIMIT 1)",
    )
    result = run(sample_copy)
    check = checks(result)["rows_in_the_future"]
    assert not check["passed"] and check["gate"] and not result.valid
    assert "table 'engagement_daily' has 1 rows dated after today" in check["detail"]
    # The stray row does not move the as-of date: windows are judged by the real data.
    assert result.scorecard.column("as_of")[0].as_py() == date(2024, 4, 4)


def test_an_as_of_after_the_data_is_refused(sample_copy: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["run", "--config", str(sample_copy / "experiments.toml"), "--out",
         str(sample_copy / "out"), "--as-of", "2030-01-01", "--experiment", EXPERIMENT],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--as-of 2030-01-01 is after the data" in result.output
    assert "'engagement_daily' through 2024-04-04" in result.output


def test_units_assigned_after_the_as_of_date_are_not_counted(sample_copy: Path) -> None:
    con = duckdb.connect()
    assigned_by = con.execute(
        f"SELECT COUNT(DISTINCT member_id) FROM '{sample_copy}/experiment_assignments.parquet' "
        f"WHERE experiment_id = '{EXPERIMENT}' AND CAST(assignment_timestamp AS DATE) <= DATE '2024-03-20'"
    ).fetchone()[0]
    result = run(sample_copy, as_of=date(2024, 3, 20))
    counted = {r["name"]: r for r in result.checks.to_pylist()}["incomplete_windows"]["detail"]
    total = int(counted.split(" of ")[1].split(" ")[0])
    multi = {r["name"]: r for r in result.checks.to_pylist()}["multi_variant_units"]["detail"]
    assert total + int(multi.split(" of ")[0]) == assigned_by
