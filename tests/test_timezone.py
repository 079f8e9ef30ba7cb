"""Calendar dates come from the config's timezone, never from the machine's zone.

Assignment times are TIMESTAMPTZ values near midnight: in UTC and in Los Angeles they
fall on different days, so a run whose dates followed the machine's zone would change its
windows, units and p-values with ``TZ``. Each run is its own process (the zone is read at
start-up), under several ``TZ`` values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

SCRIPT = """
import json, sys
from datetime import date
from xpkit.config import load_config
from xpkit.define.registry import load_metrics
from xpkit.runner import engine_for, run_experiment
config = load_config(sys.argv[1])
engine = engine_for(config)
run = run_experiment(config, load_metrics(sys.argv[2]), "tz", engine, run_date=date(2024, 2, 1))
rows = [r for r in run.scorecard.to_pylist() if r["population"] == "itt"]
print(json.dumps([[r["n_control"], r["n_variant"], r["abs_effect"], r["p_value"]] for r in rows]))
"""

METRIC = '''
from xpkit import Metric, Source

class Daily(Source):
    table = "daily"
    unit = "member_id"
    time = "day"

class Minutes(Metric):
    """Minutes per member."""
    source = Daily
    expression = "SUM(minutes)"
'''


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tz")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # 4000 members assigned 2024-01-01..10, each at 23:00-07:59 UTC (around midnight in
    # UTC, the previous evening in Los Angeles); treatment adds 1 minute a day.
    con.execute(f"""
        COPY (
          SELECT 'tz' AS experiment_id, i AS member_id,
                 CASE WHEN hash(i) % 2 = 0 THEN 'control' ELSE 'treatment' END AS variant,
                 TIMESTAMPTZ '2024-01-01 23:00:00+00' + INTERVAL (i % 10) DAY
                   + INTERVAL (i % 9) HOUR AS assignment_timestamp,
                 TRUE AS exposed_flag
          FROM range(4000) t(i)
        ) TO '{root}/assignments.parquet' (FORMAT PARQUET)""")
    con.execute(f"""
        COPY (
          SELECT i AS member_id, DATE '2023-12-25' + INTERVAL (d) DAY AS day,
                 (hash(i * 31 + d) % 50)::DOUBLE + (hash(i) % 2)::DOUBLE AS minutes
          FROM range(4000) t(i), range(30) s(d)
        ) TO '{root}/daily.parquet' (FORMAT PARQUET)""")
    (root / "metrics").mkdir()
    (root / "metrics" / "minutes.py").write_text(METRIC)
    return root


def config(root: Path, zone: str | None) -> Path:
    name = (zone or "default").replace("/", "-")
    path = root / f"experiments-{name}.toml"
    zone_line = f'timezone = "{zone}"\n' if zone else ""
    path.write_text(
        zone_line
        + f"""[tables]
experiment_assignments = "{root}/assignments.parquet"
daily = "{root}/daily.parquet"

[[experiment]]
id = "tz"
control = "control"
weights = {{ control = 0.5, treatment = 0.5 }}
metrics = ["minutes"]
window = [0, 6]
pre_window = [-7, -1]
"""
    )
    return path


def run_under(machine_zone: str, cfg: Path, metrics: Path) -> list:
    env = {**os.environ, "TZ": machine_zone}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cfg), str(metrics)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def same(a: list, b: list) -> bool:
    """Equal units exactly; effects and p-values to the last digits that parallel
    floating-point sums leave free (about 1e-15 relative)."""
    if [r[:2] for r in a] != [r[:2] for r in b]:
        return False
    pairs = [
        (x, y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra[2:], rb[2:], strict=True)
    ]
    return all(x == pytest.approx(y, rel=1e-12) for x, y in pairs)


def test_results_do_not_depend_on_the_machine_zone(data: Path) -> None:
    cfg = config(data, None)  # default: UTC
    zones = ("UTC", "America/Los_Angeles", "Asia/Tokyo")
    runs = {tz: run_under(tz, cfg, data / "metrics") for tz in zones}
    assert same(runs["UTC"], runs["America/Los_Angeles"])
    assert same(runs["UTC"], runs["Asia/Tokyo"])


def test_the_configured_zone_decides_the_dates(data: Path) -> None:
    utc = run_under("UTC", config(data, "UTC"), data / "metrics")
    la_cfg = config(data, "America/Los_Angeles")
    la = run_under("UTC", la_cfg, data / "metrics")
    assert same(la, run_under("Asia/Tokyo", la_cfg, data / "metrics"))
    # Assignments before 08:00 UTC fall on the previous Los Angeles day: other windows.
    assert not same(la, utc)


def test_an_unknown_zone_is_refused(data: Path) -> None:
    from click.testing import CliRunner

    from xpkit.cli import main

    cfg = config(data, "Mars/Olympus")
    result = CliRunner().invoke(main, ["run", "--config", str(cfg), "--out", str(data / "o")])
    assert result.exit_code == 2, result.output
    assert "unknown time zone 'Mars/Olympus'" in result.output and str(cfg) in result.output
