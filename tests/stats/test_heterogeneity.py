"""Slice heterogeneity: Cochran's Q against OLS interaction Wald tests on raw data, DL
against statsmodels' meta-analysis, REML against an independent numeric maximisation,
slice-versus-complement against Welch on the raw complement, and the discovery and
shrinkage rules by simulation on per-unit data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import optimize, stats
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests

from xpkit.moments import Moments
from xpkit.stats.heterogeneity import (
    _fisher_scoring,
    between_variance,
    discover,
    effect_arrays,
    heterogeneity_test,
    shrink,
    slice_vs_complement,
)
from xpkit.stats.means import welch_test

RTOL = 1e-9
SIZES = (1200, 700, 450, 260, 90)  # per-slice units in each arm (unequal, like devices)


def _raw_slices(
    rng: np.random.Generator, effects: tuple[float, ...] = (0.0, 0.5, -0.6, 1.8, 0.3)
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per slice, skewed (lognormal) control and treatment values; slices differ in
    baseline, spread and effect; treatment arms a little smaller than control arms."""
    out = []
    for k, (n, effect) in enumerate(zip(SIZES, effects, strict=True)):
        scale = 1.0 + 0.4 * k
        control = scale * rng.lognormal(0.5, 0.9, size=n)
        treatment = scale * rng.lognormal(0.5, 0.9, size=n - 7 * k) + effect
        out.append((control, treatment))
    return out


def _interaction_ols(slices: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """``y ~ treatment * C(slice)`` design (slice 0 the reference) and the restriction
    matrix picking the K - 1 interaction coefficients."""
    ys, xs = [], []
    k = len(slices)
    for j, (control, treatment) in enumerate(slices):
        for t, values in ((0.0, control), (1.0, treatment)):
            dummies = np.zeros((values.size, k - 1))
            if j > 0:
                dummies[:, j - 1] = 1.0
            ones = np.ones((values.size, 1))
            xs.append(np.hstack([ones, t * ones, dummies, t * dummies]))
            ys.append(values)
    r = np.zeros((k - 1, 2 * k))
    r[:, k + 1 :] = np.eye(k - 1)
    return np.concatenate(ys), np.vstack(xs), r


def test_q_equals_ols_interaction_wald_with_pooled_variance() -> None:
    slices = _raw_slices(np.random.default_rng(3))
    y, x, r = _interaction_ols(slices)
    fit = sm.OLS(y, x).fit()
    wald = fit.wald_test(r, use_f=False, scalar=True)
    # Slice effects and their pooled-variance ses by hand, from the full model's s^2.
    s2 = np.sum((y - fit.fittedvalues) ** 2) / (y.size - x.shape[1])
    b = np.array([t.mean() - c.mean() for c, t in slices])
    se = np.array([math.sqrt(s2 * (1 / c.size + 1 / t.size)) for c, t in slices])
    het = heterogeneity_test(b, se)
    assert het.df == len(slices) - 1 == wald.df_denom
    assert het.q == pytest.approx(float(wald.statistic), rel=RTOL)
    assert het.p_value == pytest.approx(float(wald.pvalue), rel=RTOL)
    assert het.p_value < 0.01  # the planted effects differ: a real test, not 0 == 0
    assert het.i2 == pytest.approx((het.q - het.df) / het.q, rel=RTOL)


@pytest.mark.parametrize(("cov_type", "ddof"), [("HC2", 1), ("HC0", 0)])
def test_q_with_welch_ses_equals_robust_wald(cov_type: str, ddof: int) -> None:
    """The saturated cell-means model: HC2 gives each cell ``s^2 / n`` with ddof 1 (the
    Welch standard errors), HC0 the same with ddof 0; either way Q is the robust Wald."""
    slices = _raw_slices(np.random.default_rng(4))
    y, x, r = _interaction_ols(slices)
    wald = sm.OLS(y, x).fit(cov_type=cov_type).wald_test(r, use_f=False, scalar=True)
    b = np.array([t.mean() - c.mean() for c, t in slices])
    se = np.array(
        [math.sqrt(c.var(ddof=ddof) / c.size + t.var(ddof=ddof) / t.size) for c, t in slices]
    )
    het = heterogeneity_test(b, se)
    assert het.q == pytest.approx(float(wald.statistic), rel=RTOL)
    assert het.p_value == pytest.approx(float(wald.pvalue), rel=RTOL)
    if ddof == 1:  # the module's own estimator gives those ses
        effects = [
            welch_test(Moments.from_rows(c, ["value"]), Moments.from_rows(t, ["value"]))
            for c, t in slices
        ]
        assert heterogeneity_test(*effect_arrays(effects)).q == pytest.approx(het.q, rel=RTOL)


def test_q_i2_and_dl_match_statsmodels_meta_analysis() -> None:
    """statsmodels (0.15) reports DL's ``(Q - df) / c`` and ``(Q - df) / Q`` untruncated;
    both are clipped at 0 here, and with tau^2 = 0 the random-effects mean is the
    fixed-effect one. The seeds cover both cases."""
    clipped = set()
    for seed in range(6):
        rng = np.random.default_rng(seed)
        se = rng.uniform(0.2, 1.5, size=6 + seed)
        b = rng.normal(1.0, 0.8, size=se.size) + rng.normal(0.0, se)
        with np.errstate(invalid="ignore"):  # statsmodels' sqrt of a negative variance
            ref = combine_effects(b, se**2, method_re="dl")
        het = heterogeneity_test(b, se)
        assert het.q == pytest.approx(ref.q, rel=RTOL)
        assert het.i2 == pytest.approx(max(0.0, ref.i2), rel=RTOL, abs=1e-12)
        assert het.pooled == pytest.approx(ref.mean_effect_fe, rel=RTOL)
        assert het.pooled_se == pytest.approx(ref.sd_eff_w_fe, rel=RTOL)
        fit = shrink(b, se, method="dl")
        assert fit.tau2 == pytest.approx(max(0.0, ref.tau2), rel=RTOL, abs=1e-14)
        clipped.add(ref.tau2 < 0)
        if ref.tau2 >= 0:
            assert fit.mu == pytest.approx(ref.mean_effect_re, rel=RTOL)
            assert fit.mu_se == pytest.approx(ref.sd_eff_w_re, rel=RTOL)
        else:
            assert (fit.mu, fit.mu_se) == pytest.approx((het.pooled, het.pooled_se), rel=RTOL)
    assert clipped == {True, False}


def test_heterogeneity_degenerate_inputs() -> None:
    none = heterogeneity_test([], [])
    assert math.isnan(none.q) and math.isnan(none.p_value) and none.df == 0
    one = heterogeneity_test([1.0], [0.5])
    assert math.isnan(one.q) and math.isnan(one.i2) and one.pooled == 1.0
    equal = heterogeneity_test([2.0, 2.0, 2.0], [0.1, 0.3, 1.0])
    assert (equal.q, equal.i2, equal.p_value) == (0.0, 0.0, 1.0)
    # Zero, negative and non-finite ses and NaN estimates are left out of every sum.
    b = [0.3, 1.0, 9.0, 0.5, np.nan, 7.0, -0.2]
    se = [0.2, 0.4, 0.0, 0.3, 0.2, np.inf, 0.25]
    het = heterogeneity_test(b, se)
    clean = heterogeneity_test([0.3, 1.0, 0.5, -0.2], [0.2, 0.4, 0.3, 0.25])
    assert het.used.tolist() == [True, True, False, True, False, False, True]
    assert (het.q, het.df, het.p_value) == (clean.q, clean.df, clean.p_value)
    with pytest.raises(ValueError, match="3 estimates but 2"):
        heterogeneity_test([1.0, 2.0, 3.0], [1.0, 1.0])


def test_q_test_holds_its_size() -> None:
    """4000 draws of five slice estimates with unequal ses and one common effect: the
    rejection rate is alpha within 3 Monte-Carlo ses (df = K would give ~0.026)."""
    rng = np.random.default_rng(20240601)
    se = np.array([0.05, 0.07, 0.1, 0.12, 0.3])
    draws = 0.4 + rng.standard_normal((4000, se.size)) * se
    rate = np.mean([heterogeneity_test(b, se).p_value <= 0.05 for b in draws])
    assert abs(rate - 0.05) <= 3 * math.sqrt(0.05 * 0.95 / draws.shape[0])


def _moments(values: np.ndarray) -> Moments:
    return Moments.from_rows(values, ["value"])


def _welch_se(control: np.ndarray, treatment: np.ndarray) -> float:
    """Welch's standard error, the denominator of scipy's statistic."""
    res = stats.ttest_ind(treatment, control, equal_var=False)
    return float((treatment.mean() - control.mean()) / res.statistic)


def test_slice_vs_complement_matches_welch_on_the_raw_complement() -> None:
    slices = _raw_slices(np.random.default_rng(8))
    control = [_moments(c) for c, _ in slices]
    treatment = [_moments(t) for _, t in slices]
    for scale in ("abs", "rel"):
        got = slice_vs_complement(control, treatment, scale=scale)
        for k, (c, t) in enumerate(slices):
            rest_c = np.concatenate([s[0] for j, s in enumerate(slices) if j != k])
            rest_t = np.concatenate([s[1] for j, s in enumerate(slices) if j != k])
            own, rest = (t.mean() - c.mean()), (rest_t.mean() - rest_c.mean())
            own_se = _welch_se(c, t)
            rest_se = _welch_se(rest_c, rest_t)
            if scale == "rel":  # delta method on each side, independently
                own_se = (
                    math.sqrt(
                        t.var(ddof=1) / t.size + (t.mean() / c.mean()) ** 2 * c.var(ddof=1) / c.size
                    )
                    / c.mean()
                )
                rest_se = (
                    math.sqrt(
                        rest_t.var(ddof=1) / rest_t.size
                        + (rest_t.mean() / rest_c.mean()) ** 2 * rest_c.var(ddof=1) / rest_c.size
                    )
                    / rest_c.mean()
                )
                own, rest = own / c.mean(), rest / rest_c.mean()
            se = math.hypot(own_se, rest_se)
            assert got.estimate[k] == pytest.approx(own, rel=RTOL)
            assert got.complement_estimate[k] == pytest.approx(rest, rel=RTOL)
            assert got.complement_se[k] == pytest.approx(rest_se, rel=RTOL)
            assert got.difference_se[k] == pytest.approx(se, rel=RTOL)
            assert got.p_values[k] == pytest.approx(
                2 * stats.norm.sf(abs(own - rest) / se), rel=RTOL
            )


def test_slice_vs_complement_degenerate_and_checks() -> None:
    rng = np.random.default_rng(0)
    control = [
        _moments(rng.normal(size=50)),
        _moments(np.array([1.0])),
        _moments(rng.normal(size=40)),
    ]
    treatment = [_moments(rng.normal(size=50)) for _ in range(3)]
    got = slice_vs_complement(control, treatment)
    assert math.isnan(got.p_values[1]) and np.isfinite(got.p_values[[0, 2]]).all()
    assert discover(got.p_values).discovered.tolist()[1] is False
    with pytest.raises(ValueError, match="at least two"):
        slice_vs_complement(control[:1], treatment[:1])
    with pytest.raises(ValueError, match="3 control slices but 2"):
        slice_vs_complement(control, treatment[:2])


def test_discover_is_bh_over_all_candidates() -> None:
    rng = np.random.default_rng(2)
    p = np.concatenate([rng.uniform(size=20), rng.uniform(0, 0.004, size=5), [np.nan]])
    got = discover(p, alpha=0.1)
    finite = ~np.isnan(p)
    reject, adjusted, _, _ = multipletests(p[finite], alpha=0.1, method="fdr_bh")
    np.testing.assert_allclose(got.adjusted[finite], adjusted, rtol=1e-12)
    assert got.discovered[finite].tolist() == reject.tolist()
    assert not got.discovered[~finite].any() and got.method == "bh"
    holm = discover(p, alpha=0.1, method="holm")
    assert holm.discovered.sum() <= got.discovered.sum()


# -- simulation on per-unit data ----------------------------------------------------------
DEVICE_SHARES = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
COUNTRY_SHARES = np.array([0.5, 0.3, 0.2])


def _experiment(
    rng: np.random.Generator, units: int, device_effects: np.ndarray
) -> tuple[list[list[Moments]], list[list[Moments]]]:
    """Per (device, country) cell, the moments of each arm: lognormal metric whose
    baseline depends on the device, an additive effect per device."""
    cells = np.outer(DEVICE_SHARES, COUNTRY_SHARES).ravel()
    arms: list[list[list[Moments]]] = [[], []]
    for arm in (0, 1):
        counts = rng.multinomial(units, cells).reshape(DEVICE_SHARES.size, -1)
        for d in range(DEVICE_SHARES.size):
            row = []
            for n in counts[d]:
                values = (1.0 + 0.5 * d) * rng.lognormal(1.0, 1.0, size=n)
                row.append(_moments(values + arm * device_effects[d]))
            arms[arm].append(row)
    return arms[0], arms[1]


def _merge(moments: list[Moments]) -> Moments:
    out = moments[0]
    for m in moments[1:]:
        out = out.merge(m)
    return out


def _candidate_p_values(control: list[list[Moments]], treatment: list[list[Moments]]) -> tuple:
    """p-values of every device, country and device x country slice, and the device Q."""
    by_device = [[_merge(row) for row in arm] for arm in (control, treatment)]
    by_country = [
        [_merge([row[j] for row in arm]) for j in range(COUNTRY_SHARES.size)]
        for arm in (control, treatment)
    ]
    by_cell = [[m for row in arm for m in row] for arm in (control, treatment)]
    p = np.concatenate(
        [slice_vs_complement(c, t).p_values for c, t in (by_device, by_country, by_cell)]
    )
    effects = [welch_test(c, t) for c, t in zip(*by_device, strict=True)]
    return p, heterogeneity_test(*effect_arrays(effects)).p_value


def test_no_heterogeneity_discovery_fwer_and_q_size() -> None:
    """A uniform effect: any discovery is false, so FDR = FWER <= alpha (tolerance 2.5
    Monte-Carlo ses); without the BH step the 23 candidates give ~0.4."""
    rng = np.random.default_rng(11)
    sims, alpha = 500, 0.05
    any_discovery, q_reject = 0, 0
    for _ in range(sims):
        control, treatment = _experiment(rng, 4000, np.full(DEVICE_SHARES.size, 0.5))
        p, q_p = _candidate_p_values(control, treatment)
        any_discovery += bool(discover(p, alpha).discovered.any())
        q_reject += q_p <= alpha
    tolerance = 2.5 * math.sqrt(alpha * (1 - alpha) / sims)
    assert any_discovery / sims <= alpha + tolerance
    assert q_reject / sims <= alpha + tolerance


def _welch_by_device(rng: np.random.Generator, effects: np.ndarray) -> tuple[np.ndarray, ...]:
    control, treatment = _experiment(rng, 3000, effects)
    fx = [welch_test(_merge(c), _merge(t)) for c, t in zip(control, treatment, strict=True)]
    return effect_arrays(fx)


def test_shrinkage_lowers_mse_under_modest_heterogeneity() -> None:
    """True device effects drawn from N(0.5, 0.3^2) (0.3 ~ a mid-size slice's se): the
    shrunken estimates' summed squared error is well below the raw estimates' (raw: 1)."""
    rng = np.random.default_rng(12)
    raw_sse = shrunk_sse = 0.0
    for _ in range(300):
        truth = rng.normal(0.5, 0.3, size=DEVICE_SHARES.size)
        b, se = _welch_by_device(rng, truth)
        raw_sse += np.sum((b - truth) ** 2)
        shrunk_sse += np.sum((shrink(b, se).estimates - truth) ** 2)
    assert shrunk_sse / raw_sse < 0.8


def test_shrinkage_does_not_pool_away_large_heterogeneity() -> None:
    """Device effects far apart (several ses): shrinkage must stay close to the raw
    estimates (ratio <= 1.05) where full pooling (tau^2 = 0) would be several times worse."""
    rng = np.random.default_rng(13)
    truth = np.array([0.0, 3.0, -2.0, 5.0, 1.0])
    raw_sse = shrunk_sse = pooled_sse = 0.0
    for _ in range(200):
        b, se = _welch_by_device(rng, truth)
        fit = shrink(b, se)
        raw_sse += np.sum((b - truth) ** 2)
        shrunk_sse += np.sum((fit.estimates - truth) ** 2)
        pooled_sse += np.sum((heterogeneity_test(b, se).pooled - truth) ** 2)
    assert shrunk_sse / raw_sse <= 1.05
    assert pooled_sse / raw_sse > 3.0


# -- REML --------------------------------------------------------------------------------
def _reml_reference(b: np.ndarray, v: np.ndarray) -> float:
    """Independent REML: the restricted log-likelihood in matrix form, on a dense log grid
    (the likelihood can be bimodal), then scipy's bounded search between the best grid
    point's neighbours; 0 when the boundary is higher."""
    x = np.ones((b.size, 1))

    def negloglik(t: float) -> float:
        cov = np.diag(v + t)
        inv = np.linalg.inv(cov)
        xtx = x.T @ inv @ x
        proj = inv - inv @ x @ np.linalg.inv(xtx) @ x.T @ inv
        logdet = np.linalg.slogdet(cov)[1] + np.linalg.slogdet(xtx)[1]
        return float(0.5 * (logdet + b @ proj @ b))

    grid = np.geomspace(1e-6 * v.min(), 1e3 * (np.ptp(b) ** 2 + v.max()), 3000)
    j = int(np.argmin([negloglik(t) for t in grid]))
    lo, hi = math.log(grid[max(j - 1, 0)]), math.log(grid[min(j + 1, grid.size - 1)])
    res = optimize.minimize_scalar(
        lambda u: negloglik(math.exp(u)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-12},
    )
    best = math.exp(res.x)
    return 0.0 if negloglik(0.0) <= negloglik(best) else best


@pytest.mark.parametrize(
    ("seed", "tau", "k", "se_range"),
    [
        (0, 0.5, 6, (0.2, 1.0)),
        (1, 3.0, 4, (0.1, 0.5)),
        (2, 0.05, 8, (0.01, 3.0)),
        (3, 1.0, 2, (0.3, 0.6)),
        (4, 0.0, 5, (0.5, 0.5)),
        (5, 200.0, 12, (1e-3, 10.0)),
    ],
)
def test_reml_matches_an_independent_maximisation(
    seed: int, tau: float, k: int, se_range: tuple[float, float]
) -> None:
    rng = np.random.default_rng(seed)
    se = rng.uniform(*se_range, size=k)
    b = 2.0 + rng.normal(0.0, tau, size=k) + rng.normal(0.0, se)
    got = between_variance(b, se, method="reml")
    ref = _reml_reference(b, se**2)
    assert got >= 0.0
    assert got == pytest.approx(ref, rel=1e-6, abs=1e-9 * float(np.median(se**2)))
    assert between_variance(b, se) == got  # REML is the default


@pytest.mark.parametrize(
    ("b", "se"),
    [  # ses orders of magnitude apart: two local maxima of the restricted likelihood
        ([0.956, -5.108, 53.0, 1.016], [0.164, 1.764, 34.094, 0.043]),
        (
            [15.097, -9.144, -0.39, -4.54, -1.892, -1.675, 6.583, -1.341],
            [2.803, 8.136, 14.665, 8.337, 0.041, 0.059, 4.885, 0.028],
        ),
        ([0.51, -97.151, 6.494], [0.429, 41.817, 18.169]),
        ([63.892, -10.312, -5.708], [25.099, 1.478, 0.292]),
    ],
)
def test_reml_finds_the_global_maximum_of_a_bimodal_likelihood(
    b: list[float], se: list[float]
) -> None:
    got = between_variance(b, se)
    ref = _reml_reference(np.array(b), np.array(se) ** 2)
    assert got == pytest.approx(ref, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize(
    ("b", "se", "expected"),
    [  # the maximum at the boundary 0, and inside
        ([1.0, 1.01, 0.99, 1.0], [0.5, 0.4, 0.6, 0.3], 0.0),
        ([0.3, 1.0, 0.5, -0.2, 0.9], [0.2, 0.4, 0.3, 0.25, 0.1], None),
    ],
)
def test_fisher_scoring_reaches_the_maximum_from_any_start(
    b: list[float], se: list[float], expected: float | None
) -> None:
    """The scoring steps are truncated at 0: started above a boundary maximum they must
    land on 0, not bounce to a positive tau^2."""
    v = np.array(se) ** 2
    ref = _reml_reference(np.array(b), v) if expected is None else expected
    for start in (0.0, 1e-3, 1.0, 1e3, 1e6):
        assert _fisher_scoring(np.array(b), v, start) == pytest.approx(ref, rel=1e-6, abs=1e-12)


def test_reml_at_the_boundary_and_with_few_slices() -> None:
    # Estimates closer together than their ses: the maximum is at tau^2 = 0.
    b, se = np.array([1.0, 1.01, 0.99, 1.0]), np.array([0.5, 0.4, 0.6, 0.3])
    assert between_variance(b, se) == 0.0 == _reml_reference(b, se**2)
    assert math.isnan(between_variance([1.0], [0.1]))
    with pytest.raises(ValueError, match="reml"):
        between_variance(b, se, method="ml")  # type: ignore[arg-type]


def test_shrink_posterior_formulas() -> None:
    rng = np.random.default_rng(7)
    se = rng.uniform(0.1, 0.8, size=7)
    b = rng.normal(0.0, 1.0, size=se.size) + rng.normal(0.0, se)
    b[3], se[3] = 5.0, 0.0  # unusable slice: NaN out, ignored in the fit
    fit = shrink(b, se)
    keep = np.arange(se.size) != 3
    ref = combine_effects(b[keep], se[keep] ** 2, method_re="dl")  # mu given tau^2
    tau2, v = fit.tau2, se[keep] ** 2
    w = 1 / (tau2 + v)
    mu = np.sum(w * b[keep]) / w.sum()
    factor = v / (tau2 + v)
    assert tau2 > 0 and fit.mu == pytest.approx(mu, rel=RTOL)
    np.testing.assert_allclose(fit.shrinkage[keep], factor, rtol=RTOL)
    np.testing.assert_allclose(fit.estimates[keep], factor * mu + (1 - factor) * b[keep], rtol=RTOL)
    np.testing.assert_allclose(
        fit.sds[keep], np.sqrt(tau2 * v / (tau2 + v) + factor**2 / w.sum()), rtol=RTOL
    )
    assert math.isnan(fit.estimates[3]) and not fit.used[3]
    assert ref.k == keep.sum()
    # tau^2 = 0: every slice is the common mean with its standard error.
    flat = shrink([1.0, 1.01, 0.99], [0.5, 0.4, 0.6])
    np.testing.assert_allclose(flat.estimates, flat.mu, rtol=RTOL)
    np.testing.assert_allclose(flat.sds, flat.mu_se, rtol=RTOL)
    # One slice: nothing to borrow from.
    single = shrink([2.0, np.nan], [0.3, 0.1])
    assert math.isnan(single.tau2) and single.estimates[0] == 2.0 and single.sds[0] == 0.3
