"""Slices: every effect again within each value of a pre-treatment dimension, and whether
the effect differs between them.

For each slice (``device = tv``) the slice's cells go through the same estimators as the
whole experiment (CUPED with the slice's own theta, ratios, proportions, CACE, guardrail
bounds), so a slice row means what the overall row means, for that slice's units. Around
those estimates:

- **health**: the sample-ratio test per slice value (a slice whose split is off is marked
  invalid; the experiment's gates are unchanged);
- **multiple testing**: Benjamini-Hochberg across the values of one dimension, per
  population x metric x variant (the *family*, named in the output);
- **heterogeneity**: Cochran's Q test that the slices of a dimension share one effect,
  with I^2 (:func:`xpkit.stats.heterogeneity.heterogeneity_test`);
- **discovery** (ITT): each slice's effect against the rest of the experiment's, with BH
  across every slice of every dimension of that metric x variant;
- **shrinkage**: empirical-Bayes slice effects beside the raw ones.

Slice results never feed the experiment's decision: they say for whom, not whether.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import special

from xpkit.config import ExperimentConfig
from xpkit.decide.analysis import MetricInfo, MetricResult, analyse_slice, estimate
from xpkit.decide.health import Check, srm_checks
from xpkit.layout import MomentsLayout
from xpkit.moments import Moments
from xpkit.readout import Cells, MomentsTable, SliceKey, daily_counts, read_moments
from xpkit.stats.effect import Effect
from xpkit.stats.heterogeneity import discover, heterogeneity_test, shrink, slice_vs_complement
from xpkit.stats.multiple import adjust_pvalues


@dataclass(frozen=True, kw_only=True)
class SliceResult:
    """One slice x population x metric x variant: its effect and the slice statistics."""

    key: SliceKey
    result: MetricResult  # p_value_adjusted: BH within the family
    family: str
    valid: bool
    invalid_reason: str | None
    srm_p_value: float | None = None
    heterogeneity_p_value: float | None = None
    heterogeneity_i2: float | None = None
    vs_rest_abs_effect: float | None = None
    vs_rest_p_value: float | None = None
    vs_rest_p_value_adjusted: float | None = None
    shrunk_abs_effect: float | None = None
    shrunk_abs_ci_low: float | None = None
    shrunk_abs_ci_high: float | None = None


def family_name(population: str, metric: str, variant: str, dimension: str) -> str:
    return f"{population}/{metric}/{variant} by {dimension}"


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def slice_checks(experiment: ExperimentConfig, slices: Mapping[SliceKey, Cells]) -> list[Check]:
    """The always-valid SRM test per slice value; never a gate of the experiment."""
    checks = []
    for key, cells in slices.items():
        srm = srm_checks(
            f"srm_slice:{key.dimension}={key.value}",
            daily_counts(cells),
            experiment.weights,
            experiment.srm_threshold,
            f"{key.dimension} = {key.value}",
        )[0]
        checks.append(replace(srm, gate=False))
    return checks


def analyse_slices(
    experiment: ExperimentConfig,
    metrics: Mapping[str, MetricInfo],
    slices: Mapping[SliceKey, Cells],
    layout: MomentsLayout,
    checks: Sequence[Check],
) -> list[SliceResult]:
    """Every slice's results with their family correction, heterogeneity, discovery and
    shrinkage. ``checks`` are :func:`slice_checks`' (a failed one invalidates its slice)."""
    srm = {c.name: c for c in checks}
    moments = {key: read_moments(cells, layout) for key, cells in slices.items()}
    out: list[SliceResult] = []
    for key, table in moments.items():
        check = srm.get(f"srm_slice:{key.dimension}={key.value}")
        bad = check is not None and not check.passed
        for r in analyse_slice(experiment, metrics, table):
            out.append(
                SliceResult(
                    key=key,
                    result=r,
                    family=family_name(r.population, r.metric, r.variant, key.dimension),
                    valid=not bad,
                    invalid_reason=f"{check.name}: {check.detail}" if bad and check else None,
                    srm_p_value=_finite(check.value) if check is not None else None,
                )
            )
    out = _per_family(experiment, out)
    return _discovery(experiment, metrics, moments, out)


def _per_family(experiment: ExperimentConfig, rows: list[SliceResult]) -> list[SliceResult]:
    """BH, Cochran's Q and shrinkage across the values of each family."""
    families: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        families.setdefault(row.family, []).append(i)
    z = float(special.ndtri(1.0 - experiment.alpha / 2.0))  # norm.ppf
    out = list(rows)
    for idx in families.values():
        # A slice whose split is broken takes no part in its family's comparisons.
        effects = [rows[i].result.effect for i in idx]
        valid = np.array([rows[i].valid for i in idx], dtype=bool)
        p = np.where(valid, [float(e.p_value) for e in effects], np.nan)
        adjusted = adjust_pvalues(p.tolist(), method="bh")
        b = np.array([e.abs_effect for e in effects], dtype=float)
        s = np.where(valid, [float(e.abs_se) for e in effects], np.nan)
        q = heterogeneity_test(b, s)
        shrunk = shrink(b, s)
        for j, i in enumerate(idx):
            est, sd = float(shrunk.estimates[j]), float(shrunk.sds[j])
            out[i] = replace(
                out[i],
                result=replace(out[i].result, p_value_adjusted=_finite(float(adjusted[j]))),
                heterogeneity_p_value=_finite(q.p_value),
                heterogeneity_i2=_finite(q.i2),
                shrunk_abs_effect=_finite(est),
                shrunk_abs_ci_low=_finite(est - z * sd),
                shrunk_abs_ci_high=_finite(est + z * sd),
            )
    return out


def _discovery(
    experiment: ExperimentConfig,
    metrics: Mapping[str, MetricInfo],
    moments: Mapping[SliceKey, MomentsTable],
    rows: list[SliceResult],
) -> list[SliceResult]:
    """Slice versus the rest of the experiment (ITT), BH across all of a metric x variant's
    candidates (every value of every dimension).

    The rest is the union of the dimension's other slices (they partition the units; an
    arm with no units in a slice counts as empty), estimated on its own pooled moments.
    """
    by_dimension: dict[str, list[SliceKey]] = {}
    for key in moments:
        by_dimension.setdefault(key.dimension, []).append(key)
    position = {
        (r.key, r.result.population, r.result.metric, r.result.variant): i
        for i, r in enumerate(rows)
    }
    out = list(rows)
    for name in experiment.all_metrics:
        info = metrics[name]
        if info.kind == "quantile":
            continue  # quantile metrics have no slices (their histograms are not sliced)
        empty = Moments.empty(info.layout.columns)

        def estimator(c: Moments, t: Moments, info: MetricInfo = info) -> Effect:
            return estimate(info, c, t, experiment.alpha, unadjusted=False)[0]

        for variant in experiment.treatments:
            found: list[tuple[int, float, float]] = []  # row, difference, p-value
            for keys in by_dimension.values():
                if len(keys) < 2:
                    continue
                control = [moments[k].get("itt", experiment.control, name) or empty for k in keys]
                treated = [moments[k].get("itt", variant, name) or empty for k in keys]
                contrasts = slice_vs_complement(control, treated, estimator)
                for j, k in enumerate(keys):
                    i = position.get((k, "itt", name, variant))
                    # A slice with a broken split is in its neighbours' complement (its
                    # units are real) but is no candidate itself.
                    if i is not None and rows[i].valid:
                        diff, p = float(contrasts.difference[j]), float(contrasts.p_values[j])
                        found.append((i, diff, p))
            if not found:
                continue
            adjusted = discover([p for _, _, p in found], alpha=experiment.alpha).adjusted
            for (i, diff, p), adj in zip(found, adjusted, strict=True):
                out[i] = replace(
                    out[i],
                    vs_rest_abs_effect=_finite(diff),
                    vs_rest_p_value=_finite(p),
                    vs_rest_p_value_adjusted=_finite(float(adj)),
                )
    return out
