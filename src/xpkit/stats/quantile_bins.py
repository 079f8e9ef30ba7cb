"""Compressed distributions for quantile metrics: log-spaced bins with a relative-error bound.

A quantile metric never brings per-unit or per-event rows to Python. The SQL maps every
value to an integer bin key (a closed-form expression, :func:`bin_key_sql`) and returns,
per cell, a count per key; cells add up key by key. This module defines the keys, the
value that stands for each key, and the two histogram types the estimators in
:mod:`xpkit.stats.quantiles` take.

Bins (DDSketch-style; Masson, Rim & Lee 2019, "DDSketch: a fast and fully-mergeable
quantile sketch with relative-error guarantees", VLDB). With ``gamma = (1 + eps) / (1 - eps)``
a value ``v > 0`` has index ``i = ceil(ln(v) / ln(gamma))``, i.e. bin ``(gamma^(i-1), gamma^i]``,
whose representative ``2 gamma^i / (gamma + 1)`` is within relative error ``eps`` of every
value in the bin. Negative values mirror that (``-v`` binned, representative negated) and
0 is its own exact bin. The key is one signed integer that sorts like the values::

    key = +(i + OFFSET)  for v > 0,    0 for v = 0,    -(i(-v) + OFFSET)  for v < 0

with ``OFFSET = 2**30``, which keeps ``i + OFFSET >= 1`` for every positive double (the
smallest, 5e-324, has ``i ~ -744.4 / ln(gamma)``) for any ``eps >= 1e-6``; keys fit BIGINT.

Bound. Binning is monotone (``v <= w`` implies ``key(v) <= key(w)``), so the k-th smallest
representative is the representative of the k-th smallest value, and the histogram's
q-quantile (the inverted CDF: the smallest value whose cumulative count reaches
``ceil(q n)``, ``numpy.quantile(..., method="inverted_cdf")``) is within relative error
``eps`` of the raw values' sample q-quantile. Zeros are exact. Integers below
``1 / ln(gamma)`` (~500 at the default ``eps``) never share a bin, so rounding an estimate
of integer data in that range recovers the raw quantile exactly.

Floating point at bin boundaries. Python (numpy's ``log``) and an engine's ``LN`` may differ
by one ulp, so a value within a few ulps of a boundary ``gamma^i`` can get index ``i`` on
one side and ``i + 1`` on the other. Such a value is itself a boundary point: either
bin's representative is within ``eps * (1 + 1e-12)`` of it, so the bound holds whichever
side wins (``tests/stats/test_quantiles.py`` runs the SQL in DuckDB on random values, where
the keys agree, and on the boundaries themselves, where they differ by at most one).
Non-finite values have no bin: the SQL must leave out NULL, NaN and infinite values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xpkit.layout import (  # noqa: F401  (the bins' constants are the SQL/stats contract)
    DEFAULT_EPS,
    MAX_EPS,
    MIN_EPS,
    OFFSET,
    bin_key_sql,
    check_eps,
    gamma_of,
)


def bin_keys(values: np.ndarray | Sequence[float], eps: float = DEFAULT_EPS) -> np.ndarray:
    """The int64 bin key of each (finite) value; see the module docstring."""
    v = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite (NULL, NaN and infinities have no bin)")
    log_gamma = math.log(gamma_of(eps))
    a = np.abs(v)
    keys = np.zeros(v.shape, dtype=np.int64)
    nonzero = a > 0
    index = np.ceil(np.log(a[nonzero]) / log_gamma).astype(np.int64) + OFFSET
    keys[nonzero] = np.where(v[nonzero] > 0, index, -index)
    return keys


def bin_values(keys: np.ndarray | Sequence[int], eps: float = DEFAULT_EPS) -> np.ndarray:
    """The representative value of each key: ``+/- 2 gamma^i / (gamma + 1)``, 0 for key 0."""
    k = np.asarray(keys, dtype=np.int64)
    gamma = gamma_of(eps)
    index = (np.abs(k) - OFFSET).astype(float)
    magnitude = 2.0 * np.power(gamma, index) / (gamma + 1.0)
    return np.where(k == 0, 0.0, np.sign(k) * magnitude)


def _aggregate(keys: np.ndarray, *weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sorted unique keys and each weight summed per key (float64: exact up to 2^53)."""
    keys = np.asarray(keys, dtype=np.int64)
    unique, inverse = np.unique(keys, return_inverse=True)
    sums = tuple(np.bincount(inverse, weights=w, minlength=unique.size) for w in weights)
    return (unique, *sums)


@dataclass(frozen=True)
class Histogram:
    """Units per bin of one arm (or cell): the compressed form of a unit-level metric.

    ``keys`` are sorted and unique, ``counts`` the number of units whose value has that key.
    """

    keys: np.ndarray
    counts: np.ndarray
    eps: float = DEFAULT_EPS

    @classmethod
    def from_keys(
        cls, keys: np.ndarray | Sequence[int], counts: np.ndarray | Sequence[float], eps: float
    ) -> Histogram:
        """From (key, count) rows in any order, repeated keys (several cells) summed."""
        unique, summed = _aggregate(np.asarray(keys), np.asarray(counts, dtype=float))
        return cls(keys=unique, counts=summed, eps=check_eps(eps))

    @classmethod
    def from_values(
        cls, values: np.ndarray | Sequence[float], eps: float = DEFAULT_EPS
    ) -> Histogram:
        """What the SQL returns for these per-unit values (tests, simulations)."""
        keys = bin_keys(values, eps)
        return cls.from_keys(keys, np.ones(keys.size), eps)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def merge(self, other: Histogram) -> Histogram:
        """The histogram of the union of two disjoint groups (cells add key by key)."""
        if other.eps != self.eps:
            raise ValueError(f"cannot merge histograms of eps {self.eps} and {other.eps}")
        keys = np.concatenate([self.keys, other.keys])
        return Histogram.from_keys(keys, np.concatenate([self.counts, other.counts]), self.eps)

    def quantile(self, q: float) -> float:
        """The inverted-CDF q-quantile (NaN when empty), within ``eps`` of the raw one."""
        return value_at_rank(self.keys, np.cumsum(self.counts), q * self.n, self.eps)


def value_at_rank(keys: np.ndarray, cumulative: np.ndarray, target: float, eps: float) -> float:
    """Representative of the first bin whose cumulative count reaches ``ceil(target)``
    (at least 1, at most the total); NaN for an empty histogram."""
    if cumulative.size == 0 or cumulative[-1] <= 0:
        return float("nan")
    rank = min(max(1.0, math.ceil(target)), float(cumulative[-1]))
    i = int(np.searchsorted(cumulative, rank, side="left"))
    return float(bin_values(keys[i : i + 1], eps)[0])


@dataclass(frozen=True)
class EventHistogram:
    """Per bin, over the events of one arm (or cell), what the clustered variance needs.

    With ``c_ub`` the number of events of unit ``u`` in bin ``b``, ``S_u(b)`` the unit's
    events with key ``<= b`` and ``N_u`` its event count:

    - ``events[b] = sum_u c_ub``
    - ``pairs[b]  = sum_u (S_u(b)^2 - S_u(b-)^2) = sum_u c_ub (2 S_u(b-) + c_ub)``,
      ``S_u(b-)`` the unit's events in bins below ``b``: cumulated over bins it gives
      ``sum_u S_u(b)^2``
    - ``cross[b]  = sum_u N_u c_ub``: cumulated, ``sum_u S_u(b) N_u``

    and ``units``, the number of units with at least one event. All four add across cells.
    Over all bins ``pairs`` and ``cross`` both sum to ``sum_u N_u^2``.
    """

    keys: np.ndarray
    events: np.ndarray
    pairs: np.ndarray
    cross: np.ndarray
    units: int
    eps: float = DEFAULT_EPS

    @classmethod
    def from_keys(
        cls,
        keys: np.ndarray | Sequence[int],
        events: np.ndarray | Sequence[float],
        pairs: np.ndarray | Sequence[float],
        cross: np.ndarray | Sequence[float],
        units: int,
        eps: float,
    ) -> EventHistogram:
        """From (key, events, pairs, cross) rows in any order, repeated keys summed."""
        arrays = (np.asarray(a, dtype=float) for a in (events, pairs, cross))
        unique, e, p, c = _aggregate(np.asarray(keys), *arrays)
        return cls(keys=unique, events=e, pairs=p, cross=c, units=int(units), eps=check_eps(eps))

    @classmethod
    def from_events(
        cls,
        unit_ids: np.ndarray | Sequence[int],
        values: np.ndarray | Sequence[float],
        eps: float = DEFAULT_EPS,
    ) -> EventHistogram:
        """What the SQL returns for these event rows: the reference implementation."""
        units = np.asarray(unit_ids)
        keys = bin_keys(values, eps)
        if keys.size == 0:
            empty = np.zeros(0)
            return cls(np.zeros(0, np.int64), empty, empty, empty, 0, check_eps(eps))
        order = np.lexsort((keys, units))
        u, k = units[order], keys[order]
        # One row per (unit, key) with its count c_ub, in key order within each unit.
        new = np.r_[True, (u[1:] != u[:-1]) | (k[1:] != k[:-1])]
        starts = np.flatnonzero(new)
        c = np.diff(np.r_[starts, u.size]).astype(float)
        uu, kk = u[starts], k[starts]
        first = np.r_[True, uu[1:] != uu[:-1]]
        unit_index = np.cumsum(first) - 1
        n_u = np.bincount(unit_index, weights=c)
        within = np.cumsum(c)
        before_unit = (within - c)[first][unit_index]  # events of earlier units
        s_before = within - c - before_unit  # S_u(b-)
        return cls.from_keys(
            kk, c, c * (2.0 * s_before + c), c * n_u[unit_index], int(first.sum()), eps
        )

    def merge(self, other: EventHistogram) -> EventHistogram:
        if other.eps != self.eps:
            raise ValueError(f"cannot merge histograms of eps {self.eps} and {other.eps}")
        return EventHistogram.from_keys(
            np.concatenate([self.keys, other.keys]),
            np.concatenate([self.events, other.events]),
            np.concatenate([self.pairs, other.pairs]),
            np.concatenate([self.cross, other.cross]),
            self.units + other.units,
            self.eps,
        )

    def as_histogram(self) -> Histogram:
        """The events' histogram alone (what an analysis ignoring the units would see)."""
        return Histogram(keys=self.keys, counts=self.events, eps=self.eps)

    def quantile(self, q: float) -> float:
        return self.as_histogram().quantile(q)
