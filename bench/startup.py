"""Start-up cost of the command line: what a user waits for before any work is done.

    python bench/startup.py [--repeats 10] [--members 2000]

Prints the median wall time over ``--repeats`` fresh processes of

- ``python -c pass`` (the interpreter alone, the floor of every figure below),
- ``python -c "import xpkit.cli"``, ``xpkit --version`` and ``xpkit --help``,
- ``xpkit run --quiet`` of the sample experiments at ``--members`` members: the command's
  wall clock, and, in a process of its own, the time to import every module such a run
  loads (recorded by a first run, imported in the order it loaded them) apart from the
  time of the run itself once they are loaded,

then the heaviest imports of ``import xpkit.cli`` according to ``python -X importtime``
(that clock runs slow: its figures are for ranking, not for adding up). The ``xpkit``
command is the console script beside this interpreter (or ``python -m xpkit.cli``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run in a child process: the CLI's `run` on the sample, then the names of the modules it
# loaded, in the order they were loaded.
_RECORD = """
import json, sys
from click.testing import CliRunner
from xpkit.cli import main
result = CliRunner().invoke(main, sys.argv[1:])
if result.exit_code not in (0, 3):
    raise SystemExit(result.output)
print(json.dumps(list(sys.modules)))
"""

# Run in a child process: import the recorded modules in the order the run loaded them
# (a private one that cannot be imported on its own was loaded by one that can), then run
# the same command, which finds them loaded: the import time and the work, apart.
_SPLIT = """
import importlib, json, sys, time
names = json.loads(sys.argv[1])
started = time.perf_counter()
for name in names:
    try:
        importlib.import_module(name)
    except Exception:
        pass
imported = time.perf_counter()
from click.testing import CliRunner
from xpkit.cli import main
result = CliRunner().invoke(main, sys.argv[2:])
done = time.perf_counter()
if result.exit_code not in (0, 3):
    raise SystemExit(result.output)
print(json.dumps({"imports": imported - started, "work": done - imported}))
"""


def median_seconds(command: list[str], repeats: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def xpkit_command() -> list[str]:
    script = Path(sys.executable).with_name("xpkit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "xpkit.cli"]


def importtime(env: dict[str, str], top: int) -> list[tuple[float, str]]:
    """The ``top`` modules of ``import xpkit.cli`` by cumulative import time, in seconds."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import xpkit.cli"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        _, cumulative, name = line.split("|")
        rows.append((int(cumulative) / 1e6, name.rstrip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--top", type=int, default=12, help="importtime rows to print")
    args = parser.parse_args()
    env = dict(os.environ)
    python, xpkit = [sys.executable], xpkit_command()
    with tempfile.TemporaryDirectory(prefix="xpkit-startup-") as tmp:
        data = Path(tmp) / "sample"
        subprocess.run(
            [*xpkit, "sample-data", "--members", str(args.members), "--out", str(data)],
            check=True,
            capture_output=True,
            env=env,
        )
        recorded = subprocess.run(
            [
                *python,
                "-c",
                _RECORD,
                "run",
                "--config",
                str(data / "experiments.toml"),
                "--out",
                f"{tmp}/o",
                "--quiet",
            ],  # fmt: skip
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        modules = json.loads(recorded.stdout.splitlines()[-1])
        floor = median_seconds([*python, "-c", "pass"], args.repeats, env)
        figures = {
            "python -c pass": floor,
            'python -c "import xpkit.cli"': median_seconds(
                [*python, "-c", "import xpkit.cli"], args.repeats, env
            ),
            "xpkit --version": median_seconds([*xpkit, "--version"], args.repeats, env),
            "xpkit --help": median_seconds([*xpkit, "--help"], args.repeats, env),
        }
        splits, walls = [], []
        for i in range(args.repeats):  # the two alternate: a noisy neighbour slows both
            out = ["run", "--config", str(data / "experiments.toml"), "--quiet"]
            done = subprocess.run(
                [*python, "-c", _SPLIT, json.dumps(modules), *out, "--out", f"{tmp}/s{i}"],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
            splits.append(json.loads(done.stdout.splitlines()[-1]))
            started = time.perf_counter()
            subprocess.run(
                [*xpkit, *out, "--out", f"{tmp}/w{i}"], check=True, capture_output=True, env=env
            )
            walls.append(time.perf_counter() - started)
    imports = statistics.median(s["imports"] for s in splits)
    work = statistics.median(s["work"] for s in splits)
    print(f"median of {args.repeats} fresh processes; {sys.executable}")
    for label, seconds in figures.items():
        over = "" if label == "python -c pass" else f"  ({seconds - floor:+.3f} s over python)"
        print(f"  {label:<52}{seconds:7.3f} s{over}")
    print(f"  xpkit run --quiet, {args.members} members, 4 experiments:")
    print(f"    {'the command, wall clock':<56}{statistics.median(walls):7.3f} s")
    label = f"its imports ({len(modules)} modules, in the order it loads them)"
    print(f"    {label:<56}{imports:7.3f} s")
    print(f"    {'its work once they are loaded':<56}{work:7.3f} s")
    heavy = sorted({m.split(".")[0] for m in modules} & {"scipy", "pandas", "plotly"})
    stats = " (scipy.stats among them)" if "scipy.stats" in modules else ""
    print(f"  heavy packages a run loads: {', '.join(heavy) or 'none'}{stats}")
    print(f"\npython -X importtime -c 'import xpkit.cli', top {args.top} by cumulative time:")
    for seconds, name in importtime(env, args.top):
        print(f"  {seconds:7.3f} s  {name}")


if __name__ == "__main__":
    main()
