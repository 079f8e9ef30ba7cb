"""Published runs on disk: where a run's tables go, writing them atomically, reading them back.

Layout under the output folder (one folder per experiment and run date, so a re-run on
the same day replaces its files and never duplicates them)::

    OUT/experiment_id=homepage_ranking_v2/run_date=2024-04-05/scorecard.parquet
    OUT/experiment_id=homepage_ranking_v2/run_date=2024-04-05/checks.parquet

Files are written to a temporary name in the same folder and renamed into place, so a
crash never leaves a half-written scorecard.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from xpkit.errors import BadInputError
from xpkit.files import atomic_path
from xpkit.output.schemas import SCORECARD_FILE


def output_dir(out: Path, experiment_id: str, run_date: date) -> Path:
    safe = experiment_id.replace("/", "%2F")
    return out / f"experiment_id={safe}" / f"run_date={run_date.isoformat()}"


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write Parquet to a temp file in the same folder, then rename it into place."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_tables(
    out: Path, experiment_id: str, run_date: date, tables: dict[str, pa.Table]
) -> list[Path]:
    """Write each table (by file name) into the run's folder; the paths written, in order."""
    folder = output_dir(out, experiment_id, run_date)
    paths = []
    for name, table in tables.items():
        write_atomic(table, folder / name)
        paths.append(folder / name)
    return paths


def read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise BadInputError(f"{path}: not a readable Parquet file ({err})") from None


def find_scorecards(path: Path) -> list[Path]:
    """A scorecard file, or every scorecard under a folder (newest run per experiment)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise BadInputError(f"{path}: no such file or folder")
    latest: dict[Path, Path] = {}
    for f in sorted(path.rglob(SCORECARD_FILE)):
        latest[f.parent.parent] = f  # sorted: the last run_date wins
    if not latest:
        raise BadInputError(f"{path}: no {SCORECARD_FILE} found under this folder")
    return sorted(latest.values())


def recorded_fractions(out: Path, experiment_id: str, before: date) -> list[float]:
    """Information fractions of this experiment's runs filed before ``before``, in order.

    The group-sequential rule needs the earlier looks; the recorded scorecards are the
    run history, so a scheduled daily job applies the right boundary at every look.
    """
    folder = output_dir(out, experiment_id, before).parent
    fractions = []
    for path in sorted(folder.glob("run_date=*/" + SCORECARD_FILE)):
        day = date.fromisoformat(path.parent.name.split("=", 1)[1])
        if day >= before:
            continue
        values = pq.read_table(path, columns=["information_fraction"]).column(0).to_pylist()
        known = [v for v in values if v is not None]
        if known:
            fractions.append(float(known[0]))
    return fractions
