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


def test_power_plan_on_the_sample_matches_a_hand_computation(sample_dir) -> None:
    """Units per day, days, and the pre-period variance against SQL written here."""
    import math

    import duckdb

    from tests.conftest import METRICS_DIR
    from xpkit.config import load_config
    from xpkit.define.registry import load_metrics
    from xpkit.planner import power_plan
    from xpkit.runner import engine_for

    config = load_config(sample_dir / "experiments.toml")
    engine = engine_for(config)
    try:
        p = power_plan(
            config, load_metrics(METRICS_DIR), "homepage_ranking_v2", "watch_seconds", engine,
            mde_relative=0.02,
        )  # fmt: skip
    finally:
        engine.close()
    con = duckdb.connect()
    a, d = sample_dir / "experiment_assignments.parquet", sample_dir / "engagement_daily.parquet"
    as_of = con.execute(f"SELECT MAX(date) FROM '{d}'").fetchone()[0]
    units = f"""
        SELECT member_id, MIN(CAST(assignment_timestamp AS DATE)) AS day
        FROM '{a}' WHERE experiment_id = 'homepage_ranking_v2'
        GROUP BY member_id HAVING MIN(variant) = MAX(variant)
    """
    first, n = con.execute(
        f"SELECT MIN(day), COUNT(*) FILTER (WHERE day + 6 <= DATE '{as_of}') FROM ({units})"
    ).fetchone()
    enrolment_days = (as_of - first).days - 6 + 1  # assigned first .. as_of - window end
    assert p.units_per_day == pytest.approx(n / enrolment_days, rel=1e-12)
    assert p.days == math.ceil(p.units_total / p.units_per_day)
    # The variance is the pre-period's: 7 days before assignment, units with no rows = 0.
    variance = con.execute(f"""
        SELECT VAR_SAMP(COALESCE(w, 0)) FROM ({units}) u
        LEFT JOIN (
            SELECT e.member_id, SUM(e.watch_seconds) AS w
            FROM '{d}' e JOIN ({units}) v USING (member_id)
            WHERE e.date BETWEEN v.day - 7 AND v.day - 1
            GROUP BY e.member_id
        ) s USING (member_id)
        WHERE u.day + 6 <= DATE '{as_of}'
    """).fetchone()[0]
    assert p.variance == pytest.approx(variance, rel=1e-9)


def test_the_default_rules_plan_comes_from_the_pre_period_only() -> None:
    """Units = k^2 CV^2 (1/w_c + 1/w_t) / mde^2 x the group-sequential inflation, with CV
    from the pre-period value scaled to the window's length (computed here by hand)."""
    from scipy import stats

    from xpkit.decide.planning import plan_from_pre_period
    from xpkit.stats.group_sequential import inflation_factor

    rng = np.random.default_rng(3)
    pooled = sample(rng, 5000)
    p = plan_from_pre_period(
        "m", LAYOUT, pooled, window_days=7, pre_window_days=14, mde_relative=0.05,
        power=0.8, alpha=0.05, weights=[0.5, 0.5], looks=28,
    )  # fmt: skip
    assert p is not None
    x = pooled.select(["m__pre"])
    cv2 = float(x.cov()[0, 0]) / float(x.mean[0]) ** 2 * 14 / 7
    k = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    per_arm = k**2 * cv2 * 2 / 0.05**2
    assert p.fixed_units == 2 * int(np.ceil(per_arm))
    inflation = inflation_factor(np.arange(1, 29) / 28, 0.05, 0.8, "obrien_fleming")
    assert 1.0 < inflation < 1.1
    assert p.planned_units == int(np.ceil(p.fixed_units * inflation))
    assert "from its pre-period CV" in p.note and "x1.0" in p.note
    # The value over the analysis window plays no part: changing it changes nothing.
    shifted = Moments(
        n=pooled.n, columns=pooled.columns,
        mean=pooled.mean * np.array([10.0, 1.0, 1.0]), comoment=pooled.comoment,
    )  # fmt: skip
    assert plan_from_pre_period(
        "m", LAYOUT, shifted, window_days=7, pre_window_days=14, mde_relative=0.05,
        power=0.8, alpha=0.05, weights=[0.5, 0.5], looks=28,
    ) == p  # fmt: skip
    # Without a pre-period value there is nothing to plan from.
    bare = MetricLayout("m", "mean", "m__value")
    assert (
        plan_from_pre_period(
            "m",
            bare,
            pooled,
            window_days=7,
            pre_window_days=14,
            mde_relative=0.05,
            power=0.8,
            alpha=0.05,
            weights=[0.5, 0.5],
            looks=28,
        )  # fmt: skip
        is None
    )


def test_the_default_stopping_rule_states_its_plan_and_falls_back_without_one() -> None:
    import math

    from xpkit.config import ExperimentConfig
    from xpkit.decide.planning import SequentialPlan
    from xpkit.decide.stopping import PrimaryLook, stopping_verdict
    from xpkit.stats.effect import Effect

    exp = ExperimentConfig(id="d", control="c", weights={"c": 0.5, "t": 0.5}, metrics=["m"])
    assert exp.stopping_rule == "group_sequential" and exp.planned_units is None
    nan = math.nan
    effect = Effect(
        "welch", 500, 500, 10.0, 11.0, 1.0, 0.5, nan, nan, None, None, None, None, nan, 0.05
    )
    looks = [PrimaryLook("m", effect, True, 0.5)]
    plan = SequentialPlan("m", 4000, 3900, 1.03, 28, "4000 planned units: ...")
    verdict = stopping_verdict(exp, looks, n_total=1000, days_observed=7, plan=plan)
    assert verdict.information_fraction == pytest.approx(0.25)
    assert "(4000 planned units: ...)" in verdict.reason
    fallback = stopping_verdict(exp, looks, n_total=1000, days_observed=7)
    assert fallback.information_fraction is None
    assert "no pre-period to plan from, so the always-valid test decides" in fallback.reason


def test_a_sequential_plan_inflates_the_fixed_horizon_units() -> None:
    rng = np.random.default_rng(6)
    control = sample(rng, 4000)
    pooled = control.merge(sample(rng, 4000))
    args = dict(weights=[0.5, 0.5], units_per_day=1000, mde_relative=0.03, alpha=0.05, power=0.8)
    fixed = plan("m", LAYOUT, control, pooled, **args)  # type: ignore[arg-type]
    gs = plan("m", LAYOUT, control, pooled, rule="group-sequential", inflation=1.03, **args)  # type: ignore[arg-type]
    assert gs.units_total_fixed == fixed.units_total
    assert gs.units_per_arm == tuple(int(np.ceil(n * 1.03)) for n in fixed.units_per_arm)
    assert gs.units_total == int(np.ceil(fixed.units_total * 1.03))
    assert gs.days == int(np.ceil(gs.units_total / 1000))
    assert gs.mde_at_days[14] == pytest.approx(fixed.mde_at_days[14] * np.sqrt(1.03))
