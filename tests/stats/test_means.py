"""Welch t-test and two-proportion z-test against scipy / statsmodels on raw data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats import proportion as sm_proportion

from xpkit.moments import Moments
from xpkit.stats.means import proportion_test, welch_test

RTOL = 1e-9


def _moments(values: np.ndarray) -> Moments:
    return Moments.from_rows(values, ["value"])


def _assert_no_infinity(effect: object) -> None:
    """Degenerate input gives NaN where a number is undefined, never an infinity."""
    for name in ("abs_effect", "abs_se", "abs_ci_low", "abs_ci_high", "p_value"):
        value = getattr(effect, name)
        assert not math.isinf(value), name


def test_welch_matches_scipy_for_several_variants() -> None:
    rng = np.random.default_rng(11)
    control = rng.gamma(2.0, 3.0, size=257)
    treatments = {
        "b": rng.gamma(2.0, 3.3, size=311),
        "c": rng.normal(5.0, 9.0, size=90),
        "d": rng.exponential(6.5, size=1003),
    }
    for alpha in (0.05, 0.1):
        for values in treatments.values():
            eff = welch_test(_moments(control), _moments(values), alpha=alpha)
            ref = stats.ttest_ind(values, control, equal_var=False)
            ci = ref.confidence_interval(confidence_level=1 - alpha)
            assert eff.method == "welch"
            assert eff.abs_effect == pytest.approx(values.mean() - control.mean(), rel=RTOL)
            assert eff.extra["t"] == pytest.approx(ref.statistic, rel=RTOL)
            assert eff.df == pytest.approx(ref.df, rel=RTOL)
            assert eff.p_value == pytest.approx(ref.pvalue, rel=RTOL)
            assert (eff.abs_ci_low, eff.abs_ci_high) == pytest.approx((ci.low, ci.high), rel=RTOL)
            se = math.sqrt(values.var(ddof=1) / values.size + control.var(ddof=1) / control.size)
            assert eff.abs_se == pytest.approx(se, rel=RTOL)
            assert (eff.n_control, eff.n_treatment) == (control.size, values.size)


def _shifted(values: np.ndarray, shift: float) -> Moments:
    centred = (values - shift).reshape(-1, 1)
    return Moments.from_shifted_sums(
        n=values.size,
        columns=["value"],
        shift=[shift],
        sums=centred.sum(axis=0),
        products=centred.T @ centred,
    )


def test_welch_keeps_precision_on_large_means() -> None:
    rng = np.random.default_rng(5)
    control = 1e9 + rng.normal(0.0, 1.0, size=2000)
    treatment = 1e9 + 0.1 + rng.normal(0.0, 1.3, size=1500)
    expected_se = math.sqrt(
        control.var(ddof=1) / control.size + treatment.var(ddof=1) / treatment.size
    )
    builds = [
        (_shifted(control, float(control[0])), _shifted(treatment, float(treatment[0]))),
        (_moments(control), _moments(treatment)),
    ]
    for moments_c, moments_t in builds:
        assert moments_c.var_of("value") == pytest.approx(control.var(ddof=1), rel=RTOL)
        eff = welch_test(moments_c, moments_t)
        assert eff.abs_se == pytest.approx(expected_se, rel=RTOL)
        # The difference of two means near 1e9 is only known to ~1e-7 in float64.
        assert eff.abs_effect == pytest.approx(treatment.mean() - control.mean(), abs=1e-6)
        ref = stats.ttest_ind(treatment, control, equal_var=False)
        assert eff.df == pytest.approx(ref.df, rel=RTOL)
        assert eff.rel_lift == pytest.approx(eff.abs_effect / control.mean(), rel=1e-6)


@pytest.mark.parametrize(
    ("control", "treatment"),
    [
        (np.array([1.0]), np.array([1.0, 2.0, 3.0])),  # n < 2
        (np.array([2.0, 2.0, 2.0]), np.array([3.0, 3.0])),  # zero variance in both groups
        (np.empty(0), np.array([1.0, 2.0])),  # empty group
    ],
)
def test_welch_degenerate_inputs_give_nan_not_errors(
    control: np.ndarray, treatment: np.ndarray
) -> None:
    eff = welch_test(_moments(control), _moments(treatment))
    _assert_no_infinity(eff)
    if control.size:  # both groups have units: the difference itself is still reported
        assert eff.abs_effect == pytest.approx(treatment.mean() - control.mean())
    else:
        assert math.isnan(eff.abs_effect)
    assert math.isnan(eff.p_value)
    assert math.isnan(eff.abs_ci_low) and math.isnan(eff.abs_ci_high)


# scipy flags the constant group as "nearly identical" data; that is the case under test.
@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_welch_one_constant_group_still_tests() -> None:
    control = np.full(20, 3.0)
    treatment = np.random.default_rng(1).normal(3.5, 1.0, size=30)
    eff = welch_test(_moments(control), _moments(treatment))
    ref = stats.ttest_ind(treatment, control, equal_var=False)
    assert eff.p_value == pytest.approx(ref.pvalue, rel=RTOL)
    assert eff.df == pytest.approx(29.0, rel=RTOL)


def test_alpha_is_validated() -> None:
    m = _moments(np.arange(5.0))
    with pytest.raises(ValueError, match="alpha"):
        welch_test(m, m, alpha=1.5)


def _binary(count: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.r_[np.ones(count), np.zeros(n - count)])


@pytest.mark.parametrize(
    ("count_c", "n_c", "count_t", "n_t"),
    [(100, 1000, 130, 1000), (60, 400, 50, 77 * 5), (2500, 10000, 2410, 9800), (80, 200, 95, 210)],
)
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_proportion_matches_statsmodels_wald(
    count_c: int, n_c: int, count_t: int, n_t: int, alpha: float
) -> None:
    """At least 50 events and 50 non-events in each group: the Wald z-test."""
    rng = np.random.default_rng(count_c + n_t)
    control, treatment = _binary(count_c, n_c, rng), _binary(count_t, n_t, rng)
    eff = proportion_test(_moments(control), _moments(treatment), alpha=alpha)
    ref = sm_proportion.test_proportions_2indep(
        count_t, n_t, count_c, n_c, method="wald", compare="diff"
    )
    low, high = sm_proportion.confint_proportions_2indep(
        count_t, n_t, count_c, n_c, method="wald", compare="diff", alpha=alpha
    )
    assert eff.method == "two_proportion_z"
    assert eff.abs_effect == pytest.approx(ref.diff, rel=RTOL)
    assert eff.extra["z"] == pytest.approx(ref.statistic, rel=RTOL)
    assert eff.p_value == pytest.approx(ref.pvalue, rel=RTOL)
    assert (eff.abs_ci_low, eff.abs_ci_high) == pytest.approx((low, high), rel=RTOL)


@pytest.mark.parametrize(
    ("count_c", "n_c", "count_t", "n_t"),
    [(5, 40, 1, 77), (2, 1000, 3, 1000), (3, 60, 0, 50), (40, 20000, 61, 19000), (45, 99, 52, 99)],
)
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_proportion_with_few_events_uses_the_score_method(
    count_c: int, n_c: int, count_t: int, n_t: int, alpha: float
) -> None:
    """Fewer than 50 events or non-events in a group: MN score test and intervals
    (statsmodels "score" with correction; the difference interval's own reference is in
    tests/stats/test_proportions.py, statsmodels' being off for a non-zero difference)."""
    rng = np.random.default_rng(count_c + n_t)
    control, treatment = _binary(count_c, n_c, rng), _binary(count_t, n_t, rng)
    eff = proportion_test(_moments(control), _moments(treatment), alpha=alpha)
    ref = sm_proportion.test_proportions_2indep(
        count_t, n_t, count_c, n_c, method="score", compare="diff", correction=True
    )
    low, high = sm_proportion.confint_proportions_2indep(
        count_t, n_t, count_c, n_c, method="score", compare="ratio", alpha=alpha
    )
    assert eff.method == "two_proportion_score"
    assert eff.abs_effect == pytest.approx(treatment.mean() - control.mean(), rel=RTOL)
    assert eff.extra["z"] == pytest.approx(ref.statistic, rel=RTOL)
    assert eff.abs_effect / eff.abs_se == pytest.approx(ref.statistic, rel=RTOL)
    assert eff.p_value == pytest.approx(ref.pvalue, rel=RTOL)
    assert eff.abs_ci_low < eff.abs_effect < eff.abs_ci_high
    assert eff.rel_lift == pytest.approx(treatment.mean() / control.mean() - 1, rel=RTOL)
    assert eff.rel_ci_low == pytest.approx(low - 1, rel=RTOL, abs=1e-13)
    assert eff.rel_ci_high == pytest.approx(high - 1, rel=RTOL)
    assert eff.rel_se == pytest.approx(
        (high - low) / (2 * stats.norm.isf(alpha / 2)), rel=RTOL, abs=1e-13
    )


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_proportion_no_control_events_keeps_test_drops_relative() -> None:
    rng = np.random.default_rng(0)
    eff = proportion_test(_moments(_binary(0, 1000, rng)), _moments(_binary(5, 1000, rng)))
    ref = sm_proportion.test_proportions_2indep(
        5, 1000, 0, 1000, method="score", compare="diff", correction=True
    )
    assert eff.method == "two_proportion_score"
    assert eff.p_value == pytest.approx(ref.pvalue, rel=RTOL)
    assert 0.0 < eff.abs_ci_low < eff.abs_ci_high
    assert eff.rel_lift is None


def test_proportion_threshold_is_on_pooled_expected_counts() -> None:
    """Score method when min(n_c, n_t) * min(p, 1 - p) < 50, p pooled."""
    rng = np.random.default_rng(1)
    cases = {
        (40, 1000, 60, 1000): "two_proportion_z",  # 1000 * 0.05 = 50
        (40, 1000, 59, 1000): "two_proportion_score",  # 49.5
        (949, 1000, 951, 1000): "two_proportion_z",  # 1000 * 0.05 non-events
        (10, 500, 90, 2000): "two_proportion_score",  # 500 * 0.04 = 20
    }
    for (x_c, n_c, x_t, n_t), method in cases.items():
        eff = proportion_test(_moments(_binary(x_c, n_c, rng)), _moments(_binary(x_t, n_t, rng)))
        pooled = (x_c + x_t) / (n_c + n_t)
        assert eff.method == method
        assert eff.extra["min_count"] == pytest.approx(min(n_c, n_t) * min(pooled, 1 - pooled))


@pytest.mark.parametrize(("count_c", "counts_t"), [(200, range(160, 260)), (8, range(0, 30))])
def test_proportion_interval_and_p_value_never_disagree(count_c: int, counts_t: range) -> None:
    n = 2000
    for count_t in counts_t:
        control = np.r_[np.ones(count_c), np.zeros(n - count_c)]
        treatment = np.r_[np.ones(count_t), np.zeros(n - count_t)]
        eff = proportion_test(_moments(control), _moments(treatment))
        excludes_zero = eff.abs_ci_low > 0 or eff.abs_ci_high < 0
        assert excludes_zero == (eff.p_value < 0.05)
        # The score path's ratio interval inverts the same statistic (the Wald path's
        # delta-method relative interval need not agree with its p-value).
        if eff.method == "two_proportion_score" and eff.rel_ci_low is not None:
            assert eff.rel_ci_high is not None
            assert (eff.rel_ci_low > 0 or eff.rel_ci_high < 0) == excludes_zero


def test_proportion_rejects_non_binary_column() -> None:
    values = np.array([0.0, 1.0, 2.0, 0.5])
    with pytest.raises(ValueError, match="'signups'.*0/1"):
        proportion_test(
            Moments.from_rows(values, ["signups"]),
            Moments.from_rows(values, ["signups"]),
            column="signups",
        )


def test_proportion_degenerate_all_zero() -> None:
    zeros = _moments(np.zeros(30))
    eff = proportion_test(zeros, zeros)
    _assert_no_infinity(eff)
    assert eff.abs_effect == 0.0
    assert math.isnan(eff.p_value)
    assert eff.rel_lift is None  # control rate 0: no relative lift
