"""Sample ratio mismatch against scipy's chi-square goodness of fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from xpkit.stats.srm import srm_test


@pytest.mark.parametrize(
    ("observed", "weights"),
    [
        ({"control": 5021, "treatment": 4979}, {"control": 0.5, "treatment": 0.5}),
        ({"control": 5300, "treatment": 4700}, {"control": 1, "treatment": 1}),
        ({"a": 2010, "b": 3950, "c": 4100}, {"a": 20, "b": 40, "c": 40}),  # unnormalised
        ({"a": 100, "b": 200, "c": 310, "d": 395}, {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}),
    ],
)
def test_srm_matches_scipy_chisquare(observed: dict[str, int], weights: dict[str, float]) -> None:
    result = srm_test(observed, weights)
    names = list(weights)
    f_obs = np.array([observed[v] for v in names], dtype=float)
    w = np.array([weights[v] for v in names], dtype=float)
    f_exp = f_obs.sum() * w / w.sum()
    ref = stats.chisquare(f_obs, f_exp)
    assert result.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert result.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert result.df == len(names) - 1
    assert result.expected == pytest.approx(dict(zip(names, f_exp, strict=True)), rel=1e-12)
    assert result.observed == {v: observed[v] for v in names}


def test_configured_variant_with_no_units_counts_as_zero() -> None:
    result = srm_test({"control": 1000}, {"control": 0.5, "treatment": 0.5})
    ref = stats.chisquare([1000, 0], [500, 500])
    assert result.observed == {"control": 1000, "treatment": 0}
    assert result.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert result.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert result.p_value < 1e-100


def test_clean_split_is_not_flagged_and_skewed_split_is() -> None:
    weights = {"control": 0.5, "treatment": 0.5}
    assert srm_test({"control": 50_050, "treatment": 49_950}, weights).p_value > 0.001
    assert srm_test({"control": 50_900, "treatment": 49_100}, weights).p_value < 0.001


def test_unknown_variant_is_named_in_the_error() -> None:
    with pytest.raises(
        ValueError, match=r"variant\(s\) 'treatmnet' observed in the data but not configured"
    ):
        srm_test({"control": 10, "treatmnet": 12}, {"control": 0.5, "treatment": 0.5})


def test_zero_weight_variant_with_units_is_a_certain_mismatch() -> None:
    result = srm_test({"a": 10, "b": 10, "holdout": 1}, {"a": 1, "b": 1, "holdout": 0})
    assert result.statistic == math.inf
    assert result.p_value == 0.0


def test_zero_weight_variant_without_units_is_ignored() -> None:
    result = srm_test({"a": 520, "b": 480}, {"a": 1, "b": 1, "holdout": 0})
    ref = stats.chisquare([520, 480], [500, 500])
    assert result.df == 1
    assert result.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_nothing_to_test_gives_nan() -> None:
    assert math.isnan(srm_test({}, {"a": 1, "b": 1}).p_value)
    assert math.isnan(srm_test({"a": 10}, {"a": 1}).p_value)


@pytest.mark.parametrize(
    ("observed", "weights", "message"),
    [
        ({"a": -1}, {"a": 1, "b": 1}, "observed count"),
        ({"a": 1}, {"a": -1, "b": 1}, "weight of variant 'a'"),
        ({"a": 1}, {"a": 0, "b": 0}, "positive sum"),
    ],
)
def test_invalid_inputs_raise(
    observed: dict[str, int], weights: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        srm_test(observed, weights)
