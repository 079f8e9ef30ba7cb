"""Start-up cost of the command line: what a user waits for before any work is done.

    python bench/startup.py [--repeats 10] [--members 2000] [--bytecode]

Prints the median wall time over ``--repeats`` fresh processes of

- ``python -c pass`` (the interpreter alone, the floor of every figure below),
- ``python -c "import xpkit.cli"``, ``xpkit --version`` and ``xpkit --help``,
- ``xpkit run --quiet`` of the sample experiments at ``--members`` members: the command's
  wall clock, and, in a process of its own, the time to import every module such a run
  loads (recorded by a first run, imported in the order it loaded them) apart from the
  time of the run itself once they are loaded,

then the heaviest imports of ``import xpkit.cli`` according to ``python -X importtime``,
and the same for a whole ``xpkit run``: each library at the point where xpkit's code (or
nothing, for a lazy import inside a library's function) first imports it, with what it
loads then, and xpkit's own modules (that clock runs slow: its figures are for ranking,
not for adding up). The ``xpkit`` command is the console script beside this interpreter
(or ``python -m xpkit.cli``).

Bytecode: a process imports a module from its cached ``.pyc`` when there is one and
compiles the source otherwise (~0.06 s for the xpkit modules a run loads). An installed
package has its bytecode; a source checkout run with ``PYTHONDONTWRITEBYTECODE=1`` never
does. ``--bytecode`` gives every process a private, warmed cache (``PYTHONPYCACHEPREFIX``
in the temporary folder) whatever the environment says; without it the figures are the
environment's.
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


# Run in a child process under -X importtime: the command line as its console script runs it,
# then the names of the modules it loaded (-X importtime also lists failed imports).
_COMMAND = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(list(sys.modules))))
from xpkit.cli import main
sys.argv[0] = "xpkit"
main()
"""


def run_importtime(args: list[str], env: dict[str, str], top: int) -> list[tuple[float, str]]:
    """``xpkit ARGS`` under ``python -X importtime``: the ``top`` heaviest libraries it
    imports and xpkit's own modules, in seconds of that clock.

    A library's figure adds up the imports of its modules that xpkit's code starts (or a
    library starts lazily, outside any import), each with everything first loaded under
    it, so no two rows overlap; the other libraries loaded that way are named with it
    (NumPy with pyarrow, which imports it first). xpkit's own row is its modules' self time.
    """
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _COMMAND, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode not in (0, 3):
        raise SystemExit(done.stderr)
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    # Lines come as each import finishes, children (indented one level deeper) before
    # their parent: a stack of the finished ones gives each its children.
    seconds: dict[str, float] = {}
    within: dict[str, set[str]] = {}
    own = 0.0
    pending: list[tuple[int, str, float, set[str]]] = []  # depth, name, cumulative, nested
    started = False  # the interpreter's own start-up imports come before xpkit's
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        head, cumulative, field = line.split("|")
        name = field.strip()
        depth = (len(field) - len(field.lstrip()) - 1) // 2
        started = started or name.startswith("xpkit")
        children = []
        while pending and pending[-1][0] > depth:
            children.append(pending.pop())
        if name not in loaded:  # an import that failed (an optional dependency, say)
            pending.extend(reversed(children))  # what it did load counts for its parent
            continue
        nested = {package for *_, below in children for package in below}
        nested |= {child.split(".")[0] for _, child, _, _ in children}
        if name.startswith("xpkit"):
            own += int(head.split(":")[1]) / 1e6
            entries = [(c, n, b) for _, n, c, b in children if not n.startswith("xpkit")]
        else:
            entries = [(int(cumulative) / 1e6, name, nested)] if depth == 0 and started else []
        for cum, entry, below in entries:
            package = entry.split(".")[0]
            if package in sys.stdlib_module_names:
                continue
            seconds[package] = seconds.get(package, 0.0) + cum
            within.setdefault(package, set()).update(below - {package})
        pending.append((depth, name, int(cumulative) / 1e6, nested))
    rows = []
    for package, total in seconds.items():
        others = sorted(p for p in within[package] if p not in sys.stdlib_module_names)
        others = [p for p in others if not p.startswith("_") and p != "xpkit"]
        rows.append((total, f"{package} (with {', '.join(others)})" if others else package))
    rows.sort(reverse=True)
    return [*rows[:top], (own, "xpkit's own modules (self time)")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--top", type=int, default=12, help="importtime rows to print")
    parser.add_argument(
        "--bytecode", action="store_true", help="cached bytecode for every module (see above)"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    python, xpkit = [sys.executable], xpkit_command()
    with tempfile.TemporaryDirectory(prefix="xpkit-startup-") as tmp:
        if args.bytecode:  # the first processes below write it, the timed ones read it
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = f"{tmp}/pycache"
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
        cli_imports = importtime(env, args.top)  # in here: --bytecode's cache is in tmp
        run_imports = run_importtime([*out, "--out", f"{tmp}/t"], env, args.top)
    imports = statistics.median(s["imports"] for s in splits)
    work = statistics.median(s["work"] for s in splits)
    print(f"median of {args.repeats} fresh processes; {sys.executable}")
    if args.bytecode:
        print("  bytecode: a private cache, warmed first (--bytecode)")
    else:
        writes = "not written" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "written"
        print(f"  bytecode: the environment's ({writes} where missing)")
    for label, seconds in figures.items():
        over = "" if label == "python -c pass" else f"  ({seconds - floor:+.3f} s over python)"
        print(f"  {label:<52}{seconds:7.3f} s{over}")
    print(f"  xpkit run --quiet, {args.members} members, 4 experiments:")
    print(f"    {'the command, wall clock':<56}{statistics.median(walls):7.3f} s")
    label = f"its imports ({len(modules)} modules, in the order it loads them)"
    print(f"    {label:<56}{imports:7.3f} s")
    print(f"    {'its work once they are loaded':<56}{work:7.3f} s")
    heavy = sorted({m.split(".")[0] for m in modules} & {"scipy", "pandas", "plotly"})
    parts = sorted({m.split(".")[1] for m in modules if m.startswith("scipy.")})
    public = [p for p in parts if not p.startswith("_")]
    scipy = f" (of scipy: {', '.join(public)})" if public else ""
    print(f"  heavy packages a run loads: {', '.join(heavy) or 'none'}{scipy}")
    print(f"\npython -X importtime -c 'import xpkit.cli', top {args.top} by cumulative time:")
    for seconds, name in cli_imports:
        print(f"  {seconds:7.3f} s  {name}")
    print(f"\npython -X importtime, xpkit run --quiet: top {args.top} libraries and xpkit's own:")
    for seconds, name in run_imports:
        print(f"  {seconds:7.3f} s  {name}")


if __name__ == "__main__":
    main()
