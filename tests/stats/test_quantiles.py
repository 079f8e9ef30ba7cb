"""Quantile metrics from compressed distributions: bins, SQL keys, estimators, coverage."""

from __future__ import annotations

import math
from dataclasses import astuple

import duckdb
import numpy as np
import pytest
from scipy import stats

from xpkit.stats.quantile_bins import (
    EventHistogram,
    Histogram,
    bin_key_sql,
    bin_keys,
    bin_values,
    gamma_of,
)
from xpkit.stats.quantiles import (
    bootstrap_quantiles,
    design_effect,
    quantile_bootstrap,
    quantile_clustered,
    quantile_woodruff,
)

SLACK = 1 + 1e-12  # the bound holds to floating-point rounding (quantile_bins docstring)
Z = float(stats.norm.isf(0.025))


def _datasets(rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = 5000
    return {
        "lognormal": rng.lognormal(0.0, 2.0, n),
        "pareto": (rng.pareto(1.1, n) + 1.0) * 3.0,
        "t3 with negatives": rng.standard_t(3, n) * 50.0,
        "integers with zeros": np.where(
            rng.random(n) < 0.3, 0.0, np.round(rng.lognormal(3, 1.5, n))
        ),
        "tiny and huge": np.exp(rng.uniform(-600.0, 600.0, n)),
    }


# -- bins --------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1e-3, 1e-2, 0.05])
def test_representative_is_within_eps_of_every_value_and_keys_sort_like_values(eps: float) -> None:
    rng = np.random.default_rng(1)
    for name, values in _datasets(rng).items():
        keys = bin_keys(values, eps)
        reps = bin_values(keys, eps)
        assert np.all(np.abs(reps - values) <= eps * np.abs(values) * SLACK), name
        assert np.all(reps[values == 0] == 0) and np.all(np.sign(reps) == np.sign(values)), name
        order = np.argsort(values, kind="stable")
        assert np.all(np.diff(keys[order]) >= 0), name
        # The bound is tight: some value is more than half of eps away from its representative.
        assert np.max(np.abs(reps - values) / np.maximum(np.abs(values), 1e-300)) > eps / 2, name


@pytest.mark.parametrize("eps", [1e-3, 1e-2])
def test_histogram_quantile_is_within_eps_of_numpy_inverted_cdf(eps: float) -> None:
    rng = np.random.default_rng(2)
    levels = [0.001, 0.01, 0.1, 0.25, 0.5, 0.77, 0.9, 0.95, 0.99, 0.999]
    for name, values in _datasets(rng).items():
        hist = Histogram.from_values(values, eps)
        assert hist.n == values.size
        for q in levels:
            ref = float(np.quantile(values, q, method="inverted_cdf"))
            assert abs(hist.quantile(q) - ref) <= eps * abs(ref) * SLACK, (name, q)


def test_small_integers_keep_their_own_bins() -> None:
    """Integers below 1 / ln(gamma) never share a bin, so rounding recovers them."""
    rng = np.random.default_rng(3)
    values = rng.poisson(40.0, 3000).astype(float) * rng.integers(0, 2, 3000)  # zeros too
    values = np.concatenate([values, np.arange(499.0)])
    assert np.unique(bin_keys(values, 1e-3)).size == np.unique(values).size
    hist = Histogram.from_values(values, 1e-3)
    for q in (0.1, 0.3, 0.5, 0.9, 0.95):
        assert round(hist.quantile(q)) == np.quantile(values, q, method="inverted_cdf")


@pytest.mark.parametrize("eps", [1e-3, 1e-2])
def test_sql_bin_keys_agree_with_python(eps: float) -> None:
    rng = np.random.default_rng(4)
    values = np.concatenate([*_datasets(rng).values(), [0.0, -0.0, 1.0, -1.0, 5e-324, 1e308]])
    con = duckdb.connect()
    con.register("t", {"x": values})
    sql_keys = con.execute(f"SELECT {bin_key_sql('x', eps)} AS k FROM t").fetchnumpy()["k"]
    assert np.array_equal(sql_keys, bin_keys(values, eps))
    # At the boundaries gamma^i themselves the two logs may round to either side: keys
    # then differ by one and both representatives stay within the bound.
    boundaries = np.power(gamma_of(eps), np.arange(-4000, 4000, dtype=float))
    boundaries = np.concatenate([boundaries, -boundaries])
    con.register("b", {"x": boundaries})
    sql_keys = con.execute(f"SELECT {bin_key_sql('x', eps)} AS k FROM b").fetchnumpy()["k"]
    py_keys = bin_keys(boundaries, eps)
    assert np.max(np.abs(sql_keys - py_keys)) <= 1
    for keys in (sql_keys, py_keys):
        reps = bin_values(keys, eps)
        assert np.all(np.abs(reps - boundaries) <= eps * np.abs(boundaries) * SLACK)


def test_non_finite_values_and_bad_eps_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        bin_keys([1.0, float("nan")])
    with pytest.raises(ValueError, match="eps"):
        bin_keys([1.0], eps=0.5)


def test_cell_histograms_add_up_to_the_histogram_of_the_union() -> None:
    rng = np.random.default_rng(5)
    cells = [rng.lognormal(0, 1, size) for size in (10, 300, 1, 2000)]
    merged = Histogram.from_values(cells[0])
    for cell in cells[1:]:
        merged = merged.merge(Histogram.from_values(cell))
    union = Histogram.from_values(np.concatenate(cells))
    assert np.array_equal(merged.keys, union.keys) and np.array_equal(merged.counts, union.counts)
    # Rows from several cells in any order, as the SQL returns them.
    keys = np.concatenate([bin_keys(c) for c in cells])
    rows = Histogram.from_keys(keys[::-1], np.ones(keys.size), 1e-3)
    assert np.array_equal(rows.counts, union.counts)
    with pytest.raises(ValueError, match="eps"):
        union.merge(Histogram.from_values(cells[0], 1e-2))


def _clustered(
    rng: np.random.Generator, n_units: int, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Latencies of units with very different event counts (Poisson-lognormal) and their
    own level (heavier units faster): events of one unit are strongly correlated."""
    level = rng.normal(0.0, 0.6, n_units)
    activity = -0.5 * level / 0.6 + math.sqrt(0.75) * rng.standard_normal(n_units)
    counts = 1 + rng.poisson(np.exp(1.2 + activity))
    units = np.repeat(np.arange(n_units), counts)
    return units, scale * 100.0 * np.exp(level[units] + rng.normal(0.0, 0.8, units.size))


def test_event_histogram_is_the_per_unit_cross_sums_at_every_bin() -> None:
    rng = np.random.default_rng(6)
    units, values = _clustered(rng, 300)
    values = np.round(values / 10.0) * 10.0  # ties within units
    hist = EventHistogram.from_events(units, values)
    keys = bin_keys(values)
    n_u = np.bincount(units).astype(float)
    for i in range(0, hist.keys.size, 7):
        s_u = np.bincount(units, weights=(keys <= hist.keys[i]).astype(float), minlength=n_u.size)
        assert hist.events[: i + 1].sum() == s_u.sum()
        assert hist.pairs[: i + 1].sum() == (s_u**2).sum()
        assert hist.cross[: i + 1].sum() == (s_u * n_u).sum()
    assert hist.pairs.sum() == hist.cross.sum() == (n_u**2).sum()
    assert hist.units == n_u.size


EVENT_HISTOGRAM_SQL = """
WITH per_unit_key AS (
  SELECT cell, unit_id, {key} AS bin_key, COUNT(*) AS c
  FROM events GROUP BY cell, unit_id, bin_key
), running AS (
  SELECT cell, unit_id, bin_key, c,
    COALESCE(SUM(c) OVER (PARTITION BY unit_id ORDER BY bin_key
      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS s_before,
    SUM(c) OVER (PARTITION BY unit_id) AS n_u
  FROM per_unit_key
)
SELECT cell, bin_key, SUM(c) AS events, SUM(c * (2 * s_before + c)) AS pairs,
  SUM(c * n_u) AS "cross", COUNT(DISTINCT unit_id) AS units_in_bin
FROM running GROUP BY cell, bin_key
"""


def test_event_histogram_contract_runs_as_one_sql_statement_per_cell() -> None:
    """The columns the SQL returns (quantiles module docstring) computed in DuckDB, per
    cell, and added up in Python equal the reference built from the raw event rows."""
    rng = np.random.default_rng(7)
    units, values = _clustered(rng, 500)
    cell = units % 3  # e.g. assignment days: a unit belongs to one cell
    con = duckdb.connect()
    con.register("events", {"cell": cell, "unit_id": units, "x": values})
    rows = con.execute(EVENT_HISTOGRAM_SQL.format(key=bin_key_sql("x"))).fetchnumpy()
    unit_rows = con.execute("SELECT cell, COUNT(DISTINCT unit_id) AS u FROM events GROUP BY cell")
    per_cell_units = dict(unit_rows.fetchall())
    merged = None
    for c in range(3):
        m = rows["cell"] == c
        part = EventHistogram.from_keys(
            rows["bin_key"][m],
            rows["events"][m],
            rows["pairs"][m],
            rows["cross"][m],
            per_cell_units[c],
            1e-3,
        )
        merged = part if merged is None else merged.merge(part)
    assert merged is not None
    ref = EventHistogram.from_events(units, values)
    assert astuple(merged)[4:] == astuple(ref)[4:]
    for got, want in zip(astuple(merged)[:4], astuple(ref)[:4], strict=True):
        assert np.array_equal(got, want)


# -- unit level ----------------------------------------------------------------------------


def _raw_rank_interval(values: np.ndarray, q: float) -> tuple[float, float, float]:
    """Point estimate and order-statistic interval F^-1(q -/+ z sqrt(q(1-q)/n)) on raw data."""
    s = np.sort(values)
    half = Z * math.sqrt(q * (1 - q) / s.size)

    def at(p: float) -> float:
        return float(s[min(max(math.ceil(p * s.size), 1), s.size) - 1])

    return at(q), at(q - half), at(q + half)


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95])
def test_woodruff_is_the_raw_order_statistic_interval_within_the_bin_error(q: float) -> None:
    rng = np.random.default_rng(8)
    eps = 1e-3
    control, treatment = rng.lognormal(0, 1, 3000), rng.pareto(2.0, 4000) + 1.0
    eff = quantile_woodruff(Histogram.from_values(control), Histogram.from_values(treatment), q)
    assert eff.method == "quantile_woodruff" and (eff.n_control, eff.n_treatment) == (3000, 4000)
    ses = []
    for values, estimate, se in (
        (control, eff.mean_control, eff.extra["se_control"]),
        (treatment, eff.mean_treatment, eff.extra["se_treatment"]),
    ):
        point, low, high = _raw_rank_interval(values, q)
        assert abs(estimate - point) <= eps * abs(point) * SLACK
        assert estimate == pytest.approx(np.quantile(values, q, method="inverted_cdf"), rel=eps)
        # Each end of the interval moves by at most eps of itself.
        ses.append((high - low) / (2 * Z))
        assert abs(se - ses[-1]) <= eps * (abs(low) + abs(high)) / (2 * Z) * SLACK
    assert eff.abs_se == pytest.approx(
        math.hypot(eff.extra["se_control"], eff.extra["se_treatment"])
    )
    assert eff.abs_se == pytest.approx(math.hypot(*ses), rel=0.05)
    assert eff.abs_effect == eff.mean_treatment - eff.mean_control
    assert eff.rel_lift == pytest.approx(eff.abs_effect / eff.mean_control)
    assert (eff.abs_ci_low, eff.abs_ci_high) == pytest.approx(
        (eff.abs_effect - Z * eff.abs_se, eff.abs_effect + Z * eff.abs_se)
    )
    assert eff.extra["q"] == q and eff.extra["bin_error"] == pytest.approx(
        eps * (eff.mean_control + eff.mean_treatment)
    )


def _coverage(intervals: list[tuple[float, float]], truth: float) -> float:
    return float(np.mean([low <= truth <= high for low, high in intervals]))


def test_woodruff_covers_in_a_quick_simulation() -> None:
    """300 experiments (Monte-Carlo s.e. 1.3 points): an interval half or twice as wide as
    it should be (a density off by 2) covers ~68% or ~99.99% and fails."""
    rng = np.random.default_rng(9)
    q, n = 0.9, 2000
    truth = 0.05 * math.exp(stats.norm.ppf(q))
    intervals = []
    for _ in range(300):
        hc = Histogram.from_values(rng.lognormal(0, 1, n))
        ht = Histogram.from_values(rng.lognormal(0, 1, n) * 1.05)
        eff = quantile_woodruff(hc, ht, q)
        intervals.append((eff.abs_ci_low, eff.abs_ci_high))
    assert 0.915 <= _coverage(intervals, truth) <= 0.985


def test_bootstrap_is_bit_identical_for_identical_inputs() -> None:
    rng = np.random.default_rng(10)
    values_c, values_t = rng.lognormal(0, 1, 2000), rng.lognormal(0.02, 1, 2500)
    first = quantile_bootstrap(
        Histogram.from_values(values_c), Histogram.from_values(values_t), 0.9
    )
    again = quantile_bootstrap(
        Histogram.from_values(values_c), Histogram.from_values(values_t), 0.9
    )
    assert first.method == "quantile_bootstrap"
    assert repr(first) == repr(again)  # every field, to the last bit
    other = quantile_bootstrap(
        Histogram.from_values(values_c), Histogram.from_values(values_t), 0.9, seed=1
    )
    assert other.abs_se != first.abs_se
    assert other.abs_se == pytest.approx(first.abs_se, rel=0.15)


@pytest.mark.parametrize("q", [0.5, 0.95])
def test_bootstrap_of_the_histogram_is_the_bootstrap_of_the_units(q: float) -> None:
    """Poisson counts per bin against resampling the raw values (2000 replicates each):
    bootstrap standard errors agree to their Monte-Carlo error, and with woodruff's."""
    rng = np.random.default_rng(11)
    control, treatment = rng.lognormal(0, 1, 3000), rng.lognormal(0, 1, 3000)
    hc, ht = Histogram.from_values(control), Histogram.from_values(treatment)
    eff = quantile_bootstrap(hc, ht, q, replicates=2000)
    raw = [
        np.quantile(v[rng.integers(0, v.size, (2000, v.size))], q, axis=1, method="inverted_cdf")
        for v in (control, treatment)
    ]
    assert eff.abs_se == pytest.approx(float(np.std(raw[1] - raw[0], ddof=1)), rel=0.08)
    assert eff.extra["se_control"] == pytest.approx(float(np.std(raw[0], ddof=1)), rel=0.08)
    assert eff.abs_se == pytest.approx(quantile_woodruff(hc, ht, q).abs_se, rel=0.15)
    # The replicates themselves, not only their spread: same centre as the raw bootstrap's.
    draws = bootstrap_quantiles(hc, q, 2000, np.random.default_rng(0))
    se = eff.extra["se_control"]
    assert abs(float(np.mean(draws)) - float(np.mean(raw[0]))) < 0.15 * se
    assert eff.mean_control == hc.quantile(q) and eff.abs_effect == ht.quantile(q) - hc.quantile(q)


def test_bootstrap_covers_in_a_quick_simulation() -> None:
    rng = np.random.default_rng(12)
    q, n = 0.5, 2000
    intervals = []
    for _ in range(150):
        hc = Histogram.from_values(rng.pareto(2.0, n) + 1.0)
        ht = Histogram.from_values((rng.pareto(2.0, n) + 1.0) * 1.03)
        eff = quantile_bootstrap(hc, ht, q, replicates=500)
        intervals.append((eff.abs_ci_low, eff.abs_ci_high))
    assert 0.90 <= _coverage(intervals, 0.03 * math.sqrt(2.0)) <= 0.99


def test_relative_lift_is_dropped_when_the_control_quantile_is_not_away_from_zero() -> None:
    rng = np.random.default_rng(13)
    control, treatment = rng.standard_t(3, 2000), rng.standard_t(3, 2000) + 0.2
    hc, ht = Histogram.from_values(control), Histogram.from_values(treatment)
    for estimator in (quantile_woodruff, quantile_bootstrap):
        assert estimator(hc, ht, 0.5).rel_lift is None  # median ~0
        eff = estimator(hc, ht, 0.95)  # ~2.35: the lift is defined
        assert eff.rel_lift == pytest.approx(eff.abs_effect / abs(eff.mean_control))
        assert eff.rel_ci_low is not None and eff.rel_ci_low < eff.rel_lift < eff.rel_ci_high


def test_degenerate_inputs_give_nan_not_errors() -> None:
    empty = Histogram.from_values(np.zeros(0))
    some = Histogram.from_values(np.arange(1.0, 101.0))
    constant = Histogram.from_values(np.full(50, 7.0))
    for estimator in (quantile_woodruff, quantile_bootstrap):
        eff = estimator(empty, some, 0.5)
        assert math.isnan(eff.abs_effect) and math.isnan(eff.p_value) and eff.n_control == 0
        eff = estimator(constant, constant, 0.5)
        assert eff.abs_effect == 0.0 and math.isnan(eff.p_value) and math.isnan(eff.abs_ci_low)
        with pytest.raises(ValueError, match="quantile level"):
            estimator(some, some, 1.0)
        with pytest.raises(ValueError, match="eps"):
            estimator(some, Histogram.from_values(np.arange(5.0), 1e-2), 0.5)


# -- event level ---------------------------------------------------------------------------


def test_design_effect_is_the_delta_method_variance_of_the_empirical_cdf() -> None:
    """At a bin edge, Var F(b) from the histogram columns equals the ratio delta method on
    the per-unit counts S_u(b), N_u (ddof 1, as xpkit.stats.ratio)."""
    rng = np.random.default_rng(14)
    units, values = _clustered(rng, 800)
    hist = EventHistogram.from_events(units, values)
    keys = bin_keys(values)
    n_u = np.bincount(units).astype(float)
    total = n_u.sum()
    for b in (hist.keys.size // 10, hist.keys.size // 2, (9 * hist.keys.size) // 10):
        s_u = np.bincount(units, weights=(keys <= hist.keys[b]).astype(float))
        f = s_u.sum() / total
        linearised = (s_u - f * n_u) / n_u.mean()
        var_f = linearised.var(ddof=1) / n_u.size
        assert design_effect(hist, f) == pytest.approx(var_f / (f * (1 - f) / total), rel=1e-9)


def test_one_event_per_unit_is_the_unit_level_interval() -> None:
    rng = np.random.default_rng(15)
    values_c, values_t = rng.lognormal(0, 1, 5000), rng.lognormal(0, 1, 5000)
    events = [EventHistogram.from_events(np.arange(v.size), v) for v in (values_c, values_t)]
    units = [Histogram.from_values(v) for v in (values_c, values_t)]
    for q in (0.5, 0.9):
        clustered = quantile_clustered(events[0], events[1], q)
        unit = quantile_woodruff(units[0], units[1], q)
        assert clustered.method == "quantile_clustered"
        assert clustered.abs_effect == unit.abs_effect
        assert clustered.extra["design_effect_control"] == pytest.approx(1.0, abs=0.002)
        assert clustered.abs_se == pytest.approx(unit.abs_se, rel=0.02)


def test_clustered_point_estimate_is_within_eps_of_numpy_over_all_events() -> None:
    rng = np.random.default_rng(16)
    arms = [_clustered(rng, 1500), _clustered(rng, 1500, 0.97)]
    hists = [EventHistogram.from_events(u, v) for u, v in arms]
    for q in (0.5, 0.9, 0.95, 0.99):
        eff = quantile_clustered(hists[0], hists[1], q)
        for (_, values), estimate in zip(arms, (eff.mean_control, eff.mean_treatment), strict=True):
            ref = float(np.quantile(values, q, method="inverted_cdf"))
            assert abs(estimate - ref) <= 1e-3 * ref * SLACK
        assert eff.n_control == 1500 and eff.extra["events_control"] == arms[0][0].size


def test_clustered_covers_where_the_iid_interval_does_not() -> None:
    """200 experiments of units with very different event counts: the clustered interval
    covers (Monte-Carlo s.e. 1.5 points); the same rank interval treating events as
    independent covers ~65% at the median (design effect ~5) and fails the bound."""
    rng = np.random.default_rng(17)
    q, n = 0.5, 1000
    # The true median of events, by quadrature (bench/quantile_coverage.py:event_truth).
    truth = -0.03 * 77.564
    clustered, naive, deffs = [], [], []
    for _ in range(200):
        hc = EventHistogram.from_events(*_clustered(rng, n))
        ht = EventHistogram.from_events(*_clustered(rng, n, 0.97))
        eff = quantile_clustered(hc, ht, q)
        clustered.append((eff.abs_ci_low, eff.abs_ci_high))
        deffs.append(eff.extra["design_effect_control"])
        iid = quantile_woodruff(hc.as_histogram(), ht.as_histogram(), q)
        naive.append((iid.abs_ci_low, iid.abs_ci_high))
    assert 0.92 <= _coverage(clustered, truth) <= 0.985
    assert _coverage(naive, truth) < 0.85
    assert 3.0 < float(np.mean(deffs)) < 7.0


def test_clustered_interval_matches_a_cluster_bootstrap_of_the_raw_rows() -> None:
    """One data set: the histogram interval's standard error is within 12% of a cluster
    (Poisson weights per unit) bootstrap's on the raw events (1000 replicates)."""
    rng = np.random.default_rng(18)
    arms = [_clustered(rng, 3000), _clustered(rng, 3000, 0.97)]
    hists = [EventHistogram.from_events(u, v) for u, v in arms]
    draws = []
    for units, values in arms:
        order = np.argsort(values, kind="stable")
        sorted_values, sorted_units = values[order], units[order]
        arm = []
        for _ in range(1000):
            cumulative = np.cumsum(rng.poisson(1.0, units.max() + 1)[sorted_units])
            rank = max(math.ceil(0.9 * cumulative[-1]), 1)
            arm.append(sorted_values[np.searchsorted(cumulative, rank)])
        draws.append(np.array(arm))
    eff = quantile_clustered(hists[0], hists[1], 0.9)
    assert eff.abs_se == pytest.approx(float(np.std(draws[1] - draws[0], ddof=1)), rel=0.12)
    assert eff.extra["se_control"] == pytest.approx(float(np.std(draws[0], ddof=1)), rel=0.12)


def test_clustered_degenerate_inputs_give_nan() -> None:
    empty = EventHistogram.from_events(np.zeros(0, int), np.zeros(0))
    one_unit = EventHistogram.from_events(np.zeros(5, int), np.arange(5.0))
    some = EventHistogram.from_events(np.arange(100) % 10, np.arange(100.0))
    for control in (empty, one_unit):
        eff = quantile_clustered(control, some, 0.5)
        assert math.isnan(eff.p_value) and math.isnan(eff.abs_se)
    assert math.isnan(quantile_clustered(empty, some, 0.5).abs_effect)
