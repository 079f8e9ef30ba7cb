"""Power planning from moments, against statsmodels and raw-data regressions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from statsmodels.stats.power import NormalIndPower

from xpkit.cli import main
from xpkit.decide.planning import plan, variance_reduction
from xpkit.errors import BadInputError
from xpkit.layout import MetricLayout
from xpkit.moments import Moments

LAYOUT = MetricLayout(
    "m",
    "mean",
    "m__value",
    covariates=("m__pre", "src__has_history"),
    pre_value="m__pre",
    has_history="src__has_history",
)


def sample(rng: np.random.Generator, n: int) -> Moments:
    pre = rng.gamma(2.0, 50.0, n)
    has = (rng.random(n) < 0.9).astype(float)
    value = 0.8 * pre * has + rng.normal(0, 30, n) + 100
    return Moments.from_rows(np.column_stack([value, pre * has, has]), LAYOUT.columns)


def test_variance_reduction_is_the_r2_of_a_raw_regression() -> None:
    rng = np.random.default_rng(5)
    pre = rng.gamma(2.0, 50.0, 5000)
    has = (rng.random(5000) < 0.9).astype(float)
    value = 0.8 * pre * has + rng.normal(0, 30, 5000) + 100
    rows = np.column_stack([value, pre * has, has])
    x = np.column_stack([np.ones(5000), rows[:, 1:]])
    resid = value - x @ np.linalg.lstsq(x, value, rcond=None)[0]
    r2 = 1 - resid.var() / value.var()
    control = Moments.from_rows(rows, LAYOUT.columns)
    assert variance_reduction(control, LAYOUT) == pytest.approx(r2, rel=1e-9)


def test_sample_size_matches_statsmodels() -> None:
    rng = np.random.default_rng(6)
    control = sample(rng, 4000)
    pooled = control.merge(sample(rng, 4000))
    p = plan(
        "m",
        LAYOUT,
        control,
        pooled,
        weights=[0.5, 0.5],
        units_per_day=1000,
        mde_relative=0.03,
        alpha=0.05,
        power=0.8,
    )
    sd = np.sqrt(pooled.var_of("m__pre") * (1 - p.variance_reduction))
    effect = 0.03 * control.mean_of("m__value") / sd
    per_arm = NormalIndPower().solve_power(effect_size=effect, alpha=0.05, power=0.8, ratio=1.0)
    assert p.units_per_arm[0] == int(np.ceil(per_arm))
    assert p.days == int(np.ceil(p.units_total / 1000))
    assert p.units_total_without_cuped > p.units_total


def test_ratio_metrics_are_refused_with_a_message() -> None:
    ratio = MetricLayout("r", "ratio", "r__value", denominator="r__denominator")
    m = Moments.from_rows(np.ones((10, 2)), ratio.columns)
    with pytest.raises(BadInputError, match="'r': power planning supports mean and proportion"):
        plan(
            "r",
            ratio,
            m,
            m,
            weights=[0.5, 0.5],
            units_per_day=1,
            mde_relative=0.02,
            alpha=0.05,
            power=0.8,
        )


def test_power_command_on_the_sample(sample_dir: Path) -> None:
    config = str(sample_dir / "experiments.toml")
    result = CliRunner().invoke(
        main,
        [
            "power",
            "--experiment",
            "homepage_ranking_v2",
            "--metric",
            "watch_seconds",
            "--mde",
            "2%",
            "--config",
            config,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "to detect +2.00%" in result.output and "CUPED reduction" in result.output
    bad = CliRunner().invoke(
        main,
        [
            "power",
            "--experiment",
            "homepage_ranking_v2",
            "--metric",
            "watch_seconds",
            "--mde",
            "two",
            "--config",
            config,
        ],
    )
    assert bad.exit_code == 2 and "'two' is not a number" in bad.output
