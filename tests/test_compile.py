"""The generated SQL: parses in every dialect, runs on DuckDB, and means what it says."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pytest
import sqlglot

from tests.conftest import write_parquet
from xpkit import Metric, Source
from xpkit.compile import (
    DIALECTS,
    ExperimentDates,
    check_columns,
    compile_bounds,
    compile_moments,
)
from xpkit.config import AssignmentColumns, ExperimentConfig
from xpkit.engines.duckdb import DuckDBEngine
from xpkit.errors import DataError, MetricDefinitionError
from xpkit.readout import assignment_counts, read_cells, read_history, read_moments


class Daily(Source):
    table = "daily"
    unit = "member_id"
    time = "date"


class Watch(Metric):
    source = Daily
    expression = "SUM(watch)"
    covariate = "pre"


class AnyWatch(Metric):
    source = Daily
    expression = "MAX(CASE WHEN watch > 0 THEN 1 ELSE 0 END)"
    kind = "proportion"


class WatchPerSession(Metric):
    source = Daily
    expression = "SUM(watch)"
    denominator = "SUM(sessions)"
    kind = "ratio"


class TvWatch(Metric):
    source = Daily
    expression = "SUM(watch)"
    filter = "device = 'tv'"


class CappedWatch(Metric):
    source = Daily
    expression = "SUM(watch)"
    cap = 25


METRICS = [Watch, AnyWatch, WatchPerSession, TvWatch, CappedWatch]
EXPERIMENT = ExperimentConfig(
    id='exp\'s "quoted" id',  # quotes must be escaped by sqlglot, not pasted
    control="control",
    weights={"control": 0.5, "treatment": 0.5},
    window=(0, 2),
    pre_window=(-3, -1),
    metrics=["watch"],
)
DATES = ExperimentDates(date(2024, 1, 10), date(2024, 1, 12), as_of=date(2024, 1, 14))


@pytest.fixture()
def tiny(tmp_path: Path) -> DuckDBEngine:
    """Hand-made rows whose per-unit values are known by construction.

    unit 1 control, assigned 01-10: post rows on 01-10 (10), 01-12 (20), 01-13 (outside
           window, 1000); pre row 01-08 (5)            -> watch 30, pre 5
    unit 2 control, assigned 01-11: no rows at all      -> watch 0 (kept, not dropped)
    unit 3 treatment, assigned 01-10 twice (duplicate): post 01-11 (40, tv) -> watch 40
    unit 4 treatment, assigned 01-12: window ends 01-14 = as_of -> complete; post 01-14 (7)
    unit 5 treatment, assigned 01-13: window ends 01-15 > as_of -> excluded (incomplete)
    unit 6 in both variants -> excluded from every metric, counted apart
    """
    con = duckdb.connect()
    write_parquet(
        con,
        """SELECT * FROM (VALUES
            ('exp''s "quoted" id', 1, 'control',   TIMESTAMP '2024-01-10 08:00', TRUE),
            ('exp''s "quoted" id', 2, 'control',   TIMESTAMP '2024-01-11 23:59', FALSE),
            ('exp''s "quoted" id', 3, 'treatment', TIMESTAMP '2024-01-10 01:00', TRUE),
            ('exp''s "quoted" id', 3, 'treatment', TIMESTAMP '2024-01-10 02:00', TRUE),
            ('exp''s "quoted" id', 4, 'treatment', TIMESTAMP '2024-01-12 12:00', FALSE),
            ('exp''s "quoted" id', 5, 'treatment', TIMESTAMP '2024-01-13 12:00', TRUE),
            ('exp''s "quoted" id', 6, 'control',   TIMESTAMP '2024-01-10 12:00', TRUE),
            ('exp''s "quoted" id', 6, 'treatment', TIMESTAMP '2024-01-10 13:00', TRUE),
            ('other', 1, 'treatment', TIMESTAMP '2024-01-10 08:00', TRUE)
        ) AS t(experiment_id, member_id, variant, assignment_timestamp, exposed_flag)""",
        tmp_path / "assignments.parquet",
    )
    write_parquet(
        con,
        """SELECT member_id::BIGINT AS member_id, date::DATE AS date, watch::DOUBLE AS watch,
                  sessions::INTEGER AS sessions, device FROM (VALUES
            (1, '2024-01-08', 5, 1, 'tv'),
            (1, '2024-01-10', 10, 1, 'web'),
            (1, '2024-01-12', 20, 2, 'web'),
            (1, '2024-01-13', 1000, 9, 'web'),
            (3, '2024-01-11', 40, 4, 'tv'),
            (4, '2024-01-14', 7, 1, 'web'),
            (5, '2024-01-13', 99, 1, 'web'),
            (6, '2024-01-10', 500, 5, 'web')
        ) AS t(member_id, date, watch, sessions, device)""",
        tmp_path / "daily.parquet",
    )
    return DuckDBEngine(
        {
            "experiment_assignments": str(tmp_path / "assignments.parquet"),
            "daily": str(tmp_path / "daily.parquet"),
        }
    )


def run(engine: DuckDBEngine, metrics=METRICS):
    query = compile_moments(EXPERIMENT, metrics, AssignmentColumns(), DATES)
    return read_moments(read_cells(engine.query(query.sql), query.layout), query.layout)


def test_window_semantics_on_hand_made_rows(tiny: DuckDBEngine) -> None:
    m = run(tiny)
    ctl = m.get("itt", "control", "watch")
    trt = m.get("itt", "treatment", "watch")
    # control: units 1 (30) and 2 (0); treatment: units 3 (40) and 4 (7); 5 and 6 excluded.
    assert ctl.n == 2 and trt.n == 2
    assert ctl.mean_of("watch__value") == pytest.approx(15.0)
    assert trt.mean_of("watch__value") == pytest.approx(23.5)
    assert ctl.mean_of("watch__pre") == pytest.approx(2.5)  # unit 1's pre row only
    assert ctl.mean_of("daily__has_history") == pytest.approx(0.5)
    assert m.get("itt", "control", "any_watch").mean_of("any_watch__value") == pytest.approx(0.5)
    # TOT keeps exposed units only: unit 1 (control), unit 3 (treatment).
    assert m.get("tot", "control", "watch").n == 1
    assert m.get("tot", "treatment", "watch").mean_of("watch__value") == pytest.approx(40.0)
    # Row filter and cap.
    assert m.get("itt", "treatment", "tv_watch").mean_of("tv_watch__value") == pytest.approx(20.0)
    assert m.get("itt", "control", "capped_watch").mean_of("capped_watch__value") == pytest.approx(
        12.5
    )
    # Ratio columns: sessions in window, unit 1: 3; unit 2: 0.
    assert m.get("itt", "control", "watch_per_session").mean_of(
        "watch_per_session__denominator"
    ) == pytest.approx(1.5)


def test_second_moments_match_numpy_on_the_units(tiny: DuckDBEngine) -> None:
    trt = run(tiny).get("itt", "treatment", "watch")
    values = np.array([[40.0, 0.0, 0.0, 1.0], [7.0, 0.0, 0.0, 0.0]])
    assert trt.columns == ("watch__value", "watch__pre", "daily__has_history", "exposed")
    np.testing.assert_allclose(trt.cov(), np.cov(values.T), rtol=1e-12, atol=1e-12)


def test_assignment_health_counts(tiny: DuckDBEngine) -> None:
    # The same statement as the moments: its cells add up to the counts per variant bucket.
    query = compile_moments(EXPERIMENT, METRICS, AssignmentColumns(), DATES)
    counts = assignment_counts(read_cells(tiny.query(query.sql), query.layout))
    rows = {r.variant: r for r in counts}
    assert set(rows) == {"control", "treatment", None}  # None: units in several variants
    control, treatment, multi = rows["control"], rows["treatment"], rows[None]
    assert (control.n_units, control.n_rows, control.n_exposed) == (2, 2, 1)
    assert control.n_complete == 2
    assert (treatment.n_units, treatment.n_rows, treatment.n_duplicate_rows) == (3, 4, 1)
    assert (treatment.n_exposed, treatment.n_complete) == (2, 2)  # units 3, 5; 3, 4
    assert treatment.first_assignment_date == date(2024, 1, 10)
    assert treatment.last_assignment_date == date(2024, 1, 13)
    assert (multi.n_units, multi.n_rows, multi.n_exposed) == (1, 2, 1)


def test_bounds(tiny: DuckDBEngine) -> None:
    sql = compile_bounds(EXPERIMENT, METRICS, AssignmentColumns()).sql
    row = tiny.query(sql).to_pylist()[0]
    assert row["first_assignment_date"] == date(2024, 1, 10)
    assert row["last_assignment_date"] == date(2024, 1, 13)
    assert row["last_date__daily"] == date(2024, 1, 14)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_parses_back(dialect: str) -> None:
    sql = compile_moments(EXPERIMENT, METRICS, AssignmentColumns(), DATES, dialect=dialect).sql
    tree = sqlglot.parse_one(sql, read=dialect)
    assert tree.find(sqlglot.exp.Select) is not None
    # The experiment id is one string literal in every dialect, never pasted as SQL: parsed
    # back, the statement holds a literal equal to the id, character for character.
    literals = [lit.this for lit in tree.find_all(sqlglot.exp.Literal) if lit.is_string]
    assert EXPERIMENT.id in literals


def test_one_scan_per_source() -> None:
    sql = compile_moments(EXPERIMENT, METRICS, AssignmentColumns(), DATES).sql
    tree = sqlglot.parse_one(sql, read="duckdb")
    scans = [t for t in tree.find_all(sqlglot.exp.Table) if t.name == "daily"]
    assert len(scans) == 1
    # The assignment counts for SRM and the health checks come from the same statement.
    reads = [t for t in tree.find_all(sqlglot.exp.Table) if t.name == "experiment_assignments"]
    assert len(reads) == 1


def test_metrics_needing_the_same_per_unit_column_share_it(tiny: DuckDBEngine) -> None:
    # Watch's value and WatchPerSession's numerator are both SUM(watch) over the window:
    # one column, aggregated and multiplied once. CappedWatch is SUM(watch) too, but capped,
    # and TvWatch is filtered: those stay apart.
    query = compile_moments(EXPERIMENT, METRICS, AssignmentColumns(), DATES)
    layout = query.layout
    assert layout.metrics["watch_per_session"].value == layout.metrics["watch"].value
    assert layout.metrics["capped_watch"].value != layout.metrics["watch"].value
    assert layout.metrics["tv_watch"].value != layout.metrics["watch"].value
    assert len(layout.columns) == len(set(layout.columns))
    m = read_moments(read_cells(tiny.query(query.sql), query.layout), layout)
    ratio = m.get("itt", "treatment", "watch_per_session")
    assert ratio.mean_of(layout.metrics["watch_per_session"].value) == pytest.approx(23.5)
    assert ratio.mean_of("watch_per_session__denominator") == pytest.approx(2.5)


def test_large_mean_small_spread_keeps_variance_precise(tmp_path: Path) -> None:
    """Values around 1e9 with sd 1: raw sums of squares would lose every digit."""
    rng = np.random.default_rng(3)
    n = 20_000
    values = 1e9 + rng.normal(size=n)
    con = duckdb.connect()
    con.register("v", {"member_id": np.arange(n), "watch": values})
    write_parquet(
        con,
        "SELECT member_id::BIGINT AS member_id, DATE '2024-01-10' AS date, watch, "
        "1 AS sessions, 'tv' AS device FROM v",
        tmp_path / "daily.parquet",
    )
    write_parquet(
        con,
        "SELECT 'exp''s \"quoted\" id' AS experiment_id, member_id::BIGINT AS member_id, "
        "CASE WHEN member_id % 2 = 0 THEN 'control' ELSE 'treatment' END AS variant, "
        "TIMESTAMP '2024-01-10 00:00' AS assignment_timestamp, TRUE AS exposed_flag FROM v",
        tmp_path / "a.parquet",
    )
    engine = DuckDBEngine(
        {
            "experiment_assignments": str(tmp_path / "a.parquet"),
            "daily": str(tmp_path / "daily.parquet"),
        }
    )
    m = run(engine, [Watch])
    for variant, rows in (("control", values[0::2]), ("treatment", values[1::2])):
        got = m.get("itt", variant, "watch")
        assert got.var_of("watch__value") == pytest.approx(np.var(rows, ddof=1), rel=1e-9)
        assert got.mean_of("watch__value") == pytest.approx(np.mean(rows), rel=1e-15)


def test_unknown_column_is_named_with_the_metric() -> None:
    class Typo(Metric):
        source = Daily
        expression = "SUM(wacth)"

    schemas = {
        "experiment_assignments": [
            "experiment_id",
            "member_id",
            "variant",
            "assignment_timestamp",
            "exposed_flag",
        ],
        "daily": ["member_id", "date", "watch", "sessions", "device"],
    }
    with pytest.raises(
        DataError,
        match=r"metric 'typo': column 'wacth' does not exist in table 'daily'; did you mean 'watch'",
    ):
        check_columns([Typo], AssignmentColumns(), schemas)
    with pytest.raises(DataError, match="table 'daily' is not configured"):
        check_columns(
            [Watch],
            AssignmentColumns(),
            {"experiment_assignments": schemas["experiment_assignments"]},
        )


def test_history_comes_from_the_same_cells_and_its_last_day_equals_the_run(
    tiny: DuckDBEngine,
) -> None:
    query = compile_moments(EXPERIMENT, METRICS, AssignmentColumns(), DATES)
    history = read_history(read_cells(tiny.query(query.sql), query.layout), query.layout)
    # Windows complete on 01-12 (units 1, 3), 01-13 (unit 2) and 01-14 (unit 4).
    assert list(history) == [date(2024, 1, 12), date(2024, 1, 13), date(2024, 1, 14)]
    assert history[date(2024, 1, 12)].get("itt", "control", "watch").n == 1
    assert history[date(2024, 1, 13)].get("itt", "control", "watch").n == 2
    # Treatment has no new unit on 01-13: its running total carries over.
    assert history[date(2024, 1, 13)].get("itt", "treatment", "watch").n == 1
    final = run(tiny)
    last = history[date(2024, 1, 14)]
    for key, cell in final.by_key.items():
        other = last.by_key[key]
        assert other.n == cell.n
        np.testing.assert_allclose(other.mean, cell.mean, rtol=1e-12)
        np.testing.assert_allclose(other.comoment, cell.comoment, rtol=1e-9, atol=1e-9)


class PooledCapWatch(Metric):
    source = Daily
    expression = "SUM(watch)"
    cap = "p99"


@pytest.mark.parametrize("dialect", ["bigquery", "trino"])
def test_percentile_caps_are_refused_where_no_exact_percentile_exists(dialect: str) -> None:
    with pytest.raises(MetricDefinitionError, match=rf"\['pooled_cap_watch'\].*{dialect}"):
        compile_moments(EXPERIMENT, [PooledCapWatch], AssignmentColumns(), DATES, dialect=dialect)


@pytest.mark.parametrize("dialect", ["duckdb", "spark", "snowflake", "postgres"])
def test_percentile_caps_print_an_exact_percentile(dialect: str) -> None:
    sql = compile_moments(
        EXPERIMENT, [PooledCapWatch], AssignmentColumns(), DATES, dialect=dialect
    ).sql
    tree = sqlglot.parse_one(sql, read=dialect)
    assert tree.find(sqlglot.exp.PercentileCont, sqlglot.exp.Quantile) is not None


def test_a_null_variant_is_a_data_error_naming_it(tiny: DuckDBEngine, tmp_path: Path) -> None:
    # A unit whose assignment rows carry no variant cannot be counted for SRM or analysed:
    # the run stops with a message instead of filing it under a variant called "None".
    con = duckdb.connect()
    path = write_parquet(
        con,
        """SELECT * FROM (VALUES
            ('exp''s "quoted" id', 1, 'control', TIMESTAMP '2024-01-10 08:00', TRUE),
            ('exp''s "quoted" id', 2, NULL, TIMESTAMP '2024-01-10 09:00', TRUE)
        ) AS t(experiment_id, member_id, variant, assignment_timestamp, exposed_flag)""",
        tmp_path / "null_variant.parquet",
    )
    engine = DuckDBEngine(
        {"experiment_assignments": str(path), "daily": str(tmp_path / "daily.parquet")}
    )
    query = compile_moments(EXPERIMENT, METRICS, AssignmentColumns(), DATES)
    with pytest.raises(DataError, match="the assignment table has rows with a NULL variant"):
        read_cells(engine.query(query.sql), query.layout)


def test_without_an_exposure_column_only_itt_is_read(tiny: DuckDBEngine) -> None:
    query = compile_moments(EXPERIMENT, METRICS, AssignmentColumns(exposed=None), DATES)
    cells = read_cells(tiny.query(query.sql), query.layout)
    moments = read_moments(cells, query.layout)
    assert {key.population for key in moments.by_key} == {"itt"}
    watch = moments.get("itt", "control", "watch")
    assert watch.n == 2 and watch.mean_of("watch__value") == pytest.approx(15.0)
    assert "exposed" not in watch.columns
    counts = {r.variant: r for r in assignment_counts(cells)}
    assert counts["treatment"].n_units == 3
    assert all(r.n_exposed == 0 for r in counts.values())
