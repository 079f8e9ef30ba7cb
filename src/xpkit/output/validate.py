"""Is a file one of xpkit's tables? Checked before it is rendered, with a message naming it.

A file handed to ``xpkit show`` (or read back by any other reader) may be another of a
run's tables, a foreign Parquet file, or a scorecard whose columns were rewritten with
other types; each is refused here, naming the file and what was expected, instead of
failing inside the renderer.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from xpkit.errors import BadInputError
from xpkit.output.schemas import (
    ADDED_SCORECARD_COLUMNS,
    CHECKS_SCHEMA,
    HISTORY_SCHEMA,
    SCORECARD_SCHEMA,
)

# Each kind and the dataset folder `xpkit run` writes it to.
_KINDS: dict[str, tuple[str, pa.Schema]] = {
    "scorecard": ("scorecards/ table", SCORECARD_SCHEMA),
    "checks": ("checks/ table", CHECKS_SCHEMA),
    "history": ("history/ table", HISTORY_SCHEMA),
}


def _family(dtype: pa.DataType) -> str:
    """Types that read the same way: any string, any integer, any float, ..."""
    checks = (
        ("text", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        ("boolean", pa.types.is_boolean),
        ("integer", pa.types.is_integer),
        ("number", lambda t: pa.types.is_floating(t) or pa.types.is_decimal(t)),
        ("date", pa.types.is_date),
        ("timestamp", pa.types.is_timestamp),
        ("list", lambda t: pa.types.is_list(t) or pa.types.is_large_list(t)),
        ("map", pa.types.is_map),
        ("null", pa.types.is_null),
    )
    for name, test in checks:
        if test(dtype):
            return name
    return str(dtype)


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    got, want = _family(actual), _family(expected)
    # An all-NULL column, and integers where floats are expected, read fine.
    return got == want or got == "null" or (want == "number" and got == "integer")


def _kind_of(table: pa.Table) -> str | None:
    names = set(table.column_names)
    for kind, (_, schema) in _KINDS.items():
        if set(schema.names) <= names:
            return kind
    return None


def validate_table(table: pa.Table, path: Path, kind: str = "scorecard") -> pa.Table:
    """``table`` (read from ``path``) as an xpkit ``kind`` table, or a BadInputError."""
    file_name, schema = _KINDS[kind]
    if kind == "scorecard":
        table = _with_added_columns(table)
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        other = _kind_of(table)
        if other is not None and other != kind:
            raise BadInputError(
                f"{path}: this is a run's {other} table ({_KINDS[other][0]}), not a {kind}; "
                f"give the {file_name} beside it, or the run's folder"
            )
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise BadInputError(
            f"{path}: not an xpkit {kind} ({file_name} written by `xpkit run`): "
            f"missing column(s) {shown}"
        )
    wrong = [
        f"{field.name} is {table.schema.field(field.name).type}, expected {field.type}"
        for field in schema
        if not _compatible(table.schema.field(field.name).type, field.type)
    ]
    if wrong:
        raise BadInputError(
            f"{path}: not a readable xpkit {kind}: column {'; column '.join(wrong)}; "
            f"rewrite it with `xpkit run` rather than editing the file"
        )
    return table


def _with_added_columns(table: pa.Table) -> pa.Table:
    """A scorecard of an earlier version, with the columns added since and what they mean
    for it; a table that is not a scorecard at all is left for the checks to name."""
    if "metric" not in table.column_names or "population" not in table.column_names:
        return table
    for name, value in ADDED_SCORECARD_COLUMNS.items():
        if name not in table.column_names:
            field = SCORECARD_SCHEMA.field(name)
            column = pa.array([value] * table.num_rows, field.type)
            table = table.append_column(field, column)
    return table.select(
        [n for n in SCORECARD_SCHEMA.names if n in table.column_names]
        + [n for n in table.column_names if n not in SCORECARD_SCHEMA.names]
    )


def validate_scorecard(table: pa.Table, path: Path) -> pa.Table:
    """``table`` if it is a scorecard (every column, each of its type), else BadInputError."""
    return validate_table(table, path, "scorecard")


def run_is_valid(scorecard: pa.Table, checks: pa.Table | None) -> bool:
    """A published run is valid when it has results, all marked valid, and no gate failed."""
    if scorecard.num_rows == 0 or not all(scorecard.column("valid").to_pylist()):
        return False
    if checks is None:
        return True
    return not any(c["gate"] and not c["passed"] for c in checks.to_pylist())
