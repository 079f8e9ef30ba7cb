"""Sample ratio mismatch: are the observed unit counts consistent with the configured split?

``srm_test`` is the fixed-horizon chi-square test, valid for one look; checked on every
daily run it is a peeking test. ``sequential_srm_test`` is always valid: its p-value may be
checked on every run without inflating the false-alarm rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import chdtrc, gammaln

from xpkit.stats.lift import NAN


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
        raise ValueError(_unknown_message(unknown, list(weights)))
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
        p_value = float(chdtrc(df, statistic))  # chi2.sf(statistic, df)
    return SrmResult(
        statistic=float(statistic),
        p_value=float(p_value),
        df=max(df, 0),
        observed=counts,
        expected=expected,
    )


DEFAULT_PRIOR_CONCENTRATION = 100.0


@dataclass(frozen=True)
class SequentialSrmResult:
    """Always-valid SRM test over a sequence of looks at the cumulative unit counts.

    ``e_value`` is the Bayes factor at the last look (an e-value: its expectation under a
    healthy split is at most 1, whenever the looking stops); ``p_value`` is the always-valid
    p-value ``min(1, 1 / max_k BF_k)`` over every look so far. ``e_values`` and ``p_values``
    hold the same per look (``p_values`` never increase). ``observed`` and ``expected`` are
    the cumulative counts at the last look and their expectation under the weights.
    """

    e_value: float
    p_value: float
    e_values: np.ndarray
    p_values: np.ndarray
    prior_concentration: float
    observed: dict[str, int]
    expected: dict[str, float]


def sequential_srm_test(
    counts: Sequence[Mapping[str, int]] | ArrayLike,
    weights: Mapping[str, float],
    prior_concentration: float = DEFAULT_PRIOR_CONCENTRATION,
    *,
    cumulative: bool = True,
) -> SequentialSrmResult:
    """Anytime-valid SRM test: a Dirichlet-multinomial mixture Bayes factor per look.

    Lindon & Malek (2022), "Anytime-Valid Inference for Multinomial Count Data", NeurIPS.
    Under ``H0`` each unit lands in variant ``v`` with probability ``w_v`` (the normalised
    weights). The alternative mixes over the split with ``theta ~ Dirichlet(c w)``, where
    ``c`` is ``prior_concentration``. With ``x_v`` the cumulative count of variant ``v`` at a
    look and ``n = sum_v x_v``, the mixture likelihood over the null likelihood is::

        BF = Gamma(c) / Gamma(c + n) * prod_v Gamma(c w_v + x_v) / Gamma(c w_v) / prod_v w_v^x_v

    (the multinomial coefficient cancels). ``BF`` is a nonnegative martingale with mean 1
    under ``H0`` in the units' arrival order, and it depends on the counts alone, so daily
    looks sample that martingale. Ville's inequality gives ``P(sup_k BF_k >= 1/alpha) <=
    alpha``, hence the always-valid p-value ``p_k = min(1, 1 / max_{j<=k} BF_j)``: checking
    ``p_k < alpha`` on every run, for ever, raises a false alarm with probability at most
    ``alpha``. The guarantee needs the looks to be nested (each look counts every unit of
    the previous one), which is why decreasing cumulative counts raise ``ValueError``.

    ``counts`` is one entry per look, in time order: mappings from variant to count, or an
    array of shape ``(looks, variants)`` (or ``(variants,)`` for a single look) with columns
    in the order of ``weights``. They are cumulative counts unless ``cumulative=False``, in
    which case they are per-look increments (e.g. units first assigned on each day).

    Default ``c = 100``: the prior puts a standard deviation of ``sqrt(w (1 - w) / (c + 1))``
    on each variant's share -- about 5 percentage points for a 50/50 split -- around the
    configured split. Like the mSPRT's ``tau`` this is the size of mismatch the test is
    quickest to find: a broken split (60/40 and worse) is caught on the first day at a few
    hundred units, and the 1-2 point mismatches of lost logging rows within weeks at
    thousands of units a day. A much larger ``c`` (1000) gains a little on 51/49 but takes
    an extra day or two on gross breakage; a much smaller one (2-10) loses power on small
    mismatches for no gain (see ``bench/srm_peeking.py``). ``c = 100 w`` is also the
    Dirichlet parameter used in the paper's worked examples.

    Edge cases follow :func:`srm_test`: a variant observed but not in ``weights`` raises
    ``ValueError`` naming it; a configured variant without units counts as 0; a zero-weight
    variant that received units is a certain mismatch (``BF = inf``, ``p = 0`` from that
    look on); a look with no units, or fewer than two positive-weight variants, reports NaN
    (nothing to test; in the running maximum an empty look counts as ``BF = 1``, its value
    before any data).
    """
    if not (math.isfinite(prior_concentration) and prior_concentration > 0.0):
        raise ValueError(
            f"prior_concentration must be a positive number, got {prior_concentration}"
        )
    names = list(weights)
    for name, weight in weights.items():
        if not (math.isfinite(weight) and weight >= 0.0):
            raise ValueError(f"weight of variant {name!r} must be finite and >= 0, got {weight}")
    total_weight = float(sum(weights.values()))
    if total_weight <= 0.0:
        raise ValueError("weights must have a positive sum")

    table = _count_table(counts, names)
    if np.any(table < 0):
        name = names[int(np.argwhere(table < 0)[0][1])]
        raise ValueError(f"observed count of variant {name!r} must be >= 0")
    if not cumulative:
        table = np.cumsum(table, axis=0)
    elif np.any(np.diff(table, axis=0) < 0):
        name = names[int(np.argwhere(np.diff(table, axis=0) < 0)[0][1])]
        raise ValueError(
            f"cumulative count of variant {name!r} decreases between looks; pass per-look "
            "counts with cumulative=False, or counts that include every earlier unit"
        )

    w = np.array([weights[v] for v in names], dtype=float) / total_weight
    positive = w > 0.0
    n = table.sum(axis=1)
    c = float(prior_concentration)
    x = table[:, positive]
    a = c * w[positive]
    log_bf = (
        gammaln(c)
        - gammaln(c + n)
        + np.sum(gammaln(a + x) - gammaln(a) - x * np.log(w[positive]), axis=1)
    )
    certain = np.any(table[:, ~positive] > 0, axis=1)
    log_bf = np.where(certain, math.inf, log_bf)
    testable = certain | ((n > 0) & (int(positive.sum()) >= 2))
    log_bf = np.where(testable, log_bf, np.nan)

    with np.errstate(over="ignore"):
        e_values = np.exp(log_bf)
    # Running maximum of the evidence; looks without data contribute BF = 1.
    best = np.maximum.accumulate(np.where(np.isnan(log_bf), 0.0, log_bf))
    p_values = np.where(testable, np.exp(-np.maximum(best, 0.0)), np.nan)

    last = table[-1] if table.shape[0] else np.zeros(len(names), dtype=np.int64)
    total = int(last.sum())
    return SequentialSrmResult(
        e_value=float(e_values[-1]) if e_values.size else NAN,
        p_value=float(p_values[-1]) if p_values.size else NAN,
        e_values=e_values,
        p_values=p_values,
        prior_concentration=c,
        observed={v: int(k) for v, k in zip(names, last, strict=True)},
        expected={v: total * float(wv) for v, wv in zip(names, w, strict=True)},
    )


def _count_table(counts: Sequence[Mapping[str, int]] | ArrayLike, names: list[str]) -> np.ndarray:
    """Counts as an integer array (looks, variants) with columns in ``names`` order."""
    if isinstance(counts, Mapping):
        counts = [counts]
    if (
        isinstance(counts, Sequence)
        and len(counts) > 0
        and all(isinstance(look, Mapping) for look in counts)
    ):
        looks: list[Mapping[str, int]] = [look for look in counts if isinstance(look, Mapping)]
        unknown = list(dict.fromkeys(v for look in looks for v in look if v not in names))
        if unknown:
            raise ValueError(_unknown_message(unknown, names))
        return np.array(
            [[int(look.get(v, 0)) for v in names] for look in looks], dtype=np.int64
        ).reshape(len(looks), len(names))
    raw = np.asarray(counts)
    if raw.size == 0:
        return np.zeros((0, len(names)), dtype=np.int64)
    if raw.ndim == 1:
        raw = raw.reshape(1, -1)
    if raw.ndim != 2 or raw.shape[1] != len(names):
        raise ValueError(
            f"counts array must have shape (looks, {len(names)}) with columns in the order "
            f"of weights ({', '.join(repr(v) for v in names)}), got shape {raw.shape}"
        )
    table = raw.astype(np.int64)
    if not np.array_equal(table, raw):
        raise ValueError("counts must be whole numbers of units")
    return table


def _unknown_message(unknown: Sequence[str], names: Sequence[str]) -> str:
    return (
        f"variant(s) {', '.join(repr(v) for v in unknown)} observed in the data but "
        f"not configured (configured: {', '.join(repr(v) for v in names)}); add them "
        "with a weight or fix the assignment data"
    )
