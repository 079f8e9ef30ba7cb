"""Performance benchmark: a full ``xpkit run`` against one hand-written DuckDB query.

For each size N the script generates N members with the sample-data generator (once; the
files are reused), then times on the same files:

(a) ``xpkit run`` of one experiment's full scorecard through the library API: config and
    metrics loading, then every statement a run executes (the data bounds, then the one
    statement whose cells give the SRM and health counts, the moments and, with the default
    always-valid stopping rule, the daily history), the statistics and the Parquet output. Ten metrics on one source, among them a proportion, three ratios and a capped
    metric; ITT and TOT; CUPED covariates.
(b) one hand-written DuckDB statement, :data:`REFERENCE_SQL`, that returns the same
    per-variant sufficient statistics: n, sums and sums of products of the same per-unit
    columns, for ITT and TOT.

Every timed run is a fresh Python process, so its peak RSS is its own; imports happen
before the clock starts. Runs of (a) and (b) alternate so that a noisy neighbour penalises
both alike. Before timing, an untimed check runs xpkit's moments statement and (b) and
requires them to agree on n, means and co-moments (to 1e-9 relative); each timed (a) run's
scorecard (n and means per variant) is checked against (b) as well. The script prints
medians, the ratio (a)/(b), CPU seconds, peak RSS and rows scanned per second.
``--explain`` profiles the statements instead (DuckDB's EXPLAIN ANALYZE, heaviest
operators first).

Usage::

    python bench/perf.py --members 1000000 10000000 --runs 3
    python bench/perf.py --members 10000000 --runs 1 --memory-limit 2GB
    python bench/perf.py --members 1000000 --explain

Data goes to ``--data-dir`` (default /tmp/xpkit-bench): about 0.2 GB per million members.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
METRICS_DIR = BENCH_DIR / "metrics"
EXPERIMENT_ID = "homepage_ranking_v2"
WINDOW = (0, 6)
PRE_WINDOW = (-14, -1)
SEED = 7
MEAN_TOLERANCE = 1e-9
COMOMENT_TOLERANCE = 1e-9

# --------------------------------------------------------------------------------------
# The experiment under test.
# --------------------------------------------------------------------------------------
CONFIG_TOML = """\
# Written by bench/perf.py: one experiment, ten metrics on one source.
metrics_dir = {metrics_dir}
shipped_metrics = false  # bench/metrics declares every metric it runs, the shipped ones too

[tables]
experiment_assignments = {assignments}
engagement_daily = {daily}

[[experiment]]
id = "{experiment}"
control = "control"
weights = {{ control = 0.5, treatment = 0.5 }}
window = [{window[0]}, {window[1]}]
pre_window = [{pre_window[0]}, {pre_window[1]}]
populations = ["itt", "tot"]
metrics = [
  "watch_seconds", "sessions", "plays", "streamers", "active_days",
  "watch_seconds_per_session", "plays_per_session", "watch_seconds_capped",
]
primary = ["watch_seconds"]
guardrails = [
  {{ metric = "errors", margin = 0.05 }},
  {{ metric = "errors_per_play", margin = 0.05 }},
]
"""

# Per metric, the reference query's columns in the order of xpkit's moments layout:
# value, denominator (ratios), covariates (pre-period value, pre-period denominator,
# has-history flag); the exposure flag is appended to every metric.
METRIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "watch_seconds": ("watch_seconds", "watch_seconds_pre", "has_history"),
    "sessions": ("sessions", "sessions_pre", "has_history"),
    "plays": ("plays", "plays_pre", "has_history"),
    "streamers": ("streamed", "streamed_pre", "has_history"),
    "active_days": ("active_days", "active_days_pre", "has_history"),
    "watch_seconds_per_session": (
        "watch_seconds",
        "sessions",
        "watch_seconds_pre",
        "sessions_pre",
        "has_history",
    ),
    "plays_per_session": ("plays", "sessions", "plays_pre", "sessions_pre", "has_history"),
    "watch_seconds_capped": ("watch_seconds_capped", "watch_seconds_capped_pre", "has_history"),
    "errors": ("errors", "errors_pre", "has_history"),
    "errors_per_play": ("errors", "plays"),
}
RATIO_METRICS = {"watch_seconds_per_session", "plays_per_session", "errors_per_play"}
WATCH_CAP = 86_400  # bench/metrics/engagement.py: WatchSecondsCapped.cap

# --------------------------------------------------------------------------------------
# (b) The reference: one hand-written statement.
# --------------------------------------------------------------------------------------
POST = f"day BETWEEN {WINDOW[0]} AND {WINDOW[1]}"
PRE = f"day BETWEEN {PRE_WINDOW[0]} AND {PRE_WINDOW[1]}"
STREAMED = "CASE WHEN watch_seconds > 0 THEN 1 ELSE 0 END"
# Per-member aggregates over the joined daily rows (pre- and post-period in one pass).
MEMBER_AGGREGATES: dict[str, str] = {
    "watch_seconds": f"SUM(watch_seconds) FILTER (WHERE {POST})",
    "sessions": f"SUM(sessions) FILTER (WHERE {POST})",
    "plays": f"SUM(plays) FILTER (WHERE {POST})",
    "errors": f"SUM(errors) FILTER (WHERE {POST})",
    "streamed": f"MAX({STREAMED}) FILTER (WHERE {POST})",
    "active_days": f"COUNT(*) FILTER (WHERE {POST})",
    "watch_seconds_pre": f"SUM(watch_seconds) FILTER (WHERE {PRE})",
    "sessions_pre": f"SUM(sessions) FILTER (WHERE {PRE})",
    "plays_pre": f"SUM(plays) FILTER (WHERE {PRE})",
    "errors_pre": f"SUM(errors) FILTER (WHERE {PRE})",
    "streamed_pre": f"MAX({STREAMED}) FILTER (WHERE {PRE})",
    "active_days_pre": f"COUNT(*) FILTER (WHERE {PRE})",
}
# Per-member values: a member without rows counts as 0. DOUBLE keeps the products fast;
# integer sums stay exact below 2**53. The reference sums raw values, with no shift: enough
# for these data (means and spreads of one order), which the agreement check confirms, and
# the cheapest form; xpkit sums around a shift so that large-mean metrics stay precise too.
MEMBER_VALUES: dict[str, str] = {
    **{name: f"CAST(COALESCE(p.{name}, 0) AS DOUBLE)" for name in MEMBER_AGGREGATES},
    "has_history": "CASE WHEN p.active_days_pre > 0 THEN 1.0 ELSE 0.0 END",
    "watch_seconds_capped": f"LEAST(COALESCE(p.watch_seconds, 0), {WATCH_CAP})",
    "watch_seconds_capped_pre": f"LEAST(COALESCE(p.watch_seconds_pre, 0), {WATCH_CAP})",
}


def _pairs() -> list[tuple[str, str]]:
    """Every product some metric needs (the exposure flag's come from the grouping)."""
    pairs: list[tuple[str, str]] = []
    for columns in METRIC_COLUMNS.values():
        for i, a in enumerate(columns):
            for b in columns[i:]:
                if (a, b) not in pairs and (b, a) not in pairs:
                    pairs.append((a, b))
    return pairs


PAIRS = _pairs()
SUMS = [f"s__{c}" for c in MEMBER_VALUES] + [f"p__{a}__{b}" for a, b in PAIRS]

REFERENCE_SQL = """\
WITH units AS (
  -- Members assigned to one variant only whose analysis window is complete.
  SELECT
    member_id,
    MIN(variant) AS variant,
    MIN(CAST(assignment_timestamp AS DATE)) AS assignment_date,
    MAX(CASE WHEN exposed_flag THEN 1 ELSE 0 END) AS exposed
  FROM read_parquet({assignments})
  WHERE experiment_id = '{experiment}'
  GROUP BY member_id
  HAVING MIN(variant) = MAX(variant)
    AND MIN(CAST(assignment_timestamp AS DATE)) <= DATE '{last_complete}'
), daily AS (
  -- The one scan of the fact table: joined on the member id alone; each row's day is
  -- relative to the member's assignment date, so the windows are integer ranges.
  SELECT
    s.member_id,
    s.date - u.assignment_date AS day,
    s.watch_seconds,
    s.sessions,
    s.plays,
    s.errors
  FROM units AS u
  JOIN read_parquet({daily}) AS s
    ON s.member_id = u.member_id
  WHERE s.date BETWEEN DATE '{scan_start}' AND DATE '{scan_end}'
), per_member AS (
  SELECT
    member_id,
    COUNT(*) AS rows_read,
    {member_aggregates}
  FROM daily
  GROUP BY member_id
), member_values AS (
  SELECT
    u.variant,
    u.exposed,
    COALESCE(p.rows_read, 0) AS rows_read,
    {member_values}
  FROM units AS u
  LEFT JOIN per_member AS p
    ON p.member_id = u.member_id
), by_exposure AS (
  -- Exposed and unexposed members apart: ITT adds the two, TOT keeps the exposed, and
  -- every product with the 0/1 exposure flag is a sum over the exposed group.
  SELECT
    variant,
    exposed,
    COUNT(*) AS n,
    SUM(rows_read) AS rows_read,
    {group_sums}
  FROM member_values
  GROUP BY variant, exposed
)
SELECT
  'itt' AS population,
  variant,
  SUM(n) AS n,
  SUM(rows_read) AS rows_read,
  SUM(n) FILTER (WHERE exposed = 1) AS s__exposed,
  {itt_sums},
  {itt_exposure_products}
FROM by_exposure
GROUP BY variant
UNION ALL
SELECT
  'tot' AS population,
  variant,
  n,
  rows_read,
  n AS s__exposed,
  {tot_sums},
  {tot_exposure_products}
FROM by_exposure
WHERE exposed = 1
ORDER BY population, variant
"""


@dataclass(frozen=True)
class Calendar:
    """Dates the reference statement needs, from the generator's manifest."""

    scan_start: date
    scan_end: date
    last_complete: date

    @classmethod
    def from_manifest(cls, folder: Path) -> Calendar:
        dates = json.loads((folder / "manifest.json").read_text())["dates"]
        first = date.fromisoformat(dates["enrolment_start"])
        as_of = date.fromisoformat(dates["data_end"])
        return cls(
            scan_start=first + timedelta(days=PRE_WINDOW[0]),
            scan_end=as_of,
            last_complete=as_of - timedelta(days=WINDOW[1]),
        )


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def reference_sql(folder: Path) -> str:
    """The hand-written statement over the files in ``folder``."""
    calendar = Calendar.from_manifest(folder)
    sep = ",\n    "
    return REFERENCE_SQL.format(
        assignments=_sql_string(str(folder / "experiment_assignments.parquet")),
        daily=_sql_string(str(folder / "engagement_daily.parquet")),
        experiment=EXPERIMENT_ID,
        last_complete=calendar.last_complete.isoformat(),
        scan_start=calendar.scan_start.isoformat(),
        scan_end=calendar.scan_end.isoformat(),
        member_aggregates=sep.join(f"{sql} AS {name}" for name, sql in MEMBER_AGGREGATES.items()),
        member_values=sep.join(f"{sql} AS {name}" for name, sql in MEMBER_VALUES.items()),
        group_sums=sep.join(
            [f"SUM({c}) AS s__{c}" for c in MEMBER_VALUES]
            + [f"SUM({a} * {b}) AS p__{a}__{b}" for a, b in PAIRS]
        ),
        itt_sums=",\n  ".join(f"SUM({s}) AS {s}" for s in SUMS),
        itt_exposure_products=",\n  ".join(
            f"SUM(s__{c}) FILTER (WHERE exposed = 1) AS p__{c}__exposed" for c in MEMBER_VALUES
        ),
        tot_sums=",\n  ".join(SUMS),
        tot_exposure_products=",\n  ".join(f"s__{c} AS p__{c}__exposed" for c in MEMBER_VALUES),
    )


# --------------------------------------------------------------------------------------
# Data and configuration.
# --------------------------------------------------------------------------------------
def ensure_data(data_dir: Path, members: int) -> Path:
    """The generated tables for ``members`` (generated on first use, reused after)."""
    folder = data_dir / f"members-{members}"
    if not (folder / "manifest.json").is_file():
        from xpkit.sample_data.generate import generate

        print(f"generating {members:,} members into {folder} ...", flush=True)
        started = time.perf_counter()
        generate(folder, members=members, seed=SEED)
        print(f"  generated in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def write_config(folder: Path) -> Path:
    path = folder / "bench-experiments.toml"
    path.write_text(
        CONFIG_TOML.format(
            metrics_dir=json.dumps(str(METRICS_DIR)),
            assignments=json.dumps(str(folder / "experiment_assignments.parquet")),
            daily=json.dumps(str(folder / "engagement_daily.parquet")),
            experiment=EXPERIMENT_ID,
            window=WINDOW,
            pre_window=PRE_WINDOW,
        )
    )
    return path


def warm_page_cache(folder: Path) -> None:
    """Read the files once so that no timed run pays for the first read from disk."""
    for path in sorted(folder.glob("*.parquet")):
        with path.open("rb") as f:
            while f.read(64 << 20):
                pass


# --------------------------------------------------------------------------------------
# Workers: each timed run is one of these in a fresh process.
# --------------------------------------------------------------------------------------
def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def _spill_watch(directory: Path) -> Iterator[list[int]]:
    """Track the peak size of DuckDB's spill directory while the block runs."""
    peak = [0]
    stop = threading.Event()

    def size() -> int:
        total = 0
        for path in directory.rglob("*"):
            with suppress(OSError):  # a spill file removed while we looked
                total += path.stat().st_size if path.is_file() else 0
        return total

    def poll() -> None:
        while not stop.wait(0.2):
            with suppress(OSError):  # the directory itself removed while we looked
                peak[0] = max(peak[0], size())

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def _timed(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    spill_dir = Path.cwd() / ".tmp"  # DuckDB's default temp_directory for in-memory databases
    with _spill_watch(spill_dir) as spill:
        cpu, started = _cpu_seconds(), time.perf_counter()
        result = work()
        result["seconds"] = time.perf_counter() - started
        result["cpu_seconds"] = _cpu_seconds() - cpu
    result["peak_spill_bytes"] = spill[0]
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def _connect(memory_limit: str | None, threads: int | None) -> Any:
    import duckdb

    con = duckdb.connect()
    if memory_limit:
        con.execute(f"SET memory_limit = {_sql_string(memory_limit)}")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def _reference_rows(con: Any, sql: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def worker_reference(folder: Path, memory_limit: str | None, threads: int | None) -> dict[str, Any]:
    started = time.perf_counter()
    import duckdb  # noqa: F401  (imported here so that the timed run does not pay for it)

    import_seconds = time.perf_counter() - started
    sql = reference_sql(folder)

    def work() -> dict[str, Any]:
        con = _connect(memory_limit, threads)
        rows = _reference_rows(con, sql)
        con.close()
        return {"rows": rows}

    return {**_timed(work), "import_seconds": import_seconds}


def worker_xpkit(folder: Path, memory_limit: str | None, threads: int | None) -> dict[str, Any]:
    started = time.perf_counter()
    import pyarrow as pa

    from xpkit.config import load_config
    from xpkit.define.registry import load_metrics
    from xpkit.runner import run_all

    # pyarrow imports pandas the first time it converts Python dates (the scorecard's
    # run_date): a one-off cost of the process, counted with the imports, not the run.
    pa.array([date(2024, 1, 1)])
    import_seconds = time.perf_counter() - started
    config_path = folder / "bench-experiments.toml"
    with tempfile.TemporaryDirectory(prefix="scorecards-", dir=Path.cwd()) as out:

        def work() -> dict[str, Any]:
            config = load_config(config_path)
            registry = load_metrics(config.metrics_dir)
            runs = run_all(
                config,
                registry,
                [EXPERIMENT_ID],
                Path(out),
                memory_limit=memory_limit,
                threads=threads,
            )
            scorecard = runs[0].scorecard.select(
                [
                    "population",
                    "metric",
                    "variant",
                    "n_control",
                    "n_variant",
                    "mean_control",
                    "mean_variant",
                ]
            )
            return {"valid": runs[0].valid, "scorecard": scorecard.to_pylist()}

        return {**_timed(work), "import_seconds": import_seconds}


def worker_check(folder: Path, memory_limit: str | None, threads: int | None) -> dict[str, Any]:
    """xpkit's moments statement and the reference, side by side (untimed)."""
    from xpkit.config import load_config
    from xpkit.define.registry import load_metrics
    from xpkit.engines import open_engine
    from xpkit.readout import read_cells, read_moments
    from xpkit.runner import compile_experiment

    config = load_config(folder / "bench-experiments.toml")
    registry = load_metrics(config.metrics_dir)
    engine = open_engine(
        "duckdb",
        config.run.tables,
        database=config.run.database,
        memory_limit=memory_limit,
        threads=threads,
    )
    try:
        query = compile_experiment(config, registry, EXPERIMENT_ID, engine)
        assert query.layout is not None
        moments = read_moments(read_cells(engine.query(query.sql), query.layout), query.layout)
    finally:
        engine.close()
    xpkit_cells = {
        f"{key.population}/{key.variant}/{key.metric}": {
            "n": m.n,
            "mean": m.mean.tolist(),
            "comoment": m.comoment.tolist(),
        }
        for key, m in moments.by_key.items()
    }
    con = _connect(memory_limit, threads)
    rows = _reference_rows(con, reference_sql(folder))
    calendar = Calendar.from_manifest(folder)
    fact = str(folder / "engagement_daily.parquet")
    scanned = con.execute(
        f"SELECT COUNT(*) FROM read_parquet({_sql_string(fact)}) "
        f"WHERE date BETWEEN DATE '{calendar.scan_start}' AND DATE '{calendar.scan_end}'"
    ).fetchone()
    assignments = str(folder / "experiment_assignments.parquet")
    assigned = con.execute(
        f"SELECT COUNT(*) FROM read_parquet({_sql_string(assignments)})"
    ).fetchone()
    con.close()
    assert scanned is not None and assigned is not None
    return {
        "xpkit": xpkit_cells,
        "rows": rows,
        "fact_rows": int(scanned[0]),
        "assignment_rows": int(assigned[0]),
        "xpkit_sql": query.sql,
    }


def _operators(profile: dict[str, Any]) -> list[dict[str, Any]]:
    """DuckDB's JSON profile flattened to one entry per operator."""
    found: list[dict[str, Any]] = []

    def walk(node: dict[str, Any], depth: int) -> None:
        info = node.get("extra_info", {})
        detail = info.get("CTE Name") or info.get("Function") or info.get("Join Type") or ""
        if node.get("type") == "HASH_GROUP_BY":
            aggregates = info.get("Aggregates", [])
            count = len(aggregates) if isinstance(aggregates, list) else int(bool(aggregates))
            detail = f"{count} aggregates by {info.get('Groups', '')}"
        found.append(
            {
                "operator": node.get("type", ""),
                "detail": str(detail),
                "rows": int(node.get("intermediate_rows", 0)),
                "seconds": float(node.get("timing", 0.0)),
                "depth": depth,
            }
        )
        for child in node.get("children", []):
            walk(child, depth + 1)

    for node in profile.get("operator", []):
        walk(node, 0)
    return found


def worker_explain(folder: Path, memory_limit: str | None, threads: int | None) -> dict[str, Any]:
    """Profile every statement a full run executes, and the reference (untimed)."""
    import pyarrow as pa

    from xpkit.config import load_config
    from xpkit.define.registry import load_metrics
    from xpkit.engines.duckdb import DuckDBEngine
    from xpkit.runner import run_experiment

    recorded: list[str] = []

    class RecordingEngine(DuckDBEngine):
        """Runs as usual and keeps the statements, to profile them afterwards."""

        def query(self, sql: str) -> pa.Table:
            recorded.append(sql)
            return super().query(sql)

    config = load_config(folder / "bench-experiments.toml")
    registry = load_metrics(config.metrics_dir)
    engine = RecordingEngine(config.run.tables, memory_limit=memory_limit, threads=threads)
    run_experiment(config, registry, EXPERIMENT_ID, engine)
    statements = {}
    for i, sql in enumerate(recorded, start=1):
        statements[f"xpkit statement {i} of {len(recorded)} ({len(sql.splitlines())} lines)"] = sql
    statements["reference"] = reference_sql(folder)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "profile.json"
        for name, sql in statements.items():
            engine.con.execute("PRAGMA enable_profiling = 'json'")
            engine.con.execute(f"PRAGMA profiling_output = {_sql_string(str(path))}")
            started = time.perf_counter()
            engine.con.execute(sql).fetchall()
            seconds = time.perf_counter() - started
            engine.con.execute("PRAGMA disable_profiling")
            profile = json.loads(path.read_text())
            out[name] = {
                "seconds": seconds,
                "cpu_seconds": float(profile.get("query", {}).get("cpu_time", 0.0)),
                "peak_buffer_bytes": int(profile.get("system", {}).get("peak_buffer_memory", 0)),
                "operators": _operators(profile),
            }
    engine.close()
    return out


def print_explain(members: int, profiles: dict[str, Any], top: int = 8) -> None:
    print(f"\nEXPLAIN ANALYZE, {members:,} members (operator times are summed over threads)")
    for name, p in profiles.items():
        print(
            f"  {name}: {p['seconds']:.2f} s wall, {p['cpu_seconds']:.1f} s operator time, "
            f"peak buffer {_gb(p['peak_buffer_bytes'])}"
        )
        heaviest = sorted(p["operators"], key=lambda o: -o["seconds"])[:top]
        for o in heaviest:
            print(
                f"    {o['seconds']:7.2f} s  {o['rows']:>12,} rows  {o['operator']:<16} "
                f"{o['detail'][:70]}"
            )


WORKERS: dict[str, Callable[[Path, str | None, int | None], dict[str, Any]]] = {
    "xpkit": worker_xpkit,
    "reference": worker_reference,
    "check": worker_check,
    "explain": worker_explain,
}


def run_worker(
    kind: str, folder: Path, memory_limit: str | None, threads: int | None
) -> dict[str, Any]:
    """Run one worker in a fresh interpreter whose working folder takes DuckDB's spill."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--folder",
        str(folder),
    ]
    if memory_limit:
        command += ["--memory-limit", memory_limit]
    if threads:
        command += ["--threads", str(threads)]
    with tempfile.TemporaryDirectory(prefix=f"run-{kind}-", dir=folder) as cwd:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} run failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


# --------------------------------------------------------------------------------------
# Agreement between (a) and (b).
# --------------------------------------------------------------------------------------
def _reference_moments(
    row: dict[str, Any], metric: str
) -> tuple[int, list[float], list[list[float]]]:
    """n, means and centred co-moments of one metric's columns from a reference row."""
    import numpy as np

    from xpkit.moments import Moments

    columns = [*METRIC_COLUMNS[metric], "exposed"]
    n = int(row["n"])

    def product(a: str, b: str) -> float:
        if a == "exposed" and b == "exposed":
            return float(row["s__exposed"])
        if "exposed" in (a, b):
            return float(row[f"p__{a if b == 'exposed' else b}__exposed"])
        key = f"p__{a}__{b}" if f"p__{a}__{b}" in row else f"p__{b}__{a}"
        return float(row[key])

    sums = [float(row[f"s__{c}"]) for c in columns]
    products = [[product(a, b) for b in columns] for a in columns]
    m = Moments.from_shifted_sums(n, columns, np.zeros(len(columns)), sums, products)
    return n, m.mean.tolist(), m.comoment.tolist()


def _rel(a: float, b: float) -> float:
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


@dataclass
class Agreement:
    cells: int = 0
    max_mean_rel: float = 0.0
    max_comoment_rel: float = 0.0
    n_mismatches: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.cells > 0
            and self.n_mismatches == 0
            and self.max_mean_rel <= MEAN_TOLERANCE
            and self.max_comoment_rel <= COMOMENT_TOLERANCE
        )


def compare_moments(check: dict[str, Any]) -> Agreement:
    """xpkit's moments vs the reference's, cell by cell (population x variant x metric)."""
    agreement = Agreement()
    rows = {(r["population"], r["variant"]): r for r in check["rows"]}
    for key, cell in check["xpkit"].items():
        population, variant, metric = key.split("/")
        n, mean, comoment = _reference_moments(rows[(population, variant)], metric)
        agreement.cells += 1
        agreement.n_mismatches += int(n != cell["n"])
        agreement.max_mean_rel = max(
            [agreement.max_mean_rel] + [_rel(a, b) for a, b in zip(mean, cell["mean"], strict=True)]
        )
        # Co-moments relative to the raw second moments they are computed from (sum x_i x_j
        # is bounded by the square root of this), so that a covariance that is exactly 0
        # (the exposure flag within TOT) is judged against the size of its terms.
        second = [comoment[i][i] + n * mean[i] ** 2 for i in range(len(mean))]
        for i, row in enumerate(comoment):
            for j, value in enumerate(row):
                scale = math.sqrt(second[i] * second[j]) or 1.0
                diff = abs(value - cell["comoment"][i][j]) / scale
                agreement.max_comoment_rel = max(agreement.max_comoment_rel, diff)
    return agreement


def compare_scorecard(
    scorecard: list[dict[str, Any]], reference: list[dict[str, Any]]
) -> Agreement:
    """A timed run's scorecard (n and unadjusted means) vs the reference's sums."""
    agreement = Agreement(max_comoment_rel=0.0)
    rows = {(r["population"], r["variant"]): r for r in reference}

    def mean(row: dict[str, Any], metric: str) -> float:
        value = float(row[f"s__{METRIC_COLUMNS[metric][0]}"])
        if metric in RATIO_METRICS:
            return value / float(row[f"s__{METRIC_COLUMNS[metric][1]}"])
        return value / float(row["n"])

    for line in scorecard:
        if line["population"] not in ("itt", "tot"):
            continue  # the complier effect reuses the ITT moments
        control = rows[(line["population"], "control")]
        treated = rows[(line["population"], line["variant"])]
        agreement.cells += 1
        agreement.n_mismatches += int(line["n_control"] != control["n"])
        agreement.n_mismatches += int(line["n_variant"] != treated["n"])
        agreement.max_mean_rel = max(
            agreement.max_mean_rel,
            _rel(line["mean_control"], mean(control, line["metric"])),
            _rel(line["mean_variant"], mean(treated, line["metric"])),
        )
    return agreement


# --------------------------------------------------------------------------------------
# The benchmark.
# --------------------------------------------------------------------------------------
def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB"


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds / 1e6:.1f} M rows/s"


def bench_size(
    data_dir: Path, members: int, runs: int, memory_limit: str | None, threads: int | None
) -> dict[str, Any]:
    folder = ensure_data(data_dir, members)
    write_config(folder)
    warm_page_cache(folder)

    check = run_worker("check", folder, memory_limit, threads)
    moments = compare_moments(check)
    rows_scanned = check["fact_rows"] + check["assignment_rows"]

    results: dict[str, list[dict[str, Any]]] = {"xpkit": [], "reference": []}
    scorecards: list[Agreement] = []
    for i in range(runs):
        for kind in ("xpkit", "reference"):
            result = run_worker(kind, folder, memory_limit, threads)
            results[kind].append(result)
            print(
                f"  run {i + 1}/{runs} {kind:<9} {result['seconds']:7.2f} s  "
                f"cpu {result['cpu_seconds']:6.1f} s  rss {_gb(result['peak_rss_bytes'])}  "
                f"spill {_gb(result['peak_spill_bytes'])}",
                flush=True,
            )
        scorecards.append(compare_scorecard(results["xpkit"][-1]["scorecard"], check["rows"]))

    def summary(kind: str) -> dict[str, Any]:
        seconds = [r["seconds"] for r in results[kind]]
        median = statistics.median(seconds)
        return {
            "seconds": seconds,
            "median_seconds": median,
            "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in results[kind]),
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in results[kind]),
            "peak_spill_bytes": max(r["peak_spill_bytes"] for r in results[kind]),
            "median_import_seconds": statistics.median(r["import_seconds"] for r in results[kind]),
            "rows_per_second": rows_scanned / median,
        }

    a, b = summary("xpkit"), summary("reference")
    scorecard_ok = all(s.ok for s in scorecards)
    report = {
        "members": members,
        "fact_rows": check["fact_rows"],
        "assignment_rows": check["assignment_rows"],
        "memory_limit": memory_limit,
        "threads": threads,
        "xpkit": a,
        "reference": b,
        "ratio": a["median_seconds"] / b["median_seconds"],
        "cpu_ratio": a["median_cpu_seconds"] / b["median_cpu_seconds"],
        "valid": all(r["valid"] for r in results["xpkit"]),
        "moments_agree": moments.ok,
        "scorecards_agree": scorecard_ok,
        "max_mean_rel": max([moments.max_mean_rel] + [s.max_mean_rel for s in scorecards]),
        "max_comoment_rel": moments.max_comoment_rel,
        "cells": moments.cells,
    }
    print_report(report)
    return report


def print_report(r: dict[str, Any]) -> None:
    limit = r["memory_limit"] or "DuckDB default (80% of RAM)"
    print(
        f"\n{r['members']:,} members: {r['fact_rows']:,} daily rows in the scanned dates "
        f"+ {r['assignment_rows']:,} assignment rows; memory limit {limit}"
    )
    print(
        f"  {'':<22}{'median':>9}  {'runs (s)':<40}{'cpu (s)':>8}{'peak RSS':>10}{'spill':>10}  rows scanned/s"
    )
    for label, key in (("(a) xpkit run", "xpkit"), ("(b) reference query", "reference")):
        s = r[key]
        runs = ", ".join(f"{x:.2f}" for x in s["seconds"])
        print(
            f"  {label:<22}{s['median_seconds']:8.2f}s  {runs:<40}{s['median_cpu_seconds']:8.1f}"
            f"{_gb(s['peak_rss_bytes']):>10}{_gb(s['peak_spill_bytes']):>10}  "
            f"{_rate(r['fact_rows'] + r['assignment_rows'], s['median_seconds'])}"
        )
    print(f"  ratio (a)/(b): {r['ratio']:.2f} wall clock, {r['cpu_ratio']:.2f} CPU time")
    print(
        "  not timed (imports before the clock starts): "
        f"(a) {r['xpkit']['median_import_seconds']:.2f} s, "
        f"(b) {r['reference']['median_import_seconds']:.2f} s"
    )
    agree = "agree" if r["moments_agree"] and r["scorecards_agree"] else "DISAGREE"
    print(
        f"  (a) and (b) {agree}: n exact over {r['cells']} cells, means to "
        f"{r['max_mean_rel']:.1e} relative, co-moments to {r['max_comoment_rel']:.1e}; "
        f"scorecard {'valid' if r['valid'] else 'INVALID'}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time a full `xpkit run` against one hand-written DuckDB query.",
        epilog="Example: python bench/perf.py --members 1000000 10000000 --runs 3",
    )
    parser.add_argument("--members", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory limit, e.g. 2GB")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all)")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/xpkit-bench"))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--show-sql", action="store_true", help="print the reference query")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="profile xpkit's statements and the reference (EXPLAIN ANALYZE) instead of timing",
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        result = WORKERS[args.worker](args.folder, args.memory_limit, args.threads)
        print(json.dumps(result, default=str))
        return 0
    if args.show_sql:
        print(reference_sql(args.data_dir / f"members-{args.members[0]}"))
        return 0
    if args.explain:
        for members in args.members:
            folder = ensure_data(args.data_dir, members)
            write_config(folder)
            warm_page_cache(folder)
            profiles = run_worker("explain", folder, args.memory_limit, args.threads)
            print_explain(members, profiles)
        return 0
    reports = []
    for members in args.members:
        print(f"== {members:,} members ==", flush=True)
        reports.append(
            bench_size(args.data_dir, members, args.runs, args.memory_limit, args.threads)
        )
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))
    ok = all(r["moments_agree"] and r["scorecards_agree"] and r["valid"] for r in reports)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
