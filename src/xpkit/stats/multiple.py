"""Multiple-comparison adjustment of p-values (Benjamini–Hochberg, Holm)."""

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
