"""The one-statement daily history against independent per-day runs, and its display."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from xpkit.cli import main
from xpkit.config import load_config
from xpkit.define.registry import load_metrics
from xpkit.engines.duckdb import DuckDBEngine
from xpkit.output.storage import read_run, select_runs
from xpkit.runner import run_experiment

ROOT = Path(__file__).resolve().parents[1]


def test_history_matches_independent_per_day_runs(sample_dir: Path) -> None:
    config = load_config(sample_dir / "experiments.toml")
    registry = load_metrics(ROOT / "metrics")
    engine = DuckDBEngine(config.run.tables)
    run = run_experiment(config, registry, "homepage_ranking_v2", engine, history=True)
    history = run.history.to_pylist()
    days = sorted({r["analysis_date"] for r in history})
    assert len(days) >= 10
    for day in (days[0], days[len(days) // 2], days[-1]):
        # An independent statement per day: the plain run with the data cut at that day.
        single = run_experiment(
            config,
            registry,
            "homepage_ranking_v2",
            engine,
            as_of=day,
            allow_invalid=True,
            slices=[],
        )
        for want in single.scorecard.to_pylist():
            if want["population"] == "cace" or want["metric_kind"] == "quantile":
                continue  # no daily series: complier effects, quantile metrics
            (got,) = [
                r
                for r in history
                if r["analysis_date"] == day
                and (r["population"], r["metric"], r["variant"])
                == (want["population"], want["metric"], want["variant"])
            ]
            assert got["n_control"] == want["n_control"]
            assert got["n_variant"] == want["n_variant"]
            assert got["abs_effect"] == pytest.approx(want["abs_effect"], rel=1e-9)
            assert got["abs_ci_high"] == pytest.approx(want["abs_ci_high"], rel=1e-9)
            assert got["p_value"] == pytest.approx(want["p_value"], rel=1e-6, abs=1e-12)
    # Always-valid p-values never rise and the interval never widens.
    series = [r for r in history if (r["population"], r["metric"]) == ("itt", "watch_seconds")]
    ps = [r["always_valid_p_value"] for r in series]
    assert all(a >= b for a, b in zip(ps, ps[1:], strict=False))
    widths = [r["always_valid_ci_high"] - r["always_valid_ci_low"] for r in series]
    assert all(a >= b - 1e-12 for a, b in zip(widths, widths[1:], strict=False))
    # Always valid is wider than the fixed-horizon interval on every day.
    assert all(
        r["always_valid_ci_high"] - r["always_valid_ci_low"] > r["abs_ci_high"] - r["abs_ci_low"]
        for r in series
    )
    # A run that does not keep its history builds it for ITT only, for the scorecard's
    # always-valid columns: they are the same, and are the history's last day.
    plain = run_experiment(config, registry, "homepage_ranking_v2", engine)
    assert plain.history is None
    overall = pc.equal(plain.scorecard.column("slice_dimension"), "(all)")
    plain = replace(plain, scorecard=plain.scorecard.filter(overall))
    run = replace(
        run,
        scorecard=run.scorecard.filter(pc.equal(run.scorecard.column("slice_dimension"), "(all)")),
    )
    columns = ["population", "metric", "variant", "always_valid_p_value", "always_valid_ci_low"]
    kept, built = run.scorecard.select(columns), plain.scorecard.select(columns)
    # (Two executions: DuckDB's parallel float sums may differ in the last bits.)
    for b, k in zip(built.to_pylist(), kept.to_pylist(), strict=True):
        assert [b[c] for c in columns[:3]] == [k[c] for c in columns[:3]]
        for c in columns[3:]:  # None where there is no always-valid figure (TOT, CACE)
            assert (b[c] is None) == (k[c] is None)
            assert b[c] is None or b[c] == pytest.approx(k[c], rel=1e-9)
    last = [r for r in history if r["analysis_date"] == days[-1] and r["population"] == "itt"]
    av = {
        (r["metric"], r["variant"]): r["always_valid_p_value"]
        for r in kept.to_pylist()
        if r["population"] == "itt"
    }
    assert all(av[(r["metric"], r["variant"])] == r["always_valid_p_value"] for r in last)
    assert any(p is not None for p in av.values())
    engine.close()


def test_run_history_writes_and_show_prints_it(sample_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--config",
            str(sample_dir / "experiments.toml"),
            "--out",
            str(tmp_path),
            "--experiment",
            "homepage_ranking_v2",
            "--history",
            "--run-date",
            "2024-04-05",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    (manifest,) = select_runs(tmp_path, "homepage_ranking_v2", date(2024, 4, 5))
    history = read_run(manifest).history
    assert history is not None
    assert history.column("analysis_date").to_pylist()[-1] == date(2024, 4, 4)
    shown = CliRunner().invoke(main, ["show", str(tmp_path), "--full"]).output
    assert "Effect over time (ITT)" in shown
    assert "watch_seconds — treatment" in shown
    assert shown.index("watch_seconds — treatment") < shown.index("errors — treatment")


def test_novelty_verdict_from_cumulative_history() -> None:
    """Daily increments recovered from a cumulative series reveal a fading effect."""
    import numpy as np

    from xpkit.decide.history import daily_trend
    from xpkit.stats.effect import Effect
    from xpkit.stats.novelty import DECLINING, NO_TREND

    def series(increments: list[float]) -> list[Effect]:
        se_day = 0.05
        w = np.cumsum(np.full(len(increments), 1 / se_day**2))
        est = np.cumsum(np.array(increments) / se_day**2) / w
        nan = float("nan")
        return [
            Effect(
                method="welch",
                n_control=100 * (k + 1),
                n_treatment=100 * (k + 1),
                mean_control=1.0,
                mean_treatment=1.0 + float(est[k]),
                abs_effect=float(est[k]),
                abs_se=float(1 / np.sqrt(w[k])),
                abs_ci_low=nan,
                abs_ci_high=nan,
                rel_lift=None,
                rel_se=None,
                rel_ci_low=None,
                rel_ci_high=None,
                p_value=nan,
                alpha=0.05,
            )  # fmt: skip
            for k in range(len(increments))
        ]

    fading = [1.0 - 0.08 * k for k in range(12)]
    assert daily_trend(series(fading)) == DECLINING
    flat = [0.5 + 0.01 * (-1) ** k for k in range(12)]
    assert daily_trend(series(flat)) == NO_TREND


def test_history_rows_are_exactly_the_full_analysis_of_each_day() -> None:
    """The history computes only the headline estimates of each day (no unadjusted
    estimates, CACE, multiple testing or guardrails); they must be analyse()'s numbers to the
    last bit, for every kind of estimator, and the always-valid columns the mSPRT of them."""
    import math

    import numpy as np

    from xpkit.config import ExperimentConfig, GuardrailConfig
    from xpkit.decide.analysis import MetricInfo, analyse
    from xpkit.decide.history import build_history
    from xpkit.layout import MetricLayout
    from xpkit.moments import Moments
    from xpkit.output.tables import build_history_table
    from xpkit.readout import MomentsKey, MomentsTable
    from xpkit.stats.sequential import msprt, tau_from_mde

    covariates = ("watch__pre", "has_history")
    layouts = {
        "watch": MetricLayout("watch", "mean", "watch__value", None, covariates, "exposed"),
        "streams": MetricLayout(
            "streams", "proportion", "streams__value", None, ("streams__pre",), "exposed"
        ),
        "watch_per_session": MetricLayout(
            "watch_per_session", "ratio", "watch__value", "sessions__value", covariates, "exposed"
        ),
        "errors": MetricLayout("errors", "mean", "errors__value", None, (), "exposed"),
        "errors_per_play": MetricLayout(
            "errors_per_play", "ratio", "errors__value", "plays__value", (), "exposed"
        ),
    }
    metrics = {
        name: MetricInfo(name, ml.kind, not name.startswith("errors"), ml)
        for name, ml in layouts.items()
    }
    experiment = ExperimentConfig(
        id="sim",
        control="control",
        weights={"control": 0.5, "treatment": 0.5},
        metrics=["watch", "streams", "watch_per_session"],
        guardrails=[
            GuardrailConfig(metric="errors", margin=0.05),
            GuardrailConfig(metric="errors_per_play", margin=0.05),
        ],
    )
    names = [
        "watch__value", "watch__pre", "has_history", "exposed", "streams__value",
        "streams__pre", "sessions__value", "errors__value", "plays__value",
    ]  # fmt: skip
    rng = np.random.default_rng(3)

    def units(n: int, lift: float) -> np.ndarray:
        pre = rng.gamma(2.0, 50.0, n)
        has_history = (rng.random(n) < 0.7).astype(float)
        sessions = rng.poisson(4.0, n) + 1.0
        plays = rng.poisson(6.0, n) + 1.0
        return np.column_stack(
            [
                0.8 * pre * has_history + rng.gamma(2.0, 20.0, n) * (1 + lift),
                pre * has_history,
                has_history,
                (rng.random(n) < 0.6).astype(float),
                (rng.random(n) < 0.3 + lift).astype(float),
                (rng.random(n) < 0.3).astype(float),
                sessions,
                rng.poisson(0.2, n).astype(float),
                plays,
            ]
        )

    data = {"control": units(600, 0.0), "treatment": units(600, 0.05)}
    by_date = {}
    for k in range(1, 7):  # cumulative: each day adds units
        cells = {}
        for variant, x in data.items():
            seen = x[: 100 * k]
            for population, rows in (("itt", seen), ("tot", seen[seen[:, 3] == 1.0])):
                for name, ml in layouts.items():
                    idx = [names.index(c) for c in ml.columns]
                    cells[MomentsKey(population, variant, name)] = Moments.from_rows(
                        rows[:, idx], ml.columns
                    )
        by_date[date(2024, 1, k)] = MomentsTable(cells)

    series = build_history(experiment, metrics, by_date)
    history = build_history_table("sim", date(2024, 2, 1), series).to_pylist()
    full = {
        (day, r.population, r.metric, r.variant): r.effect
        for day, table in by_date.items()
        for r in analyse(experiment, metrics, table)
        if r.population != "cace"
    }
    assert len(history) == len(full) == 6 * 2 * len(layouts)
    assert {r["method"] for r in history} == {
        "cuped", "ratio_delta_cuped", "ratio_delta", "welch"
    }  # fmt: skip

    def same(stored: float | None, computed: float | None) -> bool:
        missing = computed is None or math.isnan(computed)
        return stored is None if missing else stored == computed

    for row in history:
        e = full[(row["analysis_date"], row["population"], row["metric"], row["variant"])]
        assert (row["n_control"], row["n_variant"], row["method"]) == (
            e.n_control,
            e.n_treatment,
            e.method,
        )
        for column, value in [
            ("abs_effect", e.abs_effect),
            ("abs_se", e.abs_se),
            ("abs_ci_low", e.abs_ci_low),
            ("abs_ci_high", e.abs_ci_high),
            ("rel_lift", e.rel_lift),
            ("p_value", e.p_value),
        ]:
            assert same(row[column], value), (row, column, value)
    for population in ("itt", "tot"):
        for name in layouts:
            rows = [r for r in history if (r["population"], r["metric"]) == (population, name)]
            looks = [full[(r["analysis_date"], population, name, "treatment")] for r in rows]
            tau = tau_from_mde(experiment.sequential_mde * abs(looks[-1].mean_control))
            seq = msprt([e.abs_effect for e in looks], [e.abs_se for e in looks], tau)
            assert [r["msprt_tau"] for r in rows] == [tau] * len(rows)
            assert [r["always_valid_p_value"] for r in rows] == seq.p_values.tolist()
            assert [r["always_valid_ci_low"] for r in rows] == seq.ci_low.tolist()
            assert [r["always_valid_ci_high"] for r in rows] == seq.ci_high.tolist()
