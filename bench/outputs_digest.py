"""Digest of every table a run writes on the sample data, to prove a change moved no number.

Generates the sample data (fixed seed), runs every sample experiment with its daily
history (on one thread unless ``--threads`` says otherwise), and prints one SHA-256 per
output column, over its values in a canonical row order (sorted by the key columns);
``computed_at`` and ``run_id`` are left out (the only columns that differ between
identical runs). Files are read through the glob of committed ``*.parquet`` files (one
per kind, experiment and run date: ``scorecards/<exp>/<day>/data.parquet``; the run
manifests are JSON and staged files never end in ``.parquet``). Run it
before and after a change and diff the two listings: a changed number shows as a changed
line, a new column as an added one::

    python bench/outputs_digest.py --work /tmp/before > before.txt
    # ... change the code ...
    python bench/outputs_digest.py --work /tmp/after > after.txt
    diff before.txt after.txt && echo identical
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

VOLATILE = {"computed_at", "run_id"}


KEYS = ("experiment_id", "run_date", "analysis_date", "population", "metric", "variant", "name")


def column_digests(table: pa.Table) -> dict[str, str]:
    """SHA-256 of each column's values, rows ordered by the key columns present."""
    rows = table.to_pylist()
    keys = [k for k in KEYS if k in table.column_names]
    rows.sort(key=lambda r: tuple(repr(r[k]) for k in keys))
    return {
        name: hashlib.sha256(repr([r[name] for r in rows]).encode()).hexdigest()
        for name in table.column_names
        if name not in VOLATILE
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder")
    parser.add_argument("--members", type=int, default=40_000)
    parser.add_argument(
        "--threads", type=int, default=1, help="DuckDB threads (identical runs agree at any)"
    )
    args = parser.parse_args()
    data = args.work / "data"
    if not (data / "experiments.toml").exists():
        subprocess.run(
            ["xpkit", "sample-data", "--members", str(args.members), "--out", str(data)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    out = args.work / "out"
    subprocess.run(
        [
            "xpkit",
            "run",
            "--config",
            str(data / "experiments.toml"),
            "--out",
            str(out),
            "--history",
            "--run-date",
            "2026-01-31",
            "--threads",
            str(args.threads),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        check=False,  # exit 3 for the sample's deliberately invalid experiments
    )
    files = sorted(out.rglob("*.parquet"))
    if not files:
        print("no outputs written", file=sys.stderr)
        return 1
    for file in files:
        table = pq.read_table(file, partitioning=None)
        for name, digest in sorted(column_digests(table).items()):
            print(f"{digest[:16]}  {table.num_rows:5d} rows  {file.relative_to(out)}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
