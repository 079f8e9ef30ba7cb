"""``xpkit init`` writes a starter config and metrics module that run on the user's tables,
never over an existing file; without an exposure column a run is intent-to-treat only."""

from __future__ import annotations

import tomllib
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from tests.conftest import write_parquet
from tests.test_errors_data import ASSIGNMENTS, FACTS, assert_message, run, world
from xpkit.cli import main


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def init(sample: Path, out: Path, *extra: str) -> Result:
    return invoke(
        "init",
        "--assignments",
        str(sample / "experiment_assignments.parquet"),
        "--facts",
        f"engagement_daily={sample / 'engagement_daily.parquet'}",
        "--out",
        str(out),
        *extra,
    )


def test_init_on_the_sample_tables_writes_a_config_that_runs(
    sample_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "project"
    result = init(sample_dir, out)
    assert result.exit_code == 0, result.output
    config = tomllib.loads((out / "experiments.toml").read_text())
    assert config["shipped_metrics"] is False
    assert config["assignments"] == {
        "table": "experiment_assignments",
        "experiment": "experiment_id",
        "unit": "member_id",
        "variant": "variant",
        "timestamp": "assignment_timestamp",
        "exposed": "exposed_flag",
    }
    ids = [e["id"] for e in config["experiment"]]
    assert ids == ["artwork_abc", "homepage_ranking_v2", "player_srm", "search_exposure_bug"]
    first = config["experiment"][0]
    assert first["control"] == "control" and abs(sum(first["weights"].values()) - 1) < 1e-9
    assert first["metrics"] == ["watch_seconds", "sessions", "plays", "errors"]
    module = (out / "metrics" / "starter.py").read_text()
    assert "class EngagementDaily(Source):" in module and 'time = "date"' in module
    assert f"wrote {out / 'experiments.toml'}" in result.output
    assert "xpkit run --config" in result.output

    ran = invoke("run", "--config", str(out / "experiments.toml"), "--out", str(out / "r"))
    assert ran.exit_code in (0, 3), ran.output  # 3: the sample's deliberate defects
    for experiment in ids:
        assert (out / "r" / "runs" / experiment).is_dir(), experiment
    (card,) = (out / "r" / "scorecards" / "homepage_ranking_v2").rglob("data.parquet")
    table = pq.read_table(card)
    assert set(table.column("population").to_pylist()) == {"itt", "tot", "cace"}
    assert "Sum of watch_seconds per unit" in table.column("metric_description")[0].as_py()


@pytest.mark.parametrize("existing", ["experiments.toml", "metrics/starter.py"])
def test_init_never_overwrites_a_file(sample_dir: Path, tmp_path: Path, existing: str) -> None:
    out = tmp_path / "project"
    (out / existing).parent.mkdir(parents=True)
    (out / existing).write_text("# mine\n")
    result = init(sample_dir, out)
    assert_message(result, f"{out / existing} already exists; xpkit init never overwrites a file")
    assert (out / existing).read_text() == "# mine\n"
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [Path(existing).name]


def tiny_tables(root: Path, assignments: str = ASSIGNMENTS, facts: str = FACTS) -> Path:
    con = duckdb.connect()
    write_parquet(con, assignments, root / "data" / "assignments.parquet")
    write_parquet(con, facts, root / "data" / "daily.parquet")
    return root / "data"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--facts", "daily"], "--facts 'daily': write NAME=PATH"),
        (["--facts", "1x=daily.parquet"], "the table's name '1x' must be letters"),
        (
            ["--facts", "experiment_assignments=daily.parquet"],
            "and not 'experiment_assignments'",
        ),
        (["--facts", "daily=nowhere.parquet"], "--facts daily=nowhere.parquet: no file matches"),
        (["--column", "arm=variant"], "--column 'arm=variant': write ROLE=COLUMN"),
        (["--column", "unit=nobody"], "--column unit=nobody: no column 'nobody'"),
        (["--database", "none.duckdb"], "--database none.duckdb: no such file"),
    ],
)
def test_init_refuses_bad_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    data = tiny_tables(tmp_path)
    monkeypatch.chdir(data)
    facts = [] if args[0] == "--facts" else ["--facts", "daily=daily.parquet"]
    result = invoke(
        "init", "--assignments", "assignments.parquet", *facts, *args, "--out", str(tmp_path)
    )
    assert_message(result, message)
    assert not (tmp_path / "experiments.toml").exists()


def test_a_missing_assignments_file_is_named(tmp_path: Path) -> None:
    result = invoke("init", "--assignments", str(tmp_path / "a.parquet"), "--facts", "d=x.parquet")
    assert_message(result, f"--assignments {tmp_path / 'a.parquet'}: no file matches")


def test_an_unguessable_unit_is_asked_for_and_can_be_named(tmp_path: Path) -> None:
    data = tiny_tables(
        tmp_path,
        assignments=ASSIGNMENTS.replace("AS member_id", "AS who").replace(
            "TRUE AS exposed_flag", "TRUE AS exposed_flag, 'x' AS other_id, 'y' AS second_id"
        ),
        facts=FACTS.replace("AS member_id", "AS who"),
    )
    args = [
        "init",
        "--assignments",
        str(data / "assignments.parquet"),
        "--facts",
        f"daily={data / 'daily.parquet'}",
    ]
    result = invoke(*args, "--out", str(tmp_path / "a"))
    assert_message(
        result, "cannot tell which column is the unit", "--column unit=COLUMN", "who (integer)"
    )
    result = invoke(*args, "--out", str(tmp_path / "b"), "--column", "unit=who")
    assert result.exit_code == 0, result.output
    config = tmp_path / "b" / "experiments.toml"
    assert 'unit = "who"' in config.read_text()
    assert invoke("run", "--config", str(config), "--out", str(tmp_path / "o")).exit_code == 0


def test_a_fact_table_without_a_date_column_is_refused(tmp_path: Path) -> None:
    data = tiny_tables(tmp_path, facts="SELECT i::BIGINT AS member_id, i AS n FROM range(5) t(i)")
    result = invoke(
        "init",
        "--assignments",
        str(data / "assignments.parquet"),
        "--facts",
        f"daily={data / 'daily.parquet'}",
        "--out",
        str(tmp_path),
    )
    assert_message(result, "--facts daily=", "no DATE or TIMESTAMP column", "n (integer)")


def test_init_from_a_duckdb_database_and_without_an_exposure_column(tmp_path: Path) -> None:
    """Tables in a .duckdb file; no exposure column: exposed = false, intent-to-treat only."""
    database = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(database))
    con.execute(
        "CREATE TABLE assigned AS "
        + ASSIGNMENTS.replace(",\n       TRUE AS exposed_flag", "")
        .replace("'e' AS experiment_id", "'e' AS test_name")
        .replace("AS variant", "AS arm")
    )
    con.execute(f"CREATE TABLE daily AS SELECT *, played > 1 AS binged FROM ({FACTS})")
    con.close()
    out = tmp_path / "project"
    result = invoke(
        "init",
        "--database",
        str(database),
        "--assignments",
        "assigned",
        "--facts",
        "daily=daily",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "no exposure column found: exposed = false" in result.output
    text = (out / "experiments.toml").read_text()
    assert 'database = "../warehouse.duckdb"' in text
    assert 'experiment_assignments = "assigned"' in text
    assert "exposed = false" in text and 'variant = "arm"' in text
    config = tomllib.loads(text)
    (experiment,) = config["experiment"]
    assert experiment["id"] == "e" and experiment["weights"] == {"control": 0.5, "treatment": 0.5}
    # A metric per numeric column, a proportion per boolean one, none for text.
    module = (out / "metrics" / "starter.py").read_text()
    assert "class WatchSeconds(Metric):" in module and "class Played(Metric):" in module
    assert 'expression = "MAX(CASE WHEN binged THEN 1 ELSE 0 END)"' in module
    assert 'kind = "proportion"' in module and "Title" not in module
    text = text.replace("window = [0, 6]", "window = [0, 6]\nmin_days = 1\nmin_units = 10")
    (out / "experiments.toml").write_text(text)
    ran = invoke("run", "--config", str(out / "experiments.toml"), "--out", str(out / "r"))
    assert ran.exit_code == 0, ran.output
    (card,) = (out / "r" / "scorecards").rglob("data.parquet")
    assert set(pq.read_table(card).column("population").to_pylist()) == {"itt"}


# --- ITT only: no exposure column ------------------------------------------------------

NO_EXPOSURE = ASSIGNMENTS.replace(",\n       TRUE AS exposed_flag", "")


def test_a_missing_exposure_column_says_how_to_do_without(tmp_path: Path) -> None:
    result = run(world(tmp_path, assignments=NO_EXPOSURE))
    assert_message(
        result,
        "assignments: column 'exposed_flag' does not exist in table 'experiment_assignments'",
        "set exposed = false when it has none (intent-to-treat only",
    )


@pytest.mark.parametrize("spelling", ["false", '""'])
def test_exposed_false_runs_intent_to_treat_only(tmp_path: Path, spelling: str) -> None:
    config = world(tmp_path, assignments=NO_EXPOSURE)
    config.write_text(
        config.read_text().replace("[tables]", f"[assignments]\nexposed = {spelling}\n[tables]")
    )
    result = run(config)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    (card,) = (out / "scorecards").rglob("data.parquet")
    assert set(pq.read_table(card).column("population").to_pylist()) == {"itt"}
    (checks,) = (out / "checks").rglob("data.parquet")
    rows = {r["name"]: r for r in pq.read_table(checks).to_pylist()}
    assert "srm_exposed" not in rows
    assert "exposed = false" in rows["exposure_log"]["detail"]


def test_exposed_true_is_refused(tmp_path: Path) -> None:
    config = world(tmp_path)
    config.write_text(
        config.read_text().replace("[tables]", "[assignments]\nexposed = true\n[tables]")
    )
    assert_message(
        run(config),
        "assignments.exposed: true names no column",
        "or exposed = false when the table has none",
    )


def test_init_needs_an_experiment_with_two_variants(tmp_path: Path) -> None:
    one = ASSIGNMENTS.replace(
        "CASE WHEN i % 2 = 0 THEN 'control' ELSE 'treatment' END AS variant",
        "'control' AS variant",
    )
    data = tiny_tables(tmp_path, assignments=one)
    result = invoke(
        "init", "--assignments", str(data / "assignments.parquet"),
        "--facts", f"daily={data / 'daily.parquet'}", "--out", str(tmp_path),
    )  # fmt: skip
    assert_message(
        result,
        "no experiment with two or more variants",
        "experiment 'e' has one variant only",
    )


def test_init_needs_a_number_to_make_a_metric_of(tmp_path: Path) -> None:
    data = tiny_tables(
        tmp_path,
        facts="SELECT i::BIGINT AS member_id, DATE '2024-01-01' AS date, 'x' AS title "
        "FROM range(5) t(i)",
    )
    result = invoke(
        "init", "--assignments", str(data / "assignments.parquet"),
        "--facts", f"daily={data / 'daily.parquet'}", "--out", str(tmp_path),
    )  # fmt: skip
    assert_message(result, "no numeric or boolean column to make a metric of", "title (text)")


def test_init_needs_the_unit_in_every_fact_table(tmp_path: Path) -> None:
    data = tiny_tables(tmp_path, facts=FACTS.replace("AS member_id", "AS someone"))
    result = invoke(
        "init", "--assignments", str(data / "assignments.parquet"),
        "--facts", f"daily={data / 'daily.parquet'}", "--out", str(tmp_path),
    )  # fmt: skip
    assert_message(
        result, "--facts daily=", "no column 'member_id' (the assignments' unit)", "someone"
    )
