"""Sufficient statistics: the value that travels from the SQL engine to the stats layer.

For one group of units (an experiment x population x variant) and a vector of per-unit
columns (a metric's value, a ratio's denominator, CUPED covariates, the exposure flag...)
we keep the count ``n``, the column means and the centred co-moment matrix

    C[i, j] = sum_u (x_ui - mean_i) * (x_uj - mean_j)

Every first-order method (Welch, proportions, delta method, regression adjustment,
sequential tests, power) is a function of these. Centred co-moments are used instead of raw
sums of squares because raw sums lose all precision when a column's mean is large against
its spread (1e9 +/- 1 in float64 leaves no digits for the variance). The SQL side accumulates
sums around a shift close to the mean, which keeps every term small, and
:meth:`Moments.from_shifted_sums` turns those into this form without cancellation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Count, means and centred co-moments of per-unit columns within one group."""

    n: int
    columns: tuple[str, ...]
    mean: np.ndarray  # shape (k,)
    comoment: np.ndarray  # shape (k, k), symmetric

    def __post_init__(self) -> None:
        k = len(self.columns)
        mean = np.asarray(self.mean, dtype=float).reshape(k)
        comoment = np.asarray(self.comoment, dtype=float).reshape(k, k)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "comoment", comoment)
        object.__setattr__(self, "columns", tuple(self.columns))
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_rows(
        cls, data: np.ndarray | Sequence[Sequence[float]], columns: Sequence[str]
    ) -> Moments:
        """Moments of raw per-unit rows (shape (n, k)); used by tests and small inputs."""
        x = np.asarray(data, dtype=float)
        if x.ndim == 1:
            x = x.reshape(-1, 1)
        n, k = x.shape
        if k != len(columns):
            raise ValueError(f"{k} data columns but {len(columns)} names")
        if n == 0:
            return cls.empty(columns)
        mean = x.mean(axis=0)
        centred = x - mean
        return cls(n=n, columns=tuple(columns), mean=mean, comoment=centred.T @ centred)

    @classmethod
    def from_shifted_sums(
        cls,
        n: int,
        columns: Sequence[str],
        shift: np.ndarray | Sequence[float],
        sums: np.ndarray | Sequence[float],
        products: np.ndarray | Sequence[Sequence[float]],
    ) -> Moments:
        """Build from sums accumulated around a shift ``c`` (one constant per column).

        ``sums[i] = sum_u (x_ui - c_i)`` and ``products[i, j] = sum_u (x_ui - c_i)(x_uj - c_j)``.
        With ``d = sums / n`` the centred co-moment is ``products - n * outer(d, d)``: both
        terms are small when ``c`` is near the mean, so nothing cancels catastrophically.
        """
        k = len(columns)
        shift = np.asarray(shift, dtype=float).reshape(k)
        if n == 0:
            return cls.empty(columns)
        sums = np.asarray(sums, dtype=float).reshape(k)
        products = np.asarray(products, dtype=float).reshape(k, k)
        d = sums / n
        comoment = products - n * np.outer(d, d)
        comoment = (comoment + comoment.T) / 2
        return cls(n=int(n), columns=tuple(columns), mean=shift + d, comoment=comoment)

    @classmethod
    def empty(cls, columns: Sequence[str]) -> Moments:
        k = len(columns)
        return cls(n=0, columns=tuple(columns), mean=np.zeros(k), comoment=np.zeros((k, k)))

    # -- access -----------------------------------------------------------------------
    def index(self, column: str) -> int:
        try:
            return self.columns.index(column)
        except ValueError:
            raise KeyError(f"column {column!r} not in moments columns {self.columns}") from None

    def mean_of(self, column: str) -> float:
        return float(self.mean[self.index(column)])

    def cov(self, ddof: int = 1) -> np.ndarray:
        """Sample covariance matrix of the columns (``ddof=1`` by default)."""
        if self.n - ddof <= 0:
            return np.full_like(self.comoment, np.nan)
        return self.comoment / (self.n - ddof)

    def var_of(self, column: str, ddof: int = 1) -> float:
        i = self.index(column)
        return float(self.cov(ddof)[i, i])

    def covar_of(self, a: str, b: str, ddof: int = 1) -> float:
        return float(self.cov(ddof)[self.index(a), self.index(b)])

    @property
    def sums(self) -> np.ndarray:
        return self.n * self.mean

    def select(self, columns: Sequence[str]) -> Moments:
        """The moments of a subset (or re-ordering) of the columns."""
        columns = tuple(columns)
        if columns == self.columns:
            return self  # immutable, so the same columns need no copy
        idx = [self.index(c) for c in columns]
        return Moments(
            n=self.n,
            columns=columns,
            mean=self.mean[idx],
            # Two takes pick the same entries as comoment[np.ix_(idx, idx)], several
            # times faster for these tiny matrices (select runs once per estimate).
            comoment=self.comoment.take(idx, axis=0).take(idx, axis=1),
        )

    def merge(self, other: Moments) -> Moments:
        """Moments of the union of two disjoint groups (Chan et al. pairwise update)."""
        if other.columns != self.columns:
            raise ValueError(f"cannot merge moments over {self.columns} and {other.columns}")
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        comoment = self.comoment + other.comoment + np.outer(delta, delta) * (self.n * other.n / n)
        return Moments(n=n, columns=self.columns, mean=self.merged_mean(other), comoment=comoment)

    def merged_mean(self, other: Moments) -> np.ndarray:
        """The column means of the union of two disjoint groups, as :meth:`merge` has them,
        without the co-moments (for callers that need the means only)."""
        if other.columns != self.columns:
            raise ValueError(f"cannot merge moments over {self.columns} and {other.columns}")
        if other.n == 0:
            return self.mean
        if self.n == 0:
            return other.mean
        return self.mean + (other.mean - self.mean) * (other.n / (self.n + other.n))
