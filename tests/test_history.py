"""The one-statement daily history against independent per-day runs, and its display."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from xpkit.cli import main
from xpkit.config import load_config
from xpkit.engine import DuckDBEngine
from xpkit.registry import load_metrics
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
            config, registry, "homepage_ranking_v2", engine, as_of=day, allow_invalid=True
        )
        for want in single.scorecard.to_pylist():
            if want["population"] == "cace":
                continue
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
    folder = tmp_path / "experiment_id=homepage_ranking_v2" / "run_date=2024-04-05"
    history = pq.read_table(folder / "history.parquet")
    assert history.column("analysis_date").to_pylist()[-1] == date(2024, 4, 4)
    shown = CliRunner().invoke(main, ["show", str(tmp_path)]).output
    assert "Effect over time (ITT)" in shown
    assert "watch_seconds — treatment" in shown
    assert shown.index("watch_seconds — treatment") < shown.index("errors — treatment")


def test_novelty_verdict_from_cumulative_history() -> None:
    """Daily increments recovered from a cumulative series reveal a fading effect."""
    import numpy as np
    import pyarrow as pa

    from xpkit.history import HISTORY_SCHEMA, daily_increments
    from xpkit.stats.novelty import DECLINING, NO_TREND

    def table(increments: list[float]) -> pa.Table:
        se_day = 0.05
        w = np.cumsum(np.full(len(increments), 1 / se_day**2))
        est = np.cumsum(np.array(increments) / se_day**2) / w
        rows = [
            {
                "population": "itt",
                "metric": "m",
                "variant": "t",
                "analysis_date": date(2024, 1, k + 1),
                "abs_effect": float(est[k]),
                "abs_se": float(1 / np.sqrt(w[k])),
            }
            for k in range(len(increments))
        ]
        return pa.Table.from_pylist(rows, schema=HISTORY_SCHEMA)

    fading = [1.0 - 0.08 * k for k in range(12)]
    assert daily_increments(table(fading), "itt", "m", "t") == DECLINING
    flat = [0.5 + 0.01 * (-1) ** k for k in range(12)]
    assert daily_increments(table(flat), "itt", "m", "t") == NO_TREND
