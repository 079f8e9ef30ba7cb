"""Identical inputs give identical numbers, also when DuckDB adds in parallel.

Floating-point addition is not associative, so parallel threads that add the same values in
a different order can differ in the last bits. xpkit's sums are taken around a whole-number
shift: for integer-valued columns every term and partial sum is then an exact integer in
float64, and the order cannot matter. Columns with fractional values (watch seconds here)
may still differ between runs at more than one thread, by rounding only (~1e-14 relative);
on one thread they are identical too.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from xpkit.config import load_config
from xpkit.define.registry import load_metrics
from xpkit.runner import engine_for, run_experiment

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "homepage_ranking_v2"
# Integer-valued per-unit columns: counts of sessions, plays and errors.
INTEGER_METRICS = {"sessions", "plays", "errors"}
NUMBERS = ("abs_effect", "abs_se", "p_value", "mean_control", "mean_variant", "rel_lift")


def _numbers(sample_dir: Path, threads: int) -> dict[tuple[str, str, str], tuple]:
    config = load_config(sample_dir / "experiments.toml")
    engine = engine_for(config, threads=threads)
    try:
        run = run_experiment(
            config, load_metrics(ROOT / "metrics"), EXPERIMENT, engine, run_date=date(2024, 4, 5)
        )
    finally:
        engine.close()
    return {
        (r["population"], r["metric"], r["variant"]): tuple(r[c] for c in NUMBERS)
        for r in run.scorecard.to_pylist()
    }


@pytest.fixture(scope="module")
def repeated(sample_dir: Path) -> list[dict[tuple[str, str, str], tuple]]:
    return [_numbers(sample_dir, threads=2) for _ in range(4)]


def test_integer_valued_metrics_are_bit_identical_at_two_threads(repeated) -> None:
    first = repeated[0]
    keys = [k for k in first if k[1] in INTEGER_METRICS]
    assert len(keys) >= 6
    for other in repeated[1:]:
        for key in keys:
            assert other[key] == first[key], key


def test_fractional_metrics_differ_by_rounding_at_most(repeated) -> None:
    first = repeated[0]
    for other in repeated[1:]:
        for key, values in first.items():
            for a, b in zip(values, other[key], strict=True):
                if a is None or b is None:
                    assert a is b, key
                else:
                    assert b == pytest.approx(a, rel=1e-12, abs=1e-300), key


def test_one_thread_is_bit_identical(sample_dir: Path) -> None:
    assert _numbers(sample_dir, threads=1) == _numbers(sample_dir, threads=1)
