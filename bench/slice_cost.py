"""What slices and quantile metrics cost: ``xpkit run`` of one experiment with and without.

``--compare slices`` (default): with and without two slice dimensions.
``--compare quantile``: with and without one more metric, a unit-level quantile
(``watch_seconds_p90``, bench/metrics) on the same source (budget: at most 1.15).

The sample data's assignment table gets two extra attribute columns of 20 values each
(``region`` and ``cohort``, from a hash of the member id), written once beside the
generated tables. Each timed run is a fresh ``xpkit run`` process (start-up, imports,
every statement, the statistics and the Parquet output included), with the same config
and metrics as ``bench/perf.py``; plain and sliced runs alternate so a noisy neighbour
penalises both alike. Prints the medians and their ratio (the budget: at most 1.3).

Usage::

    python bench/slice_cost.py --members 1000000 --runs 5
    python bench/slice_cost.py --members 1000000 --slice region*cohort   # a two-way breakdown
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from perf import EXPERIMENT_ID, ensure_data, write_config  # noqa: E402


def with_attributes(folder: Path) -> Path:
    """A copy of the assignments with two 20-value attribute columns (made once)."""
    import duckdb

    target = folder / "assignments-sliced.parquet"
    if not target.exists():
        source = folder / "experiment_assignments.parquet"
        duckdb.connect().execute(
            f"""COPY (
                  SELECT *, 'region_' || (hash(member_id) % 20)::VARCHAR AS region,
                         'cohort_' || (hash(member_id * 7 + 1) % 20)::VARCHAR AS cohort
                  FROM '{source}'
                ) TO '{target}' (FORMAT PARQUET)"""
        )
    return target


def config_for(folder: Path) -> Path:
    config = write_config(folder)
    text = config.read_text().replace(
        str(folder / "experiment_assignments.parquet"), str(with_attributes(folder))
    )
    path = folder / "bench-sliced.toml"
    path.write_text(text)
    return path


def quantile_config(folder: Path) -> Path:
    path = folder / "bench-quantile.toml"
    text = config_for(folder).read_text()
    path.write_text(
        text.replace('"watch_seconds_capped",', '"watch_seconds_capped", "watch_seconds_p90",')
    )
    return path


def timed_run(config: Path, slices: str | None, threads: int | None) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable, "-m", "xpkit.cli", "run", "--config", str(config), "--out", out,
            "--experiment", EXPERIMENT_ID, "--quiet", "--run-date", "2024-04-05",
        ]  # fmt: skip
        if slices:
            command += ["--slice", slices]
        if threads:
            command += ["--threads", str(threads)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode not in (0, 3):
            raise SystemExit(f"xpkit run failed ({done.returncode}):\n{done.stderr}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--slice", default="region,cohort", help="what --slice is given")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compare", choices=("slices", "quantile"), default="slices")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/xpkit-bench"))
    args = parser.parse_args()
    folder = ensure_data(args.data_dir, args.members)
    config = config_for(folder)
    if args.compare == "slices":
        label, budget = f"--slice {args.slice}", 1.30
        runs = (lambda: timed_run(config, None, args.threads),
                lambda: timed_run(config, args.slice, args.threads))  # fmt: skip
    else:
        extra = quantile_config(folder)
        label, budget = "+ watch_seconds_p90", 1.15
        runs = (lambda: timed_run(config, None, args.threads),
                lambda: timed_run(extra, None, args.threads))  # fmt: skip
    runs[1]()  # warm the file cache once
    plain: list[tuple[float, float]] = []
    other: list[tuple[float, float]] = []
    for _ in range(args.runs):
        plain.append(runs[0]())
        other.append(runs[1]())
    print(f"{args.members:,} members, {args.runs} runs each, per `xpkit run` process "
          "(start-up included): median wall seconds, median CPU seconds")  # fmt: skip
    ratios = []
    for i, what in enumerate(("wall", "CPU")):
        p = statistics.median(x[i] for x in plain)
        s = statistics.median(x[i] for x in other)
        ratios.append(s / p)
        print(f"  {what:<4} baseline {p:6.2f}   {label:<22} {s:6.2f}   ratio {s / p:.2f}")
    print(f"  budget {budget:.2f} (the CPU ratio is the steadier one on a shared machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
