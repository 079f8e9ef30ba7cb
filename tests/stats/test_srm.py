"""Sample ratio mismatch against scipy's chi-square goodness of fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import gammaln

from xpkit.stats.srm import sequential_srm_test, srm_test


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


# -- sequential (always-valid) SRM -------------------------------------------------------
def dm_log_bayes_factor_gammaln(x: np.ndarray, w: np.ndarray, c: float) -> float:
    """ln of the Dirichlet-multinomial marginal over the multinomial likelihood at ``w``.

    Both likelihoods written out in full from the raw counts, multinomial coefficient
    included, with ``alpha = c w``.
    """
    n = x.sum()
    a = c * w
    log_coef = gammaln(n + 1) - np.sum(gammaln(x + 1))
    log_marginal = (
        log_coef + gammaln(a.sum()) - gammaln(n + a.sum()) + np.sum(gammaln(x + a) - gammaln(a))
    )
    log_null = log_coef + np.sum(x * np.log(w))
    return float(log_marginal - log_null)


@pytest.mark.parametrize(
    ("observed", "weights", "concentration"),
    [
        ({"control": 5021, "treatment": 4979}, {"control": 0.5, "treatment": 0.5}, 100.0),
        ({"a": 2010, "b": 3950, "c": 4100}, {"a": 20, "b": 40, "c": 40}, 100.0),  # unnormalised
        ({"a": 100, "b": 200, "c": 310, "d": 395}, {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}, 7.5),
        ({"a": 34, "b": 0, "c": 33}, {"a": 1, "b": 1, "c": 1}, 3.0),
        ({"a": 250_000, "b": 248_500, "c": 251_700}, {"a": 1, "b": 1, "c": 1}, 1000.0),
    ],
)
def test_sequential_bayes_factor_matches_dirichlet_multinomial(
    observed: dict[str, int], weights: dict[str, float], concentration: float
) -> None:
    result = sequential_srm_test([observed], weights, concentration)
    names = list(weights)
    x = np.array([observed[v] for v in names])
    w = np.array([weights[v] for v in names], dtype=float)
    w = w / w.sum()
    by_hand = dm_log_bayes_factor_gammaln(x, w, concentration)
    by_scipy = stats.dirichlet_multinomial.logpmf(
        x, concentration * w, x.sum()
    ) - stats.multinomial.logpmf(x, x.sum(), w)
    assert by_hand == pytest.approx(by_scipy, rel=1e-8, abs=1e-8)
    assert math.log(result.e_value) == pytest.approx(by_hand, rel=1e-9, abs=1e-9)
    assert result.p_value == pytest.approx(min(1.0, math.exp(-by_hand)), rel=1e-9)
    assert result.prior_concentration == concentration
    assert result.observed == {v: observed[v] for v in names}
    assert result.expected == pytest.approx(dict(zip(names, x.sum() * w, strict=True)))


def test_two_variant_bayes_factor_is_a_beta_binomial_over_binomial_ratio() -> None:
    weights = {"control": 0.3, "treatment": 0.7}
    c = 40.0
    looks = [(0, 1), (31, 69), (140, 260), (330, 670), (610, 1390)]  # cumulative counts
    result = sequential_srm_test(np.array(looks), weights, c)
    ref = np.array(
        [
            stats.betabinom.pmf(k, k + m, c * 0.3, c * 0.7) / stats.binom.pmf(k, k + m, 0.3)
            for k, m in looks
        ]
    )
    np.testing.assert_allclose(result.e_values, ref, rtol=1e-9)
    np.testing.assert_allclose(
        result.p_values, np.minimum(1.0, 1.0 / np.maximum.accumulate(ref)), rtol=1e-9
    )
    assert result.e_value == pytest.approx(ref[-1], rel=1e-9)


def test_bayes_factor_has_mean_one_under_the_configured_split() -> None:
    # The e-value property, checked exactly: sum over every outcome of n units.
    n, w1, c = 300, 0.25, 100.0
    k = np.arange(n + 1)
    weights = {"a": w1, "b": 1 - w1}
    e = np.array([sequential_srm_test([[i, n - i]], weights, c).e_value for i in k])
    assert np.sum(stats.binom.pmf(k, n, w1) * e) == pytest.approx(1.0, abs=1e-9)


def test_always_valid_p_never_increases_and_per_day_counts_match_cumulative() -> None:
    rng = np.random.default_rng(7)
    weights = {"a": 0.34, "b": 0.33, "c": 0.33}
    daily = rng.multinomial(400, [0.36, 0.32, 0.32], size=28)
    cumulative = np.cumsum(daily, axis=0)
    result = sequential_srm_test(cumulative, weights)
    assert np.all(np.diff(result.p_values) <= 0)
    w = np.array([0.34, 0.33, 0.33])
    ref = np.array([dm_log_bayes_factor_gammaln(row, w, 100.0) for row in cumulative])
    np.testing.assert_allclose(np.log(result.e_values), ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        result.p_values, np.exp(-np.maximum(np.maximum.accumulate(ref), 0.0)), rtol=1e-9
    )
    per_day = sequential_srm_test(daily, weights, cumulative=False)
    np.testing.assert_array_equal(per_day.e_values, result.e_values)
    as_mappings = sequential_srm_test(
        [dict(zip(weights, map(int, row), strict=True)) for row in cumulative], weights
    )
    np.testing.assert_array_equal(as_mappings.p_values, result.p_values)
    # The BF itself may fall back; the p-value keeps the best evidence so far.
    assert result.p_value == pytest.approx(min(1.0, math.exp(-ref.max())), rel=1e-9)


def test_obvious_srm_is_flagged_and_a_clean_split_is_not() -> None:
    weights = {"control": 0.5, "treatment": 0.5}
    assert sequential_srm_test([{"control": 52_000, "treatment": 48_000}], weights).p_value < 1e-6
    clean = sequential_srm_test([{"control": 50_050, "treatment": 49_950}], weights)
    assert clean.p_value == 1.0  # BF < 1: the data favour the configured split


def test_sample_data_player_srm_is_caught_by_the_end_of_enrolment() -> None:
    # sample_data/README.md: player_srm is 15% of 40,000 members, split 1/2 : 1/2, enrolled
    # uniformly over 17 days, and about 15% of treatment assignment rows are never written,
    # so the counts arrive in the ratio control : treatment = 1 : 0.85.
    days, members = 17, 0.15 * 40_000
    per_day_control = members / 2 / days
    day = np.arange(1, days + 1)
    control = np.round(per_day_control * day).astype(int)
    treatment = np.round(0.85 * per_day_control * day).astype(int)
    weights = {"control": 0.5, "treatment": 0.5}
    result = sequential_srm_test(np.column_stack([control, treatment]), weights)
    fixed = srm_test({"control": control[-1], "treatment": treatment[-1]}, weights)
    assert fixed.p_value < 0.001  # what the README documents for the one-off chi-square
    assert result.p_value < 0.001
    assert np.all(np.diff(result.p_values) <= 0)
    # Independent reference for the last look: beta-binomial over binomial at 1/2.
    n = control[-1] + treatment[-1]
    ref = stats.betabinom.pmf(control[-1], n, 50.0, 50.0) / stats.binom.pmf(control[-1], n, 0.5)
    assert result.e_value == pytest.approx(ref, rel=1e-9)


def test_sequential_unknown_variant_is_named_in_the_error() -> None:
    with pytest.raises(
        ValueError, match=r"variant\(s\) 'treatmnet' observed in the data but not configured"
    ):
        sequential_srm_test(
            [{"control": 5}, {"control": 10, "treatmnet": 12}], {"control": 0.5, "treatment": 0.5}
        )


def test_sequential_zero_weight_variant() -> None:
    weights = {"a": 1, "b": 1, "holdout": 0}
    looks = [{"a": 10, "b": 10}, {"a": 20, "b": 21, "holdout": 1}, {"a": 30, "b": 29, "holdout": 1}]
    result = sequential_srm_test(looks, weights)
    first = stats.betabinom.pmf(10, 20, 50, 50) / stats.binom.pmf(10, 20, 0.5)
    assert result.p_values[0] == pytest.approx(min(1.0, 1 / first), rel=1e-9)
    assert result.p_values[1:].tolist() == [0.0, 0.0]
    assert result.e_values[1:].tolist() == [math.inf, math.inf]
    # Without units the zero-weight variant is ignored: same as the two-variant test.
    without = sequential_srm_test([{"a": 520, "b": 480}], weights)
    two = sequential_srm_test([{"a": 520, "b": 480}], {"a": 1, "b": 1})
    assert without.e_value == pytest.approx(two.e_value, rel=1e-12)


def test_sequential_nothing_to_test_gives_nan() -> None:
    assert math.isnan(sequential_srm_test([{}], {"a": 1, "b": 1}).p_value)
    assert math.isnan(sequential_srm_test([{"a": 10}], {"a": 1}).p_value)
    assert math.isnan(sequential_srm_test([], {"a": 1, "b": 1}).p_value)
    # Empty looks before the first unit are NaN, and do not block later evidence.
    result = sequential_srm_test([{}, {"a": 300, "b": 200}], {"a": 1, "b": 1})
    assert math.isnan(result.p_values[0])
    ref = stats.betabinom.pmf(300, 500, 50, 50) / stats.binom.pmf(300, 500, 0.5)
    assert result.p_value == pytest.approx(1 / ref, rel=1e-9)


@pytest.mark.parametrize(
    ("counts", "kwargs", "message"),
    [
        ([{"a": 10, "b": 10}, {"a": 9, "b": 12}], {}, "variant 'a' decreases"),
        ([{"a": -1, "b": 3}], {}, "observed count of variant 'a'"),
        ([[1, 2, 3]], {}, r"shape \(looks, 2\)"),
        ([[1.5, 2]], {}, "whole numbers"),
        ([{"a": 1, "b": 1}], {"prior_concentration": 0.0}, "prior_concentration"),
    ],
)
def test_sequential_invalid_inputs_raise(counts: object, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sequential_srm_test(counts, {"a": 1, "b": 1}, **kwargs)  # type: ignore[arg-type]
