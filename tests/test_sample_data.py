"""Tests for the sample-data generator: shape, determinism, the designed defects, and the
true effects in the manifest checked against independent SQL over the generated tables
(the quantile truths of the plays table against quantiles of its potential outcomes)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats
from xpkit.sample_data import generate as gen_module
from xpkit.sample_data.generate import Manifest, generate

from xpkit.stats.quantile_bins import EventHistogram
from xpkit.stats.quantiles import quantile_clustered

DEFAULT_MEMBERS = 40_000
METRICS = ("watch_seconds", "sessions", "plays", "errors")
DATA_END = date(2024, 4, 4)
HOMEPAGE = "homepage_ranking_v2"
LATENCY_QUANTILES = ("0.5", "0.9", "0.95")


@dataclass(frozen=True)
class Generated:
    out: Path
    manifest: Manifest


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    out = tmp_path_factory.mktemp("sample")
    return Generated(out, generate(out))


@pytest.fixture(scope="module")
def con(sample: Generated) -> duckdb.DuckDBPyConnection:
    db = duckdb.connect()
    db.execute(
        f"CREATE VIEW a AS SELECT * FROM read_parquet('{sample.out / 'experiment_assignments.parquet'}')"
    )
    db.execute(
        f"CREATE VIEW e AS SELECT * FROM read_parquet('{sample.out / 'engagement_daily.parquet'}')"
    )
    db.execute(f"CREATE VIEW p AS SELECT * FROM read_parquet('{sample.out / 'plays.parquet'}')")
    # One row per unit the way xpkit analyses it: earliest assignment, variants counted.
    db.execute(
        """
        CREATE VIEW units AS
        SELECT experiment_id, member_id,
               MIN(assignment_timestamp)::DATE AS d0,
               COUNT(DISTINCT variant) AS n_variants,
               ARG_MIN(variant, assignment_timestamp) AS variant,
               ARG_MIN(exposed_flag, assignment_timestamp) AS exposed,
               ARG_MIN(device, assignment_timestamp) AS device,
               ARG_MIN(country, assignment_timestamp) AS country
        FROM a GROUP BY experiment_id, member_id
        """
    )
    return db


def _window_sums(con: duckdb.DuckDBPyConnection, experiment: str) -> str:
    """SQL for per-unit 7-day window sums (post) and 14-day pre-period sums (pre)."""
    post = ", ".join(
        f"COALESCE(SUM(e.{m}) FILTER (WHERE e.date >= u.d0), 0)::DOUBLE AS {m}" for m in METRICS
    )
    pre = ", ".join(
        f"COALESCE(SUM(e.{m}) FILTER (WHERE e.date < u.d0), 0)::DOUBLE AS pre_{m}" for m in METRICS
    )
    return f"""
        SELECT u.member_id, u.variant, u.exposed, u.device, u.country, {post}, {pre}
        FROM units u
        LEFT JOIN e ON e.member_id = u.member_id
            AND e.date BETWEEN u.d0 - INTERVAL 14 DAY AND u.d0 + INTERVAL 6 DAY
        WHERE u.experiment_id = '{experiment}' AND u.n_variants = 1
            AND u.d0 + INTERVAL 6 DAY <= DATE '{DATA_END}'
        GROUP BY u.member_id, u.variant, u.exposed, u.device, u.country
    """


# --- shape ------------------------------------------------------------------------------
def test_schema_is_exact(sample: Generated, con: duckdb.DuckDBPyConnection) -> None:
    assignments = pq.read_schema(sample.out / "experiment_assignments.parquet")
    assert [(f.name, f.type) for f in assignments] == [
        ("experiment_id", pa.string()),
        ("member_id", pa.int64()),
        ("variant", pa.string()),
        ("assignment_timestamp", pa.timestamp("us")),
        ("exposed_flag", pa.bool_()),
        ("country", pa.string()),
        ("device", pa.string()),
    ]
    daily = pq.read_schema(sample.out / "engagement_daily.parquet")
    assert [(f.name, f.type) for f in daily] == [
        ("member_id", pa.int64()),
        ("date", pa.date32()),
        ("watch_seconds", pa.float64()),
        ("sessions", pa.int32()),
        ("plays", pa.int32()),
        ("errors", pa.int32()),
    ]
    sql_types = {
        view: [(r[0], r[1]) for r in con.execute(f"DESCRIBE {view}").fetchall()]
        for view in ("a", "e")
    }
    assert sql_types["a"] == [
        ("experiment_id", "VARCHAR"),
        ("member_id", "BIGINT"),
        ("variant", "VARCHAR"),
        ("assignment_timestamp", "TIMESTAMP"),
        ("exposed_flag", "BOOLEAN"),
        ("country", "VARCHAR"),
        ("device", "VARCHAR"),
    ]
    assert sql_types["e"] == [
        ("member_id", "BIGINT"),
        ("date", "DATE"),
        ("watch_seconds", "DOUBLE"),
        ("sessions", "INTEGER"),
        ("plays", "INTEGER"),
        ("errors", "INTEGER"),
    ]
    nulls = con.execute(
        "SELECT COUNT(*) FROM e WHERE watch_seconds IS NULL OR sessions IS NULL OR errors IS NULL"
    ).fetchone()
    assert nulls == (0,)
    labels = con.execute(
        "SELECT LIST(DISTINCT country ORDER BY country), LIST(DISTINCT device ORDER BY device) FROM a"
    ).fetchone()
    assert labels == (["BR", "DE", "IN", "JP", "US"], ["mobile", "tv", "web"])


def test_daily_values_are_plausible(con: duckdb.DuckDBPyConnection) -> None:
    activity, min_watch, min_sessions, plays_per_session, error_rate = con.execute(
        """
        SELECT COUNT(*) / (COUNT(DISTINCT member_id) * 35.0), MIN(watch_seconds),
               MIN(sessions), SUM(plays) / SUM(sessions), SUM(errors) / SUM(plays)
        FROM e
        """
    ).fetchone()
    assert 0.55 < activity < 0.65  # about 60% of member-days have a row
    assert min_watch > 0 and min_sessions >= 1
    assert 1.3 < plays_per_session < 1.6
    assert 0.005 < error_rate < 0.02


def test_daily_sorted_by_date_with_narrow_row_groups(tmp_path: Path) -> None:
    generate(tmp_path, members=3_000, seed=1, row_group_size=5_000)
    path = tmp_path / "engagement_daily.parquet"
    table = pq.read_table(path, columns=["date", "member_id"])
    days = table.column("date").to_numpy().astype("datetime64[D]").astype(np.int64)
    ids = table.column("member_id").to_numpy()
    later = (days[1:] > days[:-1]) | ((days[1:] == days[:-1]) & (ids[1:] > ids[:-1]))
    assert later.all()  # strictly increasing (date, member_id): sorted, one row per member-day
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups > 5
    date_col = meta.schema.names.index("date")
    ranges = [
        (meta.row_group(i).column(date_col).statistics.min,
         meta.row_group(i).column(date_col).statistics.max)
        for i in range(meta.num_row_groups)
    ]  # fmt: skip
    # Consecutive row groups overlap on at most one boundary date: a filter on a date range
    # can skip every other group by its statistics.
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:], strict=False))
    assert all(meta.row_group(i).num_rows == 5_000 for i in range(meta.num_row_groups - 1))


# --- determinism ------------------------------------------------------------------------
def _tables(out: Path) -> tuple[pa.Table, pa.Table]:
    return (
        pq.read_table(out / "experiment_assignments.parquet"),
        pq.read_table(out / "engagement_daily.parquet"),
    )


def _plays(out: Path) -> pa.Table:
    return pq.read_table(out / "plays.parquet")


def test_same_seed_same_data_and_row_group_size_is_layout_only(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", members=2_000, seed=11)
    second = generate(tmp_path / "b", members=2_000, seed=11, row_group_size=777)
    other = generate(tmp_path / "c", members=2_000, seed=12)
    a, b, c = _tables(tmp_path / "a"), _tables(tmp_path / "b"), _tables(tmp_path / "c")
    assert a[0].equals(b[0]) and a[1].equals(b[1])
    assert _plays(tmp_path / "a").equals(_plays(tmp_path / "b"))
    assert first.to_dict() == second.to_dict()
    assert not a[0].equals(c[0]) and not a[1].equals(c[1])
    assert not _plays(tmp_path / "a").equals(_plays(tmp_path / "c"))
    assert first.to_dict() != other.to_dict()


def test_several_member_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen_module, "MEMBER_BLOCK", 700)
    manifest = generate(tmp_path / "a", members=2_500, seed=3, row_group_size=10_000)
    generate(tmp_path / "b", members=2_500, seed=3, row_group_size=3_000)
    assignments, daily = _tables(tmp_path / "a")
    assert assignments.equals(_tables(tmp_path / "b")[0])
    assert daily.equals(_tables(tmp_path / "b")[1])
    assert _plays(tmp_path / "a").equals(_plays(tmp_path / "b"))
    # Play rows of members in later blocks still match their daily plays.
    assert _plays_mismatches(tmp_path / "a") == (0, manifest.files["plays"]["rows"])
    assert pq.read_metadata(tmp_path / "a" / "plays.parquet").num_row_groups > 1
    ids = np.unique(daily.column("member_id").to_numpy())
    assert ids.min() >= 1 and ids.max() <= 2_500
    assigned = np.unique(assignments.column("member_id").to_numpy())
    lost = sum(e.counts["lost_assignment_rows"] for e in manifest.experiments)
    assert len(assigned) == 2_500 - lost
    days = daily.column("date").to_numpy()
    assert np.all(np.diff(days.astype("datetime64[D]").astype(np.int64)) >= 0)


# --- population and assignment ----------------------------------------------------------
def test_each_member_in_one_experiment(sample: Generated, con: duckdb.DuckDBPyConnection) -> None:
    n_experiments, members, lost_members = con.execute(
        f"""
        SELECT MAX(n), COUNT(*), {DEFAULT_MEMBERS} - COUNT(*)
        FROM (SELECT member_id, COUNT(DISTINCT experiment_id) AS n FROM a GROUP BY member_id)
        """
    ).fetchone()
    assert n_experiments == 1
    manifest = sample.manifest
    assert lost_members == manifest.experiment("player_srm").counts["lost_assignment_rows"]
    assert con.execute("SELECT MIN(member_id), MAX(member_id) FROM e").fetchone() == (
        1,
        DEFAULT_MEMBERS,
    )


def test_multi_variant_units_and_duplicate_rows(
    sample: Generated, con: duckdb.DuckDBPyConnection
) -> None:
    by_experiment = {
        row[0]: row[1:]
        for row in con.execute(
            """
            SELECT experiment_id,
                   COUNT(DISTINCT member_id),
                   COUNT(DISTINCT member_id) FILTER (WHERE n_variants > 1),
                   SUM(rows - 1) FILTER (WHERE n_variants = 1)
            FROM (
                SELECT experiment_id, member_id, COUNT(*) AS rows,
                       COUNT(DISTINCT variant) AS n_variants
                FROM a GROUP BY experiment_id, member_id
            ) GROUP BY experiment_id
            """
        ).fetchall()
    }
    units, multi, duplicates = by_experiment["homepage_ranking_v2"]
    counts = sample.manifest.experiment("homepage_ranking_v2").counts
    assert multi == counts["multi_variant_units"]
    assert duplicates == counts["duplicate_rows"]
    assert 0.0005 < multi / units < 0.005  # about 0.2%, well under 1%
    assert 0.0002 < duplicates / units < 0.003  # about 0.1%
    for experiment in ("artwork_abc", "player_srm", "search_exposure_bug"):
        assert by_experiment[experiment][1:] == (0, 0)
    # Duplicates are exact apart from a later timestamp, so deduplicating on the member and
    # keeping the earliest row changes nothing else.
    changed = con.execute(
        """
        SELECT COUNT(*) FROM a JOIN units u USING (experiment_id, member_id)
        WHERE u.n_variants = 1 AND (a.variant <> u.variant OR a.exposed_flag <> u.exposed
              OR a.assignment_timestamp::DATE < u.d0)
        """
    ).fetchone()
    assert changed == (0,)


def test_pre_period_exists_before_every_assignment(
    sample: Generated, con: duckdb.DuckDBPyConnection
) -> None:
    first_day, last_day, n_days = con.execute(
        "SELECT MIN(date), MAX(date), COUNT(DISTINCT date) FROM e"
    ).fetchone()
    assert (first_day, last_day, n_days) == (date(2024, 3, 1), DATA_END, 35)
    earliest, latest = con.execute("SELECT MIN(d0), MAX(d0) FROM units").fetchone()
    assert (earliest - first_day).days >= 14
    assert str(earliest) == sample.manifest.dates["enrolment_start"]
    assert str(latest) == sample.manifest.dates["enrolment_end"]
    assert sample.manifest.dates["last_complete_assignment_date"] == "2024-03-29"
    incomplete = con.execute(
        f"SELECT AVG((d0 + INTERVAL 6 DAY > DATE '{DATA_END}')::INT) FROM units"
    ).fetchone()[0]
    assert 0.08 < incomplete < 0.2  # a realistic minority is still mid-window


def _split_p_value(con: duckdb.DuckDBPyConnection, manifest: Manifest, experiment: str) -> float:
    spec = manifest.experiment(experiment)
    counts = dict(
        con.execute(
            "SELECT variant, COUNT(*) FROM units WHERE experiment_id = ? AND n_variants = 1 "
            "GROUP BY variant",
            [experiment],
        ).fetchall()
    )
    observed = np.array([counts.get(v, 0) for v in spec.variants], dtype=float)
    expected = observed.sum() * np.array(spec.weights) / sum(spec.weights)
    return float(stats.chisquare(observed, expected).pvalue)


@pytest.mark.parametrize(
    "experiment", ["homepage_ranking_v2", "artwork_abc", "search_exposure_bug"]
)
def test_split_matches_weights(
    sample: Generated, con: duckdb.DuckDBPyConnection, experiment: str
) -> None:
    assert _split_p_value(con, sample.manifest, experiment) > 0.001


def test_player_srm_has_a_sample_ratio_mismatch(
    sample: Generated, con: duckdb.DuckDBPyConnection
) -> None:
    assert _split_p_value(con, sample.manifest, "player_srm") < 0.001
    counts = sample.manifest.experiment("player_srm").counts
    lost_share = counts["lost_assignment_rows"] / (counts["units_enrolled"] / 2)
    assert 0.1 < lost_share < 0.2


# --- exposure ---------------------------------------------------------------------------
def test_exposure_follows_engagement(con: duckdb.DuckDBPyConnection) -> None:
    exposed, unexposed, share = con.execute(
        """
        WITH pre AS (
            SELECT u.member_id, u.exposed, COALESCE(SUM(e.watch_seconds), 0) AS watch
            FROM units u LEFT JOIN e ON e.member_id = u.member_id
                AND e.date BETWEEN u.d0 - INTERVAL 14 DAY AND u.d0 - INTERVAL 1 DAY
            WHERE u.experiment_id <> 'search_exposure_bug'
            GROUP BY u.member_id, u.exposed
        )
        SELECT AVG(watch) FILTER (WHERE exposed), AVG(watch) FILTER (WHERE NOT exposed),
               AVG(exposed::INT)
        FROM pre
        """
    ).fetchone()
    assert exposed > 1.5 * unexposed
    assert 0.55 < share < 0.65


def test_search_exposure_bug_unbalances_exposed_population(
    con: duckdb.DuckDBPyConnection,
) -> None:
    rows = dict(
        (variant, (n, k))
        for variant, n, k in con.execute(
            """
            SELECT variant, COUNT(*), SUM(exposed::INT) FROM units
            WHERE experiment_id = 'search_exposure_bug' GROUP BY variant
            """
        ).fetchall()
    )
    (n_c, k_c), (n_t, k_t) = rows["control"], rows["treatment"]
    p_c, p_t = k_c / n_c, k_t / n_t
    pooled = (k_c + k_t) / (n_c + n_t)
    z = (p_t - p_c) / np.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
    assert p_c - p_t > 0.05 and z < -5


# --- true effects -----------------------------------------------------------------------
def test_manifest_format_and_round_trip(sample: Generated) -> None:
    on_disk = Manifest.read(sample.out / "manifest.json")
    assert on_disk == sample.manifest
    data = sample.manifest.to_dict()
    assert {"generator_version", "seed", "members", "dates", "experiments"} <= set(data)
    assert (data["seed"], data["members"]) == (7, DEFAULT_MEMBERS)
    ids = [e["experiment_id"] for e in data["experiments"]]
    assert ids == ["homepage_ranking_v2", "artwork_abc", "player_srm", "search_exposure_bug"]
    for exp in sample.manifest.experiments:
        assert set(exp.true_effects) == set(exp.variants[1:])
        assert abs(sum(exp.weights) - 1) < 1e-12
        for by_metric in exp.true_effects.values():
            assert set(by_metric) == {*METRICS, "proportion_any_watch"}
        assert {d: list(v) for d, v in exp.slice_truths.items()} == {
            "device": ["tv", "mobile", "web"],
            "country": ["US", "BR", "IN", "DE", "JP"],
        }
        for by_value in exp.slice_truths.values():
            for st in by_value.values():
                assert set(st.true_effects) == set(exp.true_effects)
                assert all(set(b) == set(by_metric) for b in st.true_effects.values())
        assert set(exp.heterogeneity) == set(exp.variants[1:])
        for het in exp.heterogeneity.values():
            assert set(het) == {*METRICS, "proportion_any_watch"}
            assert all(set(by_dim) == {"device", "country"} for by_dim in het.values())
    # A manifest written before slice and quantile truths existed still reads.
    older = {
        **data,
        "experiments": [
            {
                k: v
                for k, v in exp.items()
                if not k.startswith(("slice_", "heterogeneity", "quantile_"))
            }
            for exp in data["experiments"]
        ],
    }
    assert Manifest.from_dict(older).experiment("artwork_abc").slice_truths == {}
    assert Manifest.from_dict(older).experiment(HOMEPAGE).quantile_truths == {}


def test_truths_follow_the_multipliers(sample: Generated) -> None:
    for exp in sample.manifest.experiments:
        share = exp.truth_population["exposed_share"]
        for variant, by_metric in exp.true_effects.items():
            multipliers = exp.multipliers.get(variant, {})
            assert by_metric["proportion_any_watch"].true_itt_abs == 0.0
            for metric in METRICS:
                t = by_metric[metric]
                assert t.true_effect_on_exposed_abs is not None and t.true_itt_abs is not None
                # Only exposed members are affected, so ITT = exposed share x effect on them.
                assert t.true_itt_abs == pytest.approx(share * t.true_effect_on_exposed_abs)
                if metric not in multipliers:
                    assert t.true_itt_abs == 0.0
                    continue
                lift = multipliers[metric] - 1
                sliced = metric in exp.slice_factors.get(variant, {})
                if sliced:
                    # Members with a factor below 1 get less than the full lift.
                    assert t.true_effect_on_exposed_rel is not None
                    assert 0 < t.true_effect_on_exposed_rel < lift
                elif metric == "watch_seconds":
                    assert t.true_effect_on_exposed_rel == pytest.approx(lift, rel=1e-12)
                else:  # an added Poisson count: the realised lift is noisy around the target
                    assert t.true_effect_on_exposed_rel == pytest.approx(lift, rel=0.2)
                # Exposed members are heavier, so the effect on them exceeds the ITT lift,
                # and the ITT lift exceeds the exposed share times it.
                assert t.true_itt_rel is not None and t.true_effect_on_exposed_rel is not None
                assert share * t.true_effect_on_exposed_rel < t.true_itt_rel
                assert t.true_itt_rel < t.true_effect_on_exposed_rel


def _multiplier_sql(sample: Generated, experiment: str, variant: str, column: str) -> str:
    """SQL for an exposed member's own multiplier: 1 + (m - 1) x f_device x f_country."""
    exp = sample.manifest.experiment(experiment)
    m = exp.multipliers[variant][column]
    factors = exp.slice_factors.get(variant, {}).get(column)
    if factors is None:
        return repr(m)

    def case(dim: str) -> str:
        whens = " ".join(f"WHEN {dim} = '{v}' THEN {f!r}" for v, f in factors[dim].items())
        return f"CASE {whens} END"

    return f"(1 + ({m!r} - 1) * {case('device')} * {case('country')})"


def _watch_truths_from_tables(
    sample: Generated, con: duckdb.DuckDBPyConnection
) -> dict[tuple[str, str | None], tuple[Any, ...]]:
    """(dimension, value) -> (members, exposed, sum Y0, sum Y0 of exposed, sum Y1 - Y0) of
    homepage watch_seconds, from the tables; ("all", None) is the whole truth population.

    watch_seconds is scaled exactly, so both potential outcomes are recoverable: the
    untreated value of an exposed treatment member is its value / its own multiplier, and
    every exposed member's treated value is its untreated one times that multiplier."""
    mult = _multiplier_sql(sample, "homepage_ranking_v2", "treatment", "watch_seconds")
    rows = con.execute(
        f"""
        WITH w AS ({_window_sums(con, "homepage_ranking_v2")}),
        y AS (
            SELECT device, country, exposed,
                   CASE WHEN variant = 'treatment' AND exposed THEN watch_seconds / {mult}
                        ELSE watch_seconds END AS y0,
                   {mult} - 1 AS lift
            FROM w
        )
        SELECT device, country, GROUPING(device), GROUPING(country),
               COUNT(*), COUNT(*) FILTER (WHERE exposed), SUM(y0),
               SUM(y0) FILTER (WHERE exposed), SUM(lift * y0) FILTER (WHERE exposed)
        FROM y GROUP BY GROUPING SETS ((), (device), (country))
        """
    ).fetchall()
    out: dict[tuple[str, str | None], tuple[Any, ...]] = {}
    for device, country, no_device, no_country, *sums in rows:
        key = ("all", None) if no_device and no_country else (
            ("device", device) if not no_device else ("country", country)
        )  # fmt: skip
        out[key] = tuple(sums)
    return out


def test_homepage_watch_truth_reconstructed_exactly(
    sample: Generated, con: duckdb.DuckDBPyConnection
) -> None:
    exp = sample.manifest.experiment("homepage_ranking_v2")
    n, n_exposed, y0, y0_exposed, inc = _watch_truths_from_tables(sample, con)[("all", None)]
    truth = exp.true_effects["treatment"]["watch_seconds"]
    assert exp.truth_population["members"] == n
    assert exp.truth_population["exposed_members"] == n_exposed
    assert truth.control_mean == pytest.approx(y0 / n, rel=1e-9)
    assert truth.true_itt_abs == pytest.approx(inc / n, rel=1e-9)
    assert truth.true_itt_rel == pytest.approx(inc / y0, rel=1e-9)
    assert truth.control_mean_exposed == pytest.approx(y0_exposed / n_exposed, rel=1e-9)
    assert truth.true_effect_on_exposed_abs == pytest.approx(inc / n_exposed, rel=1e-9)
    assert truth.true_effect_on_exposed_rel == pytest.approx(inc / y0_exposed, rel=1e-9)


def test_homepage_slice_truths_reconstructed_exactly(
    sample: Generated, con: duckdb.DuckDBPyConnection
) -> None:
    """Every device's and country's watch_seconds truth, recomputed from both potential
    outcomes of its members; the zero-effect metrics' slices from the observed values."""
    exp = sample.manifest.experiment("homepage_ranking_v2")
    factors = exp.slice_factors.get("treatment", {}).get("watch_seconds", {})
    from_tables = _watch_truths_from_tables(sample, con)
    assert set(exp.slice_truths) == {"device", "country"}
    assert list(exp.slice_truths["device"]) == ["tv", "mobile", "web"]
    assert list(exp.slice_truths["country"]) == ["US", "BR", "IN", "DE", "JP"]
    for dim, by_value in exp.slice_truths.items():
        for value, st in by_value.items():
            n, n_exposed, y0, y0_exposed, inc = from_tables[(dim, value)]
            assert st.truth_population["members"] == n
            assert st.truth_population["exposed_members"] == n_exposed
            t = st.true_effects["treatment"]["watch_seconds"]
            assert t.control_mean == pytest.approx(y0 / n, rel=1e-9)
            assert t.control_mean_exposed == pytest.approx(y0_exposed / n_exposed, rel=1e-9)
            assert t.true_effect_on_exposed_abs == pytest.approx(inc / n_exposed, rel=1e-9)
            assert t.true_itt_rel == pytest.approx(inc / y0, rel=1e-9)
            if factors.get(dim, {}).get(value) == 0.0:
                assert t.true_itt_abs == 0.0 and t.true_itt_rel == 0.0  # planted: no effect
            else:
                assert t.true_itt_abs == pytest.approx(inc / n, rel=1e-9)
                assert t.true_itt_abs is not None and t.true_itt_abs > 0

    # plays, errors and the share with any watch have no effect in homepage: the observed
    # values are the untreated ones, so each slice's control mean is the observed mean.
    for dim in ("device", "country"):
        rows = con.execute(
            f"""
            WITH w AS ({_window_sums(con, "homepage_ranking_v2")})
            SELECT {dim}, AVG(plays), AVG(errors), AVG((watch_seconds > 0)::DOUBLE)
            FROM w GROUP BY {dim}
            """
        ).fetchall()
        for value, plays, errors, any_watch in rows:
            effects = exp.slice_truths[dim][value].true_effects["treatment"]
            for metric, mean in (
                ("plays", plays),
                ("errors", errors),
                ("proportion_any_watch", any_watch),
            ):
                assert effects[metric].control_mean == pytest.approx(mean, rel=1e-9)
                assert effects[metric].true_itt_abs == 0.0


def test_slice_truths_add_up_to_the_whole(sample: Generated) -> None:
    """Each dimension partitions the truth population: member-weighted slice truths add up
    to the experiment's, for every experiment, variant and metric."""
    for exp in sample.manifest.experiments:
        for dim, by_value in exp.slice_truths.items():
            slices = list(by_value.values())
            for key in ("members", "exposed_members"):
                assert sum(s.truth_population[key] for s in slices) == exp.truth_population[key]
            for variant, by_metric in exp.true_effects.items():
                for metric, whole in by_metric.items():
                    for field_name, weight in (
                        ("control_mean", "members"),
                        ("true_itt_abs", "members"),
                        ("true_effect_on_exposed_abs", "exposed_members"),
                    ):
                        total = sum(
                            s.truth_population[weight]
                            * (getattr(s.true_effects[variant][metric], field_name) or 0.0)
                            for s in slices
                        )
                        want = exp.truth_population[weight] * (getattr(whole, field_name) or 0.0)
                        assert total == pytest.approx(want, rel=1e-9, abs=1e-9), (
                            exp.experiment_id, dim, variant, metric, field_name,
                        )  # fmt: skip


def test_heterogeneity_is_stated_where_planted_and_only_there(sample: Generated) -> None:
    exp = sample.manifest.experiment("homepage_ranking_v2")
    het = exp.heterogeneity["treatment"]
    assert exp.slice_factors == {
        "treatment": {
            "watch_seconds": {
                "device": {"tv": 1.0, "mobile": 0.0, "web": 0.0},
                "country": {"US": 1.0, "BR": 1.0, "IN": 1.0, "DE": 1.0, "JP": 0.0},
            }
        }
    }
    assert {dim: h.source for dim, h in het["watch_seconds"].items()} == {
        "device": "planted",
        "country": "planted",
    }
    # A uniform multiplier: absolute effects follow device baselines; country moves nothing.
    assert (het["sessions"]["device"].absolute, het["sessions"]["device"].source) == (
        True,
        "baseline",
    )
    assert not het["sessions"]["country"].absolute and not het["sessions"]["country"].relative
    for metric in ("plays", "errors", "proportion_any_watch"):
        assert all(not h.absolute and h.source == "none" for h in het[metric].values())
    # The other experiments have no slice factors: only device baselines make them differ.
    for other in sample.manifest.experiments[1:]:
        assert other.slice_factors == {}
        for by_metric in other.heterogeneity.values():
            for by_dim in by_metric.values():
                assert by_dim["country"].source == "none" and not by_dim["country"].absolute
                assert by_dim["device"].source in ("baseline", "none")
    assert any("PLANTED" in note for note in exp.heterogeneity_notes)
    # The overall lift stays about what a uniform x1.05 on the exposed gave (3.9%), while
    # tv carries the whole of it: about twice the overall absolute effect.
    watch = exp.true_effects["treatment"]["watch_seconds"]
    tv = exp.slice_truths["device"]["tv"].true_effects["treatment"]["watch_seconds"]
    assert watch.true_itt_rel is not None and 0.055 < watch.true_itt_rel < 0.08
    assert tv.true_effect_on_exposed_rel is not None and 0.12 < tv.true_effect_on_exposed_rel < 0.15


def test_slice_factors_change_only_the_scaled_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slice factors change the values of their own term and nothing else: generated again
    with every term unsliced, every other column and experiment is bit-identical."""
    generate(tmp_path / "sliced", members=3_000, seed=5)
    plain = tuple(replace(term, cell_factor=None) for term in gen_module._TERMS)
    monkeypatch.setattr(gen_module, "_TERMS", plain)
    generate(tmp_path / "plain", members=3_000, seed=5)
    (a_sliced, d_sliced), (a_plain, d_plain) = (
        _tables(tmp_path / "sliced"),
        _tables(tmp_path / "plain"),
    )
    assert a_sliced.equals(a_plain)
    assert d_sliced.drop_columns(["watch_seconds"]).equals(d_plain.drop_columns(["watch_seconds"]))
    con = duckdb.connect()
    con.register("a", a_sliced)
    con.register("s", d_sliced)
    con.register("p", d_plain)
    changed = con.execute(
        """
        SELECT DISTINCT a.experiment_id, a.variant, a.exposed_flag, s.date >= a.assignment_timestamp::DATE
        FROM s JOIN p USING (member_id, date) JOIN a USING (member_id)
        WHERE s.watch_seconds <> p.watch_seconds
        """
    ).fetchall()
    assert changed == [("homepage_ranking_v2", "treatment", True, True)]


def test_spec_rejects_bad_slice_factors() -> None:
    spec = gen_module.ExperimentSpec
    base = ("x", 0.5, ("control", "treatment"), (0.5, 0.5), {"treatment": {"plays": 1.1}})
    with pytest.raises(ValueError, match="no multiplier"):
        spec(*base, slice_factors={"treatment": {"errors": {"device": {"tv": 0.0}}}})
    with pytest.raises(ValueError, match="unknown dimension"):
        spec(*base, slice_factors={"treatment": {"plays": {"plan": {"tv": 0.0}}}})
    with pytest.raises(ValueError, match="unknown device values"):
        spec(*base, slice_factors={"treatment": {"plays": {"device": {"tablet": 0.0}}}})
    for bad in (-1.0, 1.5):
        with pytest.raises(ValueError, match=r"in \[0, 1\]"):
            spec(*base, slice_factors={"treatment": {"plays": {"country": {"JP": bad}}}})


def test_a_sliced_count_term_changes_its_own_values_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A count term's factors thin its increment from a stream of its own: the shared daily
    stream, hence every other term and experiment, is untouched."""
    generate(tmp_path / "plain", members=3_000, seed=5)
    no_tv = np.outer([0.0, 1.0, 1.0], np.ones(5))
    terms = tuple(
        replace(term, cell_factor=no_tv)
        if (term.experiment, term.variant, term.column) == (1, 1, "plays")  # artwork a
        else term
        for term in gen_module._TERMS
    )
    assert any(term.cell_factor is not None and term.experiment == 1 for term in terms)
    monkeypatch.setattr(gen_module, "_TERMS", terms)
    manifest = generate(tmp_path / "sliced", members=3_000, seed=5)
    (a_plain, d_plain), (a_sliced, d_sliced) = (
        _tables(tmp_path / "plain"),
        _tables(tmp_path / "sliced"),
    )
    assert a_sliced.equals(a_plain)
    assert d_sliced.drop_columns(["plays"]).equals(d_plain.drop_columns(["plays"]))
    con = duckdb.connect()
    con.register("a", a_sliced)
    con.register("s", d_sliced)
    con.register("p", d_plain)
    changed = con.execute(
        """
        SELECT a.experiment_id, a.variant, a.device, a.exposed_flag,
               s.date >= a.assignment_timestamp::DATE, BOOL_AND(s.plays < p.plays)
        FROM s JOIN p USING (member_id, date) JOIN a USING (member_id)
        WHERE s.plays <> p.plays GROUP BY ALL
        """
    ).fetchall()
    assert changed == [("artwork_abc", "treatment_a", "tv", True, True, True)]
    tv = manifest.experiment("artwork_abc").slice_truths["device"]["tv"]
    assert tv.true_effects["treatment_a"]["plays"].true_itt_abs == 0.0


def _cuped_lift(rows: list[tuple[Any, ...]], treatment: str) -> tuple[float, float, float]:
    """Relative lift of treatment over control adjusted by the pre-period (pooled theta),
    with its delta-method standard error, from per-variant moments."""
    by = {r[0]: r[1:] for r in rows}
    n_c, y_c, x_c, vy_c, vx_c, cxy_c = by["control"]
    n_t, y_t, x_t, vy_t, vx_t, cxy_t = by[treatment]
    theta = (cxy_c + cxy_t) / (vx_c + vx_t)
    x_bar = (n_c * x_c + n_t * x_t) / (n_c + n_t)
    adj_c, adj_t = y_c - theta * (x_c - x_bar), y_t - theta * (x_t - x_bar)
    var_c = (vy_c - 2 * theta * cxy_c + theta**2 * vx_c) / n_c
    var_t = (vy_t - 2 * theta * cxy_t + theta**2 * vx_t) / n_t
    lift = adj_t / adj_c - 1
    se = np.sqrt(var_t / adj_c**2 + adj_t**2 * var_c / adj_c**4)
    reduction = 1 - (var_c + var_t) / (vy_c / n_c + vy_t / n_t)
    return lift, se, reduction


@pytest.mark.parametrize(
    "experiment", ["homepage_ranking_v2", "artwork_abc", "search_exposure_bug"]
)
def test_estimated_itt_lift_matches_truth(
    sample: Generated, con: duckdb.DuckDBPyConnection, experiment: str
) -> None:
    exp = sample.manifest.experiment(experiment)
    for metric in METRICS:
        rows = con.execute(
            f"""
            WITH w AS ({_window_sums(con, experiment)})
            SELECT variant, COUNT(*), AVG({metric}), AVG(pre_{metric}), VAR_SAMP({metric}),
                   VAR_SAMP(pre_{metric}), COVAR_SAMP({metric}, pre_{metric})
            FROM w GROUP BY variant
            """
        ).fetchall()
        for variant, by_metric in exp.true_effects.items():
            lift, se, reduction = _cuped_lift(rows, variant)
            truth = by_metric[metric].true_itt_rel
            assert truth is not None
            assert abs(lift - truth) < 4 * se, (experiment, variant, metric, lift, truth, se)
            if metric == "watch_seconds":
                # Pre- and post-period share each member's level: CUPED must pay off.
                assert reduction > 0.5


def test_guardrail_harm_and_tot_overstates_itt(sample: Generated) -> None:
    artwork = sample.manifest.experiment("artwork_abc").true_effects
    errors_b = artwork["treatment_b"]["errors"]
    assert errors_b.true_itt_rel is not None and errors_b.true_itt_rel > 0.2
    assert artwork["treatment_a"]["errors"].true_itt_rel == 0.0
    homepage = sample.manifest.experiment("homepage_ranking_v2").true_effects["treatment"]
    watch = homepage["watch_seconds"]
    assert watch.true_itt_rel is not None and watch.true_effect_on_exposed_rel is not None
    assert watch.true_effect_on_exposed_rel - watch.true_itt_rel > 0.005
    for null_experiment in ("player_srm", "search_exposure_bug"):
        effects = sample.manifest.experiment(null_experiment).true_effects["treatment"]
        assert all(effects[m].true_itt_abs == 0.0 for m in METRICS)


# --- plays and start latency ------------------------------------------------------------
def _plays_mismatches(out: Path) -> tuple[int, int]:
    """(member-days whose play rows differ in number from engagement_daily.plays, play rows)
    over the homepage members' window days: 0 when every such member-day has exactly its
    ``plays`` rows and no other member or day has any."""
    a, e, p = (out / f for f in ("experiment_assignments.parquet", "engagement_daily.parquet",
                                 "plays.parquet"))  # fmt: skip
    con = duckdb.connect()
    row = con.execute(
        f"""
        WITH u AS (SELECT member_id, MIN(assignment_timestamp)::DATE AS d0 FROM '{a}'
                   WHERE experiment_id = '{HOMEPAGE}' GROUP BY member_id),
        want AS (SELECT e.member_id, e.date, e.plays FROM '{e}' e JOIN u USING (member_id)
                 WHERE e.date BETWEEN u.d0 AND u.d0 + INTERVAL 6 DAY AND e.plays > 0),
        got AS (SELECT member_id, date, COUNT(*) AS n FROM '{p}' GROUP BY member_id, date)
        SELECT COUNT(*) FILTER (WHERE want.plays IS DISTINCT FROM got.n),
               (SELECT COUNT(*) FROM '{p}')
        FROM want FULL JOIN got USING (member_id, date)
        """
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _truth_population_plays(out: Path) -> dict[str, np.ndarray]:
    """member_id, variant, exposed, date and latency of every window play of homepage's
    truth population (complete window, one variant), in the table's row order."""
    a, p = out / "experiment_assignments.parquet", out / "plays.parquet"
    con = duckdb.connect()
    return con.execute(
        f"""
        WITH u AS (
            SELECT member_id, MIN(assignment_timestamp)::DATE AS d0,
                   COUNT(DISTINCT variant) AS n_variants,
                   ARG_MIN(variant, assignment_timestamp) AS variant,
                   ARG_MIN(exposed_flag, assignment_timestamp) AS exposed
            FROM '{a}' WHERE experiment_id = '{HOMEPAGE}' GROUP BY member_id
        )
        SELECT p.member_id, u.variant, u.exposed, p.date, p.start_latency_ms
        FROM (SELECT *, ROW_NUMBER() OVER () AS row_number FROM '{p}') p
        JOIN u USING (member_id)
        WHERE u.n_variants = 1 AND u.d0 + INTERVAL 6 DAY <= DATE '{DATA_END}'
        ORDER BY p.row_number
        """
    ).fetchnumpy()


def _quantile(values: np.ndarray, q: str) -> float:
    return float(np.quantile(values, float(q), method="inverted_cdf"))


def test_plays_table_matches_daily_plays(sample: Generated, con: duckdb.DuckDBPyConnection) -> None:
    schema = pq.read_schema(sample.out / "plays.parquet")
    assert [(f.name, f.type) for f in schema] == [
        ("member_id", pa.int64()),
        ("date", pa.date32()),
        ("start_latency_ms", pa.float64()),
    ]
    assert [(r[0], r[1]) for r in con.execute("DESCRIBE p").fetchall()] == [
        ("member_id", "BIGINT"),
        ("date", "DATE"),
        ("start_latency_ms", "DOUBLE"),
    ]
    rows = sample.manifest.files["plays"]["rows"]
    assert _plays_mismatches(sample.out) == (0, rows)
    assert 150_000 < rows < 400_000  # small: one experiment's 7-day windows
    assert sample.manifest.files["plays"] == {
        "path": "plays.parquet",
        "rows": rows,
        "sort_order": ["date", "member_id"],
        "experiments": [HOMEPAGE],
    }
    bad, experiments = con.execute(
        """
        SELECT COUNT(*) FILTER (WHERE start_latency_ms IS NULL OR start_latency_ms < 1
                                OR start_latency_ms <> ROUND(start_latency_ms)),
               (SELECT LIST(DISTINCT experiment_id) FROM p JOIN a USING (member_id))
        FROM p
        """
    ).fetchone()
    assert bad == 0 and experiments == [HOMEPAGE]  # whole milliseconds, homepage only
    table = pq.read_table(sample.out / "plays.parquet", columns=["date", "member_id"])
    days = table.column("date").to_numpy().astype("datetime64[D]").astype(np.int64)
    ids = table.column("member_id").to_numpy()
    assert ((days[1:] > days[:-1]) | ((days[1:] == days[:-1]) & (ids[1:] >= ids[:-1]))).all()


def test_quantile_truths_state_a_tail_effect_and_no_median_effect(sample: Generated) -> None:
    exp = sample.manifest.experiment(HOMEPAGE)
    assert set(exp.quantile_truths) == {"treatment"}
    assert set(exp.quantile_truths["treatment"]) == {"start_latency_ms"}
    for other in sample.manifest.experiments[1:]:
        assert other.quantile_truths == {} and other.quantile_notes == []
    assert any("PLANTED tail effect" in note for note in exp.quantile_notes)
    truths = exp.quantile_truths["treatment"]["start_latency_ms"]
    assert (truths.table, truths.column) == ("plays", "start_latency_ms")
    assert list(truths.quantiles) == list(LATENCY_QUANTILES)
    plays = _truth_population_plays(sample.out)
    assert truths.rows == len(plays["member_id"])
    assert truths.units == len(np.unique(plays["member_id"]))
    assert truths.rows_exposed == int(plays["exposed"].sum())
    assert truths.units_exposed == len(np.unique(plays["member_id"][plays["exposed"]]))
    assert truths.units <= exp.truth_population["members"]

    median = truths.quantiles["0.5"]
    assert median.control_quantile is not None and 300 < median.control_quantile < 500
    assert median.control_quantile == median.variant_quantile and median.true_itt_abs == 0.0
    assert median.true_effect_on_exposed_abs == 0.0
    for q, least in (("0.9", 0.15), ("0.95", 0.3)):
        t = truths.quantiles[q]
        assert t.control_quantile is not None and t.variant_quantile is not None
        assert t.true_itt_abs == t.variant_quantile - t.control_quantile
        assert t.true_itt_rel is not None and t.true_itt_rel < -least
        # Only exposed members' stalls shorten: the effect on them is the larger one.
        assert t.true_effect_on_exposed_abs is not None
        assert t.true_effect_on_exposed_abs < t.true_itt_abs < 0


def test_quantile_truths_are_the_quantiles_of_both_potential_outcomes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest's quantiles recomputed exactly from the tables. A member's observed
    latencies are its treated potential outcomes in treatment and its untreated ones in
    control; generated again with the roles swapped (control's exposed members get the
    shorter stalls), every member shows its other potential outcome, so the two tables
    together hold both outcomes of every play."""
    normal = generate(tmp_path / "normal", members=3_000, seed=5)
    monkeypatch.setattr(gen_module, "_PLAYS_VARIANT", 0)
    swapped = generate(tmp_path / "swapped", members=3_000, seed=5)
    # Truths come from the potential outcomes, not from who was assigned which variant, and
    # nothing but the plays table looks at the swap.
    assert swapped.to_dict() == normal.to_dict()
    for a, b in zip(_tables(tmp_path / "normal"), _tables(tmp_path / "swapped"), strict=True):
        assert a.equals(b)
    n, s = (
        _truth_population_plays(tmp_path / "normal"),
        _truth_population_plays(tmp_path / "swapped"),
    )
    for column in ("member_id", "variant", "exposed", "date"):
        assert np.array_equal(n[column], s[column])  # the same plays in the same order
    control = n["variant"] == "control"
    y0 = np.where(control, n["start_latency_ms"], s["start_latency_ms"])
    y1 = np.where(control, s["start_latency_ms"], n["start_latency_ms"])
    exposed = n["exposed"]

    changed = y1 != y0
    assert not changed[~exposed].any()  # unexposed members are untouched
    assert 0.08 < changed[exposed].mean() < 0.12  # the stalls: 10% of exposed plays
    assert (y1[changed] < y0[changed]).all() and y1[changed].min() > 750

    truths = normal.experiment(HOMEPAGE).quantile_truths["treatment"]["start_latency_ms"]
    assert truths.rows == len(y0) and truths.rows_exposed == int(exposed.sum())
    assert truths.quantiles["0.5"].control_quantile is not None
    assert y1[changed].min() > truths.quantiles["0.5"].control_quantile  # stalls: above median
    for q, t in truths.quantiles.items():
        assert t.control_quantile == _quantile(y0, q)
        assert t.variant_quantile == _quantile(y1, q)
        assert t.control_quantile_exposed == _quantile(y0[exposed], q)
        assert t.variant_quantile_exposed == _quantile(y1[exposed], q)
        assert t.true_itt_abs == _quantile(y1, q) - _quantile(y0, q)
        on_exposed = _quantile(y1[exposed], q) - _quantile(y0[exposed], q)
        assert t.true_effect_on_exposed_abs == on_exposed


def test_other_tables_do_not_depend_on_the_plays_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plays table draws from streams of its own: generated with its draws replaced by
    nothing, the assignments, the daily table and every other manifest figure are
    bit-identical."""
    with_plays = generate(tmp_path / "with", members=3_000, seed=5)
    monkeypatch.setattr(
        gen_module, "_latency_levels", lambda seed, block, device, log_lam: np.zeros(len(device))
    )
    empty = pa.RecordBatch.from_pylist([], schema=gen_module.PLAYS_SCHEMA)
    monkeypatch.setattr(gen_module, "_plays_slice", lambda *args: empty)
    without = generate(tmp_path / "without", members=3_000, seed=5)
    for a, b in zip(_tables(tmp_path / "with"), _tables(tmp_path / "without"), strict=True):
        assert a.equals(b)
    assert _plays(tmp_path / "without").num_rows == 0

    def other_fields(manifest: Manifest) -> dict[str, Any]:
        data = manifest.to_dict()
        data["files"].pop("plays")
        for exp in data["experiments"]:
            exp.pop("quantile_truths")
            exp.pop("quantile_notes")
        return data

    assert other_fields(with_plays) == other_fields(without)


def test_estimated_quantile_differences_match_truth(sample: Generated) -> None:
    """What an event-level analysis of the default sample sees: members as clusters, the
    observed difference of quantiles within sampling error of the truth, the p90 and p95
    improvements far beyond it, and plays within a member strongly correlated."""
    exp = sample.manifest.experiment(HOMEPAGE)
    truths = exp.quantile_truths["treatment"]["start_latency_ms"]
    plays = _truth_population_plays(sample.out)
    for population in ("itt", "exposed"):
        rows = plays["exposed"] if population == "exposed" else np.ones(len(plays["exposed"]), bool)
        hist = {
            v: EventHistogram.from_events(
                plays["member_id"][rows & (plays["variant"] == v)],
                plays["start_latency_ms"][rows & (plays["variant"] == v)],
            )
            for v in ("control", "treatment")
        }
        for q, t in truths.quantiles.items():
            effect = quantile_clustered(hist["control"], hist["treatment"], float(q))
            if population == "itt":
                truth, control = t.true_itt_abs, t.control_quantile
            else:
                truth, control = t.true_effect_on_exposed_abs, t.control_quantile_exposed
            assert truth is not None and control is not None
            z = (effect.abs_effect - truth) / effect.abs_se
            assert abs(z) < 4, (population, q, effect.abs_effect, truth, effect.abs_se)
            # Control members' latencies are their untreated outcomes: a sample of the truth.
            z_control = (effect.mean_control - control) / effect.extra["se_control"]
            assert abs(z_control) < 4, (population, q, effect.mean_control, control)
            if q == "0.5":
                # Heavy viewers make most plays: the clustering matters, an iid analysis
                # would understate the standard error several times over.
                assert effect.extra["design_effect_control"] > 5
            else:
                assert effect.abs_effect / effect.abs_se < -5, (population, q)


# --- entry points -----------------------------------------------------------------------
def test_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="members"):
        generate(tmp_path, members=0)
    with pytest.raises(ValueError, match="row_group_size"):
        generate(tmp_path, members=10, row_group_size=0)


def test_module_cli(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "xpkit.sample_data.generate", "--members", "500", "--seed", "5"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "500 members" in result.stdout
    manifest = Manifest.read(tmp_path / "manifest.json")
    assert (manifest.members, manifest.seed) == (500, 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "engagement_daily.parquet",
        "experiment_assignments.parquet",
        "manifest.json",
        "plays.parquet",
    ]
