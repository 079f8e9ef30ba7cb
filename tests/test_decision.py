"""The decision rule on simulated experiments: false ships under the null, harm blocked."""

from __future__ import annotations

import numpy as np
import pytest

from xpkit.config import ExperimentConfig, GuardrailConfig
from xpkit.decide.analysis import MetricInfo, analyse
from xpkit.decide.decision import decide
from xpkit.decide.health import Check
from xpkit.layout import MetricLayout
from xpkit.moments import Moments
from xpkit.readout import MomentsKey, MomentsTable

METRICS = {
    name: MetricInfo(name, "mean", name != "errors", MetricLayout(name, "mean", f"{name}__value"))
    for name in ("watch", "sessions", "plays", "errors")
}
EXPERIMENT = ExperimentConfig(
    id="sim",
    control="control",
    weights={"control": 1 / 3, "a": 1 / 3, "b": 1 / 3 + 1e-9},
    metrics=["watch", "sessions", "plays"],
    populations=["itt"],
    guardrails=[GuardrailConfig(metric="errors", margin=0.15)],
    min_days=1,
    min_units=10,
)
CLEAN = [Check("srm_assignment", 0.5, 0.001, True, True, "ok")]


def simulate(rng: np.random.Generator, n: int, lift: dict[tuple[str, str], float]) -> MomentsTable:
    cells = {}
    for variant in ("control", "a", "b"):
        for name in METRICS:
            base = 10.0 if name != "errors" else 1.0
            y = rng.gamma(2.0, base / 2.0, size=n) * (1 + lift.get((variant, name), 0.0))
            cells[MomentsKey("itt", variant, name)] = Moments.from_rows(
                y[:, None], [f"{name}__value"]
            )
    return MomentsTable(cells)


def decisions(table: MomentsTable) -> dict[str, str]:
    results = analyse(EXPERIMENT, METRICS, table)
    return {
        d.variant: d.decision
        for d in decide(
            EXPERIMENT, METRICS, results, CLEAN, days_observed=14, min_units_observed=400
        )
    }


def test_aa_false_ship_rate_at_or_below_alpha() -> None:
    rng = np.random.default_rng(11)
    sims = 300
    ships = sum(
        decision == "ship"
        for _ in range(sims)
        for decision in decisions(simulate(rng, 400, {})).values()
    )
    rate = ships / (2 * sims)
    mc_se = np.sqrt(0.05 * 0.95 / (2 * sims))
    assert rate <= 0.05 + 3 * mc_se


def test_real_win_ships_and_harmful_variant_is_blocked() -> None:
    rng = np.random.default_rng(12)
    outcomes = [
        decisions(
            simulate(
                rng,
                1500,
                {("a", "watch"): 0.15, ("b", "watch"): 0.15, ("b", "errors"): 0.3},
            )
        )
        for _ in range(40)
    ]
    assert np.mean([o["a"] == "ship" for o in outcomes]) > 0.8
    assert all(o["b"] == "no_ship" for o in outcomes)


def test_bh_adjusted_p_values_are_used_and_reported() -> None:
    results = analyse(EXPERIMENT, METRICS, simulate(np.random.default_rng(1), 200, {}))
    family = [r for r in results if r.role in ("primary", "secondary")]
    assert len(family) == 6
    assert all(r.p_value_adjusted >= r.effect.p_value for r in family)
    guard = [r for r in results if r.role == "guardrail"]
    assert all(r.p_value_adjusted is None and r.guardrail is not None for r in guard)


@pytest.mark.parametrize(
    ("checks", "days", "units", "expected", "reason"),
    [
        (
            [Check("srm_assignment", 1e-6, 0.001, False, True, "SRM")],
            14,
            400,
            "invalid",
            "srm_assignment: SRM",
        ),
        (CLEAN, 3, 400, "keep_running", "minimum runtime not met: 3 of 7 days"),
        (CLEAN, 14, 5, "keep_running", "minimum sample not met: 5 of 10 units"),
    ],
)
def test_gates_and_minimum_runtime(checks, days, units, expected, reason) -> None:
    experiment = EXPERIMENT.model_copy(update={"min_days": 7})
    table = simulate(np.random.default_rng(2), 100, {("a", "watch"): 0.5, ("b", "watch"): 0.5})
    results = analyse(experiment, METRICS, table)
    out = decide(experiment, METRICS, results, checks, days_observed=days, min_units_observed=units)
    assert all(d.decision == expected for d in out)
    assert all(any(reason in r for r in d.reasons) for d in out)


# --- the decision reads the corrected p-value the configuration asks for ----------------
def _result(metric: str, variant: str, p: float, adjusted: float | None, role: str = "primary"):
    from xpkit.decide.analysis import MetricResult
    from xpkit.stats.effect import Effect

    effect = Effect(
        "welch", 1000, 1000, 10.0, 10.5, 0.5, 0.2, 0.1, 0.9, 0.05, 0.02, 0.01, 0.09, p, 0.05
    )
    return MetricResult(
        population="itt", metric=metric, role=role, variant=variant, effect=effect,
        p_value_adjusted=adjusted,
    )  # fmt: skip


def test_the_decision_uses_the_adjusted_p_value_not_the_raw_one() -> None:
    exp = ExperimentConfig(
        id="one", control="control", weights={"control": 0.5, "a": 0.5}, metrics=["watch"],
        stopping_rule="fixed_horizon", min_days=1, min_units=10,
    )  # fmt: skip
    significant_raw = [_result("watch", "a", 0.01, adjusted=0.08)]
    (d,) = decide(exp, METRICS, significant_raw, CLEAN, days_observed=14, min_units_observed=500)
    assert d.decision == "no_ship"
    assert "primary metric not significant: watch" in " ".join(d.reasons)
    assert "adjusted p = 0.08" in " ".join(d.reasons)
    (d,) = decide(
        exp, METRICS, [_result("watch", "a", 0.01, adjusted=0.03)], CLEAN,
        days_observed=14, min_units_observed=500,
    )  # fmt: skip
    assert d.decision == "ship"


@pytest.mark.parametrize(("correction", "ships"), [("none", True), ("bh", False), ("holm", False)])
def test_the_configured_correction_changes_the_decision(correction: str, ships: bool) -> None:
    """One true-looking primary among six hypotheses: p = 0.02 passes alone, not after BH."""
    from xpkit.decide.analysis import _adjust

    exp = ExperimentConfig(
        id="c", control="control", weights={"control": 0.25, "a": 0.25, "b": 0.25, "d": 0.25},
        metrics=["watch", "sessions"], primary=["watch"], correction=correction,
        stopping_rule="fixed_horizon", min_days=1, min_units=10,
    )  # fmt: skip
    raw = {("watch", "a"): 0.02, ("watch", "b"): 0.6, ("watch", "d"): 0.7}
    raw |= {("sessions", v): 0.5 for v in ("a", "b", "d")}
    results = [
        _result(m, v, p, None, role="primary" if m == "watch" else "secondary")
        for (m, v), p in raw.items()
    ]
    adjusted = _adjust(exp, results)
    decisions = {
        d.variant: d.decision
        for d in decide(exp, METRICS, adjusted, CLEAN, days_observed=14, min_units_observed=500)
    }
    assert (decisions["a"] == "ship") is ships


def test_a_failed_wait_check_keeps_the_experiment_running() -> None:
    exp = ExperimentConfig(
        id="w", control="control", weights={"control": 0.5, "a": 0.5}, metrics=["watch"],
        stopping_rule="fixed_horizon", min_days=1, min_units=10,
    )  # fmt: skip
    young = Check("incomplete_windows", 0.6, 0.5, False, False, "60% not complete", wait=True)
    results = [_result("watch", "a", 0.001, adjusted=0.001)]
    (d,) = decide(exp, METRICS, results, [*CLEAN, young], days_observed=14, min_units_observed=500)
    assert d.decision == "keep_running"
    assert "not ready: 60% not complete" in d.reasons
    (d,) = decide(exp, METRICS, results, CLEAN, days_observed=14, min_units_observed=500)
    assert d.decision == "ship"


@pytest.mark.parametrize("gate", ["srm_assignment", "multi_variant_units", "unknown_variants"])
def test_any_failed_gate_makes_the_decision_invalid(gate: str) -> None:
    exp = ExperimentConfig(
        id="g", control="control", weights={"control": 0.5, "a": 0.5}, metrics=["watch"],
        stopping_rule="fixed_horizon", min_days=1, min_units=10,
    )  # fmt: skip
    broken = Check(gate, 1.0, 0.0, False, True, "broken")
    results = [_result("watch", "a", 0.001, adjusted=0.001)]
    (d,) = decide(exp, METRICS, results, [broken], days_observed=14, min_units_observed=500)
    assert d.decision == "invalid" and d.reasons == (f"{gate}: broken",)


@pytest.mark.parametrize("rule", ["fixed_horizon", "always_valid", "group_sequential"])
def test_an_ended_experiment_gets_a_final_decision_never_keep_running(rule: str) -> None:
    from xpkit.decide.stopping import StopVerdict

    exp = ExperimentConfig(
        id="end", control="control", weights={"control": 0.5, "a": 0.5}, metrics=["watch"],
        stopping_rule=rule, planned_units=100_000, min_days=1, min_units=10,
    )  # fmt: skip
    flat = [_result("watch", "a", 0.4, adjusted=0.4)]
    running = {"a": StopVerdict("continue", "bound not crossed yet")}
    kwargs = dict(days_observed=28, min_units_observed=500, stopping=running)
    (d,) = decide(exp, METRICS, flat, CLEAN, **kwargs)  # type: ignore[arg-type]
    assert d.decision == "keep_running"
    (d,) = decide(exp, METRICS, flat, CLEAN, ended="planned duration of 28 days reached", **kwargs)  # type: ignore[arg-type]
    assert d.decision == "no_ship"
    assert d.reasons[-1] == (
        "planned duration of 28 days reached: no detectable effect, so the decision is final"
    )


def test_calendar_end_from_planned_duration_or_end_date() -> None:
    from datetime import date

    from xpkit.decide.stopping import calendar_end

    base = dict(id="c", control="control", weights={"control": 0.5, "a": 0.5}, metrics=["watch"])
    exp = ExperimentConfig(**base, max_days=28)  # type: ignore[arg-type]
    assert calendar_end(exp, 27, date(2024, 1, 27)) is None
    assert calendar_end(exp, 28, date(2024, 1, 28)) == "planned duration of 28 days reached"
    dated = ExperimentConfig(**base, end_date=date(2024, 1, 31))  # type: ignore[arg-type]
    assert calendar_end(dated, 40, date(2024, 1, 31)) is None
    assert calendar_end(dated, 41, date(2024, 2, 1)) == "end date 2024-01-31 has passed"
