"""``xpkit notebook``: an exported notebook, executed on a Python kernel, reproduces the
scheduled run.

The scheduled run is ``xpkit run`` of the sample homepage experiment, published. The
notebook exported for the same config and options is executed with nbclient (a
``python3`` kernel, as Jupyter runs it) after a last cell that saves its scorecard: every
row must equal the published scorecard's. Changing a metric in the marked cell changes
that metric's rows, and only those.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from plotly.offline import get_plotlyjs

from tests.test_api import rows
from xpkit.api.notebook import EDIT_TAG
from xpkit.cli import main
from xpkit.output.storage import read_run, select_runs

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

RUN_DATE = "2024-04-05"
HOMEPAGE = "homepage_ranking_v2"
OPTIONS = ["--experiment", HOMEPAGE, "--run-date", RUN_DATE, "--history"]
KEY = ("population", "metric", "variant", "slice_dimension", "slice_value")
ESTIMATES = (
    "metric_sha256",
    "n_control",
    "n_variant",
    "mean_control",
    "mean_variant",
    "abs_effect",
    "abs_ci_low",
    "abs_ci_high",
    "p_value",
)


@pytest.fixture(scope="module")
def scheduled(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the sample whose config runs DuckDB on one thread (so fractional sums are
    bit-identical from run to run), and the scheduled run of it published under out/."""
    here = tmp_path_factory.mktemp("scheduled")
    for name in ("experiment_assignments.parquet", "engagement_daily.parquet", "plays.parquet"):
        (here / name).symlink_to(sample_dir / name)
    config = (sample_dir / "experiments.toml").read_text()
    (here / "experiments.toml").write_text("threads = 1\n" + config)
    ran = CliRunner().invoke(
        main,
        ["run", "--config", str(here / "experiments.toml"), "--out", str(here / "out")]
        + OPTIONS
        + ["--quiet"],
    )
    assert ran.exit_code == 0, ran.output
    return here


def export(folder: Path, name: str) -> Path:
    path = folder / name
    ran = CliRunner().invoke(
        main,
        ["notebook", "--config", str(folder / "experiments.toml"), "--out", str(path)] + OPTIONS,
    )
    assert ran.exit_code == 0, ran.output
    assert ran.output == f"wrote {path}\n"
    return path


def execute(path: Path, scorecard: Path, edit: Any = None) -> Any:
    """Run every cell of the notebook (plus one saving the scorecard) on a python3 kernel."""
    book = nbformat.read(path, as_version=4)
    if edit is not None:
        cell = next(c for c in book.cells if EDIT_TAG in c.metadata.get("tags", []))
        cell.source = edit(cell.source)
    save = f"import pyarrow.parquet as pq\npq.write_table(result.to_arrow(), {str(scorecard)!r})"
    book.cells.append(nbformat.v4.new_code_cell(save))
    client = nbclient.NotebookClient(
        book, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    return book


def published(folder: Path) -> Any:
    [manifest] = select_runs(folder / "out", HOMEPAGE)
    return read_run(manifest).scorecard


def test_the_exported_notebook_reproduces_the_scheduled_run(scheduled: Path) -> None:
    path = export(scheduled, "homepage.ipynb")
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    assert book.metadata.kernelspec.name == "python3"
    [edit] = [c for c in book.cells if EDIT_TAG in c.metadata.get("tags", [])]
    assert edit.source.startswith("# ✏️ EDIT HERE")
    assert "# class WatchSeconds(Metric):" in edit.source
    assert any(c.cell_type == "markdown" and "## ✏️ Change a metric" in c.source for c in book.cells)

    ran = execute(path, scheduled / "scorecard.parquet")
    assert rows(pq.read_table(scheduled / "scorecard.parquet")) == rows(published(scheduled))
    # The run's cell shows the report's sections and charts, Plotly inlined once.
    [shown] = [c for c in ran.cells if c.get("id") == "run"]
    html = shown.outputs[0]["data"]["text/html"]
    charts = re.findall(r'data-chart="xpkit-[0-9a-f]+-0-([a-z0-9-]+)"', html)
    assert charts == ["forest", "history", "slices-0", "slices-1", "dist-0", "dist-1"]
    assert html.count(get_plotlyjs()[:2000]) == 1
    assert "<h3>Health</h3>" in html and "<h3>Provenance</h3>" in html
    text = [c for c in ran.cells if c.get("id") == "sql"][0].outputs[0]["text"]
    assert text.rstrip("\n") == published(scheduled).schema.metadata[b"xpkit.sql"].decode()
    # The executed notebook is still a valid notebook (it is what a scientist saves).
    nbformat.validate(ran)
    assert json.loads(nbformat.writes(ran))["nbformat"] == 4


def uncomment_watch_seconds(source: str) -> str:
    """The marked cell with WatchSeconds uncommented, capped at its median, and changed."""
    block = re.search(r"(?m)^# class WatchSeconds\(Metric\):\n(?:#.*\n)+", source)
    assert block is not None
    code = "\n".join(line.removeprefix("# ").removeprefix("#") for line in block[0].splitlines())
    code += '\n    cap = "p50"\n'
    source = source.replace(block[0], code + "\n")
    return source.replace("changed: list[type[Metric]] = []", "changed = [WatchSeconds]")


def test_a_metric_changed_in_the_marked_cell(scheduled: Path) -> None:
    path = export(scheduled, "changed.ipynb")
    execute(path, scheduled / "changed.parquet", edit=uncomment_watch_seconds)
    mine = rows(pq.read_table(scheduled / "changed.parquet"), ("computed_at", "run_id"))
    theirs = rows(published(scheduled), ("computed_at", "run_id"))
    assert len(mine) == len(theirs)
    for new, old in zip(mine, theirs, strict=True):
        assert [new[k] for k in KEY] == [old[k] for k in KEY]
        if new["metric"] == "watch_seconds":
            assert new["metric_sha256"] != old["metric_sha256"]
            if old["mean_control"] is not None:
                assert new["mean_control"] < old["mean_control"]  # capped at the median
        else:  # its own estimates; the family's adjusted p-values and the plan may move
            assert [new[k] for k in ESTIMATES] == [old[k] for k in ESTIMATES], new["metric"]


def test_mistakes_are_the_command_line_s(sample_dir: Path, tmp_path: Path) -> None:
    config = sample_dir / "experiments.toml"

    def notebook(*args: str) -> Any:
        return CliRunner().invoke(main, ["notebook", "--config", str(config), *args])

    ran = notebook("--experiment", "nope", "--out", str(tmp_path / "x.ipynb"))
    assert ran.exit_code == 2
    assert ran.output == (
        f"xpkit: error: {config}: no experiment with id 'nope' (known: homepage_ranking_v2, "
        "artwork_abc, player_srm, search_exposure_bug)\n"
    )
    empty = tmp_path / "metrics"
    empty.mkdir()
    ran = notebook("--experiment", HOMEPAGE, "--metrics-dir", str(empty), "--out", "x.ipynb")
    assert ran.exit_code == 2
    assert ran.output == (
        f"xpkit: error: {config}: experiment[{HOMEPAGE}].metrics: unknown metric "
        f"'watch_seconds'; metrics in {empty}: (none)\n"
    )
    blocker = tmp_path / "file"
    blocker.write_text("")
    ran = notebook("--experiment", HOMEPAGE, "--out", str(blocker / "x.ipynb"))
    assert ran.exit_code == 2
    assert ran.output == (
        f"xpkit: error: --out {blocker / 'x.ipynb'}: cannot write the notebook (File "
        "exists); choose a file in a folder you can write to\n"
    )
    assert not (tmp_path / "x.ipynb").exists()
