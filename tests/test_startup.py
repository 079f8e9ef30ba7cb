"""The command line starts fast: each command imports only what it needs.

Checked by which modules a fresh process has loaded, not by the clock (bench/startup.py
measures the time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_errors_data import world
from xpkit.cli import DIALECT_NAMES

HEAVY = ("scipy", "sqlglot", "pyarrow", "duckdb", "pydantic", "jinja2", "plotly", "numpy")

# Runs the command line in this process, then prints the top-level packages it loaded.
_LOADED = """
import json, sys
from xpkit.cli import main
sys.argv = ["xpkit", *sys.argv[1:]]
try:
    main()
except SystemExit as done:
    code = done.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


# Runs the command line in this process with xpkit's root finder counted by caller (patched
# before the statistics import it by name), then prints the callers and the loaded modules.
_ROOTS_COUNTED = """
import collections, json, sys
import xpkit.stats.roots as roots
callers = collections.Counter()
brentq = roots.brentq
def counted(f, a, b, **options):
    callers[sys._getframe(1).f_code.co_name] += 1
    return brentq(f, a, b, **options)
roots.brentq = counted
from click.testing import CliRunner
from xpkit.cli import main
result = CliRunner().invoke(main, sys.argv[1:])
report = {"code": result.exit_code, "output": result.output, "callers": callers}
print(json.dumps({**report, "modules": sorted(sys.modules)}))
"""


def loaded(*args: str) -> tuple[int, set[str], str]:
    """Exit code, loaded modules and stdout of ``xpkit ARGS`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _LOADED, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"]), done.stdout


def test_importing_the_command_line_loads_none_of_the_heavy_libraries() -> None:
    code = "import json, sys, xpkit.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    packages = {m.split(".")[0] for m in json.loads(out.stdout)}
    assert not packages & set(HEAVY), packages & set(HEAVY)


def test_version_and_help_load_only_click() -> None:
    for args in (["--version"], ["--help"], ["run", "--help"]):
        code, modules, stdout = loaded(*args)
        assert code == 0, stdout
        heavy = {m.split(".")[0] for m in modules} & set(HEAVY)
        assert not heavy, (args, heavy)
    assert "xpkit, version" in loaded("--version")[2]


def test_a_run_loads_neither_scipy_stats_nor_pandas_nor_plotly(tmp_path: Path) -> None:
    config = world(tmp_path)
    code, modules, stdout = loaded(
        "run", "--config", str(config), "--out", str(tmp_path / "out"), "--quiet"
    )
    assert code == 0, stdout
    assert "wrote" in stdout
    for name in ("scipy.stats", "pandas", "plotly"):
        assert name not in modules, name
    # The scorecard was computed: the statistics and the engine did load.
    assert {"scipy.special", "duckdb", "pyarrow"} <= modules


def test_a_run_on_the_sample_finds_its_roots_without_scipy_optimize(
    sample_dir: Path, tmp_path: Path
) -> None:
    args = ["run", "--config", str(sample_dir / "experiments.toml"), "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-c", _ROOTS_COUNTED, *args, "--quiet"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=True,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # 3: written, with results marked invalid (the sample's SRM and exposure-bug cases).
    assert report["code"] == 3, report["output"]
    assert "INVALID results for: player_srm, search_exposure_bug" in report["output"]
    # Every root the statistics solve was solved: the group-sequential bounds and their
    # inflation factor, the score intervals of the proportions, the power solver's
    # noncentrality and the slices' REML polish. scipy.optimize once did all of it.
    assert set(report["callers"]) >= {
        "solve_bound",
        "inflation_factor",
        "_root",
        "_root_outward",
        "_noncentrality",
        "_polish",
    }, report["callers"]
    modules = set(report["modules"])
    assert not {m for m in modules if m.startswith("scipy.optimize")}
    # Nor the parts of scipy it loaded with it; scipy.special is all a run needs.
    for part in ("linalg", "sparse", "spatial", "fft", "stats"):
        assert not {m for m in modules if m.startswith(f"scipy.{part}")}, part
    assert "scipy.special" in modules


def test_show_loads_no_statistics(tmp_path: Path) -> None:
    config = world(tmp_path)
    out = tmp_path / "out"
    assert loaded("run", "--config", str(config), "--out", str(out), "--quiet")[0] == 0
    code, modules, stdout = loaded("show", str(out))
    assert code == 0, stdout
    assert "scipy" not in modules and "duckdb" not in modules and "pandas" not in modules


def test_pandas_still_imports_for_anyone_else_after_a_command(tmp_path: Path) -> None:
    """The command line keeps pyarrow from loading pandas; a later to_pandas() works."""
    config = world(tmp_path)
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from xpkit.cli import main\n"
        f"r = CliRunner().invoke(main, ['run', '--config', {str(config)!r}, '--out', "
        f"{str(tmp_path / 'out')!r}, '--quiet'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'pandas' not in sys.modules\n"
        "import pyarrow as pa\n"
        "print(type(pa.table({'a': [1]}).to_pandas()).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "DataFrame"


def test_the_dialect_choices_are_the_compilers() -> None:
    from xpkit.compile import DIALECTS

    assert DIALECT_NAMES == DIALECTS
