"""Schema validation: unknown columns are named with the metric, before anything runs."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

from xpkit.config import AssignmentColumns, UnitAttributes
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
                fix = ""
                if owner == "assignments" and col == assignments.exposed:
                    fix = (
                        "; name the table's exposure column with [assignments] exposed = "
                        '"...", or set exposed = false when it has none (intent-to-treat '
                        "only: no TOT, no complier effect)"
                    )
                raise DataError(
                    f"{owner}: column {col!r} does not exist in table {table!r}{hint} "
                    f"(columns: {', '.join(available)}){fix}"
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


def slice_sources(
    dimensions: Sequence[str],
    assignments: AssignmentColumns,
    attributes: UnitAttributes | None,
    schemas: Mapping[str, Sequence[str]],
    fact_tables: Sequence[str],
) -> frozenset[str]:
    """Where each slice dimension is read; the dimensions read from ``attributes``.

    A dimension must be fixed at assignment: a column of the assignment table, else of the
    unit-attribute table. A column found only in a fact table is refused: the treatment can
    change it, and slicing on it compares different kinds of units across the arms.
    """
    assigned = {c.lower() for c in schemas.get(assignments.table, ())}
    kept = {c.lower() for c in schemas.get(attributes.table, ())} if attributes else set()
    reserved = {assignments.unit, assignments.variant, assignments.experiment}
    from_attributes = set()
    for dim in dimensions:
        if dim in reserved:
            raise DataError(
                f"slice {dim!r}: the assignment table's unit, variant and experiment columns "
                f"cannot be slices; slice by an attribute of the units, such as device"
            )
        if dim.lower() in assigned:
            continue
        if dim.lower() in kept:
            from_attributes.add(dim)
            continue
        in_facts = [
            t for t in fact_tables if dim.lower() in {c.lower() for c in schemas.get(t, ())}
        ]
        if in_facts:
            raise DataError(
                f"slice {dim!r} is a column of the fact table {in_facts[0]!r}, not an attribute "
                f"fixed at assignment: the treatment can change it, so slicing by it would "
                f"compare different units in each arm. Slice by a column of the assignment "
                f"table {assignments.table!r} or of [unit_attributes] (as of assignment)"
            )
        where = [assignments.table] + ([attributes.table] if attributes else [])
        columns = sorted(schemas.get(assignments.table, ())) + (
            sorted(schemas.get(attributes.table, ())) if attributes else []
        )
        close = difflib.get_close_matches(dim, columns, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(
            f"slice {dim!r}: no such column in {' or '.join(repr(t) for t in where)}{hint}"
            + ("" if attributes else "; attributes kept elsewhere go in [unit_attributes]")
        )
    return frozenset(from_attributes)
