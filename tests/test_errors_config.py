"""Wrong types and impossible settings in experiments.toml are refused, naming the field."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.conftest import write_parquet
from tests.test_errors_data import ASSIGNMENTS, FACTS, assert_message, run, world
from xpkit.config import load_config


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('alpha = "0.05"', "experiment[e].alpha: Input should be a valid number"),
        ("min_units = true", "experiment[e].min_units: Input should be a valid integer"),
        ("min_days = 7.0", "experiment[e].min_days: Input should be a valid integer"),
        ("populations = []", 'populations: must include "itt"'),
        ('populations = ["tot"]', 'populations: must include "itt"'),
        ('weights = { control = "0.5", treatment = 0.5 }', "weights.control"),
        ("window = [0.5, 6]", "experiment[e].window[0]: Input should be a valid integer"),
    ],
)
def test_wrong_types_are_refused(tmp_path: Path, line: str, message: str) -> None:
    config = world(tmp_path)
    text = config.read_text()
    key = line.split(" =")[0]
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith(key + " ="))
    config.write_text(text + "\n" + line + "\n")
    assert_message(run(config), str(config), message)


def test_an_integer_where_a_float_is_expected_is_accepted(tmp_path: Path) -> None:
    config = world(tmp_path)
    config.write_text(config.read_text() + "sequential_mde = 1\n")
    assert load_config(config).run.experiment[0].sequential_mde == 1.0


def test_a_table_name_with_a_newline_is_refused(tmp_path: Path) -> None:
    config = world(tmp_path)
    config.write_text(config.read_text() + '[assignments]\ntable = "experiment\\nassignments"\n')
    assert_message(run(config), "assignments.table", "control character")


def test_a_path_with_brackets_that_exists_is_found(tmp_path: Path) -> None:
    write_parquet(duckdb.connect(), FACTS, tmp_path / "data[1]" / "daily.parquet")
    config = world(tmp_path, tables='daily = "data[1]/daily.parquet"\n')
    assert load_config(config).run.tables["daily"] == str(tmp_path / "data[1]" / "daily.parquet")
    result = run(config)
    assert result.exit_code == 0, result.output


def test_a_double_star_glob_matches_files_directly_in_the_folder(tmp_path: Path) -> None:
    con = duckdb.connect()
    write_parquet(con, ASSIGNMENTS, tmp_path / "data" / "assignments.parquet")
    write_parquet(con, FACTS, tmp_path / "facts" / "daily.parquet")  # no subfolder
    config = world(tmp_path, tables='daily = "facts/**/*.parquet"\n')
    assert load_config(config).run.tables["daily"].endswith("facts/**/*.parquet")
    result = run(config)
    assert result.exit_code == 0, result.output
