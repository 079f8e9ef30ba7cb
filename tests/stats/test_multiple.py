"""p-value adjustment against statsmodels' multipletests, NaNs included."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from xpkit.stats.multiple import adjust_pvalues

SM_METHOD = {"bh": "fdr_bh", "holm": "holm"}


def _reference(p: np.ndarray, method: str) -> np.ndarray:
    out = np.full(p.shape, np.nan)
    mask = ~np.isnan(p)
    if mask.any():
        out[mask] = multipletests(p[mask], method=SM_METHOD[method])[1]
    return out


@pytest.mark.parametrize("method", ["bh", "holm"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_statsmodels_with_nans(method: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(size=25), rng.uniform(0, 0.01, size=8)])
    p[rng.choice(p.size, size=5, replace=False)] = np.nan
    rng.shuffle(p)
    adjusted = adjust_pvalues(p, method)
    np.testing.assert_allclose(adjusted, _reference(p, method), rtol=1e-12, atol=0)
    assert np.array_equal(np.isnan(adjusted), np.isnan(p))


@pytest.mark.parametrize("method", ["bh", "holm"])
def test_ties_monotone_and_capped(method: str) -> None:
    p = np.array([0.01, 0.04, 0.04, 0.04, 0.5, 0.9, 1.0, 0.0, np.nan])
    adjusted = adjust_pvalues(p, method)
    np.testing.assert_allclose(adjusted, _reference(p, method), rtol=1e-12, atol=0)
    finite = ~np.isnan(p)
    order = np.argsort(p[finite])
    assert np.all(np.diff(adjusted[finite][order]) >= 0)
    assert np.nanmax(adjusted) <= 1.0
    assert np.all(adjusted[finite] >= p[finite])


def test_nan_does_not_count_towards_m() -> None:
    assert adjust_pvalues([0.02, np.nan, np.nan], "holm")[0] == pytest.approx(0.02)
    assert adjust_pvalues([0.02, 0.04, np.nan], "bh") == pytest.approx(
        [0.04, 0.04, np.nan], nan_ok=True
    )


def test_none_and_edge_cases() -> None:
    p = [0.3, np.nan, 0.01]
    np.testing.assert_array_equal(adjust_pvalues(p, "none"), np.array(p))
    assert adjust_pvalues([], "bh").shape == (0,)
    assert np.isnan(adjust_pvalues([np.nan, np.nan], "bh")).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_pvalues([0.1, 1.2])
    with pytest.raises(ValueError, match="unknown adjustment method"):
        adjust_pvalues([0.1], "bonferroni")  # type: ignore[arg-type]
