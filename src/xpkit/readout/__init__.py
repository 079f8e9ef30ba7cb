"""readout: engine rows -> cells -> moments per population and day, and assignment counts.

Reads the moments statement's result through the :class:`~xpkit.layout.MomentsLayout`;
knows nothing of SQL text or statistics.
"""

from xpkit.readout.cells import (
    AssignmentSummary,
    Cells,
    HistogramRows,
    SliceKey,
    assignment_counts,
    combine_cells,
    daily_counts,
    read_cells,
    read_histograms,
    read_slice_cells,
)
from xpkit.readout.populations import MomentsKey, MomentsTable, read_history, read_moments

__all__ = [
    "AssignmentSummary",
    "Cells",
    "HistogramRows",
    "MomentsKey",
    "MomentsTable",
    "SliceKey",
    "assignment_counts",
    "combine_cells",
    "daily_counts",
    "read_cells",
    "read_histograms",
    "read_history",
    "read_moments",
    "read_slice_cells",
]
