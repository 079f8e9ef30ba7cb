"""Stopping rules wired into decisions: published boundaries, not-yet-valid, run history."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from xpkit.cli import main
from xpkit.config import ExperimentConfig
from xpkit.decide.history import AlwaysValid
from xpkit.decide.stopping import PrimaryLook, stopping_verdict
from xpkit.output.storage import read_run, select_runs
from xpkit.stats.effect import Effect


def effect(z: float) -> Effect:
    nan = math.nan
    return Effect(
        "welch", 1000, 1000, 10.0, 10.0 + z, z, 1.0, nan, nan, None, None, None, None, nan, 0.05
    )


def experiment(**update) -> ExperimentConfig:
    base = dict(
        id="e",
        control="c",
        weights={"c": 0.5, "t": 0.5},
        metrics=["m"],
        stopping_rule="always_valid",
    )
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
    # The first look is mid-enrolment, many units still inside their window: healthy, so
    # exit 0 (immature is not invalid), and a reason to keep running.
    looks = (("2024-03-27", "2024-03-28", 0), ("2024-04-04", "2024-04-05", 0))
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


# --- every branch of the always-valid rule, and the family correction -------------------
def av(p: float, e: float) -> AlwaysValid:
    return AlwaysValid(p_value=p, ci_low=math.nan, ci_high=math.nan, e_value=e)


@pytest.mark.parametrize(
    ("z", "p", "state"),
    [(3.0, 0.01, "benefit"), (-3.0, 0.01, "harm"), (3.0, 0.2, "continue"), (-1.0, 0.3, "continue")],
)
def test_always_valid_branches(z: float, p: float, state: str) -> None:
    verdict = stopping_verdict(
        experiment(), [PrimaryLook("m", effect(z), True, p)], n_total=2000, days_observed=10
    )
    assert verdict.state == state
    if state == "harm":
        assert verdict.reason == "always-valid test crossed in the harmful direction"


def test_always_valid_harm_needs_the_harmful_direction_of_a_lower_is_better_metric() -> None:
    # An increase of a lower-is-better metric is harm, a decrease is benefit.
    up = [PrimaryLook("m", effect(3.0), False, 0.01)]
    down = [PrimaryLook("m", effect(-3.0), False, 0.01)]
    assert stopping_verdict(experiment(), up, n_total=2000, days_observed=10).state == "harm"
    assert stopping_verdict(experiment(), down, n_total=2000, days_observed=10).state == "benefit"


def test_always_valid_ends_at_max_days_without_a_crossing() -> None:
    exp = experiment(max_days=28)
    looks = [PrimaryLook("m", effect(1.0), True, 0.4)]
    assert stopping_verdict(exp, looks, n_total=2000, days_observed=27).state == "continue"
    verdict = stopping_verdict(exp, looks, n_total=2000, days_observed=28)
    assert verdict.state == "ended" and "maximum runtime of 28 days" in verdict.reason


def test_family_correction_of_always_valid_p_values_follows_e_bh() -> None:
    from xpkit.decide.stopping import family_always_valid_p

    exp = experiment(
        weights={"c": 0.25, "a": 0.25, "b": 0.25, "d": 0.25}, metrics=["m", "s"], primary=["m"]
    )
    # Six hypotheses (2 metrics x 3 arms). One e-value of 40: alone it is "significant"
    # (p = 1/40 = 0.025), but e-BH needs e >= m / (alpha k) = 6 / 0.05 = 120 at k = 1.
    looks = {(m, v): av(0.9, 1.0) for m in ("m", "s") for v in ("a", "b", "d")}
    looks[("m", "a")] = av(0.025, 40.0)
    adjusted = family_always_valid_p(exp, looks)
    assert adjusted[("m", "a")] == pytest.approx(6 / 40)  # min(1, m / (k e)) at k = 1
    raw = family_always_valid_p(exp.model_copy(update={"correction": "none"}), looks)
    assert raw[("m", "a")] == 0.025
    holm = family_always_valid_p(exp.model_copy(update={"correction": "holm"}), looks)
    assert holm[("m", "a")] == pytest.approx(6 / 40)
    # Two strong e-values: e-BH at k = 2 needs e >= 6 / (0.05 * 2) = 60 for both.
    looks[("s", "b")] = av(0.01, 70.0)
    looks[("m", "a")] = av(0.01, 65.0)
    two = family_always_valid_p(exp, looks)
    assert two[("m", "a")] == pytest.approx(6 / (2 * 65)) and two[("m", "a")] < 0.05


def test_the_correction_changes_the_group_sequential_bound() -> None:
    exp = experiment(stopping_rule="group_sequential", planned_units=1000)
    looks = [PrimaryLook("m", effect(2.2), True)]
    alone = stopping_verdict(exp, looks, n_total=1000, days_observed=30, past_fractions=[0.5])
    family = stopping_verdict(
        exp, looks, n_total=1000, days_observed=30, past_fractions=[0.5], family_size=6
    )
    assert alone.state == "benefit"
    assert family.state == "ended" and family.z_bound > alone.z_bound
