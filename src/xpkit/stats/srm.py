"""Sample ratio mismatch: are the observed unit counts consistent with the configured split?"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import stats

NAN = float("nan")


@dataclass(frozen=True)
class SrmResult:
    """Chi-square goodness-of-fit of observed unit counts against configured weights."""

    statistic: float
    p_value: float
    df: int
    observed: dict[str, int]
    expected: dict[str, float]


def srm_test(observed: Mapping[str, int], weights: Mapping[str, float]) -> SrmResult:
    """Pearson chi-square test of the unit counts against the configured traffic split.

    With ``N = sum(observed)`` and normalised weights ``w_v = weight_v / sum(weight)``:

        expected_v = N * w_v,   X^2 = sum_v (observed_v - expected_v)^2 / expected_v,

    and ``p = P(chi2_{k-1} > X^2)`` where ``k`` counts variants with positive weight.
    Reference: Fabijan et al. (2019), "Diagnosing Sample Ratio Mismatch in Online Controlled
    Experiments", KDD; Pearson (1900).

    Every variant in ``weights`` takes part, so a configured variant that received no units
    counts as 0 observed (the loudest possible mismatch, not a variant to skip). A variant
    that was observed but is not in ``weights`` raises ``ValueError`` naming it: the split it
    was meant to have is unknown. A zero-weight variant that received units is a certain
    mismatch and gives ``statistic = inf`` and ``p_value = 0.0`` explicitly; a zero-weight
    variant with no units is ignored. No units at all, or fewer than two positive-weight
    variants, gives NaN statistic and p-value (there is nothing to test).
    """
    unknown = [name for name in observed if name not in weights]
    if unknown:
        raise ValueError(
            f"variant(s) {', '.join(repr(v) for v in unknown)} observed in the data but "
            f"not configured (configured: {', '.join(repr(v) for v in weights)}); add them "
            "with a weight or fix the assignment data"
        )
    for name, weight in weights.items():
        if not (math.isfinite(weight) and weight >= 0.0):
            raise ValueError(f"weight of variant {name!r} must be finite and >= 0, got {weight}")
    for name, count in observed.items():
        if count < 0:
            raise ValueError(f"observed count of variant {name!r} must be >= 0, got {count}")
    total_weight = float(sum(weights.values()))
    if total_weight <= 0.0:
        raise ValueError("weights must have a positive sum")

    counts = {name: int(observed.get(name, 0)) for name in weights}
    total = sum(counts.values())
    expected = {name: total * weights[name] / total_weight for name in weights}
    positive = [name for name in weights if weights[name] > 0.0]
    df = len(positive) - 1

    if any(counts[name] > 0 for name in weights if weights[name] == 0.0):
        statistic, p_value = math.inf, 0.0
    elif total == 0 or df < 1:
        statistic, p_value = NAN, NAN
    else:
        statistic = sum((counts[v] - expected[v]) ** 2 / expected[v] for v in positive)
        p_value = float(stats.chi2.sf(statistic, df))
    return SrmResult(
        statistic=float(statistic),
        p_value=float(p_value),
        df=max(df, 0),
        observed=counts,
        expected=expected,
    )
