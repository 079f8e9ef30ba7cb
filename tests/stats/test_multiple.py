"""p-value adjustment against statsmodels multipletests (NaNs included); e-BH by definition."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from xpkit.stats.multiple import adjust_pvalues, e_bh, e_bh_adjusted

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


# -- e-BH ------------------------------------------------------------------------------
def e_bh_by_definition(e: np.ndarray, alpha: float) -> np.ndarray:
    """Wang & Ramdas (2022) from the definition, without sorting: k* is the largest k such
    that at least k e-values reach m / (alpha k); reject those reaching m / (alpha k*)."""
    tested = ~np.isnan(e)
    m = int(tested.sum())
    reject = np.zeros(e.shape, dtype=bool)
    for k in range(m, 0, -1):
        reaches = tested & (np.nan_to_num(e, nan=-1.0) >= m / (alpha * k))
        if reaches.sum() >= k:
            return reaches
    return reject


def _random_e_values(rng: np.random.Generator, m: int) -> np.ndarray:
    # Mostly null-like e-values around 1, some strong ones, and a few untested (NaN).
    e = np.exp(rng.normal(-0.5, 1.5, m))
    strong = rng.choice(m, size=m // 4, replace=False)
    e[strong] *= np.exp(rng.uniform(1, 8, strong.size))
    e[rng.choice(m, size=m // 10, replace=False)] = np.nan
    return e


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1, 0.2])
def test_e_bh_matches_the_definition(seed: int, alpha: float) -> None:
    rng = np.random.default_rng(seed)
    e = _random_e_values(rng, int(rng.integers(5, 60)))
    np.testing.assert_array_equal(e_bh(e, alpha), e_bh_by_definition(e, alpha))


@pytest.mark.parametrize("seed", range(8))
def test_e_bh_adjusted_agrees_with_e_bh_at_every_alpha(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    e = _random_e_values(rng, 40)
    adjusted = e_bh_adjusted(e)
    assert np.array_equal(np.isnan(adjusted), np.isnan(e))
    for alpha in [0.001, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 0.9]:
        np.testing.assert_array_equal(np.nan_to_num(adjusted, nan=2.0) <= alpha, e_bh(e, alpha))
    # And it is BH (statsmodels) on the calibrated p-values min(1, 1/e).
    p = np.minimum(1.0, 1.0 / e)
    np.testing.assert_allclose(adjusted, _reference(p, "bh"), rtol=1e-12)


def test_e_bh_ties_zero_inf_and_edge_cases() -> None:
    # m = 4, alpha = 0.1: k = 2 needs e >= 20; the two tied 25s are rejected together.
    e = np.array([25.0, 25.0, 3.0, 0.0, np.nan])
    np.testing.assert_array_equal(e_bh(e, 0.1), [True, True, False, False, False])
    # Adjusted: ranks 1-2 min(4/25, 4/(2*25)) = 0.08; rank 3 4/(3*3); rank 4 e = 0 -> 1.
    np.testing.assert_allclose(e_bh_adjusted(e), [0.08, 0.08, 4 / 9, 1.0, np.nan])
    assert e_bh([np.inf, 1.0], 0.05).tolist() == [True, False]
    assert e_bh_adjusted([np.inf, 1.0])[0] == 0.0
    assert e_bh([], 0.05).shape == (0,) and e_bh_adjusted([]).shape == (0,)
    assert not e_bh([np.nan, np.nan], 0.05).any()
    # A single hypothesis: reject iff e >= 1 / alpha (Markov's inequality).
    assert e_bh([20.0], 0.05).tolist() == [True] and e_bh([19.9], 0.05).tolist() == [False]
    with pytest.raises(ValueError, match=">= 0"):
        e_bh([-1.0, 2.0], 0.05)
    with pytest.raises(ValueError, match="alpha"):
        e_bh([1.0], 0.0)
