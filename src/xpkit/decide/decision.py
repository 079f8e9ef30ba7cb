"""The ship decision, per experiment and treatment variant, with its reasons.

``invalid``      a health gate failed: no number of this experiment can be trusted.
``keep_running`` the minimum runtime or sample size is not met yet, or the stopping rule's
                 bound has not been crossed.
``no_ship``      a guardrail is breached, a primary metric moved the wrong way, or the
                 primary metrics showed no significant improvement when the test ended.
``ship``         every primary metric improved significantly (after multiple-testing
                 correction) and no guardrail is breached.

Only the ITT population decides: TOT is selected on exposure and the complier effect is an
estimate derived from ITT, so neither adds evidence about the assignment's effect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from xpkit.config import ExperimentConfig
from xpkit.decide.analysis import MetricInfo, MetricResult
from xpkit.decide.health import Check, failed_gates
from xpkit.decide.stopping import StopVerdict

DecisionKind = Literal["ship", "no_ship", "keep_running", "invalid"]


@dataclass(frozen=True)
class Decision:
    variant: str
    decision: DecisionKind
    reasons: tuple[str, ...]


def _fmt_effect(r: MetricResult) -> str:
    e = r.effect
    if e.rel_lift is not None:
        return f"{e.rel_lift:+.2%} [{e.rel_ci_low:+.2%}, {e.rel_ci_high:+.2%}]"
    return f"{e.abs_effect:+.4g} [{e.abs_ci_low:+.4g}, {e.abs_ci_high:+.4g}]"


def decide(
    experiment: ExperimentConfig,
    metrics: Mapping[str, MetricInfo],
    results: Sequence[MetricResult],
    checks: Sequence[Check],
    *,
    days_observed: int,
    min_units_observed: int,
    stopping: Mapping[str, StopVerdict] | None = None,
    ended: str | None = None,
) -> list[Decision]:
    """One decision per treatment variant.

    ``stopping`` maps a variant to its stopping rule's verdict (:mod:`xpkit.decide.stopping`):
    ``ship`` and ``no_ship`` are only given when the rule's bound is crossed or the test
    has ended. Without it (or with a ``fixed`` verdict) the fixed-horizon p-values decide
    once the minimum runtime is met.

    ``ended`` says why the experiment is over (its planned duration reached, its end date
    passed): the decision is then final, ship or no-ship, never keep running; without a
    detectable effect that is a no-ship with "no detectable effect" as its reason.
    """
    decisions = []
    gates = failed_gates(checks)
    for variant in experiment.treatments:
        if gates:
            decisions.append(
                Decision(variant, "invalid", tuple(f"{c.name}: {c.detail}" for c in gates))
            )
            continue
        rows = [r for r in results if r.variant == variant and r.population == "itt"]
        reasons: list[str] = ["health checks passed"]
        breached = [r for r in rows if r.guardrail is not None and r.guardrail.breached]
        primary = [r for r in rows if r.role == "primary"]
        harmful, improved, flat = [], [], []
        for r in primary:
            p = r.p_value_adjusted if r.p_value_adjusted is not None else r.effect.p_value
            good_direction = (r.effect.abs_effect > 0) == metrics[r.metric].higher_is_better
            significant = p == p and p < experiment.alpha
            line = f"{r.metric} {_fmt_effect(r)}, adjusted p = {p:.3g}"
            if significant and good_direction:
                improved.append(line)
            elif significant:
                harmful.append(line)
            else:
                flat.append(line)
        for r in breached:
            assert r.guardrail is not None
            reasons.append(f"guardrail breached: {r.guardrail.reason}")
        for line in harmful:
            reasons.append(f"primary metric moved the wrong way: {line}")

        runtime_ok = days_observed >= experiment.min_days
        units_ok = min_units_observed >= experiment.min_units
        if not runtime_ok:
            reasons.append(
                f"minimum runtime not met: {days_observed} of {experiment.min_days} days"
            )
        if not units_ok:
            reasons.append(
                f"minimum sample not met: {min_units_observed} of {experiment.min_units} units "
                f"in the smallest variant"
            )
        waiting = [c for c in checks if c.wait and not c.passed]
        for check in waiting:
            reasons.append(f"not ready: {check.detail}")
        verdict = (stopping or {}).get(variant)
        if verdict is not None and verdict.reason:
            reasons.append(verdict.reason)
        state = "fixed" if verdict is None else verdict.state

        kind: DecisionKind
        if not (runtime_ok and units_ok) or waiting:
            # Too early to end the test either way: a breach or harm seen now is reported
            # in the reasons, but one noisy day does not end an experiment.
            kind = "keep_running"
        elif breached:
            kind = "no_ship"
        elif state == "fixed":
            if harmful:
                kind = "no_ship"
            elif primary and len(improved) == len(primary):
                reasons += [f"primary metric improved: {line}" for line in improved]
                reasons.append("no guardrail breached")
                kind = "ship"
            else:
                reasons += [f"primary metric not significant: {line}" for line in flat]
                kind = "no_ship"
        elif state == "benefit":
            reasons += [f"primary metric: {line}" for line in improved + flat]
            reasons.append("no guardrail breached")
            kind = "ship"
        elif state in ("harm", "ended"):
            kind = "no_ship"
        else:
            kind = "keep_running"
        if kind == "keep_running" and ended is not None:
            reasons.append(f"{ended}: no detectable effect, so the decision is final")
            kind = "no_ship"
        decisions.append(Decision(variant, kind, tuple(reasons)))
    return decisions
