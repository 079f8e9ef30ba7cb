"""One experiment, end to end: resolve dates -> compile -> run -> moments -> stats -> scorecard.

Each step is a plain call into its own module with a typed value between them; this module
only orders them and carries provenance along.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa

from xpkit import __version__
from xpkit.compile import (
    CompiledQuery,
    ExperimentDates,
    check_columns,
    compile_bounds,
    compile_exposure_health,
    compile_moments,
    compile_rows_after,
)
from xpkit.config import LoadedConfig
from xpkit.decide.analysis import MetricInfo, analyse
from xpkit.decide.decision import decide
from xpkit.decide.health import (
    data_checks,
    exposure_checks,
    failed_gates,
    run_checks,
    sample_checks,
)
from xpkit.decide.history import AlwaysValid, build_history, last_looks
from xpkit.decide.stopping import (
    calendar_end,
    family_always_valid_p,
    family_size,
    primary_looks,
    stopping_verdict,
)
from xpkit.define.metric import Metric
from xpkit.define.registry import MetricRegistry
from xpkit.engines import Engine, open_engine
from xpkit.errors import ConfigError, DataError, MetricDefinitionError
from xpkit.output.storage import publish, recorded_fractions
from xpkit.output.tables import (
    Provenance,
    build_checks,
    build_history_table,
    build_scorecard,
)
from xpkit.readout import (
    assignment_counts,
    daily_counts,
    read_cells,
    read_history,
    read_moments,
)


@dataclass(frozen=True)
class ExperimentRun:
    experiment_id: str
    run_date: date
    scorecard: pa.Table
    checks: pa.Table
    valid: bool
    sql: str
    paths: tuple[Path, ...] = ()
    history: pa.Table | None = None
    run_id: str | None = None  # set once published


def resolve_metrics(
    config: LoadedConfig,
    registry: MetricRegistry,
    experiment_id: str,
    names: Sequence[str] | None = None,
) -> list[type[Metric]]:
    """The experiment's metrics (or ``names``), as classes; unknown names name the field."""
    experiment = config.experiment(experiment_id)
    if names is not None:
        return registry.resolve(names)
    try:
        return registry.resolve(experiment.all_metrics)
    except MetricDefinitionError as err:
        raise ConfigError(f"{config.path}: experiment[{experiment_id}].metrics: {err}") from None


@dataclass(frozen=True)
class DataBounds:
    """What the bounds statement found: the dates, and the data's defects it can see."""

    dates: ExperimentDates
    null_unit_rows: int
    null_timestamp_rows: int
    future_rows: dict[str, int]  # source table -> rows dated after today (or the run date)


def resolve_dates(
    config: LoadedConfig,
    metrics: Sequence[type[Metric]],
    experiment_id: str,
    engine: Engine,
    as_of: date | None = None,
    run_date: date | None = None,
) -> DataBounds | None:
    """First/last assignment date and the as-of date; None when nothing was assigned.

    The as-of date defaults to the earliest of the sources' last dates (a window is
    complete only when every source has data through its end), and never passes the run
    date (a re-run of an earlier day reads the data as it was then). Rows dated after
    today cannot be real: they are counted, a failed health check, rather than trusted.
    An explicit ``as_of`` past what every source has data for is refused: windows would
    count as complete while their last days are missing.
    """
    experiment = config.experiment(experiment_id)
    run_date = run_date or datetime.now(UTC).date()
    bounds = compile_bounds(experiment, metrics, config.run.assignments, dialect=engine.dialect)
    row = engine.query(bounds.sql).to_pylist()[0]
    first, last = row.pop("first_assignment_date"), row.pop("last_assignment_date")
    null_units, null_times = (
        int(row.pop("null_unit_rows") or 0),
        int(row.pop("null_timestamp_rows") or 0),
    )
    if first is None:
        return None
    sources = {m.source.name: m.source for m in metrics}
    last_dates = {
        sources[k.removeprefix("last_date__")]: d for k, d in row.items() if d is not None
    }
    if not last_dates:
        raise DataError(f"experiment {experiment_id!r}: the metric sources have no rows")
    today = max(run_date, datetime.now(UTC).date())
    future = {}
    for source, day in list(last_dates.items()):
        if day > today:
            sql = compile_rows_after(source, today, dialect=engine.dialect).sql
            found = engine.query(sql).to_pylist()[0]
            future[source.table] = int(found["n_rows"])
            last_dates[source] = found["last_date"] or day
    data_through = min(min(last_dates.values()), run_date)
    if as_of is None:
        as_of = data_through
    elif as_of > data_through:
        have = ", ".join(f"{s.table!r} through {d}" for s, d in last_dates.items())
        raise DataError(
            f"{config.path}: experiment {experiment_id!r}: --as-of {as_of} is after the data "
            f"({have}; run date {run_date}): windows ending after {data_through} would count "
            f"as complete with days missing. Give an as-of date on or before {data_through}, "
            f"or leave it out to use the last date every source has"
        )
    return DataBounds(
        dates=ExperimentDates(first_assignment=first, last_assignment=last, as_of=as_of),
        null_unit_rows=null_units,
        null_timestamp_rows=null_times,
        future_rows=future,
    )


def compile_experiment(
    config: LoadedConfig,
    registry: MetricRegistry,
    experiment_id: str,
    engine: Engine,
    *,
    dialect: str | None = None,
    as_of: date | None = None,
    metric_names: Sequence[str] | None = None,
) -> CompiledQuery:
    """The moments statement for an experiment, checked against the real schema."""
    metrics = resolve_metrics(config, registry, experiment_id, metric_names)
    check_schema(config, metrics, engine)
    bounds = resolve_dates(config, metrics, experiment_id, engine, as_of)
    if bounds is None:
        raise DataError(
            f"experiment {experiment_id!r}: no rows in the assignment table "
            f"{config.run.assignments.table!r}; check the experiment id"
        )
    return compile_moments(
        config.experiment(experiment_id),
        metrics,
        config.run.assignments,
        bounds.dates,
        dialect=dialect or engine.dialect,
    )


def check_schema(config: LoadedConfig, metrics: Sequence[type[Metric]], engine: Engine) -> None:
    tables = {config.run.assignments.table} | {m.source.table for m in metrics}
    schemas = {}
    for table in tables:
        cols = engine.columns(table)
        if cols is not None:
            schemas[table] = cols
    try:
        check_columns(metrics, config.run.assignments, schemas)
    except DataError as err:
        raise DataError(f"{config.path}: {err}") from None
    log = config.run.exposures
    if log is not None:
        cols = engine.columns(log.table)
        if cols is None:
            raise DataError(f"{config.path}: exposures: table {log.table!r} does not exist")
        missing = [c for c in (log.experiment, log.unit, log.timestamp) if c not in cols]
        if missing:
            raise DataError(
                f"{config.path}: exposures: column(s) {missing} do not exist in table "
                f"{log.table!r} (columns: {', '.join(cols)})"
            )


def run_experiment(
    config: LoadedConfig,
    registry: MetricRegistry,
    experiment_id: str,
    engine: Engine,
    *,
    as_of: date | None = None,
    run_date: date | None = None,
    allow_invalid: bool = False,
    history: bool = False,
    past_fractions: Sequence[float] = (),
) -> ExperimentRun:
    """Everything for one experiment; ``history=True`` also returns the daily history.

    The history comes from the same single statement: its last day is the scorecard's
    population, so asking for it costs no second scan. The always-valid stopping rule needs
    it, so it is computed whenever that rule is in force. ``past_fractions`` are the
    information fractions of this experiment's earlier recorded runs (group-sequential).
    """
    experiment = config.experiment(experiment_id)
    keep_history = history
    history = history or experiment.stopping_rule == "always_valid"
    metrics = resolve_metrics(config, registry, experiment_id)
    check_schema(config, metrics, engine)
    computed_at = datetime.now(UTC)
    run_date = run_date or computed_at.date()
    assignments = config.run.assignments
    bounds = resolve_dates(config, metrics, experiment_id, engine, as_of, run_date)
    dates = bounds.dates if bounds is not None else None

    # One statement returns the assignment counts and every metric's sufficient statistics
    # (per cell; see readout); without any assignment there is nothing to read.
    query = None
    cells = None
    if dates is not None:
        query = compile_moments(experiment, metrics, assignments, dates, dialect=engine.dialect)
        assert query.layout is not None
        cells = read_cells(engine.query(query.sql), query.layout)
    summary = assignment_counts(cells) if cells is not None else []
    checks = run_checks(
        experiment,
        summary,
        exposure_configured=assignments.exposed is not None,
        daily=daily_counts(cells) if cells is not None else [],
        daily_exposed=daily_counts(cells, exposed=True) if cells is not None else [],
    )
    if bounds is not None:
        checks += data_checks(
            experiment,
            n_rows=sum(s.n_rows for s in summary),
            null_unit_rows=bounds.null_unit_rows,
            null_timestamp_rows=bounds.null_timestamp_rows,
            future_rows=bounds.future_rows,
            today=max(run_date, computed_at.date()),
        )
    exposure_counts = None
    if config.run.exposures is not None:
        exposure_sql = compile_exposure_health(
            experiment, assignments, config.run.exposures, dialect=engine.dialect
        )
        exposure_counts = engine.query(exposure_sql.sql).to_pylist()[0]
    checks += exposure_checks(exposure_counts)
    infos: dict[str, MetricInfo] = {}
    results = []
    history_table = None
    always_valid: dict[tuple[str, str], AlwaysValid] = {}
    sql = ""
    rows_read = {assignments.table: sum(s.n_rows for s in summary)}
    if query is not None and cells is not None:
        assert query.layout is not None
        sql = query.sql
        moments = read_moments(cells, query.layout)
        if history:
            # The scorecard's always-valid columns are ITT's: a history that is not written
            # out is built for ITT only.
            populations = query.layout.populations if keep_history else ("itt",)
            by_date = read_history(cells, query.layout, populations)
        for column, table in query.layout.row_counts.items():
            rows_read[table] = rows_read.get(table, 0) + cells.rows_read(column)
        infos = {
            m.name: MetricInfo(m.name, m.kind, m.higher_is_better, query.layout.metrics[m.name])
            for m in metrics
        }
        results = analyse(experiment, infos, moments)
        if history:
            series = build_history(experiment, infos, by_date)
            always_valid = last_looks(series, "itt")
            if keep_history:
                history_table = build_history_table(experiment.id, run_date, series)
        checks += sample_checks(experiment, moments.variants("itt"))
    days = (dates.as_of - dates.first_assignment).days + 1 if dates else 0
    n_by_variant = {r.variant: r.effect.n_treatment for r in results if r.population == "itt"}
    n_control = next((r.effect.n_control for r in results if r.population == "itt"), 0)
    smallest = min([n_control, *n_by_variant.values()]) if results else 0
    n_total = n_control + sum(n_by_variant.values())
    higher = {name: info.higher_is_better for name, info in infos.items()}
    av_p = family_always_valid_p(experiment, always_valid)
    verdicts = {
        variant: stopping_verdict(
            experiment,
            primary_looks(results, variant, higher, av_p),
            n_total=n_total,
            days_observed=days,
            past_fractions=past_fractions,
            family_size=family_size(experiment),
        )
        for variant in experiment.treatments
    }
    decisions = decide(
        experiment,
        infos,
        results,
        checks,
        days_observed=days,
        min_units_observed=smallest,
        stopping=verdicts,
        ended=calendar_end(experiment, days, dates.as_of if dates else None),
    )
    provenance = Provenance(
        computed_at=computed_at,
        xpkit_version=__version__,
        sql_sha256=query.sha256 if query is not None else "",
        config_sha256=config.sha256,
        metric_sha256={m.name: m.definition_sha256() for m in metrics},
        rows_read=rows_read,
    )
    scorecard = build_scorecard(
        experiment,
        infos,
        results,
        checks,
        decisions,
        provenance,
        run_date=run_date,
        as_of=dates.as_of if dates else run_date,
        allow_invalid=allow_invalid,
        always_valid=always_valid,
        verdicts=verdicts,
    )
    return ExperimentRun(
        experiment_id=experiment.id,
        run_date=run_date,
        scorecard=scorecard,
        checks=build_checks(experiment.id, run_date, checks),
        valid=not failed_gates(checks),
        sql=sql,
        history=history_table,
    )


def write_run(run: ExperimentRun, out: Path) -> ExperimentRun:
    """Publish a run's tables under ``out`` as one unit (output/storage.py).

    The returned run carries its run id (in every table too) and the paths written: each
    table's file, then the manifest that commits them.
    """
    tables = {"scorecard": run.scorecard, "checks": run.checks}
    if run.history is not None:
        tables["history"] = run.history
    published = publish(out, run.experiment_id, run.run_date, tables, xpkit_version=__version__)
    manifest = published.manifest
    return replace(
        run,
        scorecard=published.scorecard,
        checks=published.checks,
        history=published.history,
        run_id=manifest.run_id,
        paths=(*(manifest.file(kind) for kind in manifest.files), manifest.path),
    )


def engine_for(
    config: LoadedConfig,
    name: str | None = None,
    *,
    memory_limit: str | None = None,
    threads: int | None = None,
) -> Engine:
    """The engine ``name`` (else the config's ``engine``) over the config's tables."""
    return open_engine(
        name or config.run.engine,
        config.run.tables,
        database=config.run.database,
        memory_limit=memory_limit,
        threads=threads,
        timezone=config.run.timezone,
    )


def run_all(
    config: LoadedConfig,
    registry: MetricRegistry,
    experiment_ids: Sequence[str],
    out_dir: Path,
    *,
    engine_name: str | None = None,
    memory_limit: str | None = None,
    threads: int | None = None,
    as_of: date | None = None,
    run_date: date | None = None,
    allow_invalid: bool = False,
    history: bool = False,
    on_published: Callable[[ExperimentRun], None] | None = None,
) -> list[ExperimentRun]:
    """Run and publish each experiment in turn on one engine (``--engine`` or the config's).

    Every experiment's metrics and columns are checked before the first one runs, so a
    mistake in the third experiment of a config stops the job before anything is written.
    ``on_published`` is called with each run as soon as it is on disk.
    """
    engine = engine_for(config, engine_name, memory_limit=memory_limit, threads=threads)
    try:
        for experiment_id in experiment_ids:
            check_schema(config, resolve_metrics(config, registry, experiment_id), engine)
        runs = []
        filed = run_date or datetime.now(UTC).date()
        for experiment_id in experiment_ids:
            run = run_experiment(
                config,
                registry,
                experiment_id,
                engine,
                as_of=as_of,
                run_date=filed,
                allow_invalid=allow_invalid,
                history=history,
                past_fractions=recorded_fractions(out_dir, experiment_id, filed),
            )
            runs.append(write_run(run, out_dir))
            if on_published is not None:
                on_published(runs[-1])
        return runs
    finally:
        engine.close()
