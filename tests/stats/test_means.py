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


def _assert_all_finite(effect: object) -> None:
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
    _assert_all_finite(eff)
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


@pytest.mark.parametrize(
    ("count_c", "n_c", "count_t", "n_t"),
    [(100, 1000, 130, 1000), (5, 40, 1, 77), (2500, 10000, 2410, 9800), (0, 50, 3, 60)],
)
@pytest.mark.parametrize("alpha", [0.05, 0.01])
# statsmodels also computes ratio and odds ratio, which divide by a zero control rate.
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_proportion_matches_statsmodels_wald(
    count_c: int, n_c: int, count_t: int, n_t: int, alpha: float
) -> None:
    rng = np.random.default_rng(count_c + n_t)
    control = rng.permutation(np.r_[np.ones(count_c), np.zeros(n_c - count_c)])
    treatment = rng.permutation(np.r_[np.ones(count_t), np.zeros(n_t - count_t)])
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


def test_proportion_interval_and_p_value_never_disagree() -> None:
    n = 2000
    for count_t in range(160, 260):
        control = np.r_[np.ones(200), np.zeros(n - 200)]
        treatment = np.r_[np.ones(count_t), np.zeros(n - count_t)]
        eff = proportion_test(_moments(control), _moments(treatment))
        excludes_zero = eff.abs_ci_low > 0 or eff.abs_ci_high < 0
        assert excludes_zero == (eff.p_value < 0.05)


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
    _assert_all_finite(eff)
    assert math.isnan(eff.p_value)
    assert eff.rel_lift is None  # control rate 0: no relative lift
