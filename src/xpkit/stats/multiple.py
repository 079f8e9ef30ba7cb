"""Multiplicity control: BH and Holm adjustment of p-values, e-BH for e-values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np


def adjust_pvalues(
    p_values: Sequence[float], method: Literal["bh", "holm", "none"] = "bh"
) -> np.ndarray:
    """Adjusted p-values in the input order; NaNs stay NaN and do not count towards ``m``.

    With the ``m`` non-NaN p-values sorted ascending, ``p_(1) <= ... <= p_(m)``:

    - ``"bh"`` (Benjamini & Hochberg, 1995, JRSS B 57): ``q_(i) = min_{j >= i} m p_(j) / j``,
      controlling the false discovery rate under independence or positive dependence;
    - ``"holm"`` (Holm, 1979, Scand. J. Statist. 6): ``q_(i) = max_{j <= i} (m - j + 1) p_(j)``,
      controlling the family-wise error rate under any dependence;
    - ``"none"``: the p-values unchanged.

    Results are capped at 1 and monotone in the raw p-values. A NaN is a metric that could
    not be tested; counting it in ``m`` would penalise the others for a test never run.
    """
    p = np.asarray(p_values, dtype=float).reshape(-1)
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0.0) | (p[finite] > 1.0)):
        raise ValueError("p-values must lie in [0, 1] (NaN allowed for untested metrics)")
    if method not in ("bh", "holm", "none"):
        raise ValueError(f"unknown adjustment method {method!r}; use 'bh', 'holm' or 'none'")
    out = p.copy()
    m = int(finite.sum())
    if method == "none" or m == 0:
        return out
    values = p[finite]
    order = np.argsort(values, kind="mergesort")
    ranked = values[order]
    rank = np.arange(1, m + 1)
    if method == "bh":
        # Running minimum from the largest p-value down keeps the step-up rule monotone.
        adjusted = np.minimum.accumulate((m * ranked / rank)[::-1])[::-1]
    else:
        # Running maximum from the smallest keeps the step-down rule monotone.
        adjusted = np.maximum.accumulate((m - rank + 1) * ranked)
    adjusted = np.minimum(adjusted, 1.0)
    result = np.empty(m)
    result[order] = adjusted
    out[finite] = result
    return out


def e_bh(e_values: Sequence[float] | np.ndarray, alpha: float) -> np.ndarray:
    """e-BH rejections (Wang & Ramdas, 2022, "False discovery rate control with e-values",
    JRSS B 84(3)), in the input order.

    With the ``m`` non-NaN e-values sorted descending, ``e_[1] >= ... >= e_[m]``, reject the
    hypotheses with the ``k*`` largest e-values, where::

        k* = max{ k in 1..m : e_[k] >= m / (alpha k) }     (no rejection if the set is empty)

    This controls the false discovery rate at ``alpha`` under *arbitrary* dependence
    between the e-values (each needs only ``E_H0[e] <= 1``) -- no PRDS condition as for BH
    on p-values, so correlated metrics and arms sharing a control are covered. Ties at
    ``e_[k*]`` are all rejected (a tie just below ``k*`` would itself satisfy the rule).
    A NaN e-value is a hypothesis not tested: never rejected and not counted in ``m``;
    ``inf`` is allowed (certain evidence). For sequential tests pass the likelihood ratio
    at the decision look (``SequentialResult.e_values``), never its running maximum.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    e, finite = _check_e_values(e_values)
    out = np.zeros(e.shape, dtype=bool)
    m = int(finite.sum())
    if m == 0:
        return out
    values = e[finite]
    ranked = np.sort(values)[::-1]
    k = np.arange(1, m + 1)
    passing = np.flatnonzero(ranked >= m / (alpha * k))
    if passing.size:
        threshold = ranked[passing[-1]]
        out[finite] = values >= threshold
    return out


def e_bh_adjusted(e_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """e-BH adjusted p-values: ``e_bh(e, alpha)`` rejects exactly where this is ``<= alpha``.

    Derivation: the hypothesis of descending rank ``r`` is rejected at level ``alpha`` iff
    some ``k >= r`` has ``e_[k] >= m / (alpha k)``, i.e. ``alpha >= m / (k e_[k])``. The
    smallest such ``alpha`` is::

        q_[r] = min(1, min_{k >= r} m / (k e_[k]))

    which is the BH adjustment (:func:`adjust_pvalues`) of ``p_i = min(1, 1 / e_i)`` -- e-BH
    is BH applied to the calibrated p-values ``1 / e``, whose step-up rule is valid under
    any dependence because ``1 / e`` comes from an e-value (Wang & Ramdas, 2022). Tied
    e-values get equal adjusted values; NaN stays NaN and does not count towards ``m``;
    ``e = 0`` gives 1 and ``e = inf`` gives 0. Use it like BH-adjusted p-values in a
    scorecard: the same ``<= alpha`` reading, a different validity condition.
    """
    e, finite = _check_e_values(e_values)
    out = np.full(e.shape, np.nan)
    m = int(finite.sum())
    if m == 0:
        return out
    values = e[finite]
    order = np.argsort(-values, kind="mergesort")
    ranked = values[order]
    k = np.arange(1, m + 1)
    with np.errstate(divide="ignore"):
        raw = m / (k * ranked)
    # Running minimum from the smallest e-value up: min over k >= r.
    adjusted = np.minimum(np.minimum.accumulate(raw[::-1])[::-1], 1.0)
    result = np.empty(m)
    result[order] = adjusted
    out[finite] = result
    return out


def _check_e_values(e_values: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(e_values, dtype=float).reshape(-1)
    finite = ~np.isnan(e)
    if np.any(e[finite] < 0.0):
        raise ValueError("e-values must be >= 0 (NaN allowed for untested hypotheses)")
    return e, finite
