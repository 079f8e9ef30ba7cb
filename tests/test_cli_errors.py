"""Every bad input exits 2 with one message that names the culprit — never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from xpkit.cli import main
from xpkit.config import load_config
from xpkit.engines.duckdb import DuckDBEngine
from xpkit.errors import DataError


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def edit_config(sample: Path, old: str, new: str) -> Path:
    path = sample / "experiments.toml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'metrics = ["watch_seconds", "sessions"',
            'metrics = ["watch_seconds", "sesions"',
            "experiment[homepage_ranking_v2].metrics: unknown metric 'sesions'",
        ),
        (
            "weights = { control = 0.5, treatment = 0.5 }",
            "weights = { control = 0.5, treatment = 0.4 }",
            "experiment[homepage_ranking_v2].weights: weights must sum to 1, they sum to 0.9",
        ),
        (
            'control = "control"',
            'control = "baseline"',
            "control variant 'baseline' is not one of the variants",
        ),
        (
            'engagement_daily = "engagement_daily.parquet"',
            'engagement_daily = "missing/engagement_daily.parquet"',
            "tables.engagement_daily: no file matches 'missing/engagement_daily.parquet'",
        ),
        ("[tables]", "[tables\n", "not valid TOML"),
        ("[tables]", 'engine = "sparky"\n[tables]', "engine: Input should be 'duckdb' or 'spark'"),
        (
            "window = [0, 6]",
            "windw = [0, 6]",
            "experiment[homepage_ranking_v2].windw: unknown field",
        ),
        ("window = [0, 6]", "window = [6, 0]", "start must not be after end"),
        (
            'primary = ["watch_seconds"]',
            'primary = ["plays"]',
            "primary metrics ['plays'] are not listed in metrics",
        ),
    ],
)
def test_config_mistakes_exit_2_naming_file_and_field(
    sample_copy: Path, old: str, new: str, message: str
) -> None:
    config = edit_config(sample_copy, old, new)
    result = invoke("run", "--config", str(config), "--out", str(sample_copy / "out"))
    assert result.exit_code == 2, result.output
    assert str(config) in result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_config_file(tmp_path: Path) -> None:
    result = invoke("run", "--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "nope.toml: configuration file not found" in result.output


def test_unknown_experiment_id(sample_copy: Path) -> None:
    config = sample_copy / "experiments.toml"
    result = invoke(
        "run", "--config", str(config), "--out", str(sample_copy / "o"), "--experiment", "nope"
    )
    assert result.exit_code == 2
    assert "no experiment with id 'nope'" in result.output


def test_unknown_column_names_metric_and_column(sample_copy: Path, tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "m.py").write_text(
        "from xpkit import Metric, Source\n"
        "class EngagementDaily(Source):\n"
        "    table = 'engagement_daily'\n"
        "class WatchSeconds(Metric):\n"
        "    source = EngagementDaily\n"
        "    expression = 'SUM(watch_secs)'\n"
    )
    config = edit_config(
        sample_copy,
        'metrics = ["watch_seconds", "sessions", "streamers", "watch_seconds_per_session"]\n'
        'primary = ["watch_seconds"]\n'
        "guardrails = [\n"
        '  { metric = "errors", margin = 0.05 },\n'
        '  { metric = "errors_per_play", margin = 0.05 },\n'
        "  # Quantiles of play start latency over all plays: the treatment shortens stalls (the\n"
        "  # tail, p95) and leaves the median alone.\n"
        '  { metric = "start_latency_p95", margin = 0.05 },\n'
        '  { metric = "start_latency_median", margin = 0.05 },\n'
        "]",
        'metrics = ["watch_seconds"]',
    )
    # This folder redefines a shipped metric's name: the shipped ones stay out.
    config.write_text("shipped_metrics = false\n" + config.read_text())
    result = invoke(
        "run",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "o"),
        "--experiment",
        "homepage_ranking_v2",
        "--metrics-dir",
        str(metrics),
    )
    assert result.exit_code == 2, result.output
    assert (
        "metric 'watch_seconds': column 'watch_secs' does not exist in table 'engagement_daily'"
        in result.output
    )
    assert "did you mean 'watch_seconds'" in result.output


def test_broken_metric_file_names_file_and_metric(tmp_path: Path, sample_copy: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "bad.py").write_text(
        "from xpkit import Metric, Source\n"
        "class S(Source):\n"
        "    table = 'engagement_daily'\n"
        "class Broken(Metric):\n"
        "    source = S\n"
        "    expression = 'SUM(watch_seconds); DELETE FROM engagement_daily'\n"
    )
    result = invoke(
        "sql",
        "--experiment",
        "homepage_ranking_v2",
        "--config",
        str(sample_copy / "experiments.toml"),
        "--metrics-dir",
        str(metrics),
    )
    assert result.exit_code == 2
    assert "bad.py" in result.output and "metric 'broken'" in result.output
    assert "found 2 statements" in result.output


def test_show_on_a_missing_path(tmp_path: Path) -> None:
    result = invoke("show", str(tmp_path / "none"))
    assert result.exit_code == 2
    assert "no such file or folder" in result.output


def test_unknown_metric_on_the_sql_command(sample_copy: Path) -> None:
    result = invoke(
        "sql",
        "nope",
        "--experiment",
        "homepage_ranking_v2",
        "--config",
        str(sample_copy / "experiments.toml"),
    )
    assert result.exit_code == 2
    assert "unknown metric 'nope'" in result.output


def test_remote_table_locations_are_kept_for_the_engine(tmp_path: Path) -> None:
    # Object-store and cluster paths cannot be checked on the local disk: the config keeps
    # them as written (not resolved against the config's folder) and the engine reads them.
    config = tmp_path / "experiments.toml"
    config.write_text(
        "[tables]\n"
        'engagement_daily = "s3a://warehouse/engagement_daily/*.parquet"\n'
        'experiment_assignments = "gs://warehouse/assignments.parquet"\n'
        '[[experiment]]\nid = "e"\ncontrol = "c"\nweights = { c = 0.5, t = 0.5 }\n'
        'metrics = ["watch_seconds"]\n'
    )
    tables = load_config(config).run.tables
    assert tables == {
        "engagement_daily": "s3a://warehouse/engagement_daily/*.parquet",
        "experiment_assignments": "gs://warehouse/assignments.parquet",
    }


def test_a_table_duckdb_cannot_read_names_table_and_location(tmp_path: Path) -> None:
    location = str(tmp_path / "gone" / "daily.parquet")
    with pytest.raises(DataError, match=r"table 'daily': cannot read '.*gone/daily\.parquet'"):
        DuckDBEngine({"daily": location})


def test_engine_flag_overrides_the_config_engine(sample_copy: Path) -> None:
    # engine = "spark" in the config; --engine duckdb runs (and prints) on DuckDB, without
    # touching Spark.
    config = edit_config(sample_copy, "[tables]", 'engine = "spark"\n[tables]')
    args = ["sql", "--config", str(config), "--experiment", "homepage_ranking_v2"]
    result = invoke(*args, "--engine", "duckdb")
    assert result.exit_code == 0, result.output
    assert "DATE_DIFF('DAY'" in result.output  # DuckDB's spelling, not Spark's DATEDIFF
