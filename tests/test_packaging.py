"""The wheel ships every module: build it, install it in a fresh venv, import each one.

An editable install imports from the source tree and would hide a subpackage that the
wheel leaves out; this test installs the built wheel into a new virtual environment (its
dependencies borrowed from this one through a path file, the checkout kept out) and
imports every module the source tree has.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    "xpkit": ROOT / "src" / "xpkit",
    "xpkit.metrics": ROOT / "metrics",
    "xpkit.sample_data": ROOT / "sample_data",
    "xpkit.sql_templates": ROOT / "sql_templates",
}


def source_modules() -> list[str]:
    names = []
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names.append(".".join([package, *parts]))
    return names


def test_wheel_installs_every_module_and_template(tmp_path: Path) -> None:
    # Built from a clean copy: a build/ folder left in the checkout would put stale
    # modules into the wheel and hide a missing package.
    tree = tmp_path / "tree"
    shutil.copytree(
        ROOT,
        tree,
        ignore=shutil.ignore_patterns(
            ".git",
            "build",
            "dist",
            "*.egg-info",
            ".venv*",
            "__pycache__",
            "xpkit-demo",
            "out",
            "spark-warehouse",
            "test-artifacts",
        ),  # fmt: skip
    )
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(wheels),
            str(tree),
        ],
        check=True,
    )
    (wheel,) = wheels.glob("xpkit-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Dependencies from this environment; a .pth inside it (the editable install of the
    # checkout) is not processed when the folder is added by a path file.
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            site,
            str(wheel),
        ],
        check=True,
    )
    modules = source_modules()
    assert "xpkit.compile.statements" in modules and "xpkit.engines.spark" in modules
    script = (
        "import importlib, sys\n"
        f"site = {site!r}\n"
        "for name in sys.argv[1:]:\n"
        "    if name == 'xpkit.engines.spark':\n"
        "        continue  # needs the optional pyspark; its file is checked below\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(site), (name, module.__file__)\n"
        "import xpkit.engines, pathlib\n"
        "assert (pathlib.Path(xpkit.engines.__file__).parent / 'spark.py').is_file()\n"
        "from xpkit.compile.templates import render_template\n"
        "assert 'WITH' in importlib.resources.files('xpkit.sql_templates')"
        ".joinpath('moments.sql.j2').read_text()\n"
        "from xpkit.output.report import TEMPLATE\n"
        "assert '<!doctype html>' in importlib.resources.files('xpkit.output')"
        ".joinpath(TEMPLATE).read_text()\n"
        "print('ok', len(sys.argv) - 1)\n"
    )
    script = script.replace("import importlib, sys", "import importlib, importlib.resources, sys")
    out = subprocess.run(
        [str(python), "-c", script, *modules],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.stdout.strip() == f"ok {len(modules)}"
