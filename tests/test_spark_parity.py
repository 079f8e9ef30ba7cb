"""The same statements on Spark and on DuckDB give the same numbers.

Spark adds up in a different order, so results agree to floating-point rounding, not bit
for bit: every comparison is at 1e-9 relative. Without PySpark or Java these tests are
skipped locally; in CI (``CI=true``) that is a failure, because CI is where they must run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pytest

from tests.test_compile import DATES, EXPERIMENT, METRICS, Daily, tiny  # noqa: F401
from xpkit import Metric
from xpkit.compile import compile_bounds, compile_moments
from xpkit.config import AssignmentColumns, LoadedConfig, load_config
from xpkit.define.registry import MetricRegistry, load_metrics
from xpkit.engines import Engine, open_engine
from xpkit.engines.duckdb import DuckDBEngine
from xpkit.errors import DataError
from xpkit.readout import MomentsTable, assignment_counts, read_cells, read_moments
from xpkit.runner import compile_experiment, run_experiment

pytestmark = [
    pytest.mark.spark,
    # PySpark's notice about pandas 3; xpkit takes results as Arrow, not through pandas.
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

RTOL = 1e-9
SAMPLE_EXPERIMENTS = ("homepage_ranking_v2", "artwork_abc", "player_srm", "search_exposure_bug")
# Provenance that differs by construction: the wall clock, and the hash of the SQL text
# (each engine runs the statement in its own dialect).
NOT_COMPARED = {"computed_at", "sql_sha256"}


class PooledCapSessions(Metric):
    """An integer metric capped at a pooled percentile: QUANTILE_CONT on Spark."""

    source = Daily
    expression = "SUM(sessions)"
    cap = "p75"
    covariate = "pre"


class FixedCapSessions(Metric):
    """An integer metric with a fractional cap: DECIMAL values on Spark."""

    source = Daily
    expression = "SUM(sessions)"
    cap = 2.5


class SessionsP75(Metric):
    """Unit-level quantile: the histogram of per-unit values, by bin key."""

    source = Daily
    expression = "SUM(sessions)"
    kind = "quantile"
    quantile = 0.75


class SessionRowsMedian(Metric):
    """Event-level quantile: window functions over (unit, bin) counts."""

    source = Daily
    value = "sessions * 1.5"
    kind = "quantile"
    quantile = 0.5


TINY_METRICS = [*METRICS, PooledCapSessions, FixedCapSessions, SessionsP75, SessionRowsMedian]


# --------------------------------------------------------------------------------------
# Comparison helpers.
# --------------------------------------------------------------------------------------
def _plain(value: object) -> object:
    return float(value) if isinstance(value, Decimal) else value


def assert_same_value(expected: object, actual: object, where: str) -> None:
    expected, actual = _plain(expected), _plain(actual)
    if isinstance(expected, float | int) and not isinstance(expected, bool):
        assert isinstance(actual, float | int) and not isinstance(actual, bool), where
        if math.isnan(expected):
            assert math.isnan(actual), f"{where}: {expected!r} != {actual!r}"
        else:
            assert actual == pytest.approx(expected, rel=RTOL, abs=0), where
    else:
        assert actual == expected, where


# Empirical-Bayes slice effects depend on the REML between-slice variance, which is
# ill-conditioned where the likelihood is flat: inputs equal to 1e-13 give tau^2 equal to
# about 1e-8 (measured on random inputs), so these columns are compared at 1e-6.
LOOSE = {"shrunk_abs_effect", "shrunk_abs_ci_low", "shrunk_abs_ci_high"}


def assert_same_table(
    expected: pa.Table, actual: pa.Table, *, ignore: Collection[str] = ()
) -> None:
    """Same columns, same rows in the same order, numbers equal to RTOL relative."""
    assert actual.column_names == expected.column_names
    assert actual.num_rows == expected.num_rows
    for i, (want, got) in enumerate(zip(expected.to_pylist(), actual.to_pylist(), strict=True)):
        for column in expected.column_names:
            if column in ignore:
                continue
            where = f"row {i}, column {column!r}"
            if column in LOOSE and want[column] is not None and got[column] is not None:
                assert got[column] == pytest.approx(want[column], rel=1e-6), where
            else:
                assert_same_value(want[column], got[column], where)


def assert_same_moments(expected: MomentsTable, actual: MomentsTable) -> None:
    """n, means and co-moments of every (population, variant, metric) cell."""
    assert actual.by_key.keys() == expected.by_key.keys()
    for key, want in expected.by_key.items():
        got = actual.by_key[key]
        assert got.n == want.n, key
        assert got.columns == want.columns, key
        np.testing.assert_allclose(got.mean, want.mean, rtol=RTOL, atol=0, err_msg=str(key))
        # A co-moment is a difference of sums of products and can be zero in exact
        # arithmetic (``exposed`` is constant 1 in the TOT population), leaving only rounding
        # noise; so each entry is judged against the sums of squares it was computed from,
        # sqrt(sum x_i^2 * sum x_j^2), not against itself.
        raw = np.diag(want.comoment) + want.n * want.mean**2
        scale = np.sqrt(np.outer(raw, raw))
        assert np.all(np.abs(got.comoment - want.comoment) <= RTOL * scale), key


# --------------------------------------------------------------------------------------
# (a) The hand-made tables of test_compile: every output column of every statement.
# --------------------------------------------------------------------------------------
@pytest.fixture()
def tiny_tables(tiny: DuckDBEngine, tmp_path: Path) -> Mapping[str, str]:  # noqa: F811
    # The `tiny` fixture wrote its Parquet files into this test's tmp_path.
    return {
        "experiment_assignments": str(tmp_path / "assignments.parquet"),
        "daily": str(tmp_path / "daily.parquet"),
    }


@pytest.fixture()
def tiny_spark(spark: Any, tiny_tables: Mapping[str, str]) -> Iterator[Engine]:
    # open_engine is the path a run takes; it finds the active session rather than
    # starting a second one.
    engine = open_engine("spark", tiny_tables)
    yield engine
    engine.close()


def test_tiny_moments_columns_match(tiny: DuckDBEngine, tiny_spark: Engine) -> None:  # noqa: F811
    statements = {
        dialect: compile_moments(
            EXPERIMENT, TINY_METRICS, AssignmentColumns(), DATES, dialect=dialect
        )
        for dialect in ("duckdb", "spark")
    }
    expected = tiny.query(statements["duckdb"].sql)
    actual = tiny_spark.query(statements["spark"].sql)
    # One row per cell: control 01-10 exposed, 01-11 not; treatment 01-10 exposed, 01-12
    # not, 01-13 exposed (window incomplete); the multi-variant unit on 01-10. Then the two
    # quantile metrics' histogram rows (cell x bin key).
    assert pa.compute.sum(pa.compute.is_null(expected.column("xp_part"))).as_py() == 6
    assert expected.num_rows > 6
    assert_same_table(expected, actual)
    layout = statements["duckdb"].layout
    assert layout is not None
    duck, sparked = (read_cells(t, layout) for t in (expected, actual))
    assert_same_moments(read_moments(duck, layout), read_moments(sparked, layout))
    assert assignment_counts(duck) == assignment_counts(sparked)


def test_tiny_bounds_match(tiny: DuckDBEngine, tiny_spark: Engine) -> None:  # noqa: F811
    statements = {
        d: compile_bounds(EXPERIMENT, TINY_METRICS, AssignmentColumns(), dialect=d).sql
        for d in ("duckdb", "spark")
    }
    expected = tiny.query(statements["duckdb"])
    actual = tiny_spark.query(statements["spark"])
    assert expected.num_rows == 1
    assert_same_table(expected, actual)


def test_missing_tables_and_columns_are_data_errors(
    spark: Any, tiny_tables: Mapping[str, str], tmp_path: Path
) -> None:
    from xpkit.engines.spark import SparkEngine

    with SparkEngine(tiny_tables, session=spark) as engine:
        assert engine.columns("daily") == ["member_id", "date", "watch", "sessions", "device"]
        assert engine.columns("no_such_table") is None
        with pytest.raises(DataError, match="no_such_table"):
            engine.query("SELECT * FROM no_such_table")
        with pytest.raises(DataError, match="wacth"):
            engine.query("SELECT SUM(wacth) FROM daily")
    with pytest.raises(DataError, match="table 'daily': cannot read"):
        SparkEngine({"daily": str(tmp_path / "missing" / "*.parquet")}, session=spark)


def test_a_session_of_its_own_writes_no_console_progress(spark: Any) -> None:
    """Started outside any session (``xpkit run --engine spark`` from a scheduler), the
    engine's own local session draws no progress bar into the job's log (PySpark's
    launcher turns it on)."""
    import subprocess
    import sys

    code = (
        "from xpkit.engines.spark import SparkEngine\n"
        "with SparkEngine({}) as engine:\n"
        "    print('progress=' + engine.spark.conf.get('spark.ui.showConsoleProgress'))\n"
    )
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "progress=false" in done.stdout.splitlines(), done.stdout


def test_a_session_it_was_handed_is_left_as_it_was(
    spark: Any, tiny_tables: Mapping[str, str]
) -> None:
    from xpkit.engines.spark import SparkEngine

    spark.conf.set("spark.sql.session.timeZone", "America/Los_Angeles")
    try:
        with SparkEngine(tiny_tables, session=spark):
            assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
            assert spark.catalog.tableExists("daily")
        assert spark.conf.get("spark.sql.session.timeZone") == "America/Los_Angeles"
        assert not spark.catalog.tableExists("daily")
        assert not spark.sparkContext._jsc.sc().isStopped()
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")


# --------------------------------------------------------------------------------------
# (b) The sample data: sufficient statistics and scorecards of the four experiments.
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample(sample_dir: Path) -> tuple[LoadedConfig, MetricRegistry]:
    config = load_config(sample_dir / "experiments.toml")
    return config, load_metrics()


class Remembering:
    """An engine that answers a statement it already ran from memory.

    The sample data do not change within this module, so the scorecard tests reuse the
    bounds and moments results of the sufficient-statistics tests instead of asking Spark
    again (about half of this module's Spark time).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self._results: dict[str, pa.Table] = {}

    def columns(self, table: str) -> list[str] | None:
        return self.engine.columns(table)

    def query(self, sql: str) -> pa.Table:
        if sql not in self._results:
            self._results[sql] = self.engine.query(sql)
        return self._results[sql]

    def close(self) -> None:
        self.engine.close()


@pytest.fixture(scope="module")
def engines(spark: Any, sample: tuple[LoadedConfig, MetricRegistry]) -> Iterator[Sequence[Engine]]:
    from xpkit.engines.spark import SparkEngine

    config, _ = sample
    pair = (
        Remembering(DuckDBEngine(config.run.tables)),
        Remembering(SparkEngine(config.run.tables, session=spark)),
    )
    yield pair
    for engine in pair:
        engine.close()


@pytest.mark.parametrize("experiment_id", SAMPLE_EXPERIMENTS)
def test_sample_sufficient_statistics_match(
    experiment_id: str,
    sample: tuple[LoadedConfig, MetricRegistry],
    engines: Sequence[Engine],
) -> None:
    config, registry = sample
    moments = []
    for engine in engines:
        # Dates are resolved on each engine too: the bounds statement is part of the parity.
        query = compile_experiment(config, registry, experiment_id, engine)
        assert query.layout is not None
        cells = read_cells(engine.query(query.sql), query.layout)
        moments.append((read_moments(cells, query.layout), assignment_counts(cells)))
    (duck, duck_counts), (sparked, spark_counts) = moments
    assert duck.by_key
    assert_same_moments(duck, sparked)
    assert duck_counts == spark_counts


@pytest.mark.parametrize("experiment_id", SAMPLE_EXPERIMENTS)
def test_sample_scorecards_match(
    experiment_id: str,
    sample: tuple[LoadedConfig, MetricRegistry],
    engines: Sequence[Engine],
) -> None:
    config, registry = sample
    # Slices (a one-way and a two-way breakdown, top values and "(other)") on one experiment.
    slices = ["device", "device*country"] if experiment_id == "homepage_ranking_v2" else None
    runs = [
        run_experiment(
            config,
            registry,
            experiment_id,
            engine,
            run_date=date(2024, 4, 5),
            history=True,
            slices=slices,
        )
        for engine in engines
    ]
    duck, sparked = runs
    assert duck.scorecard.num_rows > 0
    assert sparked.valid == duck.valid
    assert_same_table(duck.scorecard, sparked.scorecard, ignore=NOT_COMPARED)
    assert_same_table(duck.checks, sparked.checks)
    # The day-by-day statistics behind the always-valid results come from the same statement.
    assert duck.history is not None and sparked.history is not None
    assert_same_table(duck.history, sparked.history, ignore=NOT_COMPARED)


def test_config_engine_setting_runs_on_spark(spark: Any, sample_copy: Path) -> None:
    """``engine = "spark"`` in the config: columns and dates are read through Spark, and
    the SQL is printed in Spark's dialect unless --dialect says otherwise."""
    from click.testing import CliRunner

    from xpkit.cli import main

    config = sample_copy / "experiments.toml"
    config.write_text(config.read_text().replace("[tables]", 'engine = "spark"\n[tables]', 1))
    args = ["sql", "--config", str(config), "--experiment", "homepage_ranking_v2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "DATEDIFF(DAY, u.assignment_date" in result.output  # Spark's spelling
    assert "DATE_DIFF('DAY'" not in result.output


def test_incremental_runs_on_spark_give_the_full_run_s_numbers(
    spark: Any, sample: tuple[LoadedConfig, MetricRegistry], tmp_path: Path
) -> None:
    """The incremental state as Parquet folders written by Spark: three daily runs, each
    from the previous one's state, against DuckDB's full recompute of the same day."""
    from datetime import timedelta

    from xpkit.engines.spark import SparkEngine
    from xpkit.incremental import StateStore
    from xpkit.runner import run_all

    config, registry = sample
    experiments = ["artwork_abc"]
    state = tmp_path / "state"
    spark_engine = SparkEngine(config.run.tables, session=spark)
    duck = DuckDBEngine(config.run.tables)
    try:
        for step in range(3):
            day = date(2024, 3, 25) + timedelta(days=step)
            options: dict[str, Any] = {"as_of": day, "run_date": day, "history": True}
            (full,) = run_all(config, registry, experiments, None, engine=duck, **options)
            (incremental,) = run_all(
                config, registry, experiments, None, engine=spark_engine, state_dir=state, **options
            )
            assert incremental.state is not None
            notes = incremental.state.notes
            assert ("state built from all its rows" in " ".join(notes)) == (step == 0), notes
            ignore = NOT_COMPARED | {"rows_read", "sql"}
            assert_same_table(full.scorecard, incremental.scorecard, ignore=ignore)
            assert_same_table(full.checks, incremental.checks)
            assert full.history is not None and incremental.history is not None
            assert_same_table(full.history, incremental.history, ignore=ignore)
    finally:
        spark_engine.close()
        duck.close()
    current = StateStore(state, "artwork_abc").current()
    assert current is not None and current.as_of == date(2024, 3, 27)
    pieces = current.pieces("engagement_daily")
    assert pieces and all(p.is_dir() for p in pieces)  # Spark writes a folder of parts
