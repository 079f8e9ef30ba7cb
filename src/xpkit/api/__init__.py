"""The Python API: ``xpkit.run`` for notebooks and scripts.

The same path as ``xpkit run``: the configuration goes through the same model, the metrics
through the same registry, and :func:`xpkit.runner.run_all` runs the same SQL on the same
engine and returns the same tables. The API adds what a command line cannot take: a
configuration as a dict, tables as in-memory objects, metrics as classes, a DuckDB
connection of the caller's; nothing is written unless ``out=`` says where (then the run is
published exactly as ``xpkit run --out`` publishes it).

Mistakes raise the command line's exceptions (:mod:`xpkit.errors`) with its messages; a
configuration given as a dict is called "the config" in them, an argument by its name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from xpkit.api.results import (
    Checks,
    Decision,
    Decisions,
    History,
    Result,
    Results,
    RunTable,
    Scorecard,
    plotly_js,
)
from xpkit.config import (
    LoadedConfig,
    check_memory_limit,
    check_table_name,
    check_threads,
    config_from_dict,
    load_config,
    parse_slices,
    resolve_location,
)
from xpkit.define.metric import Metric
from xpkit.define.registry import MetricRegistry, load_metrics, registry_of
from xpkit.errors import ConfigError, MetricDefinitionError
from xpkit.output.storage import check_out_folder, load_manifest
from xpkit.runner import engine_for, run_all

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "Checks",
    "Decision",
    "Decisions",
    "History",
    "Result",
    "Results",
    "RunTable",
    "Scorecard",
    "load_metrics",
    "plotly_js",
    "run",
]

ConfigSource = str | os.PathLike[str] | Mapping[str, Any]
MetricsSource = str | os.PathLike[str] | MetricRegistry | type[Metric] | Iterable[type[Metric]]


# A str is also a Sequence[str]: the first overload wins for one id.
@overload
def run(  # type: ignore[overload-overlap]
    config: ConfigSource,
    experiment: str,
    *,
    tables: Mapping[str, object] | None = ...,
    metrics: MetricsSource | None = ...,
    connection: duckdb.DuckDBPyConnection | None = ...,
    out: str | os.PathLike[str] | None = ...,
    run_date: date | str | None = ...,
    as_of: date | str | None = ...,
    history: bool = ...,
    slices: Sequence[str] | None = ...,
    allow_invalid: bool = ...,
    engine: str | None = ...,
    memory_limit: str | None = ...,
    threads: int | None = ...,
    temp_directory: str | os.PathLike[str] | None = ...,
) -> Result: ...


@overload
def run(
    config: ConfigSource,
    experiment: Sequence[str] | None = ...,
    *,
    tables: Mapping[str, object] | None = ...,
    metrics: MetricsSource | None = ...,
    connection: duckdb.DuckDBPyConnection | None = ...,
    out: str | os.PathLike[str] | None = ...,
    run_date: date | str | None = ...,
    as_of: date | str | None = ...,
    history: bool = ...,
    slices: Sequence[str] | None = ...,
    allow_invalid: bool = ...,
    engine: str | None = ...,
    memory_limit: str | None = ...,
    threads: int | None = ...,
    temp_directory: str | os.PathLike[str] | None = ...,
) -> Results: ...


def run(
    config: ConfigSource,
    experiment: str | Sequence[str] | None = None,
    *,
    tables: Mapping[str, object] | None = None,
    metrics: MetricsSource | None = None,
    connection: duckdb.DuckDBPyConnection | None = None,
    out: str | os.PathLike[str] | None = None,
    run_date: date | str | None = None,
    as_of: date | str | None = None,
    history: bool = False,
    slices: Sequence[str] | None = None,
    allow_invalid: bool = False,
    engine: str | None = None,
    memory_limit: str | None = None,
    threads: int | None = None,
    temp_directory: str | os.PathLike[str] | None = None,
) -> Result | Results:
    """Run experiments of a configuration and return their results.

    ``config``: the path of an experiments TOML file, or a dict with the same fields
    (relative paths in it are relative to the working directory). ``experiment``: one id
    returns a :class:`Result`; a list of ids, or None for every experiment of the config,
    returns :class:`Results` (a mapping by id, in the config's order).

    ``tables`` maps logical table names to data, over the config's ``[tables]``: a pandas
    or polars DataFrame, a pyarrow Table or Dataset, a DuckDB relation (of ``connection``),
    or a location as in ``[tables]`` (a Parquet path or glob relative to the working
    directory, or a table name). ``metrics``: Metric classes, a metrics folder's path, or a
    registry (default: the config's ``metrics_dir``, else ``./metrics``, else the metrics
    shipped with xpkit). ``connection``: a DuckDB connection to run on, whose tables the
    config may name; it is left as it was found.

    ``out``: publish every run under this folder as ``xpkit run --out`` does (and count its
    earlier runs as the group-sequential rule's looks); without it nothing is written and
    each run is a first look. ``run_date``, ``as_of``, ``history``, ``slices`` (one
    experiment only), ``allow_invalid``, ``engine``, ``memory_limit``, ``threads`` and
    ``temp_directory`` are ``xpkit run``'s options of the same names.

    An invalid result (a failed health gate) is returned, not raised: its ``valid`` is
    False, its decision "invalid", and its display leads with why.
    """
    loaded = _config(config)
    loaded, frames = _with_tables(loaded, tables)
    registry = _registry(loaded, metrics)
    ids = _experiment_ids(loaded, experiment)
    picked = _slices(slices, ids)
    day, as_of_day = _date(run_date, "run_date"), _date(as_of, "as_of")
    if memory_limit is not None:
        memory_limit = _checked(memory_limit, str, check_memory_limit, "memory_limit", "text")
    if threads is not None:
        threads = _checked(threads, int, check_threads, "threads", "a whole number")
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        check_out_folder(out_dir, loaded.run.tables)
    _check_connection(connection)
    on = engine_for(
        loaded,
        engine,
        memory_limit=memory_limit,
        threads=threads,
        temp_directory=None if temp_directory is None else str(temp_directory),
        frames=frames,
        connection=connection,
    )
    try:
        runs = run_all(
            loaded,
            registry,
            ids,
            out_dir,
            engine=on,
            as_of=as_of_day,
            run_date=day,
            allow_invalid=allow_invalid,
            history=history,
            slices=picked,
        )
    finally:
        on.close()
    results = [
        Result(r, load_manifest(out_dir, r.paths[-1]) if out_dir is not None else None)
        for r in runs
    ]
    if isinstance(experiment, str):
        return results[0]
    return Results(results)


def _config(config: ConfigSource) -> LoadedConfig:
    if isinstance(config, Mapping):
        return config_from_dict(config)
    if isinstance(config, str | os.PathLike):
        return load_config(Path(config))
    raise ConfigError(
        f"config: {_a(config)} is not a configuration; give the path of an "
        f"experiments TOML file or a dict with the same fields"
    )


def _with_tables(
    config: LoadedConfig, tables: Mapping[str, object] | None
) -> tuple[LoadedConfig, dict[str, object]]:
    """The config with ``tables``' locations in its ``[tables]``, and the in-memory ones."""
    if tables is None:
        return config, {}
    if not isinstance(tables, Mapping):
        raise ConfigError(
            f"tables: {_a(tables)} is not a mapping; give a dict of logical "
            f"table names to DataFrames, Arrow tables, DuckDB relations or paths"
        )
    cwd = Path.cwd()
    locations: dict[str, str] = {}
    frames: dict[str, object] = {}
    for name, value in tables.items():
        if not isinstance(name, str):
            raise ConfigError(f"tables: the key {name!r} is not a table name (a string)")
        try:
            check_table_name(name)
        except ValueError as err:
            raise ConfigError(f"tables[{name!r}]: {err}") from None
        if isinstance(value, str | os.PathLike):
            location = os.fspath(value)
            resolved = resolve_location(location, cwd)
            if resolved is None:
                raise ConfigError(
                    f"tables[{name!r}]: no file matches {location!r} (a relative path is "
                    f"relative to the working directory, {cwd})"
                )
            locations[name] = resolved
        else:
            frames[name] = value
    merged = {k: v for k, v in config.run.tables.items() if k not in frames} | locations
    run = config.run.model_copy(update={"tables": merged})
    return config.model_copy(update={"run": run}), frames


def _registry(config: LoadedConfig, metrics: MetricsSource | None) -> MetricRegistry:
    """As the command line loads them, or the classes given."""
    if metrics is None:
        return load_metrics(config.metrics_dir) if config.metrics_dir else load_metrics()
    if isinstance(metrics, MetricRegistry):
        return metrics
    if isinstance(metrics, str | os.PathLike):
        return load_metrics(Path(metrics))
    if isinstance(metrics, type):
        return registry_of([metrics])
    if isinstance(metrics, Iterable) and not isinstance(metrics, Mapping):
        return registry_of(metrics)
    raise MetricDefinitionError(
        f"metrics: {_a(metrics)} is not metrics; give a list of Metric "
        f"classes or the path of a metrics folder"
    )


def _experiment_ids(config: LoadedConfig, experiment: str | Sequence[str] | None) -> list[str]:
    if experiment is None:
        return [e.id for e in config.run.experiment]
    ids = [experiment] if isinstance(experiment, str) else list(experiment)
    if not ids or not all(isinstance(i, str) for i in ids):
        raise ConfigError(
            f"experiment: give an experiment id, a list of ids, or None for every "
            f"experiment of the config; got {experiment!r}"
        )
    for experiment_id in ids:
        config.experiment(experiment_id)  # unknown ids fail before any work
    return ids


def _slices(slices: Sequence[str] | None, ids: Sequence[str]) -> list[str] | None:
    if slices is None:
        return None
    if isinstance(slices, str):
        slices = [slices]
    if len(ids) != 1:
        raise ConfigError(
            "slices: slices on demand are for one experiment: give experiment=ID (slices for "
            "every run of an experiment go in its config: slices = [...])"
        )
    try:
        return parse_slices(",".join(slices))
    except ValueError as err:
        raise ConfigError(f"slices: {err}") from None


def _date(value: date | str | None, name: str) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        if isinstance(value, str):
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise ConfigError(f"{name}: {value!r} is not a date; write YYYY-MM-DD")


def _checked(value: Any, kind: type, check: Callable[[Any], Any], name: str, what: str) -> Any:
    """``value`` through the command line's check of the option of the same name."""
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{name}: {value!r} is not {what}")
    try:
        return check(value)
    except ValueError as err:
        raise ConfigError(f"{name}: {err}") from None


def _a(value: object) -> str:
    """``a list``, ``an int``: what a value is, for a message."""
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _check_connection(connection: object) -> None:
    if connection is None:
        return
    import duckdb

    if not isinstance(connection, duckdb.DuckDBPyConnection):
        raise ConfigError(
            f"connection: {_a(connection)} is not a DuckDB connection; pass "
            f"the result of duckdb.connect(...), or leave it out for a private one"
        )
