"""Schema validation: unknown columns are named with the metric, before anything runs."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

from xpkit.config import AssignmentColumns
from xpkit.define.metric import Metric
from xpkit.errors import DataError


def check_columns(
    metrics: Sequence[type[Metric]],
    assignments: AssignmentColumns,
    schemas: Mapping[str, Sequence[str]],
) -> None:
    """Raise a DataError naming the metric (or the assignment setting) and the column."""

    def missing(table: str, wanted: Sequence[str], owner: str) -> None:
        available = schemas.get(table)
        if available is None:
            raise DataError(f"{owner}: table {table!r} is not configured or does not exist")
        lowered = {c.lower() for c in available}
        for col in wanted:
            if col.lower() not in lowered:
                close = difflib.get_close_matches(col, list(available), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise DataError(
                    f"{owner}: column {col!r} does not exist in table {table!r}{hint} "
                    f"(columns: {', '.join(available)})"
                )

    wanted = [assignments.experiment, assignments.unit, assignments.variant, assignments.timestamp]
    if assignments.exposed:
        wanted.append(assignments.exposed)
    missing(assignments.table, wanted, "assignments")
    for metric in metrics:
        cols = sorted(metric.columns_used() | {metric.source.unit, metric.source.time})
        missing(metric.source.table, cols, f"metric {metric.name!r}")


# --------------------------------------------------------------------------------------
# The statements.
