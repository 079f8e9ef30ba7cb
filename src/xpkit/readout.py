"""Read the engine's result into Moments, using the compiler's layout.

The moments statement returns one wide row per (population, variant): ``n``, a shift per
per-unit column, the sums around the shifts and the sums of products. Here each metric's
slice of that row becomes a :class:`~xpkit.moments.Moments` over its own columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa

from xpkit.compile import MomentsLayout
from xpkit.errors import DataError
from xpkit.moments import Moments


@dataclass(frozen=True)
class MomentsKey:
    population: str
    variant: str
    metric: str


@dataclass(frozen=True)
class MomentsTable:
    """Moments per (population, variant, metric) for one experiment."""

    cells: dict[MomentsKey, Moments]

    def get(self, population: str, variant: str, metric: str) -> Moments | None:
        return self.cells.get(MomentsKey(population, variant, metric))

    def variants(self, population: str) -> list[str]:
        return sorted({k.variant for k in self.cells if k.population == population})

    def to_arrow(self) -> pa.Table:
        """Long form: one row per cell with its columns, means and co-moments (as lists)."""
        keys = sorted(self.cells, key=lambda k: (k.population, k.metric, k.variant))
        return pa.table(
            {
                "population": [k.population for k in keys],
                "variant": [k.variant for k in keys],
                "metric": [k.metric for k in keys],
                "n": [self.cells[k].n for k in keys],
                "columns": [list(self.cells[k].columns) for k in keys],
                "mean": [self.cells[k].mean.tolist() for k in keys],
                "comoment": [self.cells[k].comoment.ravel().tolist() for k in keys],
            }
        )


def _number(value: object) -> float:
    if value is None:
        return 0.0
    out = float(value)  # DECIMAL and integer sums arrive as Python numbers
    if not math.isfinite(out):
        raise DataError(f"a metric produced a non-finite sum ({out}); check its expression")
    return out


def read_history(result: pa.Table, layout: MomentsLayout) -> dict[date, MomentsTable]:
    """The history statement's result: a MomentsTable per analysis date, oldest first."""
    by_date: dict[date, list[dict]] = {}
    for row in result.to_pylist():
        by_date.setdefault(row["analysis_date"], []).append(row)
    return {d: _read_rows(by_date[d], layout) for d in sorted(by_date)}


def read_moments(result: pa.Table, layout: MomentsLayout) -> MomentsTable:
    return _read_rows(result.to_pylist(), layout)


def _read_rows(rows: list[dict], layout: MomentsLayout) -> MomentsTable:
    cells: dict[MomentsKey, Moments] = {}
    for row in rows:
        variant = row["variant"]
        if variant is None:
            raise DataError("the assignment table has rows with a NULL variant")
        n = int(row["n"])
        for metric, ml in layout.metrics.items():
            cols = ml.columns
            k = len(cols)
            shift = [_number(row[layout.shift_name(c)]) for c in cols]
            sums = [_number(row[layout.sum_name(c)]) for c in cols]
            products = np.zeros((k, k))
            for i, a in enumerate(cols):
                for j in range(i, k):
                    b = cols[j]
                    name = (
                        layout.product_name(a, b)
                        if layout.product_name(a, b) in row
                        else layout.product_name(b, a)
                    )
                    products[i, j] = products[j, i] = _number(row[name])
            cells[MomentsKey(row["population"], str(variant), metric)] = Moments.from_shifted_sums(
                n, cols, shift, sums, products
            )
    return MomentsTable(cells)
