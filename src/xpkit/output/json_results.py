"""Results as JSON for scripts: ``xpkit run --json``, ``xpkit show --json``, ``xpkit power
--json``.

A stable shape, versioned by its ``format`` (a change that could break a reader gets a
new number; new keys may be added within one)::

    {"format": "xpkit.runs/1", "command": "run" | "show", "valid": bool,
     "runs": [{"experiment_id", "run_date", "run_id", "as_of", "valid", "invalid_reason",
               "decisions": [{"variant", "decision", "reasons"}],
               "scorecard": [row, ...], "checks": [row, ...], "history": [row, ...] | null,
               "files": [path, ...],
               "incremental": {"from_state_as_of", "notes", "restated_days",
                               "kept_assignment_dates"} | null}]}

    {"format": "xpkit.power/1", "experiment_id", "metric", "plan": {...}}

Rows have every column of their table (docs/outputs.md) under its name. Values: NaN and
infinities are ``null``; dates and timestamps are ISO 8601 strings (timestamps in UTC,
with their offset); ``rows_read`` is an object of table name to rows.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from xpkit.output.validate import run_is_valid

if TYPE_CHECKING:
    from xpkit.decide.planning import PowerPlan

RUNS_FORMAT = "xpkit.runs/1"
POWER_FORMAT = "xpkit.power/1"
_ALL = "(all)"


def plain(value: Any) -> Any:
    """A value as JSON can hold it: NaN and infinities null, dates ISO, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def rows(table: pa.Table | None) -> list[dict[str, Any]] | None:
    """A table's rows, each column under its name; a map column becomes an object."""
    if table is None:
        return None
    maps = [f.name for f in table.schema if pa.types.is_map(f.type)]
    out = []
    for row in table.to_pylist():
        for name in maps:
            if row[name] is not None:
                row[name] = dict(row[name])
        out.append({k: plain(v) for k, v in row.items()})
    return out


def _decisions(scorecard: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each treatment variant's decision, from the experiment's own (not a slice's) rows."""
    seen: dict[str, dict[str, Any]] = {}
    for row in scorecard:
        if row.get("slice_dimension", _ALL) not in (_ALL, None) or row.get("decision") is None:
            continue
        seen.setdefault(
            row["variant"],
            {
                "variant": row["variant"],
                "decision": row["decision"],
                "reasons": row.get("decision_reasons") or [],
            },
        )
    return list(seen.values())


def run_entry(
    *,
    experiment_id: str,
    run_date: date,
    run_id: str | None,
    scorecard: pa.Table,
    checks: pa.Table,
    history: pa.Table | None,
    files: Sequence[Path | str] = (),
    incremental: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One published run: its identity, validity, decisions, every table's rows and, for
    an incremental run, how it was computed (its manifest's ``incremental``)."""
    card = rows(scorecard) or []
    valid = run_is_valid(scorecard, checks)
    own = [r for r in card if r.get("slice_dimension", _ALL) in (_ALL, None)]
    reasons = {r["invalid_reason"] for r in own if r.get("invalid_reason")}
    return {
        "experiment_id": experiment_id,
        "run_date": plain(run_date),
        "run_id": run_id,
        "as_of": card[0]["as_of"] if card else None,
        "valid": valid,
        "invalid_reason": "; ".join(sorted(reasons)) or None,
        "decisions": _decisions(card),
        "scorecard": card,
        "checks": rows(checks),
        "history": rows(history),
        "files": [str(f) for f in files],
        "incremental": plain(incremental) if incremental is not None else None,
    }


def runs_document(command: str, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": RUNS_FORMAT,
        "command": command,
        "valid": all(e["valid"] for e in entries),
        "runs": list(entries),
    }


def power_document(experiment_id: str, plan: PowerPlan) -> dict[str, Any]:
    fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
    return {
        "format": POWER_FORMAT,
        "experiment_id": experiment_id,
        "metric": plan.metric,
        "plan": plain(fields),
    }


def dumps(document: Mapping[str, Any]) -> str:
    """The document as JSON text (strict: no NaN can slip through)."""
    return json.dumps(plain(document), indent=2, allow_nan=False, ensure_ascii=False)
