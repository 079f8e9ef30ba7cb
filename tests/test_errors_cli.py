"""Command-line arguments are checked before any work: the folder, the resources, the MDE.

And ``xpkit show`` refuses files that are not scorecards, naming the file and what it
expected; a closed pipe ends it quietly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from tests.test_errors_data import assert_message, run, world
from xpkit.cli import main
from xpkit.config import max_threads
from xpkit.output.schemas import CHECKS_SCHEMA, HISTORY_SCHEMA, SCORECARD_SCHEMA


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def assert_usage(result: Result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for part in parts:
        assert part in result.output, (part, result.output)


def test_a_read_only_out_folder_is_refused_before_computing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = world(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: make the folder read-only in the check
        real = os.access
        monkeypatch.setattr(
            "xpkit.cli.os.access", lambda p, mode: False if Path(p) == locked else real(p, mode)
        )
    monkeypatch.setattr("xpkit.cli.run_all", lambda *a, **k: pytest.fail("computed first"))
    try:
        result = invoke("run", "--config", str(config), "--out", str(locked / "cards"))
    finally:
        locked.chmod(0o700)
    assert_message(result, f"--out {locked / 'cards'}", f"folder {locked} is not writable")


def test_an_out_folder_below_a_file_is_refused(tmp_path: Path) -> None:
    config = world(tmp_path)
    (tmp_path / "a_file").write_text("x")
    result = invoke("run", "--config", str(config), "--out", str(tmp_path / "a_file" / "cards"))
    assert_message(result, "a_file is a file, not a folder")


@pytest.mark.parametrize("glob", ["data/**/*.parquet", "data"])
def test_an_out_folder_inside_a_tables_location_is_refused(tmp_path: Path, glob: str) -> None:
    config = world(tmp_path, tables=f'daily = "{glob}"\n')
    # data/ holds the assignments too, so a folder location reads both tables' files:
    # only the refusal matters here.
    result = invoke("run", "--config", str(config), "--out", str(tmp_path / "data" / "cards"))
    assert_message(result, "inside table", "would read its own scorecards as data")


def test_out_folder_beside_the_tables_is_fine(tmp_path: Path) -> None:
    config = world(tmp_path, tables='daily = "data/daily*.parquet"\n')
    result = invoke("run", "--config", str(config), "--out", str(tmp_path / "data" / "cards"))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", ["run", "sql", "power", "demo"])
def test_a_memory_limit_is_checked_on_every_command_that_runs_sql(command: str) -> None:
    result = invoke(command, "--memory-limit", "lots")
    assert_usage(result, "'lots' is not a memory limit", "2GB", "75%")


@pytest.mark.parametrize("value", ["2GB", "500MB", "75%", "1.5GiB"])
def test_memory_limits_in_duckdbs_format_are_accepted(tmp_path: Path, value: str) -> None:
    assert run(world(tmp_path), "--memory-limit", value).exit_code == 0


@pytest.mark.parametrize("threads", ["-3", "0", "100000"])
def test_threads_are_bounded(threads: str) -> None:
    result = invoke("run", "--out", "x", "--threads", threads)
    assert_usage(result, f"threads must be between 1 and {max_threads()}", "CPU cores")


def test_resources_in_the_config_are_checked(tmp_path: Path) -> None:
    config = world(tmp_path, top='memory_limit = "lots"\nthreads = 0\n')
    result = run(config)
    assert_message(result, str(config), "memory_limit:", "'lots' is not a memory limit")
    assert "threads: threads must be between 1" in result.output


def test_a_temp_directory_from_the_config_is_relative_to_it(tmp_path: Path) -> None:
    from xpkit.config import load_config

    config = world(tmp_path, top='temp_directory = "spill"\n')
    assert load_config(config).run.temp_directory == str(tmp_path / "spill")
    assert run(config, "--threads", "1").exit_code == 0


@pytest.mark.parametrize(
    ("mde", "message"),
    [
        ("0", "must be above 0"),
        ("0%", "must be above 0"),
        ("-2%", "must be above 0"),
        ("2", "'2' would mean 200%; write a percentage such as 2% or a fraction such as 0.02"),
        ("lots", "not a number or a percentage"),
    ],
)
def test_power_refuses_an_mde_that_is_not_a_small_positive_effect(mde: str, message: str) -> None:
    result = invoke("power", "--experiment", "e", "--metric", "m", "--mde", mde)
    assert_usage(result, "--mde", message)


@pytest.mark.parametrize("mde", ["2%", "0.02"])
def test_power_accepts_a_percentage_or_a_fraction(tmp_path: Path, mde: str) -> None:
    config = world(tmp_path)
    result = invoke(
        "power", "--config", str(config), "--experiment", "e", "--metric", "played", "--mde", mde
    )
    assert result.exit_code == 0, result.output


# --- xpkit show -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of one published run (scorecard, checks, history) of the tiny world."""
    root = tmp_path_factory.mktemp("published")
    result = run(world(root), "--history")
    assert result.exit_code == 0, result.output
    return root / "out"


@pytest.mark.parametrize("kind", ["scorecards", "checks", "history"])
def test_show_on_a_table_file_names_it_and_asks_for_the_folder(published: Path, kind: str) -> None:
    path = next((published / kind).rglob("data.parquet"))
    assert_message(invoke("show", str(path)), str(path), "show reads the output folder")


def test_show_on_a_folder_without_runs(tmp_path: Path) -> None:
    path = tmp_path / "sales"
    path.mkdir()
    pq.write_table(pa.table({"region": ["n"], "sales": [1.0]}), path / "sales.parquet")
    assert_message(invoke("show", str(path)), str(path), "no committed runs here")


def test_show_on_a_scorecard_with_p_values_as_text(published: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(published, out)
    path = next((out / "scorecards").rglob("data.parquet"))
    table = pq.read_table(path)
    i = table.schema.get_field_index("p_value")
    table = table.set_column(i, "p_value", table.column(i).cast(pa.string()))
    pq.write_table(table, path)  # the schema metadata (run id) is kept
    assert_message(invoke("show", str(out)), "column p_value is string, expected double")


def test_show_on_the_published_run_still_works(published: Path) -> None:
    assert invoke("show", str(published)).exit_code == 0


def test_the_schemas_validate_their_own_empty_tables(tmp_path: Path) -> None:
    from xpkit.output.validate import validate_table

    for kind, schema in [
        ("scorecard", SCORECARD_SCHEMA),
        ("checks", CHECKS_SCHEMA),
        ("history", HISTORY_SCHEMA),
    ]:
        validate_table(schema.empty_table(), tmp_path / "t.parquet", kind)


def test_show_into_a_closed_pipe_exits_quietly(published: Path) -> None:
    # Many scorecards' worth of output into a reader that stops after one line.
    code = (
        "import sys; from xpkit.cli import main; "
        f"sys.argv = ['xpkit', 'show', {str(published)!r}]; main()"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        f'for i in 1 2 3 4 5 6 7 8; do {sys.executable} -c "{code}"; done | head -1',
        shell=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.stdout.count("\n") == 1
