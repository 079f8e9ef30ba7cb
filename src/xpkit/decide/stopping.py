"""Stopping rules: may this look end the experiment, and which way?

``always_valid`` (default)  the mSPRT's always-valid p-value of every primary metric, from
                            the run's daily history: valid under continuous monitoring.
                            With a correction configured, the p-values are e-BH adjusted
                            (Wang & Ramdas, 2022) over the family of primary and secondary
                            metrics x treatment variants, from the mSPRT e-values at this
                            look: valid under any dependence between them.
                            Without a crossing the experiment keeps running until
                            ``max_days``, then ends without a ship.
``group_sequential``        Lan-DeMets alpha spending (O'Brien-Fleming or Pocock shape) at
                            information fraction n / ``planned_units``; the earlier looks
                            are the recorded runs of this experiment. With a correction
                            configured, each hypothesis of the family spends alpha / m
                            (Bonferroni, valid under any dependence).
``fixed_horizon``           one look at ``planned_units``: before that the result is not yet
                            valid; without ``planned_units`` the minimum runtime decides.

Pure: takes effects and numbers, returns a verdict with a reason a person can read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from xpkit.config import ExperimentConfig
from xpkit.decide.history import AlwaysValid
from xpkit.decide.planning import SequentialPlan
from xpkit.stats.effect import Effect
from xpkit.stats.group_sequential import check_look
from xpkit.stats.multiple import e_bh_adjusted

StopState = Literal["benefit", "harm", "continue", "ended", "fixed"]


@dataclass(frozen=True)
class PrimaryLook:
    metric: str
    effect: Effect
    higher_is_better: bool
    always_valid_p: float | None = None


@dataclass(frozen=True)
class StopVerdict:
    state: StopState
    reason: str
    information_fraction: float | None = None
    z_bound: float | None = None


def _good(look: PrimaryLook) -> bool:
    return (look.effect.abs_effect > 0) == look.higher_is_better


def stopping_verdict(
    experiment: ExperimentConfig,
    primaries: Sequence[PrimaryLook],
    *,
    n_total: int,
    days_observed: int,
    past_fractions: Sequence[float] = (),
    family_size: int = 1,
    plan: SequentialPlan | None = None,
    final: bool = False,
) -> StopVerdict:
    """The verdict for one treatment variant; ``family_size`` is the number of hypotheses
    (primary and secondary metrics x treatment variants) the error rate is controlled over
    (1 when no correction is configured). ``plan`` is the pre-period plan the
    group-sequential rule aims at when ``planned_units`` is not configured; ``final`` marks
    the planned last look (duration reached, end date passed): it spends what is left."""
    rule = experiment.stopping_rule
    alpha = experiment.alpha
    planned_note = ""
    if rule == "group_sequential" and experiment.planned_units is None:
        if plan is None:
            # Nothing to plan from (no pre-period value of the primary metric): the
            # always-valid test needs no plan and stays valid under daily looks.
            rule = "always_valid"
            planned_note = (
                "; no planned_units and no pre-period to plan from, so the always-valid test "
                "decides (set planned_units from `xpkit power` for a group-sequential plan)"
            )
        else:
            planned_note = f" ({plan.note})"
    if not primaries:
        return StopVerdict("continue", "no primary metric estimate yet")
    if rule == "fixed_horizon":
        planned = experiment.planned_units
        if planned is not None and n_total < planned:
            return StopVerdict(
                "continue",
                f"fixed-horizon result NOT YET VALID: {n_total} of {planned} planned units",
                information_fraction=n_total / planned,
            )
        return StopVerdict("fixed", "fixed horizon reached" if planned else "")

    if rule == "always_valid":
        verdict = _always_valid(experiment, primaries, days_observed)
        return StopVerdict(verdict.state, verdict.reason + planned_note)

    # group_sequential
    planned = experiment.planned_units or (plan.planned_units if plan else None)
    assert planned is not None  # either configured or planned above
    fraction = min(1.0, n_total / planned)
    past = [f for f in past_fractions if f < fraction]
    verdicts = []
    for look in primaries:
        e = look.effect
        z = e.abs_effect / e.abs_se if e.abs_se and e.abs_se > 0 else 0.0
        verdicts.append(
            check_look(
                past, fraction, z, alpha / max(family_size, 1), experiment.spending, final=final
            )
        )
    bound = verdicts[0].z_bound
    head = (
        f"group-sequential look {len(past) + 1} at information fraction {fraction:.2f}, "
        f"|z| bound {bound:.3f}{planned_note}"
    )
    if any(v.crossed and not _good(look) for v, look in zip(verdicts, primaries, strict=True)):
        return StopVerdict("harm", f"{head}: crossed in the harmful direction", fraction, bound)
    if all(v.crossed and _good(look) for v, look in zip(verdicts, primaries, strict=True)):
        return StopVerdict("benefit", f"{head}: crossed", fraction, bound)
    if verdicts[0].final:
        return StopVerdict("ended", f"{head}: final look, not crossed", fraction, bound)
    return StopVerdict("continue", f"{head}: not crossed", fraction, bound)


def _always_valid(
    experiment: ExperimentConfig, primaries: Sequence[PrimaryLook], days_observed: int
) -> StopVerdict:
    alpha = experiment.alpha
    if True:
        ps = [p.always_valid_p for p in primaries]
        if any(p is None or math.isnan(p) for p in ps):
            return StopVerdict("continue", "always-valid p-value not available yet")
        crossed = [p < alpha for p in ps]  # type: ignore[operator]
        if any(c and not _good(look) for c, look in zip(crossed, primaries, strict=True)):
            return StopVerdict("harm", "always-valid test crossed in the harmful direction")
        if all(c and _good(look) for c, look in zip(crossed, primaries, strict=True)):
            text = ", ".join(
                f"{look.metric} p = {p:.3g}" for look, p in zip(primaries, ps, strict=True)
            )
            return StopVerdict("benefit", f"always-valid (mSPRT) bound crossed: {text}")
        text = ", ".join(
            f"{look.metric} p = {p:.3g}" for look, p in zip(primaries, ps, strict=True)
        )
        if experiment.max_days is not None and days_observed >= experiment.max_days:
            return StopVerdict(
                "ended",
                f"maximum runtime of {experiment.max_days} days reached without a "
                f"crossing (always-valid {text})",
            )
        return StopVerdict("continue", f"always-valid bound not crossed yet ({text})")


def calendar_end(experiment: ExperimentConfig, days: int, as_of: date | None) -> str | None:
    """Why the experiment is over by the calendar, or None while it runs."""
    if experiment.max_days is not None and days >= experiment.max_days:
        return f"planned duration of {experiment.max_days} days reached"
    if experiment.end_date is not None and as_of is not None and as_of > experiment.end_date:
        return f"end date {experiment.end_date} has passed"
    return None


def family_size(experiment: ExperimentConfig) -> int:
    """How many hypotheses the stopping rule controls the error rate over."""
    if experiment.correction == "none":
        return 1
    tested = [m for m in experiment.all_metrics if experiment.role(m) in ("primary", "secondary")]
    return max(1, len(tested) * len(experiment.treatments))


def family_always_valid_p(
    experiment: ExperimentConfig, always_valid: Mapping[tuple[str, str], AlwaysValid]
) -> dict[tuple[str, str], float]:
    """Always-valid p-values per (metric, variant), corrected over the family.

    Without a correction, each hypothesis's own always-valid p-value. With one, e-BH
    adjusted p-values from the e-values at this look (``bh``), or the e-Bonferroni bound
    ``min(1, m / e)`` (``holm``, family-wise): both valid under arbitrary dependence.
    """
    if experiment.correction == "none":
        return {k: v.p_value for k, v in always_valid.items() if not math.isnan(v.p_value)}
    keys = [
        (m, v)
        for m in experiment.all_metrics
        if experiment.role(m) in ("primary", "secondary")
        for v in experiment.treatments
        if (m, v) in always_valid and not math.isnan(always_valid[(m, v)].e_value)
    ]
    e = [always_valid[k].e_value for k in keys]
    if experiment.correction == "holm":
        m = max(len(keys), 1)
        adjusted = [min(1.0, m / x) if x > 0 else 1.0 for x in e]
    else:
        adjusted = [float(p) for p in e_bh_adjusted(e)] if keys else []
    return dict(zip(keys, adjusted, strict=True))


def primary_looks(
    results: Sequence,  # MetricResult, kept loose to avoid an import cycle
    variant: str,
    higher_is_better: Mapping[str, bool],
    always_valid: Mapping[tuple[str, str], float],
) -> list[PrimaryLook]:
    return [
        PrimaryLook(
            r.metric,
            r.effect,
            higher_is_better[r.metric],
            always_valid.get((r.metric, r.variant)),
        )
        for r in results
        if r.population == "itt" and r.role == "primary" and r.variant == variant
    ]
