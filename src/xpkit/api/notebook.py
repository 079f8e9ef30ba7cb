"""An experiment's scheduled run as a Jupyter notebook (``xpkit notebook``).

The notebook reproduces ``xpkit run`` for one experiment through the Python API: it loads
the same configuration file and metrics folder (absolute paths, fixed when it is written),
passes the run's options (run date, as-of date, history), runs the same SQL and shows the
result as the report does. One cell, tagged ``xpkit-edit`` and headed "✏️ Change a
metric", holds the experiment's metric definitions as the folder has them, commented out:
uncommented and changed, a class replaces the folder's metric of the same name in the
cells below. Nothing is written to disk unless the last cell (publish) is uncommented.

The file is nbformat 4.5 JSON written directly (no Jupyter package is needed to write
it); cells have stable ids.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from xpkit import __version__
from xpkit.config import LoadedConfig, load_config
from xpkit.define.metric import Metric
from xpkit.define.registry import default_metrics_dir, load_metrics
from xpkit.errors import BadInputError
from xpkit.files import atomic_path
from xpkit.runner import resolve_metrics

EDIT_TAG = "xpkit-edit"


def _source(text: str) -> list[str]:
    """A cell's source as nbformat stores it: lines, each but the last with its newline."""
    lines = text.strip("\n").split("\n")
    return [line + "\n" for line in lines[:-1]] + lines[-1:]


def _markdown(cell_id: str, text: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": _source(text)}


def _code(cell_id: str, text: str, tags: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "id": cell_id,
        "metadata": {"tags": list(tags)} if tags else {},
        "execution_count": None,
        "outputs": [],
        "source": _source(text),
    }


def _commented(metric: type[Metric], role: str) -> str:
    """A metric's class as its file has it, commented out, under a line saying where."""
    module = sys.modules.get(metric.__module__)
    where = getattr(module, "__file__", None) or metric.__module__
    head = f"# {metric.name} ({role}), from {where}:"
    try:
        body = inspect.getsource(metric)
    except (OSError, TypeError):
        return f"{head}\n# (its source is not available: see that file)"
    lines = [("# " + line).rstrip() for line in body.rstrip("\n").split("\n")]
    return "\n".join([head, *lines])


def _edit_cell(config: LoadedConfig, experiment_id: str, metrics: Sequence[type[Metric]]) -> str:
    experiment = config.experiment(experiment_id)
    sources: dict[str, str] = {}
    for m in metrics:
        sources.setdefault(m.source.__name__, m.name)
    bind = [f"{name} = folder.get({metric!r}).source" for name, metric in sources.items()]
    blocks = [_commented(m, experiment.role(m.name)) for m in metrics]
    first = metrics[0].__name__
    return "\n".join(
        [
            "# ✏️ EDIT HERE: uncomment a metric, change it, list it in `changed`, then run this",
            "# cell and the ones below. A class replaces the folder's metric of the same name.",
            "from xpkit import Metric, Source  # noqa: F401",
            "",
            "# The sources the experiment's metrics read, as the folder defines them:",
            *bind,
            "",
            "\n\n".join(blocks),
            "",
            f"changed: list[type[Metric]] = []  # e.g. [{first}]",
        ]
    )


def notebook(
    config_path: Path,
    experiment_id: str,
    *,
    metrics_dir: str | Path | None = None,
    run_date: date | None = None,
    as_of: date | None = None,
    history: bool = False,
) -> dict[str, Any]:
    """The notebook (nbformat 4.5, as a dict) reproducing ``xpkit run`` of one experiment
    with these options; the config, the experiment and its metrics are checked first, with
    ``xpkit run``'s messages."""
    config = load_config(config_path)
    config.experiment(experiment_id)
    folder = Path(metrics_dir) if metrics_dir else config.metrics_dir or default_metrics_dir()
    registry = load_metrics(folder)
    metrics = resolve_metrics(config, registry, experiment_id)
    options = {
        "run_date": run_date.isoformat() if run_date else None,
        "as_of": as_of.isoformat() if as_of else None,
        "history": history,
    }
    flags = [f"--config {config_path}", f"--experiment {experiment_id}"]
    flags += [f"--run-date {run_date}"] if run_date else []
    flags += [f"--as-of {as_of}"] if as_of else []
    flags += ["--history"] if history else []
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cells = [
        _markdown(
            "intro",
            f"""
# {experiment_id}: the scheduled run, reproduced

Written by `xpkit notebook` (xpkit {__version__}, {made}) from `{config_path}`. Running
every cell computes what this command computes, with the same configuration, metric
definitions and SQL on the same data:

    xpkit run {" ".join(flags)} --out RESULTS

and shows the result as `xpkit report` does: decisions, health checks, effects,
{"their history, " if history else ""}provenance and the SQL.

To try a change, edit the cell marked **✏️ Change a metric** and run the cells from there
down. Nothing is written to disk unless you publish (the last cell).
""",
        ),
        _code(
            "setup",
            f"""
import xpkit

CONFIG = {str(config_path.resolve())!r}
EXPERIMENT = {experiment_id!r}
METRICS_DIR = {str(folder.resolve())!r}
# The scheduled run's options (xpkit run's --run-date, --as-of, --history; None: as a
# scheduled run, today and the last date with data):
OPTIONS = {options!r}

folder = xpkit.load_metrics(METRICS_DIR)  # the metric definitions the scheduled run uses
""",
        ),
        _markdown(
            "edit-intro",
            f"""
## ✏️ Change a metric

The next cell holds this experiment's metrics as `{folder.resolve()}` defines them,
commented out. Uncomment a class, change it (its expression, filter, cap, covariate...),
add it to `changed` and run the cells from there down: a class whose metric name (the
snake_case of the class name, or its `name`) is one of the experiment's replaces the
folder's definition. Clear `changed` to go back to the scheduled run.
""",
        ),
        _code("edit", _edit_cell(config, experiment_id, metrics), tags=[EDIT_TAG]),
        _markdown(
            "run-intro",
            """
## The run

The same statement `xpkit run` executes, on the same engine; nothing is written.
""",
        ),
        _code(
            "run",
            """
metrics = {**folder.metrics, **{m.name: m for m in changed}}
result = xpkit.run(CONFIG, experiment=EXPERIMENT, metrics=list(metrics.values()), **OPTIONS)
result
""",
        ),
        _markdown("table-intro", "## The scorecard as a DataFrame"),
        _code("table", "result.to_pandas()"),
        _markdown("sql-intro", "## The SQL"),
        _code("sql", "print(result.sql)"),
        _markdown(
            "publish-intro",
            """
## Publish (optional)

Writes the run as `xpkit run --out` does: `xpkit show` and `xpkit report` read it, and it
counts as a look of the group-sequential rule. A changed metric is published with its own
definition hash (the scorecard's `metric_sha256`).
""",
        ),
        _code(
            "publish",
            """
# published = xpkit.run(
#     CONFIG, experiment=EXPERIMENT, metrics=list(metrics.values()), out="results/", **OPTIONS
# )
""",
        ),
    ]
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "xpkit": {"config": str(config_path.resolve()), "experiment": experiment_id},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write_notebook(
    path: Path,
    config_path: Path,
    experiment_id: str,
    *,
    metrics_dir: str | Path | None = None,
    run_date: date | None = None,
    as_of: date | None = None,
    history: bool = False,
) -> Path:
    """Write :func:`notebook` to ``path`` (atomically: a failed write leaves the old file)."""
    book = notebook(
        config_path,
        experiment_id,
        metrics_dir=metrics_dir,
        run_date=run_date,
        as_of=as_of,
        history=history,
    )
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(book, indent=1, ensure_ascii=False) + "\n", "utf-8")
            tmp.chmod(0o644)
    except OSError as err:
        raise BadInputError(
            f"--out {path}: cannot write the notebook ({err.strerror or err}); choose a file "
            "in a folder you can write to"
        ) from None
    return path
