"""Moments -> effects: choose the estimator for each metric and compare every variant.

Pure: takes the moments table, the per-metric column layout and the experiment's
configuration; knows nothing of SQL. For each population (ITT, the exposure-selected TOT,
and the complier effect estimated from ITT) x metric x non-control variant it returns one
:class:`MetricResult`, with multiple-testing adjustment and guardrail tests applied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from xpkit.config import ExperimentConfig
from xpkit.decide.notes import POPULATION_NOTES as POPULATION_NOTES  # where it was
from xpkit.layout import MetricLayout, QuantileLayout
from xpkit.moments import Moments
from xpkit.readout import HistogramRows, MomentsTable
from xpkit.stats.cuped import cuped_test
from xpkit.stats.effect import Effect
from xpkit.stats.guardrail import GuardrailResult, non_inferiority_test
from xpkit.stats.iv import complier_effect
from xpkit.stats.means import proportion_test, welch_test
from xpkit.stats.multiple import adjust_pvalues
from xpkit.stats.quantile_bins import EventHistogram, Histogram, bin_values
from xpkit.stats.quantiles import quantile_clustered, quantile_test
from xpkit.stats.ratio import ratio_test


@dataclass(frozen=True)
class MetricInfo:
    """What analysis needs to know about a metric besides its moments."""

    name: str
    kind: str
    higher_is_better: bool
    layout: MetricLayout
    description: str = ""  # the class docstring, carried into the scorecard


@dataclass(frozen=True, kw_only=True)
class MetricResult:
    """One population x metric x treatment variant: its effect and what decide adds to it.

    ``unadjusted`` is the plain estimate beside a covariate-adjusted one;
    ``p_value_adjusted`` (multiple testing) and ``guardrail`` are filled in by
    :func:`analyse`, None before and where they do not apply.
    """

    population: str
    metric: str
    role: str
    variant: str
    effect: Effect
    unadjusted: Effect | None = None
    p_value_adjusted: float | None = None
    guardrail: GuardrailResult | None = None


def estimate(
    info: MetricInfo,
    control: Moments,
    treatment: Moments,
    alpha: float,
    *,
    unadjusted: bool = True,
) -> tuple[Effect, Effect | None]:
    """The headline estimate, and the unadjusted one when a covariate adjustment was used.

    ``unadjusted=False`` skips the unadjusted estimate (``None`` is returned in its place)
    for callers that report the headline only, such as the daily history.
    """
    ml = info.layout
    if info.kind == "ratio":
        assert ml.denominator is not None
        if not ml.covariates:
            return ratio_test(control, treatment, ml.value, ml.denominator, (), alpha=alpha), None
        plain = (
            ratio_test(control, treatment, ml.value, ml.denominator, (), alpha=alpha)
            if unadjusted
            else None
        )
        adjusted = ratio_test(
            control, treatment, ml.value, ml.denominator, ml.covariates, alpha=alpha
        )
        return adjusted, plain
    test = proportion_test if info.kind == "proportion" else welch_test
    if not ml.covariates:
        return test(control, treatment, column=ml.value, alpha=alpha), None
    # The proportion test also rejects a column that is not 0/1 per unit, a check that must
    # run whether or not its estimate is wanted.
    plain = (
        test(control, treatment, column=ml.value, alpha=alpha)
        if unadjusted or info.kind == "proportion"
        else None
    )
    adjusted = cuped_test(control, treatment, ml.value, ml.covariates, alpha=alpha)
    return adjusted, plain if unadjusted else None


def analyse(
    experiment: ExperimentConfig,
    metrics: Mapping[str, MetricInfo],
    moments: MomentsTable,
    quantiles: Sequence[MetricResult] = (),
) -> list[MetricResult]:
    """Every population x metric x variant: the estimates (``quantiles``: the quantile
    metrics', from :func:`quantile_effects`), complier effects, the decision family's
    multiple-testing correction and the guardrail tests."""
    results = estimate_effects(experiment, metrics, moments) + list(quantiles)
    results += _complier_effects(experiment, metrics, moments)
    populations = {"itt": 0, "tot": 1, "cace": 2}
    order = {name: i for i, name in enumerate(experiment.all_metrics)}
    variants = {name: i for i, name in enumerate(experiment.treatments)}
    results.sort(key=lambda r: (populations[r.population], order[r.metric], variants[r.variant]))
    results = _adjust(experiment, results)
    return _guardrails(experiment, metrics, results)


def quantile_effects(
    experiment: ExperimentConfig,
    histograms: Mapping[str, HistogramRows],
    layouts: Mapping[str, QuantileLayout],
    populations: Sequence[str],
) -> list[MetricResult]:
    """Quantile metrics: each treatment's q-quantile against control's, per population.

    Unit level by Woodruff's interval on the units' histogram, event level by the
    clustered interval of Deng et al. (units as clusters); see :mod:`xpkit.stats.quantiles`.
    """
    out: list[MetricResult] = []
    for population in populations:
        tot = population == "tot"
        for name in experiment.all_metrics:
            if name not in layouts:
                continue
            q, rows = layouts[name], histograms[name]

            def arm(
                variant: str, q: QuantileLayout = q, rows: HistogramRows = rows, tot: bool = tot
            ) -> Any:
                a = rows.arm(variant, exposed_only=tot)
                if q.level == "unit":
                    return Histogram.from_keys(a.keys, a.counts, q.eps)
                return EventHistogram.from_keys(a.keys, a.events, a.pairs, a.cross, a.units, q.eps)

            control = arm(experiment.control)
            for variant in experiment.treatments:
                treatment = arm(variant)
                if min(_size(control), _size(treatment)) == 0:
                    continue
                if q.level == "unit":
                    effect = quantile_test(control, treatment, q.q, alpha=experiment.alpha)
                else:
                    effect = quantile_clustered(control, treatment, q.q, alpha=experiment.alpha)
                out.append(
                    MetricResult(
                        population=population,
                        metric=name,
                        role=experiment.role(name),
                        variant=variant,
                        effect=effect,
                    )
                )
    return out


def analyse_slice(
    experiment: ExperimentConfig,
    metrics: Mapping[str, MetricInfo],
    moments: MomentsTable,
) -> list[MetricResult]:
    """:func:`analyse` for one slice's moments, without the decision family's correction
    (a slice's p-values are corrected across its dimension's values instead)."""
    results = estimate_effects(experiment, metrics, moments)
    results += _complier_effects(experiment, metrics, moments)
    return _guardrails(experiment, metrics, results)


def quantile_distributions(
    experiment: ExperimentConfig,
    histograms: Mapping[str, HistogramRows],
    layouts: Mapping[str, QuantileLayout],
    populations: Sequence[str],
) -> dict[str, dict[str, dict[str, dict[str, list[float]]]]]:
    """Each quantile metric's histogram per population and variant, as the bins'
    representative values and their counts (units, or events), for plots."""
    out: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = {}
    for name, q in layouts.items():
        for population in populations:
            for variant in [experiment.control, *experiment.treatments]:
                a = histograms[name].arm(variant, exposed_only=population == "tot")
                weights = a.counts if q.level == "unit" else a.events
                hist = Histogram.from_keys(a.keys, weights, q.eps)
                out.setdefault(name, {}).setdefault(population, {})[variant] = {
                    "values": bin_values(hist.keys, q.eps).tolist(),
                    "counts": hist.counts.tolist(),
                }
    return out


def _size(hist: Histogram | EventHistogram) -> int:
    return hist.n if isinstance(hist, Histogram) else hist.units


def estimate_effects(
    experiment: ExperimentConfig,
    metrics: Mapping[str, MetricInfo],
    moments: MomentsTable,
    *,
    unadjusted: bool = True,
) -> list[MetricResult]:
    """One result per population x metric x treatment variant, in that order.

    The estimates only: no complier effects, multiple-testing adjustment or guardrail tests
    (``p_value_adjusted`` and ``guardrail`` are ``None``). That is all the daily history
    needs; :func:`analyse` adds the rest. ``unadjusted`` is passed on to :func:`estimate`.
    """
    results: list[MetricResult] = []
    populations = [p for p in experiment.populations if moments.variants(p)]
    for population in populations:
        for name in experiment.all_metrics:
            info = metrics[name]
            control = moments.get(population, experiment.control, name)
            for variant in experiment.treatments:
                treatment = moments.get(population, variant, name)
                if control is None or treatment is None:
                    continue
                effect, plain = estimate(
                    info, control, treatment, experiment.alpha, unadjusted=unadjusted
                )
                results.append(
                    MetricResult(
                        population=population,
                        metric=name,
                        role=experiment.role(name),
                        variant=variant,
                        effect=effect,
                        unadjusted=plain,
                    )
                )
    return results


def _complier_effects(
    experiment: ExperimentConfig, metrics: Mapping[str, MetricInfo], moments: MomentsTable
) -> list[MetricResult]:
    """CACE from the ITT moments, for mean and proportion metrics with exposure logged."""
    out: list[MetricResult] = []
    if "tot" not in experiment.populations:
        return out
    for name in experiment.all_metrics:
        info = metrics[name]
        ml = info.layout
        if ml.exposure is None or info.kind == "ratio":
            continue
        control = moments.get("itt", experiment.control, name)
        for variant in experiment.treatments:
            treatment = moments.get("itt", variant, name)
            if control is None or treatment is None:
                continue
            # The headline ITT estimate over the first stage, both adjusted by the covariates
            # the ITT row uses (2SLS), in the ITT row's variance convention: a proportion's
            # p(1 - p)/n (ddof 0) unless CUPED adjusts it.
            effect = complier_effect(
                _not_treated(control, ml.exposure),
                treatment,
                ml.value,
                ml.exposure,
                covariates=ml.covariates,
                alpha=experiment.alpha,
                ddof=0 if info.kind == "proportion" and not ml.covariates else 1,
            )
            out.append(
                MetricResult(
                    population="cace",
                    metric=name,
                    role=experiment.role(name),
                    variant=variant,
                    effect=effect,
                )
            )
    return out


def _not_treated(control: Moments, exposure: str) -> Moments:
    """Control moments with treatment *received* = 0 for every unit.

    The assignment log flags exposure in both arms (a control unit "exposed" reached the
    surface and saw the control experience). Treatment received is exposure in the
    treatment arm only, so in control the indicator is 0 with no variance: one-sided
    non-compliance, where the Wald ratio ITT / P(received | treatment) is the effect on
    the exposed.
    """
    i = control.index(exposure)
    mean = control.mean.copy()
    comoment = control.comoment.copy()
    mean[i] = 0.0
    comoment[i, :] = 0.0
    comoment[:, i] = 0.0
    return Moments(n=control.n, columns=control.columns, mean=mean, comoment=comoment)


def _adjust(experiment: ExperimentConfig, results: list[MetricResult]) -> list[MetricResult]:
    """Multiple-testing correction across decision metrics x variants, per population.

    The family is every primary and secondary metric against every treatment: the
    decisions are made over that family, so that is where the error rate is controlled.
    Guardrails are tested one-sided against their margin and are not in the family.
    """
    out = list(results)
    for population in {r.population for r in results}:
        idx = [
            i
            for i, r in enumerate(out)
            if r.population == population and r.role in ("primary", "secondary")
        ]
        if not idx:
            continue
        raw = [float(out[i].effect.p_value) for i in idx]
        adjusted = adjust_pvalues(raw, method=experiment.correction)
        for i, p in zip(idx, adjusted, strict=True):
            out[i] = replace(out[i], p_value_adjusted=None if math.isnan(p) else float(p))
    return out


def _guardrails(
    experiment: ExperimentConfig, metrics: Mapping[str, MetricInfo], results: list[MetricResult]
) -> list[MetricResult]:
    guards = {g.metric: g for g in experiment.guardrails}
    out = []
    for r in results:
        g = guards.get(r.metric)
        if g is not None and r.population == "itt":
            test = non_inferiority_test(
                r.effect,
                margin=g.margin,
                relative=g.relative,
                higher_is_better=metrics[r.metric].higher_is_better,
                alpha=experiment.alpha,
                metric=r.metric,
            )
            r = replace(r, guardrail=test)
        out.append(r)
    return out
