"""The ``xpkit`` command line.

Exit codes: 0 ok; 1 internal error; 2 bad input (config, metric, missing table/column);
3 the run completed but a result is invalid (SRM or another gate tripped).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from xpkit import __version__
from xpkit.errors import (
    EXIT_INTERNAL,
    EXIT_INVALID_RESULT,
    EXIT_OK,
    XpkitError,
)

# Everything else is imported by the command that needs it: `xpkit --version` and
# `--help` load click alone, and a run loads neither the report's Plotly nor scipy.stats.
if TYPE_CHECKING:
    from xpkit.config import LoadedConfig
    from xpkit.define.registry import MetricRegistry
    from xpkit.engines import Engine
    from xpkit.output.terminal import Style
    from xpkit.runner import ExperimentRun

# The dialects `xpkit sql --dialect` prints (xpkit.compile.DIALECTS, which a test keeps
# equal to this list): named here so that building the command loads no SQL machinery.
DIALECT_NAMES = ("duckdb", "spark", "bigquery", "snowflake", "trino", "postgres")


def run_all(*args: Any, **kwargs: Any) -> list[ExperimentRun]:
    """:func:`xpkit.runner.run_all`, imported on the first call."""
    from xpkit.runner import run_all as run

    return run(*args, **kwargs)


class _NoPandasForPyarrow:
    """An import hook refusing ``import pandas`` when xpkit's or pyarrow's own code asks.

    pyarrow, when pandas is installed, imports it (about 0.5 s, a third of a run's start-up)
    on its first conversion between Arrow and Python or NumPy values, to recognise pandas
    objects and timestamps; xpkit never hands it one, and pyarrow converts the same values
    the same way without it. Any other importer (a metrics file, PySpark, Plotly) gets
    pandas as usual. Installed only while a command runs, and only if pandas is not
    loaded already.
    """

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name != "pandas":
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
            frame = frame.f_back  # type: ignore[assignment]
        caller = str(frame.f_globals.get("__name__", "")) if frame is not None else ""
        if caller.split(".")[0] in ("xpkit", "pyarrow"):
            raise ModuleNotFoundError("pandas is not needed by xpkit's command line", name=name)
        return None


def _guard(func: Callable[..., int | None]) -> Callable[..., None]:
    """Turn user mistakes into one message and an exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        hook = "pandas" not in sys.modules and _NoPandasForPyarrow not in sys.meta_path
        if hook:
            sys.meta_path.insert(0, _NoPandasForPyarrow)
        try:
            code = func(*args, **kwargs)
        except BrokenPipeError:
            # The reader went away (``xpkit show ... | head``): nothing more to say. Point
            # stdout at devnull so the interpreter's final flush does not fail again.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):  # not a real file (tests)
                pass
            sys.exit(EXIT_OK)
        except XpkitError as err:
            click.echo(f"xpkit: error: {err}", err=True)
            sys.exit(err.exit_code)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception:  # an xpkit bug: say so, with the traceback to report
            click.echo("xpkit: internal error (please report it with this output):", err=True)
            click.echo(traceback.format_exc(), err=True)
            sys.exit(EXIT_INTERNAL)
        finally:
            if hook:
                sys.meta_path.remove(_NoPandasForPyarrow)
        sys.exit(code or EXIT_OK)

    return wrapper


def _registry(config: LoadedConfig | None, metrics_dir: str | None) -> MetricRegistry:
    """``--metrics-dir`` (else the config's folder, else ./metrics) and the shipped metrics."""
    from xpkit.runner import catalogue_for

    return catalogue_for(config, metrics_dir or None)


def _engine(config: LoadedConfig, name: str | None) -> Engine:
    """The engine ``--engine`` names, else the config's ``engine`` setting."""
    from xpkit.runner import engine_for

    return engine_for(config, name)


def _resources(
    config: LoadedConfig,
    memory_limit: str | None,
    threads: int | None,
    temp_directory: Path | None,
) -> LoadedConfig:
    """The config with the command line's --memory-limit/--threads/--temp-directory in it."""
    update: dict[str, Any] = {}
    if memory_limit is not None:
        update["memory_limit"] = memory_limit
    if threads is not None:
        update["threads"] = threads
    if temp_directory is not None:
        update["temp_directory"] = str(temp_directory)
    if not update:
        return config
    return config.model_copy(update={"run": config.run.model_copy(update=update)})


def _check_option(check: str) -> Callable[..., Any]:
    """A click callback running ``xpkit.config``'s function ``check`` on a given value."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        import xpkit.config

        try:
            return getattr(xpkit.config, check)(value)
        except ValueError as err:
            raise click.BadParameter(str(err)) from None

    return callback


def _resource_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--memory-limit, --threads and --temp-directory: DuckDB's resources for the command."""
    func = click.option(
        "--temp-directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where DuckDB spills beyond the memory limit (default: the config's "
        "temp_directory, else a temporary folder removed at the end).",
    )(func)
    func = click.option(
        "--threads",
        type=int,
        default=None,
        callback=_check_option("check_threads"),
        help="DuckDB threads, 1 to 4 per CPU core (default: the config's threads, else all cores).",
    )(func)
    return click.option(
        "--memory-limit",
        default=None,
        callback=_check_option("check_memory_limit"),
        help="DuckDB memory limit, e.g. 2GB, 500MB or 75% (spills to disk beyond it; "
        "default: the config's memory_limit).",
    )(func)


def _style(full: bool = False) -> Style:
    """The terminal's width; colour only on a terminal and never with NO_COLOR set."""
    import shutil

    from xpkit.output.terminal import Style

    color = (
        sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    )
    width = shutil.get_terminal_size((100, 24)).columns
    return Style(width=max(40, min(width, 200)), color=bool(color), full=full)


_engine_option = click.option(
    "--engine",
    "engine_name",
    type=click.Choice(["duckdb", "spark"]),
    default=None,
    help="Where the SQL runs (default: the config's engine setting, duckdb if unset).",
)
_config_option = click.option(
    "--config",
    "config_path",
    default="experiments.toml",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Experiments configuration (TOML).",
)
_metrics_dir_option = click.option(
    "--metrics-dir",
    default=None,
    help="Folder of metric definitions, in place of the config's metrics_dir (default: "
    "metrics_dir, else ./metrics); the metrics shipped with xpkit are added unless the "
    "config sets shipped_metrics = false.",
)
_as_of_option = click.option(
    "--as-of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Analyse data up to this date (default: the last date with data).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xpkit")
def main() -> None:
    """xpkit: metrics as Python classes, SQL where the data lives, trustworthy scorecards.

    \b
    Quick start:
      xpkit demo                               # sample data, sample experiments, scorecards
      xpkit init --assignments a.parquet --facts daily=daily.parquet   # your own tables
      xpkit sql watch_seconds --experiment homepage_ranking_v2 --config xpkit-demo/experiments.toml
      xpkit run --config experiments.toml --out results/
      xpkit show results/
    """


_json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the results as one JSON document on stdout instead of text (shape: README, "
    "Machine-readable output).",
)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty()) and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


class _StepPrinter:
    """The run's steps (runner.RunStep) on stderr, through output.progress.Progress."""

    def __init__(self) -> None:
        import shutil

        from xpkit.output.progress import Progress

        stream = sys.stderr
        width = shutil.get_terminal_size((100, 24)).columns
        self.progress = Progress(stream, live=_is_terminal(stream), width=width)

    def on_step(self, step: Any) -> None:
        self.progress.step(step.experiment_id, step.index, step.total, step.step, step.rows_read)

    def close(self) -> None:
        self.progress.close()


def _progress(show: bool) -> _StepPrinter | None:
    return _StepPrinter() if show else None


def _run_entry(run: ExperimentRun) -> dict[str, Any]:
    from xpkit.output.json_results import run_entry

    return run_entry(
        experiment_id=run.experiment_id,
        run_date=run.run_date,
        run_id=run.run_id,
        scorecard=run.scorecard,
        checks=run.checks,
        history=run.history,
        files=run.paths,
        incremental=run.state.provenance() if run.state is not None else None,
    )


@main.command("sql")
@click.argument("metrics", nargs=-1)
@click.option("--experiment", "experiment_id", required=True, help="Experiment id from the config.")
@click.option(
    "--dialect",
    type=click.Choice(DIALECT_NAMES),
    default=None,
    help="SQL dialect to print (default: the engine's, duckdb or spark).",
)
@click.option(
    "--slice",
    "slices",
    default=None,
    callback=_check_option("parse_slices"),
    help="Slices to break down by, replacing the configured ones (device,country or "
    "device*country).",
)
@_engine_option
@_config_option
@_metrics_dir_option
@_as_of_option
@_resource_options
@_guard
def sql_command(
    metrics: tuple[str, ...],
    experiment_id: str,
    dialect: str | None,
    slices: list[str] | None,
    engine_name: str | None,
    config_path: Path,
    metrics_dir: str | None,
    as_of: Any,
    memory_limit: str | None,
    threads: int | None,
    temp_directory: Path | None,
) -> int:
    """Print the exact SQL that computes METRICS for an experiment.

    Without METRICS, every metric the experiment lists. Columns and dates (first
    assignment, as-of) are read from the configured data, through the engine.

    \b
    Example:
      xpkit sql watch_seconds streamers --experiment homepage_ranking_v2 --dialect spark
    """
    from xpkit.config import load_config
    from xpkit.runner import compile_experiment

    config = _resources(load_config(config_path), memory_limit, threads, temp_directory)
    registry = _registry(config, metrics_dir)
    engine = _engine(config, engine_name)
    try:
        query = compile_experiment(
            config,
            registry,
            experiment_id,
            engine,
            dialect=dialect,
            as_of=as_of.date() if as_of else None,
            metric_names=list(metrics) or None,
            slices=slices,
        )
    finally:
        engine.close()
    click.echo(query.sql)
    return EXIT_OK


@main.command("run")
@_config_option
@click.option(
    "--experiment", "experiment_ids", multiple=True, help="Only these experiment ids (repeatable)."
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the scorecards.",
)
@click.option(
    "--allow-invalid",
    is_flag=True,
    help="Keep effects of invalid experiments in the scorecard (still marked invalid).",
)
@_engine_option
@_resource_options
@click.option(
    "--run-date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Date to file the run under (default: today).",
)
@click.option("--quiet", is_flag=True, help="Print only the files written, and no progress.")
@click.option(
    "--progress",
    "show_progress",
    is_flag=True,
    help="Show each experiment's progress on stderr even when it is not a terminal (a "
    "log); on a terminal it is shown unless --quiet.",
)
@_json_option
@click.option(
    "--slice",
    "slices",
    default=None,
    callback=_check_option("parse_slices"),
    help="Break every effect down by these assignment-time columns, for one --experiment "
    "(replacing its configured slices): device,country, or device*country for a two-way "
    "breakdown.",
)
@click.option(
    "--history",
    is_flag=True,
    help="Also write the daily history (effects as of each day, always-valid p-values and intervals) to the history tables.",
)
@click.option(
    "--incremental",
    is_flag=True,
    help="Keep per-unit state between runs and scan only the days since the last run (and "
    "recent days whose rows changed): the same results as a full run, at the cost of the "
    "new days. The state goes in --state or the config's state folder.",
)
@click.option(
    "--state",
    "state_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the incremental state (with --incremental; default: the config's state).",
)
@_metrics_dir_option
@_as_of_option
@_guard
def run_command(
    config_path: Path,
    experiment_ids: tuple[str, ...],
    out_dir: Path,
    allow_invalid: bool,
    engine_name: str | None,
    memory_limit: str | None,
    threads: int | None,
    temp_directory: Path | None,
    run_date: Any,
    quiet: bool,
    show_progress: bool,
    as_json: bool,
    slices: list[str] | None,
    history: bool,
    incremental: bool,
    state_dir: Path | None,
    metrics_dir: str | None,
    as_of: Any,
) -> int:
    """Compute scorecards for the configured experiments and write them to Parquet.

    Exits 3 (after writing everything) when any experiment's result is invalid. With
    --json, stdout is one JSON document of the runs (scorecards, checks, decisions, the
    files written); progress and errors go to stderr.

    \b
    Example:
      xpkit run --config experiments.toml --out results/ --experiment homepage_ranking_v2
      xpkit run --config experiments.toml --out results/ --incremental --state state/
    """
    from xpkit.config import load_config

    config = _resources(load_config(config_path), memory_limit, threads, temp_directory)
    registry = _registry(config, metrics_dir)
    ids = list(experiment_ids) or [e.id for e in config.run.experiment]
    for experiment_id in ids:
        config.experiment(experiment_id)  # unknown ids fail before any work
    if slices is not None and len(ids) != 1:
        raise click.UsageError(
            "--slice computes slices on demand for one experiment: add --experiment ID "
            "(slices for every run of an experiment go in its config: slices = [...])"
        )
    from xpkit.output.storage import check_out_folder

    check_out_folder(out_dir, config.run.tables)
    state = _state_folder(incremental, state_dir, config)
    entries: list[dict[str, Any]] = []

    def published(run: ExperimentRun) -> None:
        # Each experiment's result and "wrote" lines as soon as it is published.
        if run.state is not None and not quiet:
            # What an incremental run recomputed in full, restated or could not keep.
            for note in run.state.notes:
                click.echo(f"xpkit: {run.experiment_id}: incremental: {note}", err=True)
        if as_json:
            entries.append(_run_entry(run))
            return
        if not quiet:
            from xpkit.output.terminal import render_scorecard  # not for --quiet or --json

            click.echo(render_scorecard(run.scorecard, run.checks, _style()))
            click.echo("")
        for path in run.paths:
            click.echo(f"wrote {path}")

    progress = _progress(show_progress or (not quiet and _is_terminal(sys.stderr)))
    try:
        runs = run_all(
            config,
            registry,
            ids,
            out_dir,
            engine_name=engine_name,
            as_of=as_of.date() if as_of else None,
            run_date=run_date.date() if run_date else None,
            allow_invalid=allow_invalid,
            history=history,
            on_published=published,
            slices=slices,
            on_step=None if progress is None else progress.on_step,
            state_dir=state,
            lookback=config.run.restatement_lookback,
        )
    finally:
        if progress is not None:
            progress.close()
    if as_json:
        from xpkit.output.json_results import dumps, runs_document

        click.echo(dumps(runs_document("run", entries)))
    invalid = [r.experiment_id for r in runs if not r.valid]
    if invalid:
        click.echo(f"xpkit: INVALID results for: {', '.join(invalid)} (exit 3)", err=True)
        return EXIT_INVALID_RESULT
    return EXIT_OK


def _state_folder(incremental: bool, state_dir: Path | None, config: LoadedConfig) -> Path | None:
    """The incremental state's folder, or None for a full run."""
    if not incremental:
        if state_dir is not None:
            raise click.UsageError(
                "--state is the folder of an incremental run's state: add --incremental "
                "to run incrementally (without it, the run recomputes everything and leaves "
                "the state alone)"
            )
        return None
    folder = state_dir or (Path(config.run.state) if config.run.state else None)
    if folder is None:
        raise click.UsageError(
            "--incremental keeps per-unit state between runs: give it a folder with --state "
            'DIR, or set state = "state" in the config'
        )
    if folder.exists() and not folder.is_dir():
        raise click.UsageError(f"--state {folder} is a file; give a folder")
    return folder


def _fraction(value: str, option: str, example: str) -> tuple[float, bool]:
    """``2%`` -> (0.02, True); ``0.02`` -> (0.02, False); anything else is refused."""
    text = value.strip()
    percent = text.endswith("%")
    body = text[:-1].strip() if percent else text
    try:
        number = float(body)
    except ValueError:
        number = float("nan")
    if number != number or number in (float("inf"), float("-inf")):
        raise click.BadParameter(
            f"{value!r} is not a number or a percentage like {example}", param_hint=option
        )
    return (number / 100 if percent else number), percent


def _percent(value: str) -> float:
    """A relative effect: ``2%`` or ``0.02``; a bare number of 1 or more would be >= 100%."""
    number, percent = _fraction(value, "--mde", "2%")
    if not number > 0:
        raise click.BadParameter(
            f"{value!r}: the effect to detect must be above 0, e.g. 2% or 0.02", param_hint="--mde"
        )
    if not percent and number >= 1:
        raise click.BadParameter(
            f"{value!r} would mean {number:.0%}; write a percentage such as {value.strip()}% or "
            f"a fraction such as {number / 100:g}",
            param_hint="--mde",
        )
    return number


def _power(value: str) -> float:
    """The power to plan for: ``80%`` or ``0.8``, strictly between 0 and 1."""
    number, percent = _fraction(value, "--power", "80%")
    if not percent and number > 1:
        raise click.BadParameter(
            f"{value!r} would mean {number:.0%}; write a percentage such as {value.strip()}% or "
            f"a fraction such as {number / 100:g}",
            param_hint="--power",
        )
    if not 0 < number < 1:
        raise click.BadParameter(
            f"{value!r}: must be between 0 and 1 (0% and 100%), e.g. 80% or 0.8",
            param_hint="--power",
        )
    return number


def _parsed(parse: Callable[[str], float]) -> Callable[..., float]:
    def callback(ctx: click.Context, param: click.Parameter, value: str) -> float:
        return parse(value)

    return callback


@main.command("power")
@click.option(
    "--experiment", "experiment_id", required=True, help="Experiment whose data to plan from."
)
@click.option("--metric", "metric_name", required=True, help="Metric to plan for.")
@click.option(
    "--mde",
    "mde_relative",
    default="2%",
    show_default=True,
    callback=_parsed(_percent),
    help="Relative minimum detectable effect: a percentage (2%) or a fraction (0.02); a "
    "bare number of 1 or more is refused (it would mean 100% or more).",
)
@click.option(
    "--power",
    "power_level",
    default="0.8",
    show_default=True,
    callback=_parsed(_power),
    help="The power to plan for: 80% or 0.8.",
)
@_json_option
@_engine_option
@_config_option
@_metrics_dir_option
@_resource_options
@_guard
def power_command(
    experiment_id: str,
    metric_name: str,
    mde_relative: float,
    power_level: float,
    as_json: bool,
    engine_name: str | None,
    config_path: Path,
    metrics_dir: str | None,
    memory_limit: str | None,
    threads: int | None,
    temp_directory: Path | None,
) -> int:
    """Units and days needed to detect an effect, from the per-unit variance in real data.

    The variance comes from the pre-period through the same generated SQL a run uses, and
    the CUPED reduction from how well the covariates predict the metric.

    \b
    Example:
      xpkit power --experiment homepage_ranking_v2 --metric watch_seconds --mde 2%
    """
    from xpkit.config import load_config
    from xpkit.output.terminal import render_plan
    from xpkit.planner import power_plan

    config = _resources(load_config(config_path), memory_limit, threads, temp_directory)
    registry = _registry(config, metrics_dir)
    engine = _engine(config, engine_name)
    try:
        result = power_plan(
            config,
            registry,
            experiment_id,
            metric_name,
            engine,
            mde_relative=mde_relative,
            power=power_level,
        )
    finally:
        engine.close()
    if as_json:
        from xpkit.output.json_results import dumps, power_document

        click.echo(dumps(power_document(experiment_id, result)))
    else:
        click.echo(render_plan(result))
    return EXIT_OK


@main.command("show")
@click.argument("out_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--experiment", "experiment_id", default=None, help="Only this experiment id.")
@click.option(
    "--run-date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="The run filed under this date (default: each experiment's newest).",
)
@click.option("--full", is_flag=True, help="Every check's detail and every day of the history.")
@_json_option
@_guard
def show_command(
    out_dir: Path, experiment_id: str | None, run_date: Any, full: bool, as_json: bool
) -> int:
    """Print the newest committed run of each experiment under DIR (the --out of run).

    Only committed runs are read (through their manifests), each whole: its scorecard,
    checks and, when it has one, the history of that same run. With --json, one JSON
    document of those runs (the shape of run --json).

    \b
    Example:
      xpkit show results/ --experiment homepage_ranking_v2 --run-date 2024-04-05
    """
    from xpkit.output.storage import read_run, select_runs
    from xpkit.output.terminal import render_history, render_scorecard
    from xpkit.output.validate import run_is_valid, validate_scorecard

    selected = select_runs(out_dir, experiment_id, run_date.date() if run_date else None)
    runs = [read_run(manifest) for manifest in selected]
    invalid = []
    style = _style(full)
    entries = []
    for i, run in enumerate(runs):
        scorecard = validate_scorecard(run.scorecard, out_dir)
        if as_json:
            from xpkit.output.json_results import run_entry

            manifest = run.manifest
            entries.append(
                run_entry(
                    experiment_id=manifest.experiment_id,
                    run_date=manifest.run_date,
                    run_id=manifest.run_id,
                    scorecard=scorecard,
                    checks=run.checks,
                    history=run.history,
                    files=[*(manifest.file(kind) for kind in manifest.files), manifest.path],
                    incremental=manifest.incremental,
                )
            )
        else:
            if i:
                click.echo("")
            click.echo(render_scorecard(scorecard, run.checks, style))
            if run.history is not None:
                click.echo("")
                click.echo(render_history(run.history, style=style))
        if not run_is_valid(run.scorecard, run.checks):
            invalid.append(str(run.manifest.experiment_id))
    if as_json:
        from xpkit.output.json_results import dumps, runs_document

        click.echo(dumps(runs_document("show", entries)))
    if invalid:
        click.echo(f"xpkit: INVALID results for: {', '.join(invalid)} (exit 3)", err=True)
        return EXIT_INVALID_RESULT
    return EXIT_OK


@main.command("report")
@click.argument("out_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--experiment", "experiment_id", default=None, help="Only this experiment id.")
@click.option(
    "--run-date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="The runs filed under this date (default: each experiment's newest).",
)
@click.option(
    "--out",
    "out_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML file to write.",
)
@_guard
def report_command(out_dir: Path, experiment_id: str | None, run_date: Any, out_file: Path) -> int:
    """Write one self-contained HTML report of the committed runs under DIR.

    Decisions, health checks, a forest plot of the lifts, the effect over time and the
    provenance of each experiment's newest run (or --experiment, --run-date). It reads
    only the published files and works offline.

    \b
    Example:
      xpkit report results/ --out report.html
    """
    from xpkit.output.report import write_report

    day = run_date.date() if run_date else None
    click.echo(f"wrote {write_report(out_dir, out_file, experiment_id, day)}")
    return EXIT_OK


@main.command("notebook")
@_config_option
@click.option("--experiment", "experiment_id", required=True, help="Experiment id from the config.")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--run-date", type=click.DateTime(formats=["%Y-%m-%d"]), help="As xpkit run's.")
@click.option("--history", is_flag=True, help="Also compute the daily history.")
@_metrics_dir_option
@_as_of_option
@_guard
def notebook_command(
    config_path: Path,
    experiment_id: str,
    out_file: Path,
    run_date: Any,
    history: bool,
    metrics_dir: str | None,
    as_of: Any,
) -> int:
    """Write a Jupyter notebook that reproduces a scheduled run of one experiment.

    It runs the same config, metrics and SQL as xpkit run with these options, through the
    Python API, shows the report's tables and charts, and has a marked cell to change a
    metric's definition and re-run.

    \b
    Example:
      xpkit notebook --experiment homepage_ranking_v2 --history --out homepage.ipynb
    """
    from xpkit.api.notebook import write_notebook

    day, until = (d.date() if d else None for d in (run_date, as_of))
    path = write_notebook(
        out_file,
        config_path,
        experiment_id,
        metrics_dir=metrics_dir,
        run_date=day,
        as_of=until,
        history=history,
    )
    click.echo(f"wrote {path}")
    return EXIT_OK


@main.command("init")
@click.option(
    "--assignments",
    "assignments",
    required=True,
    help="The assignment table: a Parquet or CSV file, folder or glob (with --database, a "
    "table of it).",
)
@click.option(
    "--facts",
    "facts",
    multiple=True,
    required=True,
    metavar="NAME=PATH",
    help="A fact table and the name metrics will call it by (repeatable), e.g. "
    "engagement_daily=data/daily/*.parquet.",
)
@click.option(
    "--database",
    default=None,
    help="A .duckdb file holding the tables (then --assignments and --facts name tables).",
)
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="ROLE=COLUMN",
    help="An assignment column that cannot be guessed: experiment, unit, variant, timestamp "
    "or exposed (exposed=false: no exposure column). Repeatable.",
)
@click.option(
    "--out",
    "out_dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where experiments.toml and metrics/starter.py go (never over existing files).",
)
@_guard
def init_command(
    assignments: str,
    facts: tuple[str, ...],
    database: str | None,
    columns: tuple[str, ...],
    out_dir: Path,
) -> int:
    """Write a starter experiments.toml and metrics module for your own tables.

    Reads the tables' columns: the assignment columns are guessed from their names and
    types, each fact table becomes a Source (its unit and date columns guessed) and each
    numeric column a Metric. Check the guesses it prints, then run.

    \b
    Example:
      xpkit init --assignments data/assignments.parquet \\
                 --facts engagement_daily='data/daily/*.parquet' --out my-project
    """
    from xpkit.starter import plan_starter, write_starter

    starter = plan_starter(assignments, facts, out_dir, database=database, columns=columns)
    for path in write_starter(starter):
        click.echo(f"wrote {path}")
    for guess in starter.guesses:
        click.echo(f"  guessed: {guess}")
    config = starter.config_path
    click.echo("next (check the guesses and the experiments' weights in the config first):")
    click.echo(f"  xpkit metrics --config {config}")
    click.echo(f"  xpkit run --config {config} --out {out_dir / 'results'}")
    return EXIT_OK


@main.command("metrics")
@click.option(
    "--config",
    "config_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Experiments configuration whose metrics_dir and shipped_metrics to use "
    "(default: experiments.toml when there is one).",
)
@_metrics_dir_option
@_guard
def metrics_command(config_path: Path | None, metrics_dir: str | None) -> int:
    """List the metrics a config's experiments can use: name, kind, source table, file,
    and description (the class docstring).

    \b
    Example:
      xpkit metrics --config experiments.toml
    """
    import shutil

    from xpkit.config import load_config
    from xpkit.output.catalogue import render_catalogue

    if config_path is None and Path("experiments.toml").is_file():
        config_path = Path("experiments.toml")
    config = load_config(config_path) if config_path is not None else None
    registry = _registry(config, metrics_dir)
    width = min(80, shutil.get_terminal_size((80, 24)).columns)
    click.echo(render_catalogue(registry, width=width))
    return EXIT_OK


@main.command("sample-data")
@click.option("--members", type=int, default=40_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@_guard
def sample_data_command(members: int, seed: int, out_dir: Path) -> int:
    """Generate the sample tables (Parquet), their true effects and an experiments.toml.

    \b
    Example:
      xpkit sample-data --members 1000000 --seed 7 --out data/
    """
    from xpkit.sample_data.generate import write_sample

    if members < 100:
        raise click.BadParameter("must be at least 100", param_hint="--members")
    write_sample(out_dir, members=members, seed=seed)
    click.echo(f"wrote sample data for {members} members to {out_dir}")
    return EXIT_OK


@main.command("demo")
@click.option(
    "--dir",
    "demo_dir",
    default="xpkit-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the sample data and scorecards go (reused when present).",
)
@click.option("--members", type=int, default=200_000, show_default=True)
@_resource_options
@_guard
def demo_command(
    demo_dir: Path,
    members: int,
    memory_limit: str | None,
    threads: int | None,
    temp_directory: Path | None,
) -> int:
    """Build (or reuse) the sample data, run the sample experiments, print the scorecards.

    The sample includes an experiment with a deliberate sample-ratio mismatch and one
    with an exposure-logging bug: the demo shows them flagged, and still exits 0.
    """
    import json

    from xpkit.config import load_config
    from xpkit.output.terminal import render_scorecard

    manifest = demo_dir / "manifest.json"
    config_path = demo_dir / "experiments.toml"
    fresh = True
    if manifest.exists() and config_path.exists():
        fresh = json.loads(manifest.read_text()).get("members") != members
    if fresh:
        click.echo(f"generating sample data ({members} members) in {demo_dir} ...")
        from xpkit.sample_data.generate import write_sample

        write_sample(demo_dir, members=members, seed=7)
    else:
        click.echo(f"reusing sample data in {demo_dir}")
    config = _resources(load_config(config_path), memory_limit, threads, temp_directory)
    registry = _registry(config, None)
    ids = [e.id for e in config.run.experiment]
    progress = _progress(_is_terminal(sys.stderr))
    try:
        runs = run_all(
            config,
            registry,
            ids,
            demo_dir / "results",
            on_step=None if progress is None else progress.on_step,
        )
    finally:
        if progress is not None:
            progress.close()
    for run in runs:
        click.echo(render_scorecard(run.scorecard, run.checks, _style()))
        click.echo("")
    flagged = [r.experiment_id for r in runs if not r.valid]
    click.echo(f"scorecards written under {demo_dir / 'results'}")
    click.echo(
        f"flagged as invalid (deliberate defects in the sample data): {', '.join(flagged) or 'none'}"
    )
    click.echo(f"next: xpkit show {demo_dir / 'results'}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    main()
