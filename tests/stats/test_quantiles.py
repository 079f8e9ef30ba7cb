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
