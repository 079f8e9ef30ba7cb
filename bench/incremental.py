"""Cost of a scheduled daily run: full recompute against ``xpkit run --incremental``.

    python bench/incremental.py [--members 10000000 --days 28 --full-every 1 --enrol-days 28]

Generates (once, reused from ``--data-dir``) an experiment that enrols its members evenly
over ``--enrol-days`` days (default: every day of the ``--days``), with a 7-day window and
the default 14-day pre-period, its assignment log in the order units were assigned, and a
daily engagement table with a row for each member on about half of the days from 14 days
before the first assignment to the last day: ~10M members x 42 days x 0.5 = 210M rows, one
Parquet file per day, each in member order. Five metrics on it (watch seconds, sessions,
plays, streamers, errors), all with CUPED covariates; no true effect.

Then, for each day d = 1..days, as a scheduled job would, it runs ``xpkit run --as-of d
--run-date d`` twice, each a fresh process (start-up included in every figure):

- full: the whole recompute, into its own --out folder;
- incremental: ``--incremental --state``, starting from the state of day d-1's run.

Full and incremental runs alternate, so a noisy neighbour penalises both alike. Printed per
day: wall seconds and CPU seconds of each (the children's user+sys), the fact rows each
read (``rows_read`` of engagement_daily in the scorecard) and the ratios; then day
``--days``' figures against the targets (at most 1/20 of the rows, 0.2x the time) and the
cost summed over all the days. ``--full-every K`` runs the full recompute only every K-th
day (and on the last), to save time on a small machine; the incremental runs every day.
Every day, the incremental scorecard's numbers (counts, means, effects, standard errors,
intervals, p-values) are checked against the full one's where both ran (to 1e-9
relative); a day whose full run has no effects (INVALID) is not counted as the same.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb

START = date(2024, 1, 1)  # the first assignment day
PRE_DAYS = 14
# The scorecard's numbers compared between the full and the incremental run.
COMPARED = (
    "n_control",
    "n_variant",
    "mean_control",
    "mean_variant",
    "abs_effect",
    "abs_se",
    "abs_ci_low",
    "abs_ci_high",
    "p_value",
    "always_valid_p_value",
)

CONFIG = """
[tables]
experiment_assignments = "experiment_assignments.parquet"
engagement_daily = "engagement_daily/*.parquet"

[[experiment]]
id = "daily_enrolment"
control = "control"
weights = { control = 0.5, treatment = 0.5 }
window = [0, 6]
planned_mde = 0.02
metrics = ["watch_seconds", "sessions", "plays", "streamers"]
primary = ["watch_seconds"]
guardrails = [{ metric = "errors", margin = 0.05 }]
"""


def generate(folder: Path, members: int, days: int, enrol_days: int) -> None:
    marker = folder / "done.json"
    wanted = {"members": members, "days": days, "enrol_days": enrol_days, "format": 2}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "engagement_daily").mkdir(parents=True)
    con = duckdb.connect()
    started = time.perf_counter()
    # Each random draw hashes an integer of its own (member, day and field): DuckDB's
    # hash(m, 'v') and hash(m, 'x') share their low bits, which made the exposed units'
    # split 4:3 by variant (an SRM: every run INVALID, its effects withheld).
    stride = PRE_DAYS + days
    # The assignment log in the order units were assigned, as a logging pipeline appends it.
    con.execute(
        f"""
        COPY (
          SELECT
            m AS member_id,
            'daily_enrolment' AS experiment_id,
            CASE WHEN hash(m * 4) % 2 = 0 THEN 'control' ELSE 'treatment' END AS variant,
            TIMESTAMP '{START}' + INTERVAL (m % {enrol_days}) DAY
              + INTERVAL (hash(m * 4 + 1) % 86400) SECOND AS assignment_timestamp,
            hash(m * 4 + 2) % 10 < 7 AS exposed_flag
          FROM range({members}) AS t(m)
          ORDER BY assignment_timestamp
        ) TO '{folder / "experiment_assignments.parquet"}' (FORMAT parquet)
        """
    )
    for offset in range(-PRE_DAYS, days):
        day = START + timedelta(days=offset)
        key = f"(m * {stride} + {offset + PRE_DAYS}) * 8"
        con.execute(
            f"""
            COPY (
              SELECT
                m AS member_id,
                DATE '{day}' AS date,
                (hash({key} + 1) % 720000) / 100.0 AS watch_seconds,
                CAST(1 + hash({key} + 2) % 4 AS INTEGER) AS sessions,
                CAST(hash({key} + 3) % 6 AS INTEGER) AS plays,
                CAST(CASE WHEN hash({key} + 4) % 20 = 0 THEN 1 ELSE 0 END AS INTEGER)
                  AS errors
              FROM range({members}) AS t(m)
              WHERE hash({key}) % 2 = 0
            ) TO '{folder / "engagement_daily" / f"{day}.parquet"}' (FORMAT parquet)
            """
        )
    (folder / "experiments.toml").write_text(CONFIG)
    marker.write_text(json.dumps(wanted))
    print(f"generated {members:,} members in {time.perf_counter() - started:.0f} s", flush=True)


def xpkit_command() -> list[str]:
    script = Path(sys.executable).with_name("xpkit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "xpkit.cli"]


def run(folder: Path, day: date, out: Path, state: Path | None, threads: int | None) -> dict:
    """One ``xpkit run`` in a fresh process: wall and CPU seconds, rows read, its numbers."""
    args = [
        *xpkit_command(),
        "run",
        "--config",
        str(folder / "experiments.toml"),
        "--out",
        str(out),
        "--as-of",
        day.isoformat(),
        "--run-date",
        day.isoformat(),
        "--json",
    ]
    if threads:
        args += ["--threads", str(threads)]
    if state is not None:
        args += ["--incremental", "--state", str(state)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 3):
        raise SystemExit(f"xpkit run failed ({done.returncode}):\n{done.stderr}")
    (entry,) = json.loads(done.stdout)["runs"]
    rows = entry["scorecard"]
    read = rows[0]["rows_read"].get("engagement_daily", 0) if rows else 0
    numbers = {
        (r["population"], r["metric"], r["variant"]): tuple(r[k] for k in COMPARED) for r in rows
    }
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "rows": read, "numbers": numbers}


def same(full: dict, incremental: dict) -> str:
    """Whether the two scorecards' numbers agree (1e-9 relative): "yes", "NO", or "-" when
    the full run has no effects to compare (no window complete yet, or INVALID: effects
    withheld)."""
    if full.keys() != incremental.keys():
        return "NO"
    effect = COMPARED.index("abs_effect")
    if not any(values[effect] is not None for values in full.values()):
        return "-"
    return "yes" if _agree(full, incremental) else "NO"


def _agree(full: dict, incremental: dict) -> bool:
    for key, values in full.items():
        for a, b in zip(values, incremental[key], strict=True):
            if a is None or b is None:
                if a is not b:
                    return False
            elif not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9):
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--full-every", type=int, default=1)
    parser.add_argument("--enrol-days", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/xpkit-bench-incremental"))
    args = parser.parse_args()

    enrol = args.enrol_days or args.days
    suffix = "" if enrol == args.days else f"-e{enrol}"
    folder = args.data_dir / f"m{args.members}-d{args.days}{suffix}"
    generate(folder, args.members, args.days, enrol)
    work = folder / "runs"
    shutil.rmtree(work, ignore_errors=True)
    state = work / "state"
    print(
        f"{args.members:,} members enrolled over {enrol} days, {args.days} days run, "
        f"{os.cpu_count()} cores; "
        f"each figure one fresh `xpkit run` process (start-up included)"
    )
    print(
        f"{'day':>4} {'full s':>8} {'cpu':>7} {'rows':>12} | {'incr s':>7} {'cpu':>7} "
        f"{'rows':>10} | {'rows x':>7} {'time x':>7}  same"
    )
    totals = {"full": 0.0, "incremental": 0.0, "full_rows": 0, "incremental_rows": 0}
    last: tuple[dict, dict] | None = None
    agreed: list[str] = []
    for n in range(1, args.days + 1):
        day = START + timedelta(days=n - 1)
        full = None
        if n % args.full_every == 0 or n == args.days or args.full_every == 1:
            full = run(folder, day, work / "full", None, args.threads)
        incremental = run(folder, day, work / "incremental", state, args.threads)
        totals["incremental"] += incremental["wall"]
        totals["incremental_rows"] += incremental["rows"]
        if full is None:
            print(
                f"{n:>4} {'':>8} {'':>7} {'':>12} | {incremental['wall']:7.2f} "
                f"{incremental['cpu']:7.2f} {incremental['rows']:>10,} |",
                flush=True,
            )
            continue
        totals["full"] += full["wall"]
        totals["full_rows"] += full["rows"]
        rows_ratio = incremental["rows"] / full["rows"] if full["rows"] else float("nan")
        time_ratio = incremental["wall"] / full["wall"]
        agreed.append(same(full["numbers"], incremental["numbers"]))
        print(
            f"{n:>4} {full['wall']:8.2f} {full['cpu']:7.2f} {full['rows']:>12,} | "
            f"{incremental['wall']:7.2f} {incremental['cpu']:7.2f} {incremental['rows']:>10,} | "
            f"{rows_ratio:7.3f} {time_ratio:7.3f}  {agreed[-1]}",
            flush=True,
        )
        last = (full, incremental)
    if last is not None:
        full, incremental = last
        print(
            f"\nday {args.days}: incremental reads {incremental['rows']:,} of the full run's "
            f"{full['rows']:,} fact rows (1/{full['rows'] / max(incremental['rows'], 1):.0f}; "
            f"target at most 1/20) in {incremental['wall']:.1f} s against {full['wall']:.1f} s "
            f"({incremental['wall'] / full['wall']:.2f}x; target at most 0.2x)"
        )
    compared = [a for a in agreed if a != "-"]
    print(
        f"the same numbers on {compared.count('yes')} of the {len(compared)} days with effects "
        f"to compare" + ("" if "NO" not in compared else ": NOT ON EVERY DAY")
    )
    if args.full_every == 1:
        print(
            f"over {args.days} days: full {totals['full']:.0f} s and {totals['full_rows']:,} rows "
            f"({totals['full'] / args.days:.1f} s a day), incremental {totals['incremental']:.0f} s "
            f"and {totals['incremental_rows']:,} rows ({totals['incremental'] / args.days:.1f} s a day)"
        )


if __name__ == "__main__":
    main()
