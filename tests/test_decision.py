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
