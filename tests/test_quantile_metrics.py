"""Quantile metrics end to end: histograms from the one statement, checked on raw data.

- each arm's quantile against ``numpy.quantile`` of the raw values (within the bins' eps);
- the effect equals the estimator run on histograms built in the test from raw rows
  (unit level: Woodruff on the per-unit values; event level: the clustered interval on the
  raw events with their units);
- CUPED, caps and sequential primaries are refused with a message;
- slices and the history leave quantile metrics out; other metrics are unchanged.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import write_parquet
from xpkit import Metric, Source
from xpkit.config import load_config
from xpkit.define.registry import load_metrics
from xpkit.errors import ConfigError, MetricDefinitionError
from xpkit.runner import engine_for, run_experiment
from xpkit.stats.quantile_bins import EventHistogram, Histogram
from xpkit.stats.quantiles import quantile_clustered, quantile_test

METRICS = '''
from xpkit import Metric, Source

class Daily(Source):
    table = "daily"
    unit = "member_id"
    time = "day"

class Plays(Source):
    table = "plays"
    unit = "member_id"
    time = "day"

class Minutes(Metric):
    """Minutes per member."""
    source = Daily
    expression = "SUM(minutes)"

class MinutesP90(Metric):
    """90th percentile of minutes per member."""
    source = Daily
    expression = "SUM(minutes)"
    kind = "quantile"
    quantile = 0.9

class LatencyP95(Metric):
    """95th percentile of play start latency over all plays."""
    source = Plays
    value = "latency_ms"
    kind = "quantile"
    quantile = 0.95
    higher_is_better = False

class LatencyMedian(Metric):
    """Median play start latency over all plays."""
    source = Plays
    value = "latency_ms"
    kind = "quantile"
    quantile = 0.5
    higher_is_better = False
'''


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4000 members; treatment shortens the slowest plays (a tail effect) and adds minutes;
    members have very different numbers of plays and latency levels (clusters matter)."""
    root = tmp_path_factory.mktemp("quantiles")
    con = duckdb.connect()
    con.execute("SELECT setseed(0.25)")
    write_parquet(
        con,
        """
        SELECT 'x' AS experiment_id, i AS member_id,
               CASE WHEN hash(i * 3) % 2 = 0 THEN 'control' ELSE 'treatment' END AS variant,
               TIMESTAMP '2024-01-01 09:00:00' + INTERVAL (i % 4) DAY AS assignment_timestamp,
               (i % 3 = 0) AS exposed_flag
        FROM range(4000) t(i)
        """,
        root / "assignments.parquet",
    )
    a = root / "assignments.parquet"
    write_parquet(
        con,
        f"""
        SELECT a.member_id, DATE '2024-01-01' + INTERVAL (d) DAY AS day,
               round(exp(1 + (hash(a.member_id * 7 + d) % 1000) / 400.0))
               + CASE WHEN a.variant = 'treatment' THEN 2 ELSE 0 END AS minutes
        FROM '{a}' a, range(10) t(d)
        WHERE hash(a.member_id + 31 * d) % 3 > 0
        """,
        root / "daily.parquet",
    )
    write_parquet(
        con,
        f"""
        SELECT a.member_id, DATE '2024-01-01' + INTERVAL (d) DAY AS day,
               exp(4 + (a.member_id % 10) / 5.0 + random())
               * CASE WHEN random() < 0.1
                      THEN (CASE WHEN a.variant = 'treatment' THEN 4 ELSE 8 END) ELSE 1 END
               AS latency_ms
        FROM '{a}' a, range(10) t(d), range(1 + (a.member_id % 7) * (a.member_id % 5)) p(k)
        WHERE hash(a.member_id * 11 + d) % 2 = 0
        """,
        root / "plays.parquet",
    )
    (root / "metrics").mkdir()
    (root / "metrics" / "m.py").write_text(METRICS)
    (root / "experiments.toml").write_text(
        """
metrics_dir = "metrics"
[tables]
experiment_assignments = "assignments.parquet"
daily = "daily.parquet"
plays = "plays.parquet"

[[experiment]]
id = "x"
control = "control"
weights = { control = 0.5, treatment = 0.5 }
window = [0, 2]
metrics = ["minutes", "minutes_p90", "latency_p95", "latency_median"]
min_days = 1
slices = ["exposed_flag"]
"""
    )
    return root


def _run(root: Path, **kw):
    config = load_config(root / "experiments.toml")
    engine = engine_for(config, threads=1)
    try:
        return run_experiment(
            config, load_metrics(root / "metrics"), "x", engine, run_date=date(2024, 2, 1), **kw
        )
    finally:
        engine.close()


@pytest.fixture(scope="module")
def card(world: Path) -> list[dict]:
    return _run(world, history=True).scorecard.to_pylist()


def _row(card: list[dict], metric: str, population: str = "itt") -> dict:
    (row,) = [
        r
        for r in card
        if (r["metric"], r["population"], r["slice_dimension"]) == (metric, population, "(all)")
    ]
    return row


def _raw(world: Path, sql: str) -> dict[str, dict[str, np.ndarray]]:
    """Per variant, the raw values (and unit ids) of an independent query."""
    rows = duckdb.connect().execute(sql.replace("ROOT", str(world))).fetchall()
    out: dict[str, dict[str, list]] = {}
    for variant, unit, value in rows:
        arm = out.setdefault(variant, {"units": [], "values": []})
        arm["units"].append(unit)
        arm["values"].append(value)
    return {v: {k: np.array(x) for k, x in arm.items()} for v, arm in out.items()}


UNITS = """
    SELECT a.variant, a.member_id,
           COALESCE(SUM(d.minutes) FILTER (WHERE d.day BETWEEN a.assignment_timestamp::DATE
                    AND a.assignment_timestamp::DATE + INTERVAL 2 DAY), 0)
    FROM 'ROOT/assignments.parquet' a LEFT JOIN 'ROOT/daily.parquet' d USING (member_id)
    GROUP BY ALL
"""
EVENTS = """
    SELECT a.variant, a.member_id, p.latency_ms
    FROM 'ROOT/assignments.parquet' a JOIN 'ROOT/plays.parquet' p USING (member_id)
    WHERE p.day BETWEEN a.assignment_timestamp::DATE AND a.assignment_timestamp::DATE + INTERVAL 2 DAY
"""


def test_unit_level_quantile_equals_woodruff_on_the_raw_units(world: Path, card) -> None:
    raw = _raw(world, UNITS)
    got = _row(card, "minutes_p90")
    assert got["metric_kind"] == "quantile" and got["quantile_level"] == 0.9
    for side, variant in (("control", "control"), ("variant", "treatment")):
        exact = np.quantile(raw[variant]["values"], 0.9, method="inverted_cdf")
        assert got[f"mean_{side}"] == pytest.approx(exact, rel=1e-3)
    want = quantile_test(
        Histogram.from_values(raw["control"]["values"]),
        Histogram.from_values(raw["treatment"]["values"]),
        0.9,
    )
    assert got["method"] == want.method
    assert got["n_control"] == want.n_control and got["n_variant"] == want.n_treatment
    for column, value in (
        ("abs_effect", want.abs_effect),
        ("abs_se", want.abs_se),
        ("p_value", want.p_value),
        ("rel_lift", want.rel_lift),
    ):
        assert got[column] == pytest.approx(value, rel=1e-12), column


@pytest.mark.parametrize(("metric", "q"), [("latency_p95", 0.95), ("latency_median", 0.5)])
def test_event_level_quantile_equals_the_clustered_interval_on_raw_events(
    world: Path, card, metric: str, q: float
) -> None:
    raw = _raw(world, EVENTS)
    got = _row(card, metric)
    for side, variant in (("control", "control"), ("variant", "treatment")):
        exact = np.quantile(raw[variant]["values"], q, method="inverted_cdf")
        assert got[f"mean_{side}"] == pytest.approx(exact, rel=1e-3)
    want = quantile_clustered(
        EventHistogram.from_events(raw["control"]["units"], raw["control"]["values"]),
        EventHistogram.from_events(raw["treatment"]["units"], raw["treatment"]["values"]),
        q,
    )
    assert got["method"] == want.method
    for column, value in (
        ("abs_effect", want.abs_effect),
        ("abs_se", want.abs_se),
        ("p_value", want.p_value),
    ):
        assert got[column] == pytest.approx(value, rel=1e-12), column


def test_the_tail_moves_and_the_median_does_not(card) -> None:
    tail, median = _row(card, "latency_p95"), _row(card, "latency_median")
    assert tail["abs_effect"] < 0 and tail["p_value"] < 1e-6
    assert median["p_value"] > 0.01


def test_tot_uses_the_exposed_units_and_quantiles_join_the_family(card) -> None:
    itt, tot = _row(card, "latency_p95"), _row(card, "latency_p95", "tot")
    assert tot["n_control"] < itt["n_control"]
    assert itt["p_value_adjusted"] is not None and itt["p_value_adjusted"] >= itt["p_value"]
    assert not [r for r in card if r["population"] == "cace" and r["metric_kind"] == "quantile"]


def test_slices_and_history_leave_quantile_metrics_out(world: Path, card) -> None:
    assert not [
        r for r in card if r["slice_dimension"] != "(all)" and r["metric_kind"] == "quantile"
    ]
    assert [r for r in card if r["slice_dimension"] != "(all)" and r["metric"] == "minutes"]
    history = _run(world, history=True).history
    assert set(history.column("metric").to_pylist()) == {"minutes"}


def test_other_metrics_are_the_same_with_or_without_quantiles(world: Path, card) -> None:
    config = (world / "experiments.toml").read_text()
    alone = world / "alone.toml"
    alone.write_text(
        config.replace(
            'metrics = ["minutes", "minutes_p90", "latency_p95", "latency_median"]',
            'metrics = ["minutes"]',
        )
    )
    cfg = load_config(alone)
    engine = engine_for(cfg, threads=1)
    plain = run_experiment(
        cfg, load_metrics(world / "metrics"), "x", engine, run_date=date(2024, 2, 1)
    )
    engine.close()
    want = _row(plain.scorecard.to_pylist(), "minutes")
    got = _row(card, "minutes")
    for column in ("n_control", "n_variant", "abs_effect", "abs_se", "p_value"):
        assert got[column] == pytest.approx(want[column], rel=1e-12), column


def test_histograms_are_kept_for_the_report(world: Path) -> None:
    import json

    run = _run(world)
    kept = json.loads(run.scorecard.schema.metadata[b"xpkit.histograms"])
    raw = _raw(world, EVENTS)
    for variant in ("control", "treatment"):
        hist = kept["latency_p95"]["itt"][variant]
        assert len(hist["values"]) == len(hist["counts"]) > 20
        assert sum(hist["counts"]) == len(raw[variant]["values"])  # every event, once
        assert hist["values"] == sorted(hist["values"])
    units = kept["minutes_p90"]["itt"]["control"]
    assert sum(units["counts"]) == _row(run.scorecard.to_pylist(), "minutes_p90")["n_control"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'expression = "SUM(x)"\n    kind = "quantile"\n    quantile = 0.9\n    covariate = "pre"',
            "quantile metrics have no CUPED adjustment",
        ),
        (
            'expression = "SUM(x)"\n    kind = "quantile"\n    quantile = 1.5',
            "needs `quantile` strictly between 0 and 1",
        ),
        (
            'expression = "SUM(x)"\n    value = "x"\n    kind = "quantile"\n    quantile = 0.5',
            "exactly one of them",
        ),
        (
            'expression = "SUM(x)"\n    kind = "quantile"\n    quantile = 0.5\n    cap = 10',
            "`cap` does not apply to a quantile metric",
        ),
        ('expression = "SUM(x)"\n    quantile = 0.5', "are for kind = 'quantile'"),
    ],
)
def test_what_quantile_metrics_cannot_do_is_refused(body: str, message: str) -> None:
    code = f"class Q(Metric):\n    source = S\n    {body}\n"

    class S(Source):
        table = "t"
        unit = "u"
        time = "d"

    with pytest.raises(MetricDefinitionError, match=message.replace("(", r"\(")):
        exec(code, {"Metric": Metric, "S": S})


def test_a_quantile_primary_needs_a_fixed_horizon(world: Path) -> None:
    path = world / "primary.toml"
    path.write_text(
        (world / "experiments.toml")
        .read_text()
        .replace("min_days = 1", 'min_days = 1\nprimary = ["latency_p95"]')
    )
    cfg = load_config(path)
    engine = engine_for(cfg)
    with pytest.raises(ConfigError, match="quantile metrics, which have no sequential test"):
        run_experiment(cfg, load_metrics(world / "metrics"), "x", engine)
    engine.close()
    path.write_text(path.read_text() + 'stopping_rule = "fixed_horizon"\n')
    cfg = load_config(path)
    engine = engine_for(cfg)
    run = run_experiment(
        cfg, load_metrics(world / "metrics"), "x", engine, run_date=date(2024, 2, 1)
    )
    engine.close()
    assert _row(run.scorecard.to_pylist(), "latency_p95")["role"] == "primary"


def test_the_report_draws_each_quantile_metrics_distribution(world: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tests.test_report import figures
    from xpkit.cli import main

    out, page = tmp_path / "out", tmp_path / "report.html"
    args = ["run", "--config", str(world / "experiments.toml"), "--out", str(out), "--quiet"]
    assert CliRunner().invoke(main, [*args, "--run-date", "2024-02-01"]).exit_code in (0, 3)
    result = CliRunner().invoke(main, ["report", str(out), "--out", str(page)])
    assert result.exit_code == 0, result.output
    found = figures(page.read_text())
    dists = [f for key, f in found.items() if "-dist-" in key]
    assert len(dists) == 3  # minutes_p90, latency_p95, latency_median
    schema = pq.read_schema(next(out.glob("scorecards/x/*/data.parquet")))
    kept = json.loads(schema.metadata[b"xpkit.histograms"])
    for figure in dists:
        names = [t["name"] for t in figure["data"]]
        assert names == ["control", "treatment"]
        metric = figure["layout"]["xaxis"]["title"]["text"].split(" ")[0]
        for trace in figure["data"]:
            assert len(trace["x"]) == len(kept[metric]["itt"][trace["name"]]["values"])
            assert trace["y"][-1] == pytest.approx(1.0)


def test_sample_latency_tail_improves_median_does_not(sample_dir: Path) -> None:
    """The sample plants shorter stalls for exposed treatment members: p95 of start latency
    falls, the median does not move (manifest.json, quantile_truths); the clustered
    standard error agrees with a bootstrap over members of the raw play rows."""
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    (spec,) = [e for e in manifest["experiments"] if e["experiment_id"] == "homepage_ranking_v2"]
    truths = spec["quantile_truths"]["treatment"]["start_latency_ms"]["quantiles"]
    config = load_config(sample_dir / "experiments.toml")
    engine = engine_for(config, threads=1)
    run = run_experiment(
        config, load_metrics(), "homepage_ranking_v2", engine, run_date=date(2024, 4, 5)
    )
    engine.close()
    card = run.scorecard.to_pylist()
    tail, median = _row(card, "start_latency_p95"), _row(card, "start_latency_median")
    assert tail["abs_ci_high"] < 0 and tail["p_value"] < 1e-6
    assert tail["abs_ci_low"] <= truths["0.95"]["true_itt_abs"] <= tail["abs_ci_high"]
    assert median["abs_ci_low"] <= 0 <= median["abs_ci_high"]
    assert truths["0.5"]["true_itt_abs"] == 0
    assert not tail["guardrail_breached"] and not median["guardrail_breached"]

    # A bootstrap of the raw rows, resampling members within each arm (the clusters).
    rows = (
        duckdb.connect()
        .execute(
            f"""
        WITH units AS (
          SELECT member_id, MIN(variant) AS variant, MIN(assignment_timestamp)::DATE AS day
          FROM '{sample_dir / "experiment_assignments.parquet"}'
          WHERE experiment_id = 'homepage_ranking_v2'
          GROUP BY member_id HAVING COUNT(DISTINCT variant) = 1
        ), last_day AS (SELECT MAX(date) AS last FROM '{sample_dir / "engagement_daily.parquet"}')
        SELECT u.variant, u.member_id, p.start_latency_ms
        FROM units u CROSS JOIN last_day
        JOIN '{sample_dir / "plays.parquet"}' p ON p.member_id = u.member_id
             AND p.date BETWEEN u.day AND u.day + INTERVAL 6 DAY
        WHERE u.day + INTERVAL 6 DAY <= last_day.last
        ORDER BY u.member_id
        """
        )
        .fetchall()
    )
    rng = np.random.default_rng(3)
    arms = {}
    for variant in ("control", "treatment"):
        units = np.array([m for v, m, _ in rows if v == variant])
        values = np.array([x for v, _, x in rows if v == variant])
        ids, start = np.unique(units, return_index=True)
        arms[variant] = (values, np.diff(np.append(start, len(values))))
    replicates = []
    for _ in range(200):
        q = []
        for variant in ("control", "treatment"):
            values, sizes = arms[variant]
            weights = np.repeat(
                rng.multinomial(len(sizes), np.full(len(sizes), 1 / len(sizes))), sizes
            )
            q.append(np.quantile(np.repeat(values, weights), 0.95, method="inverted_cdf"))
        replicates.append(q[1] - q[0])
    boot_se = float(np.std(replicates, ddof=1))
    # 200 replicates estimate an SE to about +/-5% (sd of an sd estimate ~ 1/sqrt(2*199)).
    print(
        f"p95 difference {tail['abs_effect']:.1f}, clustered se {tail['abs_se']:.2f}, bootstrap se {boot_se:.2f}"
    )
    assert tail["abs_se"] == pytest.approx(boot_se, rel=0.2)


def test_a_text_value_is_a_message_naming_the_metric(world: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from xpkit.cli import main

    (world / "metrics" / "bad.py").write_text(
        "from xpkit import Metric\n"
        "from .m import Plays\n"
        "class DayP95(Metric):\n"
        '    """A quantile of a text column."""\n'
        "    source = Plays\n"
        '    value = "CAST(day AS VARCHAR)"\n'
        '    kind = "quantile"\n'
        "    quantile = 0.95\n"
    )
    config = tmp_path / "bad.toml"
    config.write_text(
        (world / "experiments.toml")
        .read_text()
        .replace('metrics_dir = "metrics"', f'metrics_dir = "{world / "metrics"}"')
        .replace('"latency_median"]', '"latency_median", "day_p95"]')
        .replace('= "assignments.parquet"', f'= "{world / "assignments.parquet"}"')
        .replace('= "daily.parquet"', f'= "{world / "daily.parquet"}"')
        .replace('= "plays.parquet"', f'= "{world / "plays.parquet"}"')
    )
    try:
        result = CliRunner().invoke(
            main, ["run", "--config", str(config), "--out", str(tmp_path / "o"), "--quiet"]
        )
    finally:
        (world / "metrics" / "bad.py").unlink()
    assert result.exit_code == 2, result.output
    assert "metric 'day_p95'" in result.output and "bad.py" in result.output
    assert "Traceback" not in result.output
