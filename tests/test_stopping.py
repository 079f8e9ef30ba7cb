"""Stopping rules wired into decisions: published boundaries, not-yet-valid, run history."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from xpkit.cli import main
from xpkit.config import ExperimentConfig
from xpkit.decide.stopping import PrimaryLook, stopping_verdict
from xpkit.output.storage import read_run, select_runs
from xpkit.stats.effect import Effect


def effect(z: float) -> Effect:
    nan = math.nan
    return Effect(
        "welch", 1000, 1000, 10.0, 10.0 + z, z, 1.0, nan, nan, None, None, None, None, nan, 0.05
    )


def experiment(**update) -> ExperimentConfig:
    base = dict(id="e", control="c", weights={"c": 0.5, "t": 0.5}, metrics=["m"])
    return ExperimentConfig(**(base | update))


@pytest.mark.parametrize(("z", "state"), [(2.10, "benefit"), (1.95, "ended"), (-2.10, "harm")])
def test_group_sequential_final_look_uses_the_published_obf_bound(z: float, state: str) -> None:
    """Five equally spaced looks, alpha 0.05, O'Brien-Fleming-type spending: last bound 2.031."""
    exp = experiment(stopping_rule="group_sequential", planned_units=1000)
    verdict = stopping_verdict(
        exp,
        [PrimaryLook("m", effect(z), True)],
        n_total=1000,
        days_observed=30,
        past_fractions=[0.2, 0.4, 0.6, 0.8],
    )
    assert verdict.z_bound == pytest.approx(2.031, abs=1e-3)
    assert verdict.state == state
    assert "look 5 at information fraction 1.00" in verdict.reason


def test_group_sequential_first_look_is_strict() -> None:
    exp = experiment(stopping_rule="group_sequential", planned_units=1000)
    verdict = stopping_verdict(
        exp, [PrimaryLook("m", effect(3.0), True)], n_total=200, days_observed=7
    )
    assert verdict.state == "continue" and verdict.z_bound > 4


def test_fixed_horizon_before_plan_is_not_yet_valid() -> None:
    exp = experiment(stopping_rule="fixed_horizon", planned_units=5000)
    verdict = stopping_verdict(
        exp, [PrimaryLook("m", effect(5.0), True)], n_total=1000, days_observed=7
    )
    assert verdict.state == "continue"
    assert "NOT YET VALID: 1000 of 5000 planned units" in verdict.reason


def test_always_valid_crossing_and_maximum_runtime() -> None:
    exp = experiment(max_days=28)
    look = PrimaryLook("m", effect(4.0), True, always_valid_p=0.01)
    assert stopping_verdict(exp, [look], n_total=10, days_observed=7).state == "benefit"
    flat = PrimaryLook("m", effect(1.0), True, always_valid_p=0.4)
    assert stopping_verdict(exp, [flat], n_total=10, days_observed=7).state == "continue"
    assert stopping_verdict(exp, [flat], n_total=10, days_observed=28).state == "ended"


def test_group_sequential_look_number_comes_from_recorded_runs(sample_copy: Path) -> None:
    config = sample_copy / "experiments.toml"
    text = config.read_text().replace(
        'primary = ["watch_seconds"]',
        'primary = ["watch_seconds"]\nstopping_rule = "group_sequential"\nplanned_units = 200000',
        1,
    )
    config.write_text(text)
    out = sample_copy / "out"
    # The first look is mid-enrolment: most units have not completed their window yet.
    looks = (("2024-03-27", "2024-03-28", 3), ("2024-04-04", "2024-04-05", 0))
    for as_of, run_date, exit_code in looks:
        result = CliRunner().invoke(
            main,
            [
                "run",
                "--config",
                str(config),
                "--out",
                str(out),
                "--experiment",
                "homepage_ranking_v2",
                "--as-of",
                as_of,
                "--run-date",
                run_date,
                "--quiet",
            ],
        )
        assert result.exit_code == exit_code, result.output
    (manifest,) = select_runs(out, "homepage_ranking_v2", date(2024, 4, 5))
    rows = read_run(manifest).scorecard.to_pylist()
    first = rows[0]
    assert first["stopping_rule"] == "group_sequential"
    assert any("group-sequential look 2" in r for r in first["decision_reasons"])
    assert 0 < first["information_fraction"] < 1
