"""The engine's rows, one per cell, read through the compiler's layout; assignment counts.

The moments statement returns one wide row per cell (variant, multi_variant, exposed,
assignment date): the number of units and assignment rows, rows read, a shift per per-unit
column, the sums around the shifts and the sums of products. Sums around one shared shift
add up, so every figure a run needs is a sum of cells: the assignment health counts sum
every cell by variant bucket (here); the populations and the daily history sum the
analysed ones (:mod:`xpkit.readout.populations`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import SupportsFloat

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xpkit.errors import DataError
from xpkit.layout import (
    BIN_COLUMN,
    CROSS_COLUMN,
    EVENTS_COLUMN,
    PAIRS_COLUMN,
    PART_COLUMN,
    MomentsLayout,
)


def _number(value: SupportsFloat | None) -> float:
    return 0.0 if value is None else float(value)


def _column(result: pa.Table, name: str) -> np.ndarray:
    """One numeric column as float64, NULL (an empty sum) as 0, non-finite values rejected."""
    column = result.column(name)
    if pa.types.is_floating(column.type):
        if column.null_count:
            column = column.fill_null(0.0)
        values = column.to_numpy().astype(float, copy=False)
    else:
        # DECIMAL and integer sums: Python's float() rounds each one correctly.
        values = np.array([_number(v) for v in column.to_pylist()], dtype=float)
    bad = values[~np.isfinite(values)]
    if bad.size:
        raise DataError(f"a metric produced a non-finite sum ({bad[0]}); check its expression")
    return values


@dataclass(frozen=True)
class Cells:
    """The moments statement's result, read once into arrays (one row per cell)."""

    variant: list[str | None]
    multi_variant: np.ndarray  # bool
    exposed: np.ndarray  # bool
    assignment_date: list[date]
    window_complete: np.ndarray  # bool
    analysed: np.ndarray  # bool
    n: np.ndarray  # int64 units
    assignment_rows: np.ndarray  # int64
    columns: tuple[str, ...]  # every per-unit column, in the order of the arrays below
    shift: np.ndarray  # (k,), the same in every row
    sums: np.ndarray  # (rows, k), 0 where a cell has no analysed units
    products: np.ndarray  # (rows, k, k); NaN for pairs no metric needs
    row_counts: dict[str, np.ndarray]  # output column -> rows read per cell

    def rows_read(self, column: str) -> int:
        return int(self.row_counts[column].sum())

    @staticmethod
    def concat(parts: Sequence[Cells]) -> Cells:
        """The cells of several disjoint groups of units as one (a slice's complement is
        its dimension's other slices); the shift is shared, so the sums still add up."""
        first = parts[0]
        return Cells(
            variant=[v for p in parts for v in p.variant],
            multi_variant=np.concatenate([p.multi_variant for p in parts]),
            exposed=np.concatenate([p.exposed for p in parts]),
            assignment_date=[d for p in parts for d in p.assignment_date],
            window_complete=np.concatenate([p.window_complete for p in parts]),
            analysed=np.concatenate([p.analysed for p in parts]),
            n=np.concatenate([p.n for p in parts]),
            assignment_rows=np.concatenate([p.assignment_rows for p in parts]),
            columns=first.columns,
            shift=first.shift,
            sums=np.concatenate([p.sums for p in parts]),
            products=np.concatenate([p.products for p in parts]),
            row_counts={
                c: np.concatenate([p.row_counts[c] for p in parts]) for c in first.row_counts
            },
        )


@dataclass(frozen=True)
class SliceKey:
    """One slice: a dimension (``device``, or ``device*country`` for a two-way breakdown)
    and its value (``tv``, or ``tv*BR``)."""

    dimension: str
    value: str


def _slice_rows(result: pa.Table, layout: MomentsLayout, spec: tuple[str, ...]) -> pa.Array:
    """Rows of one breakdown's grouping set: its slice columns set, every other one NULL."""
    mask = pa.array([True] * result.num_rows, pa.bool_())
    for dim, column in layout.slice_columns.items():
        present = pc.is_valid(result.column(column))
        mask = pc.and_(mask, present if dim in spec else pc.invert(present))
    return mask


def _cell_rows(result: pa.Table, layout: MomentsLayout) -> pa.Table:
    """The statement's cell rows (without the quantile metrics' histogram rows)."""
    if layout.quantiles:
        return result.filter(pc.is_null(result.column(PART_COLUMN)))
    return result


def read_cells(result: pa.Table, layout: MomentsLayout) -> Cells:
    """The overall cells (the statement's rows outside every slice breakdown)."""
    result = _cell_rows(result, layout)
    if layout.slice_columns:
        result = result.filter(_slice_rows(result, layout, ()))
    return _read_cells(result, layout)


@dataclass(frozen=True)
class HistogramRows:
    """One quantile metric's histogram rows, per arm, exposure and bin key
    (layout.QuantileLayout; analysed units only, so they carry no assignment date).

    ``key`` is -1 where a row has no key (event level: the row holding the units).
    """

    variant: pa.ChunkedArray
    multi_variant: np.ndarray
    exposed: np.ndarray
    analysed: np.ndarray
    has_key: np.ndarray
    key: np.ndarray  # int64
    n: np.ndarray  # units (unit level; event level: on the key-less rows)
    events: np.ndarray
    pairs: np.ndarray
    cross: np.ndarray

    def arm(self, variant: str, *, exposed_only: bool = False) -> HistogramArm:
        """A variant's analysed rows summed over cells: keys and their sums (unsorted,
        repeated keys for the estimator to add), and the units of an event histogram."""
        mine = _flags(pc.equal(self.variant, variant))
        rows = self.analysed & mine & ~self.multi_variant
        if exposed_only:
            rows &= self.exposed
        keyed = rows & self.has_key
        return HistogramArm(
            keys=self.key[keyed],
            counts=self.n[keyed].astype(float),
            events=self.events[keyed],
            pairs=self.pairs[keyed],
            cross=self.cross[keyed],
            units=int(self.n[rows & ~self.has_key].sum()),
        )


def _flags(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean column as a NumPy mask, NULL as False."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _integers(values: pa.ChunkedArray | pa.Array, missing: int) -> np.ndarray:
    filled = pc.fill_null(pc.cast(values, pa.int64()), missing)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.int64)


@dataclass(frozen=True)
class HistogramArm:
    """One variant's histogram rows over its cells (keys repeat across cells)."""

    keys: np.ndarray
    counts: np.ndarray
    events: np.ndarray
    pairs: np.ndarray
    cross: np.ndarray
    units: int


def read_histograms(result: pa.Table, layout: MomentsLayout) -> dict[str, HistogramRows]:
    """Each quantile metric's histogram rows (columns read whole, never row by row)."""
    out: dict[str, HistogramRows] = {}
    for name, q in layout.quantiles.items():
        rows = result.filter(pc.equal(result.column(PART_COLUMN), q.part))
        keys = rows.column(BIN_COLUMN)
        out[name] = HistogramRows(
            variant=rows.column("variant"),
            multi_variant=_flags(rows.column("multi_variant")),
            exposed=_integers(rows.column("exposed"), 0) != 0,
            analysed=_flags(rows.column("analysed")),
            has_key=_flags(pc.is_valid(keys)),
            key=_integers(keys, -1),
            n=_integers(rows.column("n"), 0),
            events=_column(rows, EVENTS_COLUMN),
            pairs=_column(rows, PAIRS_COLUMN),
            cross=_column(rows, CROSS_COLUMN),
        )
    return out


def read_slice_cells(result: pa.Table, layout: MomentsLayout) -> dict[SliceKey, Cells]:
    """The cells of every slice, by breakdown then value (values in sorted order).

    Each slice's cells have the overall cells' shape, so everything that reads those
    (assignment counts, populations) reads a slice the same way; the slices of one
    dimension add up to the overall cells.
    """
    out: dict[SliceKey, Cells] = {}
    result = _cell_rows(result, layout)
    for spec in layout.slices:
        rows = result.filter(_slice_rows(result, layout, spec))
        columns = [layout.slice_columns[d] for d in spec]
        labels = [
            "*".join(str(v) for v in values)
            for values in zip(*(rows.column(c).to_pylist() for c in columns), strict=True)
        ]
        dimension = "*".join(spec)
        positions: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            positions.setdefault(label, []).append(i)
        for label in sorted(positions):
            out[SliceKey(dimension, label)] = _read_cells(rows.take(positions[label]), layout)
    return out


def _read_cells(result: pa.Table, layout: MomentsLayout) -> Cells:
    """Read every column once; later steps only add rows of these arrays.

    Each cell's moments are formed over all the per-unit columns at once and sliced per
    metric afterwards: per metric it would re-read the columns metrics share.
    """
    variants = [None if v is None else str(v) for v in result.column("variant").to_pylist()]
    multi = np.array(result.column("multi_variant").to_pylist(), dtype=bool)
    if any(v is None and not m for v, m in zip(variants, multi, strict=True)):
        raise DataError("the assignment table has rows with a NULL variant")
    analysed = np.array(result.column("analysed").to_pylist(), dtype=bool)
    columns = tuple(dict.fromkeys(c for ml in layout.metrics.values() for c in ml.columns))
    k = len(columns)
    rows = result.num_rows
    sums = np.zeros((rows, k))
    shift = np.zeros(k)
    for i, c in enumerate(columns):
        shift[i] = _column(result, layout.shift_name(c))[0] if rows else 0.0
        sums[:, i] = _column(result, layout.sum_name(c))
    # Only pairs of columns that share a metric have a product; the others stay NaN and
    # are never selected.
    products = np.full((rows, k, k), np.nan)
    present = set(result.column_names)
    position = {c: i for i, c in enumerate(columns)}
    pairs = {
        frozenset((a, b)): (a, b)
        for ml in layout.metrics.values()
        for i, a in enumerate(ml.columns)
        for b in ml.columns[i:]
    }
    for a, b in pairs.values():
        name = layout.product_name(a, b)
        values = _column(result, name if name in present else layout.product_name(b, a))
        products[:, position[a], position[b]] = values
        products[:, position[b], position[a]] = values
    return Cells(
        variant=variants,
        multi_variant=multi,
        exposed=np.array([bool(e) for e in result.column("exposed").to_pylist()], dtype=bool),
        assignment_date=result.column("assignment_date").to_pylist(),
        window_complete=np.array(result.column("window_complete").to_pylist(), dtype=bool),
        analysed=analysed,
        n=np.array(result.column("n").to_pylist(), dtype=np.int64),
        assignment_rows=np.array(result.column("assignment_rows").to_pylist(), dtype=np.int64),
        columns=columns,
        shift=shift,
        sums=sums,
        products=products,
        row_counts={
            c: np.array([int(v or 0) for v in result.column(c).to_pylist()], dtype=np.int64)
            for c in layout.row_counts
        },
    )


@dataclass(frozen=True)
class AssignmentSummary:
    """Counts for one variant bucket (``variant=None``: units seen in several variants)."""

    variant: str | None
    n_units: int
    n_rows: int
    n_duplicate_rows: int
    n_exposed: int
    n_complete: int
    first_assignment_date: date | None
    last_assignment_date: date | None


def daily_counts(cells: Cells, *, exposed: bool = False) -> list[dict[str, int]]:
    """Units per variant by assignment date, oldest first (units in several variants apart);
    ``exposed=True`` counts the exposed units only. The looks of the sequential SRM test."""
    by_day: dict[date, dict[str, int]] = {}
    for r, variant in enumerate(cells.variant):
        if variant is None or cells.multi_variant[r] or (exposed and not cells.exposed[r]):
            continue
        day = by_day.setdefault(cells.assignment_date[r], {})
        day[variant] = day.get(variant, 0) + int(cells.n[r])
    return [by_day[d] for d in sorted(by_day)]


def assignment_counts(cells: Cells) -> list[AssignmentSummary]:
    """Per variant bucket (units in several variants apart): the SRM and health counts."""
    buckets: dict[tuple[str | None, bool], list[int]] = {}
    for r, key in enumerate(zip(cells.variant, cells.multi_variant.tolist(), strict=True)):
        buckets.setdefault(key, []).append(r)
    out = []
    for (variant, multi), rows in sorted(buckets.items(), key=lambda kv: (kv[0][1], str(kv[0][0]))):
        idx = np.array(rows)
        n_units = int(cells.n[idx].sum())
        n_rows = int(cells.assignment_rows[idx].sum())
        dates = [cells.assignment_date[r] for r in rows]
        out.append(
            AssignmentSummary(
                variant=None if multi else str(variant),
                n_units=n_units,
                n_rows=n_rows,
                n_duplicate_rows=n_rows - n_units,
                n_exposed=int(cells.n[idx][cells.exposed[idx]].sum()),
                n_complete=int(cells.n[idx][cells.window_complete[idx]].sum()),
                first_assignment_date=min(dates),
                last_assignment_date=max(dates),
            )
        )
    return out


def _round_half_away(value: float) -> float:
    """SQL's ROUND(x): halves away from zero (Python's round() goes to even)."""
    magnitude = abs(value)
    whole = float(math.floor(magnitude))
    if magnitude - whole >= 0.5:
        whole += 1.0
    return math.copysign(whole, value)


def _floats(result: pa.Table, name: str) -> np.ndarray:
    """A sum column as float64 with NaN where it is NULL (a cell without values)."""
    column = result.column(name)
    if not pa.types.is_floating(column.type):
        column = column.cast(pa.float64())
    return column.to_numpy(zero_copy_only=False).astype(float, copy=True)


def combine_cells(kept: pa.Table, new: pa.Table, layout: MomentsLayout) -> pa.Table:
    """An earlier run's cells (``kept``: assignment dates whose cells cannot have changed)
    and this statement's (``new``: the other dates), as one statement over all of them
    would return them: every sum around the shift it would take.

    That shift is each column's mean over the units that have values, rounded to a whole
    number as the statement rounds it; it comes from the cells' own sums (sum + n x shift
    is the cell's sum of values). Moving a cell's sums from shift c to c' is exact algebra:
    S' = S - n d and P'ab = Pab - db Sa - da Sb + n da db with d = c' - c; for integer-valued
    columns every term is an integer below 2**53, so the result is bit for bit the one the
    statement would give, and to rounding for fractional ones.
    """
    if kept.num_rows == 0:
        return new
    both = pa.concat_tables([kept.select(new.column_names).cast(new.schema), new])
    n = np.array(both.column("n").to_pylist(), dtype=float)
    columns = list(layout.columns)
    old_shift = {c: _floats(both, layout.shift_name(c)) for c in columns}
    old_sum = {c: _floats(both, layout.sum_name(c)) for c in columns}
    shift: dict[str, float] = {}
    for c in columns:
        has = ~np.isnan(old_sum[c])
        units = float(n[has].sum())
        total = float((old_sum[c][has] + n[has] * old_shift[c][has]).sum())
        shift[c] = _round_half_away(total / units) if units else 0.0
    delta = {c: shift[c] - old_shift[c] for c in columns}
    present = set(both.column_names)
    out = both
    for a, b in layout.products:
        name = layout.product_name(a, b)
        if name not in present:
            continue
        old = _floats(both, name)
        moved = old - delta[b] * old_sum[a] - delta[a] * old_sum[b] + n * delta[a] * delta[b]
        out = _replace(out, name, moved)
    for c in columns:
        out = _replace(out, layout.sum_name(c), old_sum[c] - n * delta[c])
        out = _replace(out, layout.shift_name(c), np.full(both.num_rows, shift[c]))
    return out


def _replace(table: pa.Table, name: str, values: np.ndarray) -> pa.Table:
    """Column ``name`` replaced by ``values`` (NaN: NULL), in its own type."""
    i = table.column_names.index(name)
    array = pa.array(values, type=pa.float64(), from_pandas=True)
    return table.set_column(i, table.field(i).with_type(pa.float64()), array)
