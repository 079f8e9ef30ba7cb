"""Incremental runs give the full run's numbers, day after day, and stay safe when the data,
the definitions or the process change under them.

Each daily step runs the sample experiments twice on one thread: a full recompute, and an
incremental run that starts from the state the previous day's incremental run left. Every
number of the scorecard, checks and history is compared. Integer-valued metrics (sessions,
plays, errors, the 0/1 streamers) are bit-identical; watch seconds are fractional, and the
incremental run adds a unit's days in another order (settled days, then the recent ones),
so they agree to rounding (~1e-15 relative), as two full runs on two threads do.
"""

from __future__ import annotations

import json
import math
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

import xpkit.runner as runner_module
from xpkit.cli import main
from xpkit.compile.state import plan_state
from xpkit.config import ExperimentConfig, load_config
from xpkit.define.metric import Metric, Source
from xpkit.define.registry import load_metrics, registry_of
from xpkit.incremental import StateStore
from xpkit.runner import engine_for, run_all

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ["homepage_ranking_v2", "artwork_abc", "player_srm", "search_exposure_bug"]
# What a run records about itself rather than about the experiment.
OWN = {"computed_at", "run_id", "sql", "sql_sha256", "rows_read", "xpkit_version"}
# Metrics whose per-unit values are whole numbers: every number of theirs is bit-identical
# (a family-adjusted p-value also depends on the other metrics' p-values).
INTEGER_METRICS = {"sessions", "plays", "errors", "streamers", "errors_per_play"}
# Every as-of date the sample allows: its assignments start on 2024-03-15 and its facts end
# on 2024-04-04.
FIRST_DAY = date(2024, 3, 15)
DAYS = 21


def _runs(config_path: Path, day: date, state: Path | None, **kwargs):
    config = load_config(config_path)
    engine = engine_for(config, threads=1)
    try:
        return run_all(
            config,
            load_metrics(ROOT / "metrics"),
            kwargs.pop("experiments", EXPERIMENTS),
            None,
            engine=engine,
            as_of=day,
            run_date=day,
            history=True,
            state_dir=state,
            **kwargs,
        )
    finally:
        engine.close()


def _rows(table) -> list[dict]:
    return table.select([c for c in table.column_names if c not in OWN]).to_pylist()


def _assert_same(full, incremental) -> None:
    assert [r.experiment_id for r in full] == [r.experiment_id for r in incremental]
    for f, n in zip(full, incremental, strict=True):
        assert f.valid == n.valid
        for kind in ("scorecard", "checks", "history"):
            if getattr(f, kind) is None:
                assert getattr(n, kind) is None
                continue
            a, b = _rows(getattr(f, kind)), _rows(getattr(n, kind))
            assert len(a) == len(b), (f.experiment_id, kind)
            for x, y in zip(a, b, strict=True):
                assert x.keys() == y.keys()
                exact = x.get("metric") in INTEGER_METRICS
                for key, u in x.items():
                    v = y[key]
                    where = (f.experiment_id, kind, x.get("metric"), x.get("variant"), key)
                    if isinstance(u, float) and isinstance(v, float):
                        if math.isnan(u):
                            assert math.isnan(v), where
                        elif exact and "adjusted" not in key:
                            assert u == v, where
                        else:
                            # Rounding of sums of ~1e5 (an interval bound near 0 is the
                            # difference of two such numbers: an absolute error).
                            assert v == pytest.approx(u, rel=1e-11, abs=1e-9), where
                    else:
                        assert u == v, where


def _read(runs, table: str) -> int:
    """Rows of ``table`` the runs read (from their scorecards' provenance)."""
    total = 0
    for run in runs:
        rows = run.scorecard.column("rows_read").to_pylist()
        if rows:
            total += dict(rows[0]).get(table, 0)
    return total


def _notes(runs) -> list[str]:
    return [note for r in runs if r.state is not None for note in r.state.notes]


def test_incremental_runs_equal_full_runs_day_after_day(sample_dir: Path, tmp_path: Path) -> None:
    config = sample_dir / "experiments.toml"
    state = tmp_path / "state"
    reads = []
    for step in range(DAYS):
        day = FIRST_DAY + timedelta(days=step)
        full = _runs(config, day, None)
        incremental = _runs(config, day, state)
        _assert_same(full, incremental)
        notes = _notes(incremental)
        if step == 0:
            assert any(
                "state built from all its rows (the first incremental run)" in n for n in notes
            )
        else:
            assert not [n for n in notes if "rebuilt" in n or "restated" in n], notes
        reads.append((_read(full, "engagement_daily"), _read(incremental, "engagement_daily")))
    # A full run reads every day again; an incremental one the new day (for the units whose
    # windows are open) and the new units' pre-periods: no more than on its first day with
    # results, and less once enrolment ends (2024-03-31 for three of the four).
    full_rows = [f for f, _ in reads if f]
    incremental_rows = [i for f, i in reads if f]
    assert len(full_rows) >= 6 and full_rows == sorted(full_rows)
    # Experiments without slices or quantiles keep the cells of complete assignment dates:
    # the last run computed only the dates still open (homepage_ranking_v2 has both).
    kept = {r.experiment_id: r.state.kept_cohorts for r in incremental if r.state is not None}
    assert not kept["homepage_ranking_v2"]
    assert len(kept["artwork_abc"]) >= 5
    assert max(incremental_rows) < 1.2 * incremental_rows[0]
    assert incremental_rows[-1] < full_rows[-1] / 8
    # The state holds each run's rows of the units still open (a piece a run) and one row
    # per unit whose range is over.
    store = StateStore(state, "homepage_ranking_v2")
    current = store.current()
    assert current is not None and current.as_of == FIRST_DAY + timedelta(days=DAYS - 1)
    assert "engagement_daily" in current.sources
    meta = current.sources["engagement_daily"]
    assert meta.scanned_through == current.as_of
    assert sorted(meta.counts) == [
        (current.as_of - timedelta(days=i)).isoformat() for i in (2, 1, 0)
    ]
    # Each assigned unit once: closed (its range is over) or, open, the marker row in the
    # piece of the run that first saw it.
    closed_through = meta.settle_through - timedelta(days=6)  # the window ends on day 6
    pieces = [str(p) for p in current.pieces("engagement_daily")]
    closed = [str(p) for p in current.closed("engagement_daily")]
    ((rows, units),) = duckdb.sql(
        f"SELECT COUNT(*), COUNT(DISTINCT unit_id) FROM ("
        f"SELECT unit_id FROM read_parquet({pieces}) WHERE xp_rows = 0 "
        f"AND assignment_date > DATE '{closed_through}' "
        f"UNION ALL SELECT unit_id FROM read_parquet({closed}))"
    ).fetchall()
    assert rows == units > 10_000
    assert len(closed) >= 5
    # A piece is dropped once all its units are closed: the runs of the last lookback and
    # window's days (3 + 6), and the first run's (its units' latest date is the last day's).
    assert 1 <= len(pieces) <= 3 + 6 + 1 < DAYS, [p.last_date for p in meta.pieces]


def _append_rows(sample: Path, sql: str) -> None:
    """Add rows to the sample's engagement table (rewritten in place, as a late load)."""
    path = sample / "engagement_daily.parquet"
    tmp = sample / "engagement_daily.new.parquet"
    duckdb.sql(f"COPY (SELECT * FROM '{path}' UNION ALL {sql}) TO '{tmp}' (FORMAT PARQUET)")
    tmp.replace(path)


LATE_ROWS = """
SELECT member_id, date, watch_seconds + 1000, sessions + 1, plays + 1, errors + 1
FROM '{path}' WHERE date = DATE '{day}' AND member_id % 7 = 0
"""


def test_late_rows_are_found_and_their_days_restated(sample_copy: Path, tmp_path: Path) -> None:
    config = sample_copy / "experiments.toml"
    state = tmp_path / "state"
    day = date(2024, 3, 26)
    _runs(config, day, state)
    late = day - timedelta(days=1)  # within the lookback of 3 days
    _append_rows(
        sample_copy,
        LATE_ROWS.format(path=sample_copy / "engagement_daily.parquet", day=late),
    )
    after = day + timedelta(days=1)
    incremental = _runs(config, after, state)
    assert any(f"late rows on {late}, restated" in n for n in _notes(incremental))
    _assert_same(_runs(config, after, None), incremental)


def test_late_rows_beyond_the_lookback_are_not_looked_for(
    sample_copy: Path, tmp_path: Path
) -> None:
    """The lookback is the contract: without it (0 days) a late day is not found, and the
    incremental result then differs from the full one, which is what restating prevents."""
    config = sample_copy / "experiments.toml"
    state = tmp_path / "state"
    day = date(2024, 3, 26)
    _runs(config, day, state, lookback=0)
    _append_rows(
        sample_copy,
        LATE_ROWS.format(
            path=sample_copy / "engagement_daily.parquet", day=day - timedelta(days=1)
        ),
    )
    after = day + timedelta(days=1)
    incremental = _runs(config, after, state, lookback=0)
    assert not [n for n in _notes(incremental) if "restated" in n]
    with pytest.raises(AssertionError):
        _assert_same(_runs(config, after, None), incremental)


def test_a_changed_window_or_version_rebuilds_the_state(
    sample_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = sample_copy / "experiments.toml"
    state = tmp_path / "state"
    experiments = ["artwork_abc"]
    day = date(2024, 3, 24)
    _runs(config, day, state, experiments=experiments)

    text = config.read_text()
    config.write_text(text.replace("window = [0, 6]", "window = [0, 4]"))
    day += timedelta(days=1)
    incremental = _runs(config, day, state, experiments=experiments)
    assert any("changed" in n and "rebuilt" in n for n in _notes(incremental))
    _assert_same(_runs(config, day, None, experiments=experiments), incremental)

    # The same configuration again: the state made under it is used.
    day += timedelta(days=1)
    assert not [
        n for n in _notes(_runs(config, day, state, experiments=experiments)) if "rebuilt" in n
    ]

    monkeypatch.setattr(runner_module, "__version__", "99.0")
    day += timedelta(days=1)
    incremental = _runs(config, day, state, experiments=experiments)
    assert any("rebuilt" in n for n in _notes(incremental))
    _assert_same(_runs(config, day, None, experiments=experiments), incremental)


def test_a_run_killed_before_it_is_published_leaves_the_previous_state(
    sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = sample_dir / "experiments.toml"
    state = tmp_path / "state"
    out = tmp_path / "out"
    experiments = ["player_srm"]
    day = date(2024, 3, 24)

    def run(day: date, state: Path | None = state, out: Path = out):
        loaded = load_config(config)
        return run_all(
            loaded,
            load_metrics(ROOT / "metrics"),
            experiments,
            out,
            as_of=day,
            run_date=day,
            state_dir=state,
            threads=1,
        )

    run(day)
    run(day, None, tmp_path / "full")  # the same looks, recomputed in full
    folder = StateStore(state, "player_srm").folder
    pointer = (folder / "current.json").read_text()
    before = StateStore(state, "player_srm").current()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_module, "write_run", killed)
    with pytest.raises(KeyboardInterrupt):
        run(day + timedelta(days=1))
    monkeypatch.undo()
    # The previous state is the one in use, whole; the new one was never committed.
    assert (folder / "current.json").read_text() == pointer
    folders = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert folders == sorted([before.version, "closed", "pieces"])
    after = StateStore(state, "player_srm").current()
    assert after is not None and after.as_of == day
    # The next run starts from it, and scans both days since.
    again = run(day + timedelta(days=2))
    _assert_same(run(day + timedelta(days=2), None, tmp_path / "full"), again)
    assert json.loads((folder / "current.json").read_text())["version"] != before.version


class _Engagement(Source):
    table = "engagement_daily"
    unit = "member_id"
    time = "date"


class ActiveDays(Metric):
    """Days with any row: COUNT(DISTINCT) has no partial results that combine."""

    source = _Engagement
    expression = "COUNT(DISTINCT date)"


class Sessions(Metric):
    source = _Engagement
    expression = "SUM(sessions)"


def test_a_source_whose_aggregates_do_not_combine_is_scanned_in_full() -> None:
    experiment = ExperimentConfig(
        id="x", control="control", weights={"control": 0.5, "treatment": 0.5}, metrics=["s"]
    )
    plan = plan_state(experiment, [Sessions])
    assert len(plan.sources) == 1 and not plan.full
    plan = plan_state(experiment, [Sessions, ActiveDays])
    assert not plan.sources
    (why,) = plan.full.values()
    assert why.startswith("active_days aggregates with COUNT(DISTINCT")
    assert "only SUM, COUNT, MIN and MAX do" in why


class PlayRows(Source):
    table = "plays"
    unit = "member_id"
    time = "date"


class PlayCount(Metric):
    source = PlayRows
    expression = "COUNT(*)"


def test_a_source_new_to_the_state_is_built_and_the_others_go_on(
    sample_dir: Path, tmp_path: Path
) -> None:
    """A metric on a source the state has not kept yet: that source is built from all its
    rows (said as built, not rebuilt), the kept source goes on from its state."""
    base = load_config(sample_dir / "experiments.toml")

    def only(metrics: list[str]):
        experiments = [
            e.model_copy(update={"metrics": metrics, "primary": [], "guardrails": []})
            for e in base.run.experiment
            if e.id == "homepage_ranking_v2"
        ]
        return base.model_copy(
            update={"run": base.run.model_copy(update={"experiment": experiments})}
        )

    registry = registry_of([Sessions, PlayCount])
    state, out = tmp_path / "state", tmp_path / "out"
    for step, metrics in enumerate((["sessions"], ["sessions", "play_count"])):
        config = only(metrics)
        day = date(2024, 3, 24) + timedelta(days=step)
        engine = engine_for(config, threads=1)
        try:
            options: dict = {"engine": engine, "as_of": day, "run_date": day}
            full = run_all(config, registry, ["homepage_ranking_v2"], None, **options)
            inc = run_all(
                config, registry, ["homepage_ranking_v2"], out, state_dir=state, **options
            )
        finally:
            engine.close()
        _assert_same(full, inc)
    notes = _notes(inc)
    # Only the new source starts from nothing: the sessions' source says nothing.
    assert notes == ["play_rows: state built from all its rows (not in the state yet)"], notes


def test_a_full_scan_source_still_gives_the_full_run_s_numbers(
    sample_dir: Path, tmp_path: Path
) -> None:
    config = load_config(sample_dir / "experiments.toml")
    config = config.model_copy(
        update={
            "run": config.run.model_copy(
                update={
                    "experiment": [
                        e.model_copy(
                            update={
                                "metrics": ["sessions", "active_days"],
                                "primary": [],
                                "guardrails": [],
                            }
                        )
                        for e in config.run.experiment
                        if e.id == "artwork_abc"
                    ]
                }
            )
        }
    )
    registry = registry_of([Sessions, ActiveDays])
    state = tmp_path / "state"
    for step in range(2):
        day = date(2024, 3, 24) + timedelta(days=step)
        engine = engine_for(config, threads=1)
        try:
            full = run_all(
                config, registry, ["artwork_abc"], None, engine=engine, as_of=day, run_date=day
            )
            inc = run_all(
                config,
                registry,
                ["artwork_abc"],
                None,
                engine=engine,
                as_of=day,
                run_date=day,
                state_dir=state,
            )
        finally:
            engine.close()
        assert any(
            "scanned in full (active_days aggregates with COUNT(DISTINCT" in n for n in _notes(inc)
        )
        _assert_same(full, inc)

    # Without the metric that does not combine, the source keeps state from the next run.
    only_sessions = config.model_copy(
        update={
            "run": config.run.model_copy(
                update={
                    "experiment": [
                        e.model_copy(update={"metrics": ["sessions"]})
                        for e in config.run.experiment
                    ]
                }
            )
        }
    )
    day = date(2024, 3, 26)
    engine = engine_for(only_sessions, threads=1)
    try:
        options: dict = {"engine": engine, "as_of": day, "run_date": day}
        full = run_all(only_sessions, registry, ["artwork_abc"], None, **options)
        inc = run_all(only_sessions, registry, ["artwork_abc"], None, state_dir=state, **options)
    finally:
        engine.close()
    assert any(
        "state built from all its rows (the first incremental run)" in n for n in _notes(inc)
    )
    _assert_same(full, inc)


def _run_cli(config: Path, out: Path, day: date, *extra: str):
    """``xpkit run`` of artwork_abc for one day, as a scheduled job runs it."""
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--config",
            str(config),
            "--out",
            str(out),
            "--experiment",
            "artwork_abc",
            "--as-of",
            day.isoformat(),
            "--run-date",
            day.isoformat(),
            *extra,
        ],
    )
    assert result.exit_code in (0, 3), result.output
    return result


def test_the_command_line_runs_incrementally(sample_dir: Path, tmp_path: Path) -> None:
    config = sample_dir / "experiments.toml"
    out, state = tmp_path / "out", tmp_path / "state"
    for day in (date(2024, 3, 24), date(2024, 3, 25)):
        result = _run_cli(config, out, day, "--incremental", "--state", str(state))
        # What the run recomputed in full, on stderr (the first run: everything).
        first = "artwork_abc: incremental: engagement_daily: state built from all its rows"
        assert (first in result.output) == (day == date(2024, 3, 24))
    current = StateStore(state, "artwork_abc").current()
    assert current is not None and current.as_of == date(2024, 3, 25)


def _run_json(config: Path, out: Path, day: date, *extra: str) -> dict:
    (run,) = json.loads(_run_cli(config, out, day, "--json", *extra).stdout)["runs"]
    return run


def _manifest(run: dict) -> dict:
    return json.loads(Path(run["files"][-1]).read_text())


def test_how_a_run_was_computed_is_in_its_manifest_and_json(
    sample_copy: Path, tmp_path: Path
) -> None:
    """An incremental run's manifest (and its --json entry, and show's) says which state it
    went on from, what it rebuilt or restated, and which dates' cells it kept; a full
    run's says null."""
    config = sample_copy / "experiments.toml"
    out, state = tmp_path / "out", tmp_path / "state"
    incremental = ("--incremental", "--state", str(state))
    day = date(2024, 3, 26)
    first = _run_json(config, out, day, *incremental)
    assert first["incremental"]["from_state_as_of"] is None
    assert any("state built from all its rows" in n for n in first["incremental"]["notes"])
    assert _manifest(first)["incremental"] == first["incremental"]

    late = day - timedelta(days=1)
    _append_rows(
        sample_copy, LATE_ROWS.format(path=sample_copy / "engagement_daily.parquet", day=late)
    )
    after = day + timedelta(days=1)
    second = _run_json(config, out, after, *incremental)
    how = second["incremental"]
    assert how["from_state_as_of"] == day.isoformat()
    assert how["restated_days"] == [late.isoformat()]
    assert any(f"late rows on {late}, restated" in n for n in how["notes"])
    # The dates whose cells were kept: complete before and untouched by the restated day.
    assert how["kept_assignment_dates"]
    assert all(d < (late - timedelta(days=6)).isoformat() for d in how["kept_assignment_dates"])
    assert _manifest(second)["incremental"] == how
    shown = CliRunner().invoke(
        main, ["show", str(out), "--experiment", "artwork_abc", "--run-date", str(after), "--json"]
    )
    assert shown.exit_code in (0, 3), shown.output
    assert json.loads(shown.stdout)["runs"][0]["incremental"] == how
    page = tmp_path / "report.html"
    made = CliRunner().invoke(main, ["report", str(out), "--out", str(page)])
    assert made.exit_code == 0, made.output
    assert (
        f"<dt>computed from</dt><dd>the incremental state as of {day} and the rows since; "
        f"engagement_daily: late rows on {late}, restated</dd>"
    ) in page.read_text()

    full = _run_json(config, tmp_path / "full", after)
    assert full["incremental"] is None and _manifest(full)["incremental"] is None
    made = CliRunner().invoke(main, ["report", str(tmp_path / "full"), "--out", str(page)])
    assert "<dt>computed from</dt><dd>all the rows (a full run)</dd>" in page.read_text()
    # A manifest from before xpkit recorded how: the report does not guess.
    path = Path(full["files"][-1])
    older = json.loads(path.read_text())
    del older["incremental"]
    path.write_text(json.dumps(older))
    made = CliRunner().invoke(main, ["report", str(tmp_path / "full"), "--out", str(page)])
    assert made.exit_code == 0, made.output
    assert "<dt>computed from</dt>" not in page.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--incremental"], "--incremental keeps per-unit state between runs: give it a folder"),
        (
            ["--state", "S"],
            "--state is the folder of an incremental run's state: add --incremental",
        ),
        (["--incremental", "--state", "OUT"], "is the --out folder; keep the state in a folder"),
        (["--incremental", "--state", "OUT/state"], "is inside the --out folder; keep the state"),
        (["--incremental", "--state", "TMP"], "holds the --out folder; keep the state in a"),
    ],
)
def test_incremental_options_are_checked(
    sample_dir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    named = {"OUT": out, "OUT/state": out / "state", "TMP": tmp_path, "S": tmp_path / "S"}
    args = [str(named.get(a, a)) for a in args]
    result = CliRunner().invoke(
        main, ["run", "--config", str(sample_dir / "experiments.toml"), "--out", str(out), *args]
    )
    assert result.exit_code == 2
    assert message in result.output


def test_the_config_names_the_state_folder(sample_copy: Path) -> None:
    config = sample_copy / "experiments.toml"
    config.write_text('state = "kept"\nrestatement_lookback = 5\n' + config.read_text())
    loaded = load_config(config)
    assert loaded.run.state == str(sample_copy / "kept")
    assert loaded.run.restatement_lookback == 5
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--config",
            str(config),
            "--out",
            str(sample_copy / "out"),
            "--experiment",
            "player_srm",
            "--incremental",
            "--quiet",
        ],
    )
    assert result.exit_code in (0, 3), result.output
    current = StateStore(sample_copy / "kept", "player_srm").current()
    assert current is not None
    meta = next(iter(current.sources.values()))
    assert (meta.scanned_through - meta.settle_through).days == 5


def test_a_negative_lookback_is_a_config_error(sample_copy: Path) -> None:
    config = sample_copy / "experiments.toml"
    config.write_text("restatement_lookback = -1\n" + config.read_text())
    result = CliRunner().invoke(
        main, ["run", "--config", str(config), "--out", str(sample_copy / "out")]
    )
    assert result.exit_code == 2
    assert "restatement_lookback" in result.output
    shutil.rmtree(sample_copy / "out", ignore_errors=True)


def _assign_again(sample: Path, first: date, replace: str) -> None:
    """Give a fifth of artwork_abc's units first assigned on ``first`` a second assignment
    row: a copy of their first with the columns ``replace`` names (``SELECT * REPLACE``)."""
    path = sample / "experiment_assignments.parquet"
    tmp = sample / "assignments.new.parquet"
    duckdb.sql(
        f"""
        COPY (
          SELECT * FROM '{path}'
          UNION ALL
          SELECT * REPLACE ({replace})
          FROM '{path}'
          WHERE experiment_id = 'artwork_abc'
            AND CAST(assignment_timestamp AS DATE) = DATE '{first}'
            AND member_id % 5 = 0
        ) TO '{tmp}' (FORMAT PARQUET)
        """
    )
    tmp.replace(path)


def test_a_unit_with_a_new_assignment_row_has_its_date_s_cells_computed_again(
    sample_copy: Path, tmp_path: Path
) -> None:
    """A unit assigned long ago that is assigned again (to another variant: it is now in
    several) changes its assignment date's cells, which the state then must not keep."""
    config = sample_copy / "experiments.toml"
    state = tmp_path / "state"
    experiments = ["artwork_abc"]
    day = date(2024, 3, 26)
    _runs(config, day, state, experiments=experiments)
    first = date(2024, 3, 16)
    again = day + timedelta(days=1)
    _assign_again(
        sample_copy,
        first,
        "CASE WHEN variant = 'control' THEN 'treatment_a' ELSE 'control' END AS variant, "
        f"TIMESTAMP '{again} 12:00:00' AS assignment_timestamp",
    )
    (incremental,) = _runs(config, again, state, experiments=experiments)
    assert incremental.state is not None
    assert first not in incremental.state.kept_cohorts
    assert first - timedelta(days=1) in incremental.state.kept_cohorts
    _assert_same(_runs(config, again, None, experiments=experiments), [incremental])


def test_a_kept_date_s_unit_with_later_assignment_rows_stays_in_its_own_date(
    sample_copy: Path, tmp_path: Path
) -> None:
    """The cells statement reads the assignment rows of the dates whose cells are not kept;
    a unit first assigned on a kept date with rows on a later one too (already seen, so its
    date is kept) must not turn up as a unit of that later date once the later date's
    window is complete (its cells are computed then, kept before)."""
    config = sample_copy / "experiments.toml"
    state = tmp_path / "state"
    experiments = ["artwork_abc"]
    first, later = date(2024, 3, 16), date(2024, 3, 22)
    _assign_again(sample_copy, first, f"TIMESTAMP '{later} 12:00:00' AS assignment_timestamp")
    _runs(config, date(2024, 3, 24), state, experiments=experiments)
    complete = later + timedelta(days=6)  # the window ends on day 6
    for day in (date(2024, 3, 25), date(2024, 3, 26), complete):
        (incremental,) = _runs(config, day, state, experiments=experiments)
        assert incremental.state is not None
        assert first in incremental.state.kept_cohorts
        assert (later in incremental.state.kept_cohorts) == (day < complete)
        _assert_same(_runs(config, day, None, experiments=experiments), [incremental])


def test_a_state_in_use_by_another_run_is_refused_with_its_holder(
    sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xpkit.incremental.store as store_module

    monkeypatch.setattr(store_module, "LOCK_WAIT", 0.2)
    state = tmp_path / "state"
    holder = StateStore(state, "player_srm")
    holder.lock()
    try:
        result = CliRunner().invoke(
            main,
            [
                "run",
                "--config",
                str(sample_dir / "experiments.toml"),
                "--out",
                str(tmp_path / "out"),
                "--experiment",
                "player_srm",
                "--incremental",
                "--state",
                str(state),
            ],
        )
    finally:
        holder.release()
    assert result.exit_code == 2, result.output
    assert "experiment 'player_srm': another incremental run is using its state" in result.output
    assert "give this run another --state folder" in result.output


def test_a_run_for_an_earlier_day_than_the_state_starts_again(
    sample_dir: Path, tmp_path: Path
) -> None:
    """A re-run of an earlier day (a backfill) cannot use a state that has seen later days:
    it rebuilds the state as of that day, and the next day goes on from it."""
    config = sample_dir / "experiments.toml"
    state = tmp_path / "state"
    experiments = ["artwork_abc"]
    _runs(config, date(2024, 3, 27), state, experiments=experiments)
    earlier = date(2024, 3, 24)
    incremental = _runs(config, earlier, state, experiments=experiments)
    notes = _notes(incremental)
    assert any("the state is as of 2024-03-27, after this run's 2024-03-24" in n for n in notes)
    assert not [n for n in notes if "assignment rows changed" in n], notes
    _assert_same(_runs(config, earlier, None, experiments=experiments), incremental)
    later = earlier + timedelta(days=1)
    incremental = _runs(config, later, state, experiments=experiments)
    assert not [n for n in _notes(incremental) if "rebuilt" in n]
    _assert_same(_runs(config, later, None, experiments=experiments), incremental)


def test_a_state_folder_that_cannot_be_made_is_a_message(sample_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--config",
            str(sample_dir / "experiments.toml"),
            "--out",
            str(tmp_path / "out"),
            "--experiment",
            "player_srm",
            "--incremental",
            "--state",
            str(blocker / "state"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "experiment 'player_srm': cannot keep its incremental state in" in result.output
    assert "give --state (or state in the config) a folder xpkit can create" in result.output


def _run_incremental(config: Path, out: Path, state: Path, *extra: str):
    return CliRunner().invoke(
        main,
        ["run", "--config", str(config), "--out", str(out), "--experiment", "player_srm"]
        + ["--as-of", "2024-03-25", "--incremental", "--state", str(state), *extra],
    )


def test_a_state_folder_holding_other_files_is_refused_and_left_alone(
    sample_dir: Path, tmp_path: Path
) -> None:
    """A run removes what its state no longer uses under an experiment's folder: pointed at
    a folder that already holds other things (here one named like the experiment), it
    stops before computing and deletes nothing."""
    project = tmp_path / "project"
    (project / "player_srm" / "notes").mkdir(parents=True)
    (project / "player_srm" / "notes" / "findings.md").write_text("keep me\n")
    (project / "analysis.ipynb").write_text("{}\n")
    before = sorted(str(p.relative_to(project)) for p in project.rglob("*"))
    result = _run_incremental(sample_dir / "experiments.toml", tmp_path / "out", project)
    assert result.exit_code == 2, result.output
    assert f"--state {project}: the folder already holds what xpkit did not write" in result.output
    assert "(analysis.ipynb, player_srm/)" in result.output
    assert "give --state (or state in the config) a new or empty folder" in result.output
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*")) == before
    assert not (tmp_path / "out" / "runs").exists()


def test_a_new_state_folder_is_marked_and_an_unmarked_earlier_state_is_taken(
    sample_dir: Path, tmp_path: Path
) -> None:
    """The first run marks the folder as xpkit's; a folder of experiment states without the
    mark (an earlier xpkit's) is taken as it is, and goes on from its state."""
    from xpkit.output.storage import STATE_MARKER as MARKER

    config = sample_dir / "experiments.toml"
    state = tmp_path / "state"
    state.mkdir()
    (state / ".DS_Store").write_text("")  # hidden files do not make a folder someone else's
    first = _run_incremental(config, tmp_path / "out", state)
    assert first.exit_code in (0, 3), first.output
    assert "removes what its state no longer uses" in (state / MARKER).read_text()
    shown = CliRunner().invoke(main, ["show", str(state)])  # the wrong folder, by mistake
    assert shown.exit_code == 2, shown.output
    assert "this is the --state folder of incremental runs: give the --out folder" in (shown.output)
    (state / MARKER).unlink()
    nxt = _run_incremental(config, tmp_path / "out", state, "--as-of", "2024-03-26")
    assert nxt.exit_code in (0, 3), nxt.output
    assert "state rebuilt" not in nxt.output
    assert (state / MARKER).exists()
    current = StateStore(state, "player_srm").current()
    assert current is not None and current.as_of == date(2024, 3, 26)


def test_a_state_folder_inside_a_table_is_refused(sample_copy: Path, tmp_path: Path) -> None:
    config = sample_copy / "experiments.toml"
    (sample_copy / "facts").mkdir()
    (sample_copy / "engagement_daily.parquet").rename(
        sample_copy / "facts" / "engagement_daily.parquet"
    )
    text = config.read_text().replace(
        'engagement_daily = "engagement_daily.parquet"', 'engagement_daily = "facts"'
    )
    config.write_text(text)
    state = sample_copy / "facts" / "state"
    result = _run_incremental(config, tmp_path / "out", state)
    assert result.exit_code == 2, result.output
    assert f"--state {state}: the folder is inside table 'engagement_daily'" in result.output
    assert "would read the state's Parquet files as data" in result.output
    assert not state.exists()


def test_delta_case_form_gives_the_filter_form_values() -> None:
    """The delta writes each windowed aggregate as AGG(CASE WHEN c THEN x END); on rows
    with NULLs, no rows in the window and whole groups outside it, every kept aggregate
    (SUM, COUNT(*), COUNT(x), COUNT_IF, MIN, MAX) equals AGG(x) FILTER (WHERE c)."""
    from sqlglot import parse_one

    from xpkit.compile.state import _case_form

    aggregates = [
        "SUM(x) FILTER (WHERE d BETWEEN 0 AND 2)",
        "COUNT(*) FILTER (WHERE d BETWEEN 0 AND 2)",
        "COUNT(x) FILTER (WHERE d < 0)",
        "COUNT_IF(x > 1) FILTER (WHERE d >= 1)",
        "MIN(x) FILTER (WHERE d BETWEEN 0 AND 2)",
        "MAX(CASE WHEN x > 0 THEN 1 ELSE 0 END) FILTER (WHERE d < 0)",
    ]
    rewritten = [_case_form(parse_one(a, read="duckdb")).sql("duckdb") for a in aggregates]
    assert not any("FILTER" in r for r in rewritten)
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES (1, -1, 2.5), (1, 0, NULL), (1, 2, 4.0),"
        " (2, 5, 1.0), (2, 6, NULL), (3, -3, NULL)) AS v(g, d, x)"
    )

    def values(columns: list[str]) -> list[tuple]:
        return con.execute(
            f"SELECT g, {', '.join(columns)} FROM t GROUP BY g ORDER BY g"
        ).fetchall()

    expected = values(aggregates)
    assert expected[1][1:] == (None, 0, 0, 0, None, None)  # a group outside every window
    assert values(rewritten) == expected


def test_a_unit_s_rows_on_a_kept_date_count_when_its_own_date_is_computed(
    sample_copy: Path, tmp_path: Path
) -> None:
    """A date whose window is not complete is kept until it is. A unit first assigned on a
    date whose cells are computed again, with rows on a later, kept date too: those rows
    are still its own (its assignment rows, variants and exposure)."""
    config = sample_copy / "experiments.toml"
    state = tmp_path / "state"
    experiments = ["artwork_abc"]
    first, later = date(2024, 3, 20), date(2024, 3, 21)
    _assign_again(
        sample_copy,
        first,
        "CASE WHEN variant = 'control' THEN 'treatment_a' ELSE 'control' END AS variant, "
        f"TIMESTAMP '{later} 12:00:00' AS assignment_timestamp",
    )
    _runs(config, date(2024, 3, 24), state, experiments=experiments)
    complete = first + timedelta(days=6)  # the window ends on day 6
    for day in (date(2024, 3, 25), complete):
        (incremental,) = _runs(config, day, state, experiments=experiments)
        assert incremental.state is not None
        assert (first in incremental.state.kept_cohorts) == (day < complete)
        assert later in incremental.state.kept_cohorts
        _assert_same(_runs(config, day, None, experiments=experiments), [incremental])


def _kept_state(config: Path, state: Path, day: date, experiments: list[str]):
    """One incremental run of ``experiments`` as of ``day``, and the state it kept."""
    _runs(config, day, state, experiments=experiments)
    current = StateStore(state, experiments[0]).current()
    assert current is not None
    return current


def test_a_state_in_another_format_is_rebuilt_and_the_note_says_why(
    sample_copy: Path, tmp_path: Path
) -> None:
    """A state kept by an xpkit whose state format differs (format 1 rewrote the open
    units every run) is not read: the run starts again from all the rows and says so."""
    config = sample_copy / "experiments.toml"
    state = tmp_path / "state"
    experiments = ["artwork_abc"]
    day = date(2024, 3, 24)
    current = _kept_state(config, state, day, experiments)
    meta_path = current.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format": 1}))
    store = StateStore(state, "artwork_abc")
    assert store.current() is None
    assert store.unusable == "the state in the folder is in format 1, this xpkit keeps format 2"
    later = day + timedelta(days=1)
    incremental = _runs(config, later, state, experiments=experiments)
    notes = _notes(incremental)
    assert any(
        "state rebuilt from all its rows (the state in the folder is in format 1" in n
        for n in notes
    ), notes
    _assert_same(_runs(config, later, None, experiments=experiments), incremental)
    assert StateStore(state, "artwork_abc").current() is not None  # the new one, format 2


@pytest.mark.parametrize("kind", ["piece", "cells"])
def test_a_state_file_cut_short_is_rebuilt_and_the_note_names_it(
    sample_dir: Path, tmp_path: Path, kind: str
) -> None:
    """A kept file that is not whole Parquet (a full disk, a copy interrupted) is not read:
    the run starts again from all the rows, names the file, and gives the full run's
    numbers."""
    config = sample_dir / "experiments.toml"
    state = tmp_path / "state"
    experiments = ["artwork_abc"]
    day = date(2024, 3, 24)
    current = _kept_state(config, state, day, experiments)
    piece = current.pieces("engagement_daily")[0] if kind == "piece" else current.cells
    piece.write_bytes(piece.read_bytes()[:200])
    later = day + timedelta(days=1)
    incremental = _runs(config, later, state, experiments=experiments)
    name = piece.relative_to(state / "artwork_abc")
    assert any(
        f"state rebuilt from all its rows (its file {name} is cut short or damaged" in n
        for n in _notes(incremental)
    ), _notes(incremental)
    _assert_same(_runs(config, later, None, experiments=experiments), incremental)


def test_a_spark_state_folder_is_whole_only_if_every_part_file_is(tmp_path: Path) -> None:
    """Spark keeps each state file as a folder of part files (and its _SUCCESS and .crc
    files, which are not Parquet): one part cut short makes the folder not whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from xpkit.incremental.store import _whole_parquet

    folder = tmp_path / "piece.parquet"
    folder.mkdir()
    for i in range(2):
        pq.write_table(pa.table({"unit_id": [i, i + 10]}), folder / f"part-0000{i}.snappy.parquet")
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-00000.snappy.parquet.crc").write_bytes(b"crc")
    assert _whole_parquet(folder)
    part = folder / "part-00001.snappy.parquet"
    part.write_bytes(part.read_bytes()[:-1])
    assert not _whole_parquet(folder)
    assert not _whole_parquet(tmp_path / "missing.parquet")


def test_a_run_before_the_first_assignment_keeps_an_empty_state_and_goes_on(
    sample_copy: Path, tmp_path: Path
) -> None:
    """As of a day before anyone is assigned there is no unit to keep: the run says what the
    full run says, and the next run starts from that empty state."""
    config = sample_copy / "experiments.toml"
    state = tmp_path / "state"
    experiments = ["artwork_abc"]
    for day in (date(2024, 2, 1), date(2024, 3, 20)):
        incremental = _runs(config, day, state, experiments=experiments)
        _assert_same(_runs(config, day, None, experiments=experiments), incremental)
    current = StateStore(state, "artwork_abc").current()
    assert current is not None and current.as_of == date(2024, 3, 20)
    assert current.pieces("engagement_daily")
