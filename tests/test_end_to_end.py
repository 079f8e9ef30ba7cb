"""The whole path on the sample data: config -> SQL -> DuckDB -> stats -> Parquet -> show."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from xpkit.cli import main
from xpkit.output.storage import read_run, select_runs

REQUIRED_COLUMNS = [
    "experiment_id",
    "population",
    "metric",
    "variant",
    "control_variant",
    "n_control",
    "n_variant",
    "mean_control",
    "mean_variant",
    "abs_effect",
    "abs_ci_low",
    "abs_ci_high",
    "rel_lift",
    "rel_ci_low",
    "rel_ci_high",
    "p_value",
    "alpha",
    "method",
    "srm_p_value",
    "valid",
    "invalid_reason",
    "computed_at",
    "xpkit_version",
    "sql_sha256",
]


@pytest.fixture(scope="module")
def run_out(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("scorecards")
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--config",
            str(sample_dir / "experiments.toml"),
            "--out",
            str(out),
            "--run-date",
            "2024-04-05",
        ],
    )
    return out, result


def published(out: Path, experiment: str):
    """The committed run of 2024-04-05, read through its manifest."""
    (manifest,) = select_runs(out, experiment, date(2024, 4, 5))
    return read_run(manifest)


def scorecard(out: Path, experiment: str) -> list[dict]:
    return published(out, experiment).scorecard.to_pylist()


def checks(out: Path, experiment: str) -> dict[str, dict]:
    return {r["name"]: r for r in published(out, experiment).checks.to_pylist()}


def row(rows: list[dict], population: str, metric: str, variant: str = "treatment") -> dict:
    (match,) = [
        r
        for r in rows
        if (r["population"], r["metric"], r["variant"]) == (population, metric, variant)
        and r["slice_dimension"] == "(all)"
    ]
    return match


def test_run_writes_every_experiment_and_exits_3_for_the_invalid_ones(run_out) -> None:
    out, result = run_out
    assert result.exit_code == 3, result.output
    assert "INVALID results for: player_srm, search_exposure_bug" in result.output
    for experiment in ("homepage_ranking_v2", "artwork_abc", "player_srm", "search_exposure_bug"):
        rows = scorecard(out, experiment)
        assert rows and set(REQUIRED_COLUMNS) <= set(rows[0])


def test_means_equal_a_hand_written_query(run_out, sample_dir: Path) -> None:
    """Independent of the templates: the seeds' 7-day skeleton, written out by hand."""
    out, _ = run_out
    rows = scorecard(out, "homepage_ranking_v2")
    con = duckdb.connect()
    a = sample_dir / "experiment_assignments.parquet"
    d = sample_dir / "engagement_daily.parquet"
    truth = con.execute(
        f"""
        WITH units AS (
          SELECT member_id, MIN(variant) AS variant, MIN(assignment_timestamp)::DATE AS day,
                 BOOL_OR(exposed_flag) AS exposed
          FROM '{a}' WHERE experiment_id = 'homepage_ranking_v2'
          GROUP BY member_id HAVING COUNT(DISTINCT variant) = 1
        ), last_day AS (SELECT MAX(date) AS last FROM '{d}'),
        per_member AS (
          SELECT u.member_id, u.variant, u.exposed,
                 COALESCE(SUM(e.watch_seconds), 0) AS watch,
                 COALESCE(SUM(e.plays), 0) AS plays, COALESCE(SUM(e.errors), 0) AS errors
          FROM units u CROSS JOIN last_day
          LEFT JOIN '{d}' e ON e.member_id = u.member_id
               AND e.date BETWEEN u.day AND u.day + INTERVAL 6 DAY
          WHERE u.day + INTERVAL 6 DAY <= last_day.last
          GROUP BY ALL
        )
        SELECT variant, exposed, COUNT(*) AS n, AVG(watch) AS watch,
               SUM(errors) / SUM(plays) AS errors_per_play
        FROM per_member GROUP BY GROUPING SETS ((variant), (variant, exposed))
        """
    ).fetchall()
    itt = {v: (n, w, r) for v, e, n, w, r in truth if e is None}
    tot = {v: (n, w, r) for v, e, n, w, r in truth if e is True}
    got = row(rows, "itt", "watch_seconds")
    assert got["n_control"] == itt["control"][0] and got["n_variant"] == itt["treatment"][0]
    assert got["mean_control"] == pytest.approx(itt["control"][1], rel=1e-12)
    assert got["mean_variant"] == pytest.approx(itt["treatment"][1], rel=1e-12)
    got = row(rows, "tot", "watch_seconds")
    assert got["n_variant"] == tot["treatment"][0]
    assert got["mean_variant"] == pytest.approx(tot["treatment"][1], rel=1e-12)
    got = row(rows, "itt", "errors_per_play")
    assert got["mean_control"] == pytest.approx(itt["control"][2], rel=1e-12)


def test_known_true_lift_lies_inside_the_ci(run_out, sample_dir: Path) -> None:
    out, _ = run_out
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    effects = {e["experiment_id"]: e["true_effects"] for e in manifest["experiments"]}
    for experiment, variant, metric in [
        ("homepage_ranking_v2", "treatment", "watch_seconds"),
        ("artwork_abc", "treatment_a", "plays"),
        ("artwork_abc", "treatment_b", "plays"),
    ]:
        truth = effects[experiment][variant][metric]["true_itt_rel"]
        r = row(scorecard(out, experiment), "itt", metric, variant)
        assert r["rel_ci_low"] < truth < r["rel_ci_high"], (experiment, variant, r)
        assert r["valid"]


def test_tot_overstates_the_itt_lift(run_out) -> None:
    out, _ = run_out
    rows = scorecard(out, "homepage_ranking_v2")
    itt = row(rows, "itt", "watch_seconds")
    tot = row(rows, "tot", "watch_seconds")
    assert tot["rel_lift"] > itt["rel_lift"]
    assert "SELECTED ON EXPOSURE" in tot["population_note"]


def test_srm_is_a_gate(run_out) -> None:
    out, _ = run_out
    rows = scorecard(out, "player_srm")
    assert all(not r["valid"] for r in rows)
    assert all("srm_assignment" in r["invalid_reason"] for r in rows)
    assert all(
        r["abs_effect"] is None and r["p_value"] is None and r["rel_ci_low"] is None for r in rows
    )
    assert all(r["decision"] == "invalid" for r in rows)
    assert rows[0]["srm_p_value"] < 0.001
    c = checks(out, "player_srm")
    assert not c["srm_assignment"]["passed"]


def test_exposure_logging_bug_trips_the_exposed_srm_only(run_out) -> None:
    out, _ = run_out
    c = checks(out, "search_exposure_bug")
    assert c["srm_assignment"]["passed"]
    assert not c["srm_exposed"]["passed"]
    assert "SAMPLE RATIO MISMATCH" in c["srm_exposed"]["detail"]


def test_allow_invalid_keeps_effects_but_still_marks_invalid(
    sample_dir: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--config",
            str(sample_dir / "experiments.toml"),
            "--out",
            str(tmp_path),
            "--experiment",
            "player_srm",
            "--allow-invalid",
            "--run-date",
            "2024-04-05",
        ],
    )
    assert result.exit_code == 3
    rows = scorecard(tmp_path, "player_srm")
    assert all(r["abs_effect"] is not None and not r["valid"] for r in rows)


def test_show_prints_the_invalid_reason_first(run_out) -> None:
    out, _ = run_out
    result = CliRunner().invoke(main, ["show", str(out), "--experiment", "player_srm"])
    assert result.exit_code == 3  # what it shows is invalid, as run says
    assert "INVALID results for: player_srm (exit 3)" in result.output
    valid = CliRunner().invoke(main, ["show", str(out), "--experiment", "homepage_ranking_v2"])
    assert valid.exit_code == 0, valid.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "INVALID RESULT" in lines[2]
    assert "srm_assignment" in lines[3]
    shown = CliRunner().invoke(main, ["show", str(out)]).output
    assert shown.count("Experiment ") == 4
    assert "TOT (selection-biased)" in shown


def test_rerun_same_day_replaces(sample_dir: Path, tmp_path: Path) -> None:
    args = [
        "run",
        "--config",
        str(sample_dir / "experiments.toml"),
        "--out",
        str(tmp_path),
        "--experiment",
        "homepage_ranking_v2",
        "--run-date",
        "2024-04-05",
        "--quiet",
    ]
    CliRunner().invoke(main, args)
    first = scorecard(tmp_path, "homepage_ranking_v2")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    # One unit per run: the manifest and its tables, no lock or staged file left over.
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "checks/homepage_ranking_v2/2024-04-05/data.parquet",
        "runs/homepage_ranking_v2/2024-04-05.json",
        "scorecards/homepage_ranking_v2/2024-04-05/data.parquet",
    ]
    second = scorecard(tmp_path, "homepage_ranking_v2")
    assert second[0]["run_id"] != first[0]["run_id"]
    assert len(second) == len(first)
    assert second[0]["computed_at"] >= first[0]["computed_at"]
    # Parallel float sums may differ in the last bits between runs, nothing more.
    assert [r["abs_effect"] for r in second] == pytest.approx(
        [r["abs_effect"] for r in first], rel=1e-9
    )


def test_sql_command_prints_parseable_sql(sample_dir: Path) -> None:
    import sqlglot

    for dialect in ("duckdb", "spark", "bigquery", "snowflake", "trino", "postgres"):
        result = CliRunner().invoke(
            main,
            [
                "sql",
                "watch_seconds",
                "streamers",
                "--experiment",
                "homepage_ranking_v2",
                "--config",
                str(sample_dir / "experiments.toml"),
                "--dialect",
                dialect,
            ],
        )
        assert result.exit_code == 0, result.output
        sqlglot.parse_one(result.output, read=dialect)
        assert "watch_seconds__value" in result.output


def test_guardrail_harm_blocks_shipping(run_out) -> None:
    out, _ = run_out
    rows = scorecard(out, "artwork_abc")
    errors_b = row(rows, "itt", "errors", "treatment_b")
    assert errors_b["guardrail_breached"]
    assert errors_b["decision"] == "no_ship"
    assert any("guardrail breached" in reason for reason in errors_b["decision_reasons"])


def test_exposure_log_checks(sample_copy: Path) -> None:
    """Exposures for never-assigned units, or before assignment, fail a gate."""
    con = duckdb.connect()
    a = sample_copy / "experiment_assignments.parquet"
    con.execute(
        f"""COPY (
          SELECT experiment_id, member_id, assignment_timestamp + INTERVAL 1 HOUR AS exposure_timestamp
          FROM '{a}' WHERE experiment_id = 'homepage_ranking_v2' AND exposed_flag
          UNION ALL SELECT 'homepage_ranking_v2', -1, TIMESTAMP '2024-03-20 10:00'
          UNION ALL SELECT 'homepage_ranking_v2', (SELECT MIN(member_id) FROM '{a}'
                   WHERE experiment_id = 'homepage_ranking_v2'), TIMESTAMP '2024-01-01 00:00'
        ) TO '{sample_copy / "exposures.parquet"}' (FORMAT PARQUET)"""
    )
    config = sample_copy / "experiments.toml"
    config.write_text(
        config.read_text().replace(
            "[tables]\n",
            '[exposures]\ntable = "exposures"\n\n[tables]\nexposures = "exposures.parquet"\n',
        )
    )
    out = sample_copy / "out"
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--config",
            str(config),
            "--out",
            str(out),
            "--experiment",
            "homepage_ranking_v2",
            "--run-date",
            "2024-04-05",
            "--quiet",
        ],
    )
    assert result.exit_code == 3, result.output
    c = checks(out, "homepage_ranking_v2")
    assert c["exposures_without_assignment"]["value"] == 1
    assert c["exposures_before_assignment"]["value"] == 1
    assert "belong to units never assigned" in c["exposures_without_assignment"]["detail"]
    assert not scorecard(out, "homepage_ranking_v2")[0]["valid"]


def test_without_exposure_log_the_check_says_so(run_out) -> None:
    out, _ = run_out
    c = checks(out, "homepage_ranking_v2")["exposure_log"]
    assert c["passed"] and not c["gate"]
    assert "no exposure log configured" in c["detail"]


def test_an_experiment_without_results_says_which_and_why(sample_copy: Path) -> None:
    """A misspelled variant in weights: no rows to compare, but a loud, named report."""
    config = sample_copy / "experiments.toml"
    text = config.read_text()
    old = "weights = { control = 0.5, treatment = 0.5 }"
    assert old in text
    config.write_text(text.replace(old, "weights = { control = 0.5, treatmnet = 0.5 }", 1))
    out = sample_copy / "out"
    args = [
        "run",
        "--config",
        str(config),
        "--out",
        str(out),
        "--experiment",
        "homepage_ranking_v2",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0] == "Experiment homepage_ranking_v2: NO RESULTS"
    assert any("unknown_variants" in line and "treatment" in line for line in lines[:8])
    shown = CliRunner().invoke(main, ["show", str(out)])
    assert shown.exit_code == 3
    assert shown.output.splitlines()[0] == "Experiment homepage_ranking_v2: NO RESULTS"


def test_a_mistake_in_a_later_experiment_stops_the_job_before_anything_is_written(
    sample_copy: Path,
) -> None:
    config = sample_copy / "experiments.toml"
    text = config.read_text()
    # The last experiment asks for a metric whose column is missing from its table.
    config.write_text(text + '\n[[experiment]]\nid = "late"\ncontrol = "control"\n'
                      'weights = { control = 0.5, treatment = 0.5 }\nmetrics = ["nope"]\n')  # fmt: skip
    out = sample_copy / "out"
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "unknown metric 'nope'" in result.output
    assert not out.exists() or not any(out.rglob("*.parquet"))
