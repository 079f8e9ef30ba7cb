"""What the command line prints: --json documents, progress on stderr, and --mde/--power."""

from __future__ import annotations

import io
import json
import math
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.test_errors_cli import assert_usage
from tests.test_errors_data import world
from xpkit.cli import main
from xpkit.decide.planning import PowerPlan
from xpkit.output.json_results import dumps, plain
from xpkit.output.progress import Progress
from xpkit.output.schemas import CHECKS_SCHEMA, HISTORY_SCHEMA, SCORECARD_SCHEMA

TOP_KEYS = {"format", "command", "valid", "runs"}
RUN_KEYS = {
    "experiment_id",
    "run_date",
    "run_id",
    "as_of",
    "valid",
    "invalid_reason",
    "decisions",
    "scorecard",
    "checks",
    "history",
    "files",
    "incremental",
}
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def strict_json(text: str) -> Any:
    """Parse JSON, refusing NaN and Infinity (which JSON does not have)."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in the JSON")

    return json.loads(text, parse_constant=refuse)


def run_json(config: Path, *extra: str) -> tuple[Result, Any]:
    result = invoke(
        "run", "--config", str(config), "--out", str(config.parent / "out"), "--json", *extra
    )
    return result, strict_json(result.stdout)


def test_run_json_has_the_documented_shape(tmp_path: Path) -> None:
    result, doc = run_json(world(tmp_path), "--history")
    assert result.exit_code == 0, result.output
    assert set(doc) == TOP_KEYS
    assert doc["format"] == "xpkit.runs/1" and doc["command"] == "run" and doc["valid"] is True
    (run,) = doc["runs"]
    assert set(run) == RUN_KEYS
    assert run["experiment_id"] == "e" and ISO_DATE.match(run["run_date"])
    assert ISO_DATE.match(run["as_of"]) and run["valid"] is True
    assert run["invalid_reason"] is None
    (decision,) = run["decisions"]
    assert set(decision) == {"variant", "decision", "reasons"}
    assert decision["variant"] == "treatment" and decision["reasons"]
    assert all(set(row) == set(SCORECARD_SCHEMA.names) for row in run["scorecard"])
    assert all(set(row) == set(CHECKS_SCHEMA.names) for row in run["checks"])
    assert run["history"] and all(set(r) == set(HISTORY_SCHEMA.names) for r in run["history"])
    row = run["scorecard"][0]
    assert row["run_id"] == run["run_id"] and isinstance(row["rows_read"], dict)
    assert datetime.fromisoformat(row["computed_at"]).utcoffset() is not None
    assert isinstance(row["decision_reasons"], list)
    assert [Path(f).name for f in run["files"]][-1].endswith(".json")
    assert all(Path(f).exists() for f in run["files"])
    assert "wrote" not in result.stdout  # stdout is the document alone


def test_an_invalid_run_is_still_a_document_and_exits_3(tmp_path: Path) -> None:
    config = world(tmp_path)
    config.write_text(
        config.read_text().replace(
            "weights = { control = 0.5, treatment = 0.5 }",
            "weights = { control = 0.8, treatment = 0.2 }",
        )
    )
    result, doc = run_json(config)
    assert result.exit_code == 3
    (run,) = doc["runs"]
    assert doc["valid"] is False and run["valid"] is False
    assert "srm_assignment" in run["invalid_reason"]
    assert run["decisions"][0]["decision"] == "invalid"
    assert all(r["p_value"] is None for r in run["scorecard"])  # withheld, as null
    assert "INVALID results for: e" in result.stderr


def test_show_json_is_the_same_shape_read_back(tmp_path: Path) -> None:
    config = world(tmp_path)
    _, ran = run_json(config)
    result = invoke("show", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    shown = strict_json(result.stdout)
    assert set(shown) == TOP_KEYS and shown["command"] == "show"
    (run,) = shown["runs"]
    assert set(run) == RUN_KEYS and run["history"] is None
    assert run["run_id"] == ran["runs"][0]["run_id"]
    assert run["scorecard"] == ran["runs"][0]["scorecard"]
    assert run["decisions"] == ran["runs"][0]["decisions"]
    assert sorted(run["files"]) == sorted(ran["runs"][0]["files"])


def test_power_json(tmp_path: Path) -> None:
    config = world(tmp_path)
    result = invoke(
        "power", "--config", str(config), "--experiment", "e", "--metric", "played", "--json"
    )
    assert result.exit_code == 0, result.output
    doc = strict_json(result.stdout)
    assert set(doc) == {"format", "experiment_id", "metric", "plan"}
    assert doc["format"] == "xpkit.power/1" and doc["metric"] == "played"
    assert set(doc["plan"]) == set(PowerPlan.__dataclass_fields__)
    assert set(doc["plan"]["mde_at_days"]) == {"7", "14", "28"}
    assert doc["plan"]["mde_relative"] == 0.02 and doc["plan"]["power"] == 0.8


def test_json_values_nan_is_null_dates_are_iso() -> None:
    value = {
        "nan": math.nan,
        "inf": -math.inf,
        "day": date(2024, 4, 5),
        "at": datetime(2024, 4, 5, 6, 7, tzinfo=UTC),
        "pairs": (1.5, math.nan),
        3: "key",
    }
    assert plain(value) == {
        "nan": None,
        "inf": None,
        "day": "2024-04-05",
        "at": "2024-04-05T06:07:00+00:00",
        "pairs": [1.5, None],
        "3": "key",
    }
    assert "NaN" not in dumps({"x": [math.nan]})


# --- progress ---------------------------------------------------------------------------


def test_progress_with_the_flag_reports_each_step_on_stderr(tmp_path: Path) -> None:
    config = world(tmp_path)
    out = str(tmp_path / "out")
    result = invoke("run", "--config", str(config), "--out", out, "--quiet", "--progress")
    assert result.exit_code == 0, result.output
    err = result.stderr
    for text in (
        "1 experiment  checking metrics and columns",
        "[1/1] e  reading the dates (bounds statement)",
        "[1/1] e  running the statement",
        "[1/1] e  computing the statistics",
        "rows read",
        "[1/1] e  writing the tables",
        "[1/1] e  done in",
    ):
        assert text in err, (text, err)
    done = next(line for line in err.splitlines() if "done in" in line)
    assert re.search(r"\(bounds [\d.]+ s, statement [\d.]+ s, statistics [\d.]+ s, writing", done)
    rows = int(re.search(r", ([\d,]+) rows read", done).group(1).replace(",", ""))
    assert rows > 200  # the assignment rows and the daily rows
    assert "\r" not in err  # a log gets lines, not a redrawn line
    assert "done in" not in result.stdout


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    result = invoke("run", "--config", str(world(tmp_path)), "--out", str(tmp_path / "o"))
    assert result.exit_code == 0
    assert result.stderr == ""


def test_on_a_terminal_progress_shows_unless_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("xpkit.cli._is_terminal", lambda stream: True)
    config = world(tmp_path)
    shown = invoke("run", "--config", str(config), "--out", str(tmp_path / "a"))
    assert shown.exit_code == 0
    assert "\r\x1b[K" in shown.stderr and "[1/1] e  done in" in shown.stderr
    quiet = invoke("run", "--config", str(config), "--out", str(tmp_path / "b"), "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_live_progress_redraws_one_line_and_leaves_a_summary() -> None:
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream, live=True, clock=lambda: now[0], tick=60)
    progress.step("exp", 1, 2, "bounds")
    now[0] = 0.5
    progress.step("exp", 1, 2, "statement")
    now[0] = 3.0
    progress.step("exp", 1, 2, "statistics", rows_read=12345)
    now[0] = 3.5
    progress.step("exp", 1, 2, "writing")
    now[0] = 4.0
    progress.step("exp", 1, 2, "done")
    progress.close()
    text = stream.getvalue()
    assert "\r\x1b[K[1/2] exp  running the statement  0.5 s" in text
    assert "computing the statistics  3.0 s  12,345 rows read" in text
    last = text.split("\r\x1b[K")[-1]  # the live line erased, the summary stays
    assert last == (
        "[1/2] exp  done in 4.0 s (bounds 0.5 s, statement 2.5 s, statistics 0.5 s, "
        "writing 0.5 s), 12,345 rows read\n"
    )


# --- --mde and --power ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mde", "1"], "'1' would mean 100%; write a percentage such as 1% or a fraction"),
        (["--mde", "12.5"], "'12.5' would mean 1250%; write a percentage such as 12.5% or"),
        (["--mde", "nan"], "'nan' is not a number or a percentage like 2%"),
        (["--mde", "2%%"], "'2%%' is not a number or a percentage like 2%"),
        (["--power", "80"], "'80' would mean 8000%; write a percentage such as 80% or a"),
        (["--power", "100%"], "must be between 0 and 1 (0% and 100%)"),
        (["--power", "0"], "must be between 0 and 1"),
        (["--power", "high"], "'high' is not a number or a percentage like 80%"),
    ],
)
def test_power_refuses_bad_effects_and_powers(args: list[str], message: str) -> None:
    result = invoke("power", "--experiment", "e", "--metric", "m", *args)
    assert_usage(result, args[0], message)


@pytest.mark.parametrize(
    ("mde", "power", "expected"),
    [("2 %", "80%", (0.02, 0.8)), ("0.05", "0.9", (0.05, 0.9)), ("150%", "85 %", (1.5, 0.85))],
)
def test_power_takes_percentages_or_fractions(
    tmp_path: Path, mde: str, power: str, expected: tuple[float, float]
) -> None:
    config = world(tmp_path)
    result = invoke(
        "power", "--config", str(config), "--experiment", "e", "--metric", "played",
        "--mde", mde, "--power", power, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    plan = strict_json(result.stdout)["plan"]
    assert (plan["mde_relative"], plan["power"]) == pytest.approx(expected)
