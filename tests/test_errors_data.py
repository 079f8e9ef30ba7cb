"""Mistakes in metric expressions and in the data exit 2 naming the metric, table or column.

Each test builds a tiny world (assignments, one fact table, one metric file, a config) so
that exactly one thing is wrong, and runs the command line on it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner, Result

from tests.conftest import write_parquet
from xpkit.cli import main

ASSIGNMENTS = """
SELECT 'e' AS experiment_id, i::BIGINT AS member_id,
       CASE WHEN i % 2 = 0 THEN 'control' ELSE 'treatment' END AS variant,
       TIMESTAMP '2024-01-01' + INTERVAL (i % 3) DAY AS assignment_timestamp,
       TRUE AS exposed_flag
FROM range(200) t(i)
"""
FACTS = """
SELECT i::BIGINT AS member_id, DATE '2024-01-01' + INTERVAL (d) DAY AS date,
       (i * 7 + d) % 50 AS watch_seconds, 'x' || i AS title, (i + d) % 3 AS played
FROM range(200) t(i), range(-14, 12) s(d)
"""
SOURCE = """from xpkit import Metric, Source


class Daily(Source):
    table = "daily"
"""


def metric(expression: str, kind: str = "mean", name: str = "Played") -> str:
    return (
        f"\n\nclass {name}(Metric):\n    source = Daily\n"
        f"    expression = {expression!r}\n    kind = {kind!r}\n"
    )


def world(
    root: Path,
    *,
    metrics: str = SOURCE + metric("SUM(played)"),
    assignments: str = ASSIGNMENTS,
    facts: str = FACTS,
    top: str = "",
    tables: str = 'daily = "data/daily.parquet"\n',
    names: str = '["played"]',
) -> Path:
    """A config over a two-table world; returns the config's path."""
    con = duckdb.connect()
    write_parquet(con, assignments, root / "data" / "assignments.parquet")
    if facts:
        write_parquet(con, facts, root / "data" / "daily.parquet")
    (root / "metrics").mkdir(parents=True, exist_ok=True)
    (root / "metrics" / "m.py").write_text(metrics)
    config = root / "experiments.toml"
    config.write_text(
        'metrics_dir = "metrics"\n' + top + "[tables]\n"
        'experiment_assignments = "data/assignments.parquet"\n' + tables + "[[experiment]]\n"
        'id = "e"\ncontrol = "control"\nweights = { control = 0.5, treatment = 0.5 }\n'
        f"metrics = {names}\nmin_units = 10\nmin_days = 1\n"
    )
    return config


def run(config: Path, *extra: str) -> Result:
    out = config.parent / "out"
    return CliRunner().invoke(
        main, ["run", "--config", str(config), "--out", str(out), "--quiet", *extra]
    )


def assert_message(result: Result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert result.output.startswith("xpkit: error: "), result.output
    assert result.output.count("\n") == 1, result.output  # one paragraph
    for part in parts:
        assert part in result.output, (part, result.output)
    assert "played__value" not in result.output  # internal columns stay internal


def test_the_tiny_world_runs(tmp_path: Path) -> None:
    result = run(world(tmp_path))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("SUM(title)", "sum(VARCHAR)"),
        ("SUM(frobnicate(played))", "frobnicate does not exist"),
        ("SUM(CAST(title AS INTEGER))", "Could not convert string 'x0'"),
        ("SUM(CAST(played AS TINYINT) * 100::TINYINT)", "Overflow"),
    ],
    ids=["sum_over_text", "unknown_function", "failed_cast", "integer_overflow"],
)
def test_an_expression_the_engine_rejects_names_the_metric(
    tmp_path: Path, expression: str, reason: str
) -> None:
    config = world(
        tmp_path, metrics=SOURCE + metric("SUM(played)", name="Fine") + metric(expression)
    )
    result = run(config)
    # The metric that fails is named (not the other one on the same source), with its file.
    assert_message(result, "metric 'played'", "m.py, class Played", "table 'daily'", reason)
    assert "metric 'fine'" not in result.output


def test_an_expression_error_on_the_sql_command_names_the_metric(tmp_path: Path) -> None:
    config = world(tmp_path, metrics=SOURCE + metric("SUM(title)"))
    result = CliRunner().invoke(main, ["sql", "--config", str(config), "--experiment", "e"])
    assert_message(result, "metric 'played'", "sum(VARCHAR)")


def test_a_proportion_that_is_not_0_or_1_names_the_metric_and_the_fix(tmp_path: Path) -> None:
    config = world(tmp_path, metrics=SOURCE + metric("SUM(played)", kind="proportion"))
    assert_message(
        run(config),
        "metric 'played'",
        "kind = 'proportion'",
        "not all 0 or 1",
        "kind = 'mean'",
        "MAX(CASE WHEN",
    )


def test_a_date_column_stored_as_text_names_table_and_column(tmp_path: Path) -> None:
    facts = FACTS.replace(
        "DATE '2024-01-01' + INTERVAL (d) DAY AS date",
        "strftime(DATE '2024-01-01' + INTERVAL (d) DAY, '%d/%m/%Y') AS date",
    )
    assert_message(
        run(world(tmp_path, facts=facts)),
        "metric 'played'",
        "column 'date' of table 'daily' holds text",
        "store it as a DATE or TIMESTAMP",
    )


def test_assignment_timestamps_as_text_must_read_as_dates(tmp_path: Path) -> None:
    iso = ASSIGNMENTS.replace(
        "TIMESTAMP '2024-01-01' + INTERVAL (i % 3) DAY AS assignment_timestamp",
        "CAST(TIMESTAMP '2024-01-01' + INTERVAL (i % 3) DAY AS VARCHAR) AS assignment_timestamp",
    )
    assert run(world(tmp_path / "iso", assignments=iso)).exit_code == 0
    bad = iso.replace("CAST(TIMESTAMP", "'day ' || CAST(TIMESTAMP")
    assert_message(
        run(world(tmp_path / "bad", assignments=bad)),
        "assignments: column 'assignment_timestamp' of table 'experiment_assignments' holds text",
        "do not read as a date (e.g. 'day 2024-01-01",
    )


def test_text_unit_ids_against_integer_ones_name_both_columns(tmp_path: Path) -> None:
    assignments = ASSIGNMENTS.replace("i::BIGINT AS member_id", "'m' || i AS member_id")
    assert_message(
        run(world(tmp_path, assignments=assignments)),
        "the unit ids do not match",
        "column 'member_id' of table 'daily' is int64",
        "table 'experiment_assignments' is string",
    )


def test_a_folder_of_two_different_tables_is_refused(tmp_path: Path) -> None:
    con = duckdb.connect()
    write_parquet(con, FACTS, tmp_path / "data" / "daily" / "a.parquet")
    write_parquet(
        con, "SELECT 1 AS other, 'x' AS columns", tmp_path / "data" / "daily" / "b.parquet"
    )
    config = world(tmp_path, facts="", tables='daily = "data/daily/*.parquet"\n')
    assert_message(
        run(config), "table 'daily'", "do not share one schema", "other", "more than one table"
    )


def test_a_database_that_is_not_a_duckdb_file(tmp_path: Path) -> None:
    config = world(tmp_path, top='database = "notes.duckdb"\n')
    (tmp_path / "notes.duckdb").write_text("not a database\n")
    assert_message(run(config), str(config), "database", "not a DuckDB database file")


def test_an_unmatched_quote_in_the_assignment_table(tmp_path: Path) -> None:
    config = world(tmp_path)
    config.write_text(config.read_text() + '[assignments]\ntable = "experiment_\\"assignments"\n')
    assert_message(run(config), str(config), "assignments.table", "is not a table name")


def test_an_unmatched_quote_in_an_assignment_column(tmp_path: Path) -> None:
    config = world(tmp_path)
    config.write_text(config.read_text() + '[assignments]\nvariant = "var\'iant"\n')
    assert_message(run(config), str(config), "assignments.variant", "should match pattern")


def test_a_huge_window_is_refused_in_the_config(tmp_path: Path) -> None:
    config = world(tmp_path)
    config.write_text(config.read_text() + "window = [0, 99999999999]\n")
    assert_message(run(config), str(config), "experiment[e].window", "less than or equal to 3650")


def test_two_sources_of_one_name_in_two_files_both_compute(tmp_path: Path) -> None:
    config = world(tmp_path, names='["played", "watch"]')
    (tmp_path / "metrics" / "other.py").write_text(
        "from xpkit import Metric, Source\n\n\n"
        "class Daily(Source):\n    table = 'daily'\n    time = 'date'\n\n\n"
        "class Watch(Metric):\n    source = Daily\n    expression = 'SUM(watch_seconds)'\n"
        "    covariate = 'pre'\n"
    )
    result = run(config)
    assert result.exit_code == 0, result.output
    sql = CliRunner().invoke(main, ["sql", "--config", str(config), "--experiment", "e"])
    assert sql.exit_code == 0, sql.output
    assert "xp_per_unit_daily AS" in sql.output and "xp_per_unit_daily_2 AS" in sql.output


def test_out_of_memory_names_the_settings(tmp_path: Path) -> None:
    result = run(world(tmp_path), "--memory-limit", "1KB")
    assert_message(
        result, "ran out of memory", "--memory-limit", "memory_limit", "--temp-directory"
    )


def test_memory_settings_from_the_config_reach_the_engine(tmp_path: Path) -> None:
    config = world(tmp_path, top='memory_limit = "1KB"\nthreads = 1\n')
    assert_message(run(config), "ran out of memory")


def test_spill_files_do_not_land_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xpkit.engines.duckdb import DuckDBEngine

    monkeypatch.chdir(tmp_path)
    engine = DuckDBEngine({}, memory_limit="60MB", threads=1)
    spill = engine._spill()
    assert not Path(spill).is_relative_to(tmp_path)
    assert not Path(spill).exists()  # created only when a statement spills
    sort = "SELECT i, md5(i::VARCHAR) AS m FROM range(3000000) t(i) ORDER BY m"
    engine.con.execute(sort).fetchone()  # a sort larger than the memory limit spills
    assert Path(spill).is_dir()
    engine.close()
    assert not Path(spill).exists()
    assert not (tmp_path / ".tmp").exists()
    shutil.rmtree(tmp_path / ".tmp", ignore_errors=True)
