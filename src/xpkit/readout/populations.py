"""Cells summed into populations: Moments per (population, variant, metric), and per day.

- a population's moments: ITT sums a variant's analysed cells, TOT its exposed analysed
  cells; each metric's slice of those sums becomes a :class:`~xpkit.moments.Moments`;
- the daily history: as of each analysis date D, the analysed cells whose window ended by D
  (a cell's window ends ``window_end`` days after its assignment date).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from xpkit.layout import MomentsLayout
from xpkit.moments import Moments
from xpkit.readout.cells import Cells


@dataclass(frozen=True)
class MomentsKey:
    population: str
    variant: str
    metric: str


@dataclass(frozen=True)
class MomentsTable:
    """Moments per (population, variant, metric) for one experiment."""

    by_key: dict[MomentsKey, Moments]

    def get(self, population: str, variant: str, metric: str) -> Moments | None:
        return self.by_key.get(MomentsKey(population, variant, metric))

    def variants(self, population: str) -> list[str]:
        return sorted({k.variant for k in self.by_key if k.population == population})


def read_moments(cells: Cells, layout: MomentsLayout) -> MomentsTable:
    """Moments per population, variant and metric over every analysed cell."""
    return _moments(cells, layout, cells.analysed, layout.populations)


def read_history(
    cells: Cells, layout: MomentsLayout, populations: Sequence[str] | None = None
) -> dict[date, MomentsTable]:
    """A MomentsTable per analysis date, oldest first: the units whose window ended by then.

    An analysis date is a day on which some analysed unit's window ended; as of it, each
    unit counts with its whole window, so the moments are running sums over those days.
    ``populations`` narrows the layout's populations (a history used only for ITT).
    """
    ends = [d + timedelta(days=layout.window_end) for d in cells.assignment_date]
    days = sorted({e for e, a in zip(ends, cells.analysed.tolist(), strict=True) if a})
    ends_array = np.array(ends, dtype="datetime64[D]")
    return {
        day: _moments(
            cells,
            layout,
            cells.analysed & (ends_array <= np.datetime64(day, "D")),
            layout.populations if populations is None else populations,
        )
        for day in days
    }


def _moments(
    cells: Cells, layout: MomentsLayout, include: np.ndarray, populations: Sequence[str]
) -> MomentsTable:
    out: dict[MomentsKey, Moments] = {}
    variants = sorted(
        {
            v
            for v, keep in zip(cells.variant, include.tolist(), strict=True)
            if keep and v is not None
        }
    )
    for population in populations:
        for variant in variants:
            rows = include & np.array([v == variant for v in cells.variant], dtype=bool)
            if population == "tot":
                rows &= cells.exposed
            n = int(cells.n[rows].sum())
            if n == 0 and population == "tot":
                continue
            moments = Moments.from_shifted_sums(
                n,
                cells.columns,
                cells.shift,
                cells.sums[rows].sum(axis=0),
                cells.products[rows].sum(axis=0),
            )
            for metric, ml in layout.metrics.items():
                out[MomentsKey(population, variant, metric)] = moments.select(ml.columns)
    return MomentsTable(out)
