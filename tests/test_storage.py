"""Published runs: one unit per run (manifest committed last), crash-safe, readable by
pandas, pyarrow, polars and DuckDB, with experiment ids mapped to folders injectively."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

import xpkit
from xpkit.cli import main
from xpkit.files import FileLock
from xpkit.output import storage
from xpkit.output.schemas import CHECKS_SCHEMA, HISTORY_SCHEMA, SCORECARD_SCHEMA
from xpkit.output.storage import (
    RunLockedError,
    folder_name,
    list_runs,
    lock_path,
    manifest_path,
    publish,
    read_run,
    recorded_fractions,
    select_runs,
    table_path,
)

DAY = date(2024, 4, 5)
SRC = str(Path(xpkit.__file__).resolve().parents[1])


def tables(
    experiment_id: str, run_date: date, tag: str, *, history: bool = False, fraction=None
) -> dict[str, pa.Table]:
    """A tiny run whose every table names ``tag`` (so a mix of two runs is visible)."""
    scorecard = {
        "experiment_id": experiment_id,
        "run_date": run_date,
        "as_of": run_date,
        "population": "itt",
        "metric": f"metric_{tag}",
        "role": "primary",
        "variant": "treatment",
        "control_variant": "control",
        "n_control": 10,
        "n_variant": 11,
        "method": "welch",
        "valid": True,
        "information_fraction": fraction,
        "rows_read": [("assignments", 21), ("daily", 140)],
    }
    check = {"experiment_id": experiment_id, "run_date": run_date, "name": f"check_{tag}"}
    check |= {"passed": True, "gate": True, "detail": "ok"}
    out = {
        "scorecard": pa.Table.from_pylist([scorecard], schema=SCORECARD_SCHEMA),
        "checks": pa.Table.from_pylist([check], schema=CHECKS_SCHEMA),
    }
    if history:
        row = {"experiment_id": experiment_id, "run_date": run_date, "analysis_date": run_date}
        row |= {"population": "itt", "metric": f"metric_{tag}", "variant": "treatment"}
        row |= {"n_control": 10, "n_variant": 11, "method": "welch"}
        out["history"] = pa.Table.from_pylist([row], schema=HISTORY_SCHEMA)
    return out


def put(out: Path, experiment_id: str, run_date: date, tag: str, **kw) -> storage.PublishedRun:
    history = kw.pop("history", False)
    fraction = kw.pop("fraction", None)
    return publish(
        out,
        experiment_id,
        run_date,
        tables(experiment_id, run_date, tag, history=history, fraction=fraction),
        xpkit_version="test",
        **kw,
    )


def show(*args: str):
    return CliRunner().invoke(main, ["show", *map(str, args)])


def tags_shown(text: str) -> set[str]:
    return {t for t in ("old", "new") if f"metric_{t}" in text or f"check_{t}" in text}


def tags_read(out: Path, experiment_id: str = "e") -> dict[str, set[str]]:
    run = read_run(select_runs(out, experiment_id)[0])
    found = {
        "scorecard": {
            m.removeprefix("metric_") for m in run.scorecard.column("metric").to_pylist()
        },
        "checks": {n.removeprefix("check_") for n in run.checks.column("name").to_pylist()},
    }
    if run.history is not None:
        found["history"] = {
            m.removeprefix("metric_") for m in run.history.column("metric").to_pylist()
        }
    return found


def hidden_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob(".*") if p.is_file())


# --- the publish protocol ----------------------------------------------------------------


def publish_steps(tmp_path: Path) -> list[str]:
    """Every step of publishing a run without history over one with it."""
    out = tmp_path / "steps"
    put(out, "e", DAY, "old", history=True)
    steps: list[str] = []
    original = storage._reached
    storage._reached = steps.append
    try:
        put(out, "e", DAY, "new")
    finally:
        storage._reached = original
    return steps


def test_publish_steps_end_with_the_commit_before_the_renames(tmp_path: Path) -> None:
    steps = publish_steps(tmp_path)
    assert steps == [
        "locked",
        "recovered",
        "staged scorecard",
        "staged checks",
        "committed",
        "published scorecard",
        "published checks",
        "removed history",
        "published",
    ]


class Crash(Exception):
    pass


@pytest.mark.parametrize("k", range(9))
def test_an_error_at_any_step_shows_one_whole_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int
) -> None:
    steps = publish_steps(tmp_path)
    out = tmp_path / "out"
    put(out, "e", DAY, "old", history=True)

    def crash(step: str) -> None:
        if step == steps[k]:
            raise Crash(step)

    monkeypatch.setattr(storage, "_reached", crash)
    with pytest.raises(Crash):
        put(out, "e", DAY, "new")
    monkeypatch.undo()
    committed = k >= steps.index("committed")
    expected = "new" if committed else "old"
    result = show(out)
    assert result.exit_code == 0, result.output
    assert tags_shown(result.output) == {expected}
    found = tags_read(out)
    assert set(found) == ({"scorecard", "checks"} if committed else set(storage.KINDS))
    assert all(v == {expected} for v in found.values())
    assert not lock_path(out, "e", DAY).exists()
    put(out, "e", DAY, "next")  # the next run publishes and cleans up
    assert hidden_files(out) == []
    assert all(v == {"next"} for v in tags_read(out).values())


KILLER = """
import os, sys
from datetime import date
from pathlib import Path
sys.path[:0] = [{src!r}, {tests!r}]
import test_storage as t
from xpkit.output import storage
step = sys.argv[2]
storage._reached = lambda s: os._exit(9) if s == step else None
t.put(Path(sys.argv[1]), "e", t.DAY, "new")
"""


@pytest.mark.parametrize("k", range(9))
def test_a_writer_killed_at_any_step_leaves_the_previous_or_the_new_run(
    tmp_path: Path, k: int
) -> None:
    """A real kill (no cleanup, no lock release): the lock is stale, readers still see one
    whole run, and the next writer breaks the lock and removes the leftovers."""
    steps = publish_steps(tmp_path)
    out = tmp_path / "out"
    put(out, "e", DAY, "old", history=True)
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(src=SRC, tests=str(Path(__file__).parent)))
    killed = subprocess.run(
        [sys.executable, str(script), str(out), steps[k]], close_fds=False, check=False
    )
    assert killed.returncode == 9
    assert lock_path(out, "e", DAY).exists()  # the dead writer's lock stays behind
    expected = "new" if k >= steps.index("committed") else "old"
    result = show(out, "--experiment", "e")
    assert result.exit_code == 0, result.output
    assert tags_shown(result.output) == {expected}
    assert all(v == {expected} for v in tags_read(out).values())
    put(out, "e", DAY, "next", lock_wait=0)
    assert not lock_path(out, "e", DAY).exists()
    assert hidden_files(out) == []


def test_a_lock_held_by_a_live_process_fails_with_its_holder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    put(out, "e", DAY, "old")
    lock = lock_path(out, "e", DAY)
    with FileLock(lock), pytest.raises(RunLockedError) as err:
        put(out, "e", DAY, "new", lock_wait=0.3)
    message = str(err.value)
    assert str(lock) in message
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert "another xpkit run is publishing experiment 'e' for run date 2024-04-05" in message
    assert f"delete {lock} and re-run" in message
    assert tags_read(out)["scorecard"] == {"old"}
    assert not lock.exists()


def test_a_lock_from_another_host_is_never_broken(tmp_path: Path) -> None:
    out = tmp_path / "out"
    lock = lock_path(out, "e", DAY)
    lock.parent.mkdir(parents=True)
    holder = {"pid": 1, "host": "elsewhere.example", "started_at": "2024-04-05T01:00:00+00:00"}
    lock.write_text(json.dumps(holder))
    with pytest.raises(RunLockedError, match="pid 1 on host elsewhere.example, since 2024-04-05"):
        put(out, "e", DAY, "new", lock_wait=0)
    assert lock.exists()


def test_a_stale_lock_of_a_dead_process_is_broken(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_captured)
    out = tmp_path / "out"
    lock = lock_path(out, "e", DAY)
    lock.parent.mkdir(parents=True)
    holder = {"pid": int(dead.stdout), "host": socket.gethostname(), "started_at": "x"}
    lock.write_text(json.dumps(holder))
    put(out, "e", DAY, "new", lock_wait=0)
    assert tags_read(out)["scorecard"] == {"new"}
    assert not lock.exists()
    assert hidden_files(out) == []


_captured = {"capture_output": True, "text": True, "check": True, "close_fds": False}


def test_an_empty_lock_is_stale_only_once_old(tmp_path: Path) -> None:
    out = tmp_path / "out"
    lock = lock_path(out, "e", DAY)
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    with pytest.raises(RunLockedError, match="an unknown process"):
        put(out, "e", DAY, "new", lock_wait=0)
    os.utime(lock, (0, 0))
    put(out, "e", DAY, "new", lock_wait=0)
    assert not lock.exists()


def test_a_locked_run_through_the_cli_exits_2(
    sample_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = sample_copy / "out"
    lock = lock_path(out, "homepage_ranking_v2", DAY)
    args = ["run", "--config", str(sample_copy / "experiments.toml"), "--out", str(out)]
    args += ["--experiment", "homepage_ranking_v2", "--run-date", "2024-04-05", "--quiet"]
    monkeypatch.setattr(storage, "LOCK_WAIT_SECONDS", 0.2)
    with FileLock(lock):
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"xpkit: error: {lock}: another xpkit run is publishing" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {manifest_path(out, 'homepage_ranking_v2', DAY)}" in result.output


def test_same_day_rerun_without_history_removes_the_old_history(tmp_path: Path) -> None:
    out = tmp_path / "out"
    put(out, "e", DAY, "old", history=True)
    assert table_path(out, "history", "e", DAY).exists()
    run = put(out, "e", DAY, "new")
    assert run.history is None and "history" not in run.manifest.files
    assert not table_path(out, "history", "e", DAY).exists()
    assert not (out / "history" / "e" / DAY.isoformat()).exists()
    assert tags_read(out) == {"scorecard": {"new"}, "checks": {"new"}}
    assert "Effect over time" not in show(out).output


def test_history_shown_is_the_same_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    put(out, "e", date(2024, 4, 4), "old", history=True)
    put(out, "e", DAY, "new", history=True)
    result = show(out, "--full")
    assert result.exit_code == 0, result.output
    assert "metric_new — treatment" in result.output
    assert tags_shown(result.output) == {"new"}
    earlier = show(out, "--run-date", "2024-04-04")
    assert tags_shown(earlier.output) == {"old"}


def test_every_table_carries_the_manifests_run_id(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = put(out, "e", DAY, "x", history=True)
    manifest = json.loads(manifest_path(out, "e", DAY).read_text())
    assert set(manifest) == {
        "format",
        "run_id",
        "experiment_id",
        "run_date",
        "xpkit_version",
        "committed_at",
        "files",
        "incremental",
    }
    assert manifest["incremental"] is None  # a full run's
    assert manifest["experiment_id"] == "e" and manifest["run_date"] == "2024-04-05"
    assert manifest["files"]["history"] == "history/e/2024-04-05/data.parquet"
    assert len(manifest["run_id"]) == 32
    for table in (run.scorecard, run.checks, run.history):
        assert table.column("run_id").to_pylist() == [manifest["run_id"]]


def test_a_file_of_another_run_is_never_shown(tmp_path: Path) -> None:
    out = tmp_path / "out"
    put(out, "e", DAY, "old")
    stale = table_path(out, "checks", "e", DAY).read_bytes()
    put(out, "e", DAY, "new")
    table_path(out, "checks", "e", DAY).write_bytes(stale)
    result = show(out)
    assert result.exit_code == 2
    assert "the checks of run" in result.output
    assert "is missing or belongs to another run" in result.output
    assert "re-run experiment 'e' with --run-date 2024-04-05" in result.output


def test_a_file_without_a_committed_manifest_is_never_read(tmp_path: Path) -> None:
    out = tmp_path / "out"
    put(out, "e", DAY, "old")
    manifest_path(out, "e", DAY).unlink()
    put(out, "f", DAY, "new")
    result = show(out)
    assert result.exit_code == 0, result.output
    assert tags_shown(result.output) == {"new"}
    result = show(out, "--experiment", "e")
    assert result.exit_code == 2
    assert "no committed run of experiment 'e'; experiments with runs here: 'f'" in result.output


def test_a_manifest_whose_incremental_record_is_not_an_object_names_the_file(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    put(out, "e", DAY, "x")
    path = manifest_path(out, "e", DAY)
    manifest = json.loads(path.read_text())
    manifest["incremental"] = 5
    path.write_text(json.dumps(manifest))
    result = show(out)
    assert result.exit_code == 2
    assert (
        f"{path}: not a readable xpkit run manifest ('incremental' is int, not an object)"
        in result.output
    )
    assert "Traceback" not in result.output


def test_a_broken_manifest_names_the_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    put(out, "e", DAY, "old")
    path = manifest_path(out, "e", DAY)
    path.write_text("{")
    result = show(out)
    assert result.exit_code == 2
    assert f"{path}: not a readable xpkit run manifest" in result.output
    assert "delete it" in result.output


# --- show --------------------------------------------------------------------------------


def test_show_picks_the_newest_run_per_experiment_and_filters(tmp_path: Path) -> None:
    out = tmp_path / "out"
    put(out, "a", date(2024, 4, 4), "old")
    put(out, "a", DAY, "new")
    put(out, "b", date(2024, 4, 4), "new")
    result = show(out)
    assert result.exit_code == 0, result.output
    assert result.output.count("Experiment ") == 2
    assert tags_shown(result.output) == {"new"}
    assert "Experiment a " in show(out, "--experiment", "a").output
    assert "Experiment b" not in show(out, "--experiment", "a").output
    older = show(out, "--experiment", "a", "--run-date", "2024-04-04")
    assert tags_shown(older.output) == {"old"}
    missing = show(out, "--experiment", "a", "--run-date", "2024-04-01")
    assert missing.exit_code == 2
    assert (
        "no committed run of experiment 'a' filed under 2024-04-01; "
        "run dates here: 2024-04-04, 2024-04-05"
    ) in missing.output
    unknown = show(out, "--experiment", "zz")
    assert unknown.exit_code == 2
    assert "no committed run of experiment 'zz'; experiments with runs here: 'a', 'b'" in (
        unknown.output
    )


def test_show_wants_the_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = put(out, "e", DAY, "x")
    on_file = show(run.manifest.file("scorecard"))
    assert on_file.exit_code == 2
    assert "a file; show reads the output folder (the --out of xpkit run)" in on_file.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = show(empty)
    assert result.exit_code == 2
    assert f"{empty}: no committed runs here (no runs/ folder" in result.output
    old = tmp_path / "old"
    (old / "experiment_id=e" / "run_date=2024-04-05").mkdir(parents=True)
    result = show(old)
    assert result.exit_code == 2
    assert "old experiment_id=/run_date= layout, which is no longer read" in result.output


def test_recorded_fractions_read_committed_runs_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert recorded_fractions(out, "e", DAY) == []
    put(out, "e", date(2024, 4, 1), "a", fraction=0.25)
    put(out, "e", date(2024, 4, 3), "b", fraction=0.5)
    put(out, "e", date(2024, 4, 4), "c", fraction=0.75)
    put(out, "e", DAY, "d", fraction=0.9)
    manifest_path(out, "e", date(2024, 4, 4)).unlink()  # uncommitted: never read
    assert recorded_fractions(out, "e", DAY) == [0.25, 0.5]


# --- experiment ids and folder names -----------------------------------------------------


@pytest.mark.parametrize(
    ("experiment_id", "name"),
    [
        ("homepage_ranking_v2", "homepage_ranking_v2"),
        ("x/y", "x%2Fy"),
        ("x%2Fy", "x%252Fy"),
        ("a\0b", "a%00b"),
        (".hidden", "%2Ehidden"),
        ("..", "%2E."),
        ("a b~c", "a%20b%7Ec"),
        ("é", "%C3%A9"),
    ],
)
def test_folder_names_are_percent_encoded(experiment_id: str, name: str) -> None:
    assert folder_name(experiment_id) == name


def test_long_ids_get_a_bounded_hashed_name() -> None:
    long = "a" * 1000
    name = folder_name(long)
    assert len(name) <= storage.MAX_FOLDER_NAME and name.startswith("a" * 80)
    assert "~" in name and len(name.split("~")[1]) == 16
    assert folder_name(long + "b") != name
    assert folder_name("/" * 1000) == "%2F" * 27 + "~" + folder_name("/" * 1000)[-16:]


def test_folder_names_never_collide() -> None:
    ids = ["x/y", "x%2Fy", "x%252Fy", "x_y", ".x", "%2Ex", "a\0b", "a%00b", "a" * 1000]
    ids += ["a" * 1000 + "b", "a" * 100, "a" * 101, "~", "%7E", "é", "%C3%A9"]
    assert len({folder_name(i) for i in ids}) == len(ids)


def test_colliding_ids_publish_and_read_apart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ids = ["x/y", "x%2Fy", "a" * 1000, "nul\0id", ".dot"]
    for i, experiment_id in enumerate(ids):
        put(out, experiment_id, DAY, f"t{i}")
    runs = list_runs(out)
    assert sorted(m.experiment_id for m in runs) == sorted(ids)
    for i, experiment_id in enumerate(ids):
        (manifest,) = select_runs(out, experiment_id)
        run = read_run(manifest)
        assert run.scorecard.column("experiment_id").to_pylist() == [experiment_id]
        assert run.scorecard.column("metric").to_pylist() == [f"metric_t{i}"]
    assert show(out).output.count("Experiment ") == len(ids)


# --- ecosystem readers -------------------------------------------------------------------


@pytest.fixture()
def many_runs(tmp_path: Path) -> tuple[Path, set[str]]:
    """Three experiments (one with a slash), two run dates, plus a killed run's staged file."""
    out = tmp_path / "out"
    run_ids = set()
    for experiment_id in ("homepage", "artwork", "x/y"):
        for day in (date(2024, 4, 4), DAY):
            run_ids.add(put(out, experiment_id, day, "t", history=True).manifest.run_id)
    staged = table_path(out, "scorecard", "homepage", DAY).with_name(".data.killed.staged")
    staged.write_bytes(table_path(out, "scorecard", "artwork", DAY).read_bytes())
    return out, run_ids


def test_pandas_reads_the_scorecards_folder(many_runs) -> None:
    import pandas as pd

    out, run_ids = many_runs
    frame = pd.read_parquet(out / "scorecards")
    assert len(frame) == 6 and set(frame["run_id"]) == run_ids
    assert {type(d) for d in frame["run_date"]} == {date}
    assert set(frame["experiment_id"]) == {"homepage", "artwork", "x/y"}
    assert len(pd.read_parquet(out / "checks")) == 6


def test_pyarrow_reads_the_scorecards_folder_with_hive_partitioning(many_runs) -> None:
    import pyarrow.dataset as ds

    out, run_ids = many_runs
    table = ds.dataset(out / "scorecards", partitioning="hive").to_table()
    assert table.num_rows == 6 and set(table.column("run_id").to_pylist()) == run_ids
    assert table.schema.field("run_date").type == pa.date32()
    assert table.schema.field("rows_read").type == pa.map_(pa.string(), pa.int64())
    history = ds.dataset(out / "history", partitioning="hive").to_table()
    assert history.num_rows == 6


def test_polars_scans_the_scorecards_glob(many_runs) -> None:
    import polars as pl

    out, run_ids = many_runs
    frame = pl.scan_parquet(
        str(out / "scorecards" / "**" / "*.parquet"), hive_partitioning=True
    ).collect()
    assert frame.height == 6 and set(frame["run_id"].to_list()) == run_ids
    assert frame.schema["run_date"] == pl.Date


def test_duckdb_reads_the_scorecards_glob(many_runs) -> None:
    import duckdb

    out, run_ids = many_runs
    relation = duckdb.sql(
        f"SELECT * FROM read_parquet('{out}/scorecards/**/*.parquet', hive_partitioning = true)"
    )
    rows = relation.fetchall()
    types = dict(zip(relation.columns, map(str, relation.types), strict=True))
    assert len(rows) == 6
    assert {r[relation.columns.index("run_id")] for r in rows} == run_ids
    assert types["run_date"] == "DATE"
    assert types["rows_read"] == "MAP(VARCHAR, BIGINT)"
