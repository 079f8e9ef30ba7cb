"""``xpkit.run``: the command line's numbers from Python, in-memory inputs, and mistakes.

The sample experiments run once through ``xpkit run`` (published) and once through the
API; every table must be the same, row for row and bit for bit (both on one DuckDB thread:
with more, fractional sums may differ in their last bits from run to run), but for when it
was computed and the run id publishing stamps. Tables given as pandas, polars, Arrow or a DuckDB relation must give
the Parquet run's scorecard. Every user mistake raises the command line's exception with
its message (a dict config is "the config" in it).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import xpkit
from xpkit.cli import main
from xpkit.errors import ConfigError, DataError, MetricDefinitionError
from xpkit.output.schemas import SCORECARD_SCHEMA
from xpkit.output.storage import read_run, select_runs

ROOT = Path(__file__).resolve().parents[1]
RUN_DATE = "2024-04-05"
HOMEPAGE = "homepage_ranking_v2"
IDS = ["homepage_ranking_v2", "artwork_abc", "player_srm", "search_exposure_bug"]
# When a table was computed, and the id publishing stamps into it: all else must match.
VOLATILE = ("computed_at", "run_id")


def normal(value: Any) -> Any:
    """A cell comparable with ==: NaN equals NaN, maps and lists compared element-wise."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list | tuple):
        return [normal(v) for v in value]
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    return value


def rows(table: pa.Table, drop: tuple[str, ...] = VOLATILE) -> list[dict[str, Any]]:
    kept = table.drop_columns([c for c in drop if c in table.column_names])
    return [normal(r) for r in kept.to_pylist()]


def close(a: Any, b: Any) -> bool:
    """Equal, but for rounding in floats (1e-9 relative: an interval bound near 0 is a
    difference of two large numbers, whose last bits it shows magnified)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    return bool(a == b)


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def published(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample experiments published by ``xpkit run --history``."""
    out = tmp_path_factory.mktemp("cli-run")
    result = cli(
        "run",
        "--config",
        str(sample_dir / "experiments.toml"),
        "--out",
        str(out),
        "--history",
        "--run-date",
        RUN_DATE,
        "--threads",
        "1",
        "--quiet",
    )
    assert result.exit_code == 3, result.output  # player_srm, search_exposure_bug: invalid
    return out


@pytest.fixture(scope="module")
def api_results(sample_dir: Path) -> xpkit.Results:
    return xpkit.run(sample_dir / "experiments.toml", run_date=RUN_DATE, history=True, threads=1)


def homepage_dict(sample_dir: Path) -> dict[str, Any]:
    """The sample config's homepage experiment as a dict config without tables."""
    data = tomllib.loads((sample_dir / "experiments.toml").read_text())
    experiment = next(e for e in data["experiment"] if e["id"] == HOMEPAGE)
    return {"experiment": [experiment]}


# -- the same numbers as the command line ------------------------------------------------


def test_every_table_equals_the_published_run(published: Path, api_results: xpkit.Results):
    assert list(api_results) == IDS
    assert api_results.invalid == ["player_srm", "search_exposure_bug"]
    for manifest in select_runs(published):
        run = read_run(manifest)
        mine = api_results[manifest.experiment_id]
        assert mine.run_id is None and mine.paths == ()  # nothing written
        assert rows(mine.scorecard.to_arrow()) == rows(run.scorecard)
        assert rows(mine.checks.to_arrow()) == rows(run.checks)
        assert mine.history is not None and run.history is not None
        assert rows(mine.history.to_arrow()) == rows(run.history)
        assert mine.valid == all(run.scorecard.column("valid").to_pylist())
        assert mine.sql and mine.sql == run.scorecard.schema.metadata[b"xpkit.sql"].decode()


def test_out_publishes_as_the_command_line_does(
    sample_dir: Path, published: Path, tmp_path: Path
) -> None:
    result = xpkit.run(
        str(sample_dir / "experiments.toml"),
        experiment=HOMEPAGE,
        out=tmp_path,
        run_date=RUN_DATE,
        history=True,
        threads=1,
    )
    [manifest] = select_runs(tmp_path)
    assert result.run_id == manifest.run_id
    assert result.paths[-1] == manifest.path and all(p.exists() for p in result.paths)
    mine, theirs = read_run(manifest), read_run(select_runs(published, HOMEPAGE)[0])
    assert rows(mine.scorecard) == rows(theirs.scorecard)
    assert set(mine.scorecard.column("run_id").to_pylist()) == {manifest.run_id}
    shown = cli("show", str(tmp_path))
    assert shown.exit_code == 0, shown.output
    assert f"Experiment {HOMEPAGE}" in shown.output


def test_one_id_is_a_result_and_a_list_of_ids_results(sample_dir: Path) -> None:
    config = sample_dir / "experiments.toml"
    one = xpkit.run(config, "artwork_abc", run_date=RUN_DATE)
    assert isinstance(one, xpkit.Result)
    assert one.experiment_id == "artwork_abc" and str(one.run_date) == RUN_DATE
    assert set(one.decision) == {"treatment_a", "treatment_b"}
    assert one.decision["treatment_b"].control == "control"
    assert one.decision["treatment_b"].reasons
    some = xpkit.run(config, ["player_srm", "artwork_abc"], run_date=RUN_DATE)
    assert isinstance(some, xpkit.Results) and list(some) == ["player_srm", "artwork_abc"]
    assert some.decision["player_srm"]["treatment"].decision == "invalid"
    stacked = some.to_arrow()
    assert stacked.num_rows == sum(r.scorecard.num_rows for r in some.values())
    assert stacked.schema.metadata is None  # one run's SQL would not describe both
    columns = len(SCORECARD_SCHEMA)
    assert some.to_pandas().shape == some.to_polars().shape == (stacked.num_rows, columns)
    with pytest.raises(KeyError) as err:
        some["nope"]
    assert err.value.args[0] == "no result for experiment 'nope' (known: player_srm, artwork_abc)"
    assert "nope" not in some


# -- in-memory tables ---------------------------------------------------------------------


def frames(sample_dir: Path, kind: str, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    paths = {
        "experiment_assignments": sample_dir / "experiment_assignments.parquet",
        "engagement_daily": sample_dir / "engagement_daily.parquet",
        "plays": sample_dir / "plays.parquet",
    }
    if kind == "pandas":
        return {k: pd.read_parquet(p) for k, p in paths.items()}
    if kind == "polars":
        return {k: pl.read_parquet(p) for k, p in paths.items()}
    if kind == "polars-lazy":
        return {k: pl.scan_parquet(p) for k, p in paths.items()}
    if kind == "arrow":
        return {k: pq.read_table(p) for k, p in paths.items()}
    if kind == "relation":
        return {k: con.read_parquet(str(p)) for k, p in paths.items()}
    assert kind == "paths"
    return {k: p.name for k, p in paths.items()}  # relative to the working directory


@pytest.mark.parametrize("kind", ["pandas", "polars", "polars-lazy", "arrow", "relation", "paths"])
def test_in_memory_tables_give_the_parquet_run(
    kind: str,
    sample_dir: Path,
    api_results: xpkit.Results,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(sample_dir)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'Asia/Tokyo'; SET threads = 2")
    result = xpkit.run(
        homepage_dict(sample_dir),
        HOMEPAGE,
        tables=frames(sample_dir, kind, con),
        connection=con if kind == "relation" else None,
        run_date=RUN_DATE,
        history=True,
        threads=1,
    )
    expected = api_results[HOMEPAGE]
    # The dict's hash is of the dict, the file's of the file: everything else is equal, bit
    # for bit but for a LazyFrame, which polars streams to DuckDB in batches of its own
    # (fractional sums then differ in their last bits).
    same = close if kind == "polars-lazy" else (lambda a, b: a == b)
    drop = (*VOLATILE, "config_sha256")
    assert same(rows(result.scorecard.to_arrow(), drop), rows(expected.scorecard.to_arrow(), drop))
    assert rows(result.checks.to_arrow()) == rows(expected.checks.to_arrow())
    assert result.history is not None and expected.history is not None
    assert same(rows(result.history.to_arrow()), rows(expected.history.to_arrow()))
    # The caller's connection is left as it was found.
    setting = "SELECT current_setting('TimeZone'), current_setting('threads')"
    assert con.execute(setting).fetchall() == [("Asia/Tokyo", 2)]
    views = con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    assert views == []


def test_a_connection_s_own_tables_are_named_in_the_config(sample_dir: Path) -> None:
    con = duckdb.connect()
    for name in ("experiment_assignments", "engagement_daily", "plays"):
        con.execute(
            f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{sample_dir / name}.parquet')"
        )
    config = homepage_dict(sample_dir)
    config["tables"] = {"engagement_daily": "engagement_daily", "plays": "plays"}  # tables
    result = xpkit.run(config, HOMEPAGE, connection=con, run_date=RUN_DATE)
    assert result.valid
    assert con.execute("SELECT count(*) FROM engagement_daily").fetchall()[0][0] > 0


# -- mistakes: the command line's exceptions and messages --------------------------------


def cli_error(config_text: str, tmp_path: Path, *args: str) -> str:
    """The message ``xpkit run`` prints for this config, with its path as "the config"."""
    path = tmp_path / "experiments.toml"
    path.write_text(config_text)
    result = cli("run", "--config", str(path), "--out", str(tmp_path / "out"), *args)
    assert result.exit_code == 2, result.output
    message = result.output.strip().removeprefix("xpkit: error: ")
    return message.replace(str(path), "the config")


BAD_WEIGHTS = {
    "experiment": [
        {
            "id": "x",
            "control": "control",
            "weights": {"control": 0.5, "treatment": 0.4},
            "metrics": ["watch_seconds"],
        }
    ]
}


def test_a_dict_config_is_checked_like_a_file(tmp_path: Path) -> None:
    toml = (
        '[[experiment]]\nid = "x"\ncontrol = "control"\n'
        'weights = { control = 0.5, treatment = 0.4 }\nmetrics = ["watch_seconds"]\n'
    )
    with pytest.raises(ConfigError) as err:
        xpkit.run(BAD_WEIGHTS)
    assert str(err.value) == (
        "the config: experiment[x].weights: weights must sum to 1, they sum to 0.9"
    )
    assert str(err.value) == cli_error(toml, tmp_path)


def test_a_misspelt_field_of_a_dict_config(tmp_path: Path) -> None:
    config = {"experiment": [dict(BAD_WEIGHTS["experiment"][0], metricz=["a"])]}
    with pytest.raises(ConfigError) as err:
        xpkit.run(config)
    assert str(err.value) == (
        "the config: experiment[x].weights: weights must sum to 1, they sum to 0.9; "
        "experiment[x].metricz: unknown field (check the spelling)"
    )


def test_an_unknown_experiment_id_names_the_known_ones(sample_dir: Path) -> None:
    config = sample_dir / "experiments.toml"
    with pytest.raises(ConfigError) as err:
        xpkit.run(config, "nope")
    assert str(err.value) == f"{config}: no experiment with id 'nope' (known: {', '.join(IDS)})"
    result = cli("run", "--config", str(config), "--out", "unused", "--experiment", "nope")
    assert result.exit_code == 2
    assert result.output.strip() == f"xpkit: error: {err.value}"


def test_an_unknown_metric_names_the_classes_given(sample_dir: Path) -> None:
    from metrics.engagement import Streamers, WatchSeconds

    config = {"experiment": [dict(BAD_WEIGHTS["experiment"][0], weights={"a": 0.5, "b": 0.5})]}
    config["experiment"][0].update(control="a", metrics=["watch_seconds", "plays"])
    with pytest.raises(ConfigError) as err:
        xpkit.run(config, tables={}, metrics=[WatchSeconds, Streamers])
    assert str(err.value) == (
        "the config: experiment[x].metrics: unknown metric 'plays'; metrics in the metrics= "
        "list: streamers, watch_seconds"
    )


def test_a_missing_table_is_the_command_line_s_error(sample_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        xpkit.run(homepage_dict(sample_dir), HOMEPAGE)
    assert str(err.value) == (
        "the config: assignments: table 'experiment_assignments' is not configured or does "
        "not exist"
    )
    # The same experiment in a file without [tables]: the same message, naming the file.
    text = (sample_dir / "experiments.toml").read_text()
    no_tables = re.sub(r"(?ms)^\[tables\]\n.*?\n\n", "", text)
    assert "[tables]" not in no_tables
    assert cli_error(no_tables, tmp_path, "--experiment", HOMEPAGE) == str(err.value)


def test_tables_that_are_not_tables(sample_dir: Path, tmp_path: Path) -> None:
    config = homepage_dict(sample_dir)
    with pytest.raises(DataError) as err:
        xpkit.run(config, HOMEPAGE, tables={"engagement_daily": [1, 2, 3]})
    assert str(err.value).startswith("table 'engagement_daily': DuckDB cannot read a list (")
    assert str(err.value).endswith(
        "); pass a pandas or polars DataFrame, a pyarrow Table or a DuckDB relation"
    )
    os.chdir(tmp_path)
    try:
        with pytest.raises(ConfigError) as missing:
            xpkit.run(config, HOMEPAGE, tables={"engagement_daily": "nope/*.parquet"})
    finally:
        os.chdir(ROOT)
    assert str(missing.value) == (
        f"tables['engagement_daily']: no file matches 'nope/*.parquet' (a relative path is "
        f"relative to the working directory, {tmp_path})"
    )
    with pytest.raises(ConfigError) as name:
        xpkit.run(config, HOMEPAGE, tables={"bad\nname": "x"})
    assert str(name.value) == (
        "tables['bad\\nname']: 'bad\\nname' contains a control character (a newline, a tab...)"
    )
    with pytest.raises(ConfigError) as shape:
        xpkit.run(config, HOMEPAGE, tables=[("engagement_daily", "x")])  # type: ignore[arg-type]
    assert str(shape.value) == (
        "tables: a list is not a mapping; give a dict of logical table names to DataFrames, "
        "Arrow tables, DuckDB relations or paths"
    )


def test_a_relation_of_another_connection(sample_dir: Path) -> None:
    other = duckdb.connect()
    relation = other.read_parquet(str(sample_dir / "engagement_daily.parquet"))
    with pytest.raises(DataError) as err:
        xpkit.run(
            homepage_dict(sample_dir),
            HOMEPAGE,
            tables={
                "engagement_daily": relation,
                "experiment_assignments": str(sample_dir / "experiment_assignments.parquet"),
            },
        )
    assert str(err.value) == (
        "table 'engagement_daily': the DuckDB relation was made on another connection; pass "
        "that connection as connection= (duckdb.default_connection() for duckdb.sql(...)), "
        "or its data (relation.arrow())"
    )


def test_a_connection_s_temporary_view_is_not_replaced(sample_dir: Path) -> None:
    con = duckdb.connect()
    con.execute("CREATE TEMP VIEW engagement_daily AS SELECT 1 AS x")
    with pytest.raises(DataError) as err:
        xpkit.run(sample_dir / "experiments.toml", HOMEPAGE, connection=con, run_date=RUN_DATE)
    assert str(err.value) == (
        "table 'engagement_daily': the connection already has a temporary view or table named "
        "'engagement_daily', which the run would replace; drop it first (DROP VIEW "
        "engagement_daily), or run on another connection"
    )
    assert con.sql("SELECT x FROM engagement_daily").fetchall() == [(1,)]
    # The views made before the refusal are gone again.
    views = con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    assert views == [("engagement_daily",)]


def test_metrics_that_are_not_metric_classes(sample_dir: Path) -> None:
    from metrics.engagement import WatchSeconds

    config = homepage_dict(sample_dir)
    with pytest.raises(MetricDefinitionError) as err:
        xpkit.run(config, HOMEPAGE, metrics=[WatchSeconds, "streamers"])  # type: ignore[list-item]
    assert str(err.value) == (
        "the metrics= list: 'streamers' is not a Metric class; list classes that subclass "
        "xpkit.Metric (the classes themselves, not instances or names)"
    )
    twin = type("Twin", (WatchSeconds,), {"name": "watch_seconds", "__module__": "notebook"})
    with pytest.raises(MetricDefinitionError) as dup:
        xpkit.run(config, HOMEPAGE, metrics=[WatchSeconds, twin])
    assert str(dup.value) == (
        "notebook.Twin: metric name 'watch_seconds' is already defined in "
        "metrics.engagement.WatchSeconds; give one of them an explicit `name`"
    )
    with pytest.raises(MetricDefinitionError) as folder:
        xpkit.run(config, HOMEPAGE, metrics="no/such/folder")
    assert str(folder.value) == "metrics directory no/such/folder does not exist"
    with pytest.raises(MetricDefinitionError) as other:
        xpkit.run(config, HOMEPAGE, metrics=42)  # type: ignore[arg-type]
    assert str(other.value) == (
        "metrics: an int is not metrics; give a list of Metric classes or the path of a "
        "metrics folder"
    )


def test_out_inside_a_table_is_the_command_line_s_error(sample_copy: Path) -> None:
    config = sample_copy / "experiments.toml"
    text = config.read_text().replace(
        'engagement_daily = "engagement_daily.parquet"', 'engagement_daily = "data/**/*.parquet"'
    )
    config.write_text(text)
    (sample_copy / "data").mkdir()
    (sample_copy / "engagement_daily.parquet").rename(sample_copy / "data" / "e.parquet")
    out = sample_copy / "data" / "results"
    with pytest.raises(ConfigError) as err:
        xpkit.run(config, HOMEPAGE, out=out)
    assert str(err.value) == (
        f"--out {out}: the folder is inside table 'engagement_daily''s location "
        f"'{sample_copy}/data/**/*.parquet', so a later run would read its own scorecards as "
        f"data; write them to a folder outside the tables' paths"
    )
    result = cli("run", "--config", str(config), "--out", str(out))
    assert result.exit_code == 2 and result.output.strip() == f"xpkit: error: {err.value}"


def test_options_are_checked_as_the_command_line_checks_them(sample_dir: Path) -> None:
    config = sample_dir / "experiments.toml"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"run_date": "2024-13-01"}, "run_date: '2024-13-01' is not a date; write YYYY-MM-DD"),
        ({"as_of": 20240401}, "as_of: 20240401 is not a date; write YYYY-MM-DD"),
        (
            {"slices": ["device"]},
            "slices: slices on demand are for one experiment: give experiment=ID (slices for "
            "every run of an experiment go in its config: slices = [...])",
        ),
        (
            {"memory_limit": "lots"},
            "memory_limit: 'lots' is not a memory limit; write a size such as 2GB, 500MB or "
            "1.5GiB, or a share of the machine's memory such as 75%",
        ),
        ({"threads": "2"}, "threads: '2' is not a whole number"),
        (
            {"connection": "duckdb"},
            "connection: a str is not a DuckDB connection; pass the result of "
            "duckdb.connect(...), or leave it out for a private one",
        ),
        (
            {"experiment": [1]},
            "experiment: give an experiment id, a list of ids, or None for every experiment "
            "of the config; got [1]",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError) as err:
            xpkit.run(config, **kwargs)
        assert str(err.value) == message, kwargs
    with pytest.raises(ConfigError) as err:
        xpkit.run(config, HOMEPAGE, threads=0)
    assert re.fullmatch(
        r"threads: threads must be between 1 and \d+ \(4 x \d+ CPU cores\), got 0", str(err.value)
    )
    with pytest.raises(ConfigError) as err:
        xpkit.run(config, HOMEPAGE, slices=["device*device"])
    assert str(err.value) == "slices: slice 'device*device' names the same column twice"
    with pytest.raises(ConfigError) as err:
        xpkit.run(42)  # type: ignore[arg-type]
    assert str(err.value) == (
        "config: an int is not a configuration; give the path of an experiments TOML file or "
        "a dict with the same fields"
    )
    with pytest.raises(ConfigError) as err:
        xpkit.run(config.parent / "missing.toml")
    assert str(err.value) == f"{config.parent / 'missing.toml'}: configuration file not found"


def test_in_memory_tables_need_duckdb(sample_dir: Path) -> None:
    with pytest.raises(DataError) as err:
        xpkit.run(
            sample_dir / "experiments.toml",
            HOMEPAGE,
            tables={"engagement_daily": pa.table({"x": [1]})},
            engine="spark",
        )
    assert str(err.value) == (
        "in-memory tables and a DuckDB connection run on the duckdb engine, not 'spark'; give "
        "the spark engine's tables as locations in the config's [tables]"
    )


# -- import cost ---------------------------------------------------------------------------


def test_import_xpkit_stays_cheap() -> None:
    code = (
        "import sys, xpkit\n"
        "heavy = ['pandas', 'polars', 'plotly', 'xpkit.api', 'xpkit.runner', 'duckdb']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "print(callable(xpkit.run), 'run' in dir(xpkit), 'plotly' in sys.modules)\n"
    )
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([*sys.path, os.environ.get("PYTHONPATH", "")])
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.splitlines()
    assert out == ["[]", "True True False"]


# -- the README's example -------------------------------------------------------------------


def readme_example() -> str:
    """The first Python block of the README's section on the Python API."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## A Python API for notebooks", 1)[1]
    return section.split("```python\n", 1)[1].split("\n```", 1)[0]


def test_the_readme_example_runs_on_the_sample_data(
    sample_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(sample_copy)
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("treatment vs control: ")
    assert printed[-1] == "['player_srm', 'search_exposure_bug']"
    assert isinstance(namespace["result"], xpkit.Result)
    assert isinstance(namespace["scorecard"], pd.DataFrame) and len(namespace["scorecard"]) > 0
    mine = namespace["mine"]
    assert set(mine.scorecard.to_pandas()["metric"]) == {"watch_seconds", "streamers"}
    # The notebook's classes compute what the metrics folder's classes of the same
    # definition compute.
    folder = namespace["result"].to_pandas().set_index(["population", "metric", "slice_value"])
    ours = mine.to_pandas().set_index(["population", "metric", "slice_value"])
    key = ("itt", "watch_seconds", "(all)")
    assert ours.loc[key, "n_variant"] == folder.loc[key, "n_variant"]
    assert ours.loc[key, "mean_control"] == pytest.approx(
        folder.loc[key, "mean_control"], rel=1e-12
    )
    assert list(namespace["every"]) == IDS
