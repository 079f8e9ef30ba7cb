"""One experiment, end to end: resolve dates -> compile -> run -> moments -> stats -> scorecard.

Each step is a plain call into its own module with a typed value between them; this module
only orders them and carries provenance along.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from xpkit import __version__
from xpkit.compile import (
    CompiledQuery,
    ExperimentDates,
    SliceRequest,
    check_columns,
    compile_bounds,
    compile_exposure_health,
    compile_moments,
    compile_rows_after,
    slice_sources,
)
from xpkit.compile.statements import (
    PROBE_TIME,
    PROBE_UNIT,
    compile_assignment_probe,
    compile_date_check,
    compile_probe,
)
from xpkit.config import (
    DEFAULT_RESTATEMENT_LOOKBACK,
    ExperimentConfig,
    LoadedConfig,
    UnitAttributes,
    slice_dimensions,
)
from xpkit.decide.analysis import (
    MetricInfo,
    analyse,
    quantile_distributions,
    quantile_effects,
)
from xpkit.decide.decision import decide
from xpkit.decide.health import (
    data_checks,
    exposure_checks,
    failed_gates,
    run_checks,
    sample_checks,
)
from xpkit.decide.history import AlwaysValid, build_history, last_looks
from xpkit.decide.planning import DEFAULT_PLANNED_LOOKS, SequentialPlan, plan_from_pre_period
from xpkit.decide.slices import SliceResult, analyse_slices, slice_checks
from xpkit.decide.stopping import (
    calendar_end,
    family_always_valid_p,
    family_size,
    primary_looks,
    stopping_verdict,
)
from xpkit.define.metric import Metric, Source
from xpkit.define.registry import MetricRegistry, load_catalogue, project_metrics_dir
from xpkit.engines import Engine, open_engine
from xpkit.errors import (
    ConfigError,
    DataError,
    EngineDataError,
    EngineStatementError,
    MetricDefinitionError,
)
from xpkit.layout import MetricLayout
from xpkit.output.storage import publish, recorded_fractions
from xpkit.output.tables import (
    Provenance,
    build_checks,
    build_history_table,
    build_scorecard,
)
from xpkit.readout import (
    HistogramRows,
    MomentsTable,
    assignment_counts,
    combine_cells,
    daily_counts,
    read_cells,
    read_histograms,
    read_history,
    read_moments,
    read_slice_cells,
)
from xpkit.stats.means import _check_binary

if TYPE_CHECKING:
    import duckdb

    from xpkit.incremental import Refreshed, StateStore


@dataclass(frozen=True)
class RunStep:
    """A step of :func:`run_all` starting, for a progress display.

    ``step`` is ``checking`` (every experiment's metrics and columns, ``experiment_id``
    empty), then per experiment ``bounds``, ``statement``, ``statistics`` (``rows_read``:
    the rows the statement read), ``writing`` and ``done``. ``index`` counts the
    experiments from 1 to ``total``.
    """

    experiment_id: str
    index: int
    total: int
    step: str
    rows_read: int | None = None


StepCallback = Callable[[RunStep], None]


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
    # An incremental run's new state, staged: committed once the run is published.
    state: Refreshed | None = None


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
        metrics = registry.resolve(experiment.all_metrics)
    except MetricDefinitionError as err:
        raise ConfigError(f"{config.origin}: experiment[{experiment_id}].metrics: {err}") from None
    sequential = [
        m.name for m in metrics if m.kind == "quantile" and m.name in experiment.primary_metrics
    ]
    if sequential and experiment.stopping_rule != "fixed_horizon":
        raise ConfigError(
            f"{config.origin}: experiment[{experiment_id}]: primary metric(s) {sequential} are "
            f"quantile metrics, which have no sequential test (stopping_rule is "
            f"{experiment.stopping_rule!r}); make them secondary metrics or guardrails "
            f'(another metric primary), or set stopping_rule = "fixed_horizon"'
        )
    return metrics


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
            f"{config.origin}: experiment {experiment_id!r}: --as-of {as_of} is after the data "
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
    slices: Sequence[str] | None = None,
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
    experiment = config.experiment(experiment_id)
    return compile_moments(
        experiment,
        metrics,
        config.run.assignments,
        bounds.dates,
        dialect=dialect or engine.dialect,
        slices=slice_request(config, experiment, metrics, engine, slices),
    )


def slice_request(
    config: LoadedConfig,
    experiment: ExperimentConfig,
    metrics: Sequence[type[Metric]],
    engine: Engine,
    slices: Sequence[str] | None = None,
) -> SliceRequest | None:
    """The experiment's slices (``slices`` overrides the config's), checked against the
    tables: each dimension must be an attribute fixed at assignment."""
    specs = list(experiment.slices if slices is None else slices)
    if not specs:
        return None
    attributes = config.run.unit_attributes
    tables = {config.run.assignments.table} | {m.source.table for m in metrics}
    if attributes is not None:
        tables.add(attributes.table)
    schemas = {t: cols for t in tables if (cols := engine.columns(t)) is not None}
    request = SliceRequest(
        specs=tuple(dict.fromkeys(slice_dimensions(s) for s in specs)),
        top_k=experiment.slice_top_k,
        attributes=attributes,
    )
    try:
        if attributes is not None:
            check_attribute_table(attributes, schemas)
        from_attributes = slice_sources(
            request.dimensions,
            config.run.assignments,
            attributes,
            schemas,
            sorted({m.source.table for m in metrics}),
        )
    except DataError as err:
        raise DataError(f"{config.origin}: experiment {experiment.id!r}: {err}") from None
    return replace(request, from_attributes=from_attributes)


def check_attribute_table(attributes: UnitAttributes, schemas: Mapping[str, Sequence[str]]) -> None:
    columns = schemas.get(attributes.table)
    if columns is None:
        raise DataError(
            f"[unit_attributes]: table {attributes.table!r} is not configured or does not "
            f"exist; add it to [tables]"
        )
    wanted = [attributes.unit] + ([attributes.time] if attributes.time else [])
    missing = [c for c in wanted if c.lower() not in {x.lower() for x in columns}]
    if missing:
        raise DataError(
            f"[unit_attributes]: column(s) {missing} do not exist in table "
            f"{attributes.table!r} (columns: {', '.join(columns)})"
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
        raise DataError(f"{config.origin}: {err}") from None
    probe(config, metrics, engine)
    log = config.run.exposures
    if log is not None:
        cols = engine.columns(log.table)
        if cols is None:
            raise DataError(f"{config.origin}: exposures: table {log.table!r} does not exist")
        missing = [c for c in (log.experiment, log.unit, log.timestamp) if c not in cols]
        if missing:
            raise DataError(
                f"{config.origin}: exposures: column(s) {missing} do not exist in table "
                f"{log.table!r} (columns: {', '.join(cols)})"
            )


def probe(config: LoadedConfig, metrics: Sequence[type[Metric]], engine: Engine) -> None:
    """Cheap statements before the real one, so a mistake names its metric or table.

    One ``LIMIT 0`` per source binds every expression (SUM over text, an unknown function:
    the metric is named); the unit and date columns' types are compared with the
    assignments' (text ids against integer ones, dates stored as text that do not read as
    dates).
    """
    a = config.run.assignments
    assigned = engine.query(compile_assignment_probe(a, dialect=engine.dialect).sql).schema
    _check_date(
        engine, a.table, a.timestamp, assigned.field(PROBE_TIME).type, "assignments", text_ok=True
    )
    by_source: dict[type[Source], list[type[Metric]]] = {}
    for metric in metrics:
        by_source.setdefault(metric.source, []).append(metric)
    for source, group in by_source.items():
        try:
            schema = engine.query(compile_probe(group, dialect=engine.dialect).sql).schema
        except EngineStatementError as err:
            for metric in group:
                try:
                    engine.query(compile_probe([metric], dialect=engine.dialect).sql)
                except EngineStatementError as one:
                    raise MetricDefinitionError(
                        f"metric {metric.name!r} ({_defined_in(metric)}): "
                        f"the {engine.dialect} engine rejects its SQL over table "
                        f"{source.table!r}: {one.reason}; check the functions it calls and "
                        f"the types of the columns it uses "
                        f"({', '.join(sorted(metric.columns_used())) or 'none'})"
                    ) from None
            raise err
        owner = f"metric {group[0].name!r} (source {source.__name__})"
        _check_date(
            engine, source.table, source.time, schema.field(PROBE_TIME).type, owner, text_ok=False
        )
        unit, ids = schema.field(PROBE_UNIT).type, assigned.field(PROBE_UNIT).type
        if _is_text(unit) != _is_text(ids):
            raise DataError(
                f"{owner}: the unit ids do not match: column {source.unit!r} of table "
                f"{source.table!r} is {unit}, the assignments' {a.unit!r} in table "
                f"{a.table!r} is {ids}; store both as the same type (or cast one in a view)"
            )


def _defined_in(metric: type[Metric]) -> str:
    """``metrics/engagement.py, class WatchSeconds``: where to fix it."""
    file = getattr(sys.modules.get(metric.__module__), "__file__", None) or metric.__module__
    return f"{file}, class {metric.__qualname__}"


def _is_text(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype))


def _check_date(
    engine: Engine, table: str, column: str, dtype: pa.DataType, owner: str, *, text_ok: bool
) -> None:
    """A date column must be a DATE or TIMESTAMP; text only where it is cast (and reads)."""
    if not _is_text(dtype):
        return
    fix = "store it as a DATE or TIMESTAMP (or cast it in a view)"
    if not text_ok:  # the fact scans compare it with dates as it is stored
        raise DataError(f"{owner}: column {column!r} of table {table!r} holds text; {fix}")
    row = engine.query(compile_date_check(table, column, dialect=engine.dialect).sql).to_pylist()
    if row and row[0]["bad_rows"]:
        raise DataError(
            f"{owner}: column {column!r} of table {table!r} holds text, and "
            f"{row[0]['bad_rows']} value(s) do not read as a date (e.g. {row[0]['example']!r}); "
            f"{fix}"
        )


def _failing_metric(
    config: LoadedConfig,
    experiment_id: str,
    metrics: Sequence[type[Metric]],
    dates: ExperimentDates,
    engine: Engine,
    err: EngineDataError,
) -> Exception:
    """After the statement failed on the data: the first metric that fails on its own."""
    experiment = config.experiment(experiment_id)
    for metric in metrics:
        alone = compile_moments(
            experiment, [metric], config.run.assignments, dates, dialect=engine.dialect
        )
        try:
            engine.query(alone.sql)
        except EngineDataError as one:
            return DataError(
                f"metric {metric.name!r} ({_defined_in(metric)}): its SQL "
                f"fails on the data of table {metric.source.table!r}: {one.reason}; check its "
                f"expression {metric.expression!r} (a CAST that does not fit the values, an "
                f"integer sum too large for its type: CAST to DOUBLE or BIGINT first)"
            )
    return err


def check_proportions(
    metrics: Sequence[type[Metric]], moments: MomentsTable, layouts: Mapping[str, MetricLayout]
) -> None:
    """A proportion metric's per-unit values must be 0 or 1 in every variant."""
    for metric in metrics:
        if metric.kind != "proportion":
            continue
        for population in ("itt", "tot"):
            for variant in moments.variants(population):
                cell = moments.get(population, variant, metric.name)
                if cell is None:
                    continue
                try:
                    _check_binary(cell, layouts[metric.name].value)
                except ValueError:
                    mean = cell.mean_of(layouts[metric.name].value)
                    raise MetricDefinitionError(
                        f"metric {metric.name!r} ({_defined_in(metric)}) is "
                        f"kind = 'proportion' but its per-unit values are not all 0 or 1 "
                        f"(mean {mean:.4g} in {variant!r}); declare kind = 'mean', or make the "
                        f"expression 0/1 per unit, e.g. MAX(CASE WHEN ... THEN 1 ELSE 0 END)"
                    ) from None


def _no_step(step: str, rows_read: int | None) -> None:
    """Nobody is watching: no progress to report."""


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
    schema_checked: bool = False,
    slices: Sequence[str] | None = None,
    on_step: Callable[[str, int | None], None] | None = None,
    state: StateStore | None = None,
    lookback: int = DEFAULT_RESTATEMENT_LOOKBACK,
) -> ExperimentRun:
    """Everything for one experiment; ``history=True`` also returns the daily history.

    The history comes from the same single statement: its last day is the scorecard's
    population, so asking for it costs no second scan. Its ITT part is always computed: the
    scorecard's always-valid columns come from it whatever the stopping rule (and the
    always-valid rule decides on them). ``past_fractions`` are the
    information fractions of this experiment's earlier recorded runs (group-sequential).
    ``schema_checked`` skips the column check a caller has already made. ``slices``
    replaces the experiment's configured slices (``["device", "device*country"]``).
    ``on_step(step, rows_read)`` is told when each step starts (see :class:`RunStep`).
    ``state`` makes the run incremental (xpkit.incremental): the sources' per-unit values
    come from the state kept there, brought up to date by scanning only the days since
    (and, among the last ``lookback`` days, those whose row counts changed); the new state
    is staged in the returned run, for the caller to commit once the run is published.
    """
    step = on_step or _no_step
    experiment = config.experiment(experiment_id)
    metrics = resolve_metrics(config, registry, experiment_id)
    if not schema_checked:
        check_schema(config, metrics, engine)
    sliced = slice_request(config, experiment, metrics, engine, slices)
    computed_at = datetime.now(UTC)
    run_date = run_date or computed_at.date()
    assignments = config.run.assignments
    step("bounds", None)
    bounds = resolve_dates(config, metrics, experiment_id, engine, as_of, run_date)
    dates = bounds.dates if bounds is not None else None

    # One statement returns the assignment counts and every metric's sufficient statistics
    # (per cell; see readout); without any assignment there is nothing to read.
    query = None
    cells = None
    slice_cells = {}
    histograms: dict[str, HistogramRows] = {}
    refreshed = None
    if dates is not None:
        if state is not None:
            from xpkit.incremental import refresh  # only an incremental run needs it

            step("state", None)
            refreshed = refresh(
                state,
                experiment,
                metrics,
                assignments,
                engine,
                as_of=dates.as_of,
                lookback=lookback,
                context=_state_context(config, experiment, engine),
                cells_context=_cells_context(config, experiment, metrics, sliced),
            )
        query = compile_moments(
            experiment,
            metrics,
            assignments,
            dates,
            dialect=engine.dialect,
            slices=sliced,
            state_sources=refreshed.state_sources if refreshed else None,
            kept_cohorts=refreshed.kept_cohorts if refreshed else (),
            multi_units=refreshed.multi_units if refreshed else None,
        )
        assert query.layout is not None
        step("statement", None)
        try:
            result = engine.query(query.sql)
        except EngineDataError as err:
            raise _failing_metric(config, experiment_id, metrics, dates, engine, err) from None
        if refreshed is not None:
            if refreshed.kept_cells is not None:
                result = combine_cells(refreshed.kept_cells, result, query.layout)
            refreshed.keep_cells(result)
        cells = read_cells(result, query.layout)
        slice_cells = read_slice_cells(result, query.layout)
        histograms = read_histograms(result, query.layout)
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
    checks += exposure_checks(exposure_counts, flagged=assignments.exposed is not None)
    infos: dict[str, MetricInfo] = {}
    results = []
    history_table = None
    moments: MomentsTable | None = None
    slice_results: list[SliceResult] = []
    distributions: dict[str, Any] = {}
    always_valid: dict[tuple[str, str], AlwaysValid] = {}
    sql = ""
    rows_read = {assignments.table: sum(s.n_rows for s in summary)}
    if query is not None and cells is not None:
        assert query.layout is not None
        sql = query.sql
        moments = read_moments(cells, query.layout)
        check_proportions(metrics, moments, query.layout.metrics)
        # The scorecard's always-valid columns are ITT's: a history that is not written
        # out is built for ITT only.
        populations = query.layout.populations if history else ("itt",)
        by_date = read_history(cells, query.layout, populations)
        for column, table in query.layout.row_counts.items():
            rows_read[table] = rows_read.get(table, 0) + cells.rows_read(column)
        for table, n in (refreshed.rows_read if refreshed else {}).items():
            rows_read[table] = rows_read.get(table, 0) + n
        step("statistics", sum(rows_read.values()))
        infos = {
            m.name: MetricInfo(
                m.name,
                m.kind,
                m.higher_is_better,
                query.layout.metrics.get(m.name) or MetricLayout(m.name, m.kind, value=""),
                description=m.description,
            )
            for m in metrics
        }
        quantiles = quantile_effects(
            experiment, histograms, query.layout.quantiles, query.layout.populations
        )
        results = analyse(experiment, infos, moments, quantiles)
        distributions = quantile_distributions(
            experiment, histograms, query.layout.quantiles, query.layout.populations
        )
        series = build_history(experiment, infos, by_date)
        always_valid = last_looks(series, "itt")
        if history:
            history_table = build_history_table(experiment.id, run_date, series)
        checks += sample_checks(experiment, moments.variants("itt"))
        if slice_cells:
            per_slice = slice_checks(experiment, slice_cells)
            checks += per_slice
            slice_results = analyse_slices(experiment, infos, slice_cells, query.layout, per_slice)
    days = (dates.as_of - dates.first_assignment).days + 1 if dates else 0
    n_by_variant = {r.variant: r.effect.n_treatment for r in results if r.population == "itt"}
    n_control = next((r.effect.n_control for r in results if r.population == "itt"), 0)
    smallest = min([n_control, *n_by_variant.values()]) if results else 0
    n_total = n_control + sum(n_by_variant.values())
    higher = {name: info.higher_is_better for name, info in infos.items()}
    av_p = family_always_valid_p(experiment, always_valid)
    plan = _sequential_plan(experiment, infos, moments) if moments is not None else None
    ended = calendar_end(experiment, days, dates.as_of if dates else None)
    verdicts = {
        variant: stopping_verdict(
            experiment,
            primary_looks(results, variant, higher, av_p),
            n_total=n_total,
            days_observed=days,
            past_fractions=past_fractions,
            family_size=family_size(experiment),
            plan=plan,
            final=ended is not None,
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
        ended=ended,
    )
    provenance = Provenance(
        computed_at=computed_at,
        xpkit_version=__version__,
        sql_sha256=query.sha256 if query is not None else "",
        config_sha256=config.sha256,
        metric_sha256={m.name: m.definition_sha256() for m in metrics},
        rows_read=rows_read,
        sql=sql,
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
        slices=slice_results,
        distributions=distributions,
    )
    return ExperimentRun(
        experiment_id=experiment.id,
        run_date=run_date,
        scorecard=scorecard,
        checks=build_checks(experiment.id, run_date, checks),
        valid=not failed_gates(checks),
        sql=sql,
        history=history_table,
        state=refreshed,
    )


def _state_context(
    config: LoadedConfig, experiment: ExperimentConfig, engine: Engine
) -> dict[str, object]:
    """What every source's kept state depends on besides its own accumulators."""
    return {
        "experiment": experiment.id,
        "assignments": config.run.assignments.model_dump(mode="json"),
        "tables": dict(sorted(config.run.tables.items())),
        "database": config.run.database,
        "timezone": config.run.timezone,
        "engine": engine.dialect,
        "xpkit_version": __version__,
    }


def _cells_context(
    config: LoadedConfig,
    experiment: ExperimentConfig,
    metrics: Sequence[type[Metric]],
    sliced: SliceRequest | None,
) -> dict[str, object] | None:
    """What an experiment's cells depend on besides its sources' state, or None when they
    cannot be kept from one run to the next: slices (the top values move with new units),
    quantile metrics (histograms are not per assignment date) and caps at a pooled
    percentile (the cap moves with new units)."""
    if sliced is not None and sliced.specs:
        return None
    if any(m.kind == "quantile" or m.cap_percentile is not None for m in metrics):
        return None
    return {
        "window": list(experiment.window),
        "pre_window": list(experiment.pre_window),
        "exposure": config.run.assignments.exposed,
        "populations": list(experiment.populations),
    }


def write_run(run: ExperimentRun, out: Path) -> ExperimentRun:
    """Publish a run's tables under ``out`` as one unit (output/storage.py).

    The returned run carries its run id (in every table too) and the paths written: each
    table's file, then the manifest that commits them.
    """
    tables = {"scorecard": run.scorecard, "checks": run.checks}
    if run.history is not None:
        tables["history"] = run.history
    published = publish(
        out,
        run.experiment_id,
        run.run_date,
        tables,
        xpkit_version=__version__,
        incremental=run.state.provenance() if run.state is not None else None,
    )
    manifest = published.manifest
    return replace(
        run,
        scorecard=published.scorecard,
        checks=published.checks,
        history=published.history,
        run_id=manifest.run_id,
        paths=(*(manifest.file(kind) for kind in manifest.files), manifest.path),
    )


def _sequential_plan(
    experiment: ExperimentConfig, infos: Mapping[str, MetricInfo], moments: MomentsTable
) -> SequentialPlan | None:
    """The default rule's planned sample when ``planned_units`` is not configured: from the
    first primary metric's pre-period over the experiment's units (all arms pooled)."""
    if experiment.stopping_rule != "group_sequential" or experiment.planned_units is not None:
        return None
    metric = experiment.primary_metrics[0]
    cells = [m for v in moments.variants("itt") if (m := moments.get("itt", v, metric))]
    if not cells:
        return None
    pooled = cells[0]
    for cell in cells[1:]:
        pooled = pooled.merge(cell)
    window, pre = experiment.window, experiment.pre_window
    return plan_from_pre_period(
        metric,
        infos[metric].layout,
        pooled,
        window_days=window[1] - window[0] + 1,
        pre_window_days=pre[1] - pre[0] + 1,
        mde_relative=experiment.planned_mde,
        power=experiment.planned_power,
        alpha=experiment.alpha / family_size(experiment),
        weights=[experiment.weights[experiment.control]]
        + [experiment.weights[v] for v in experiment.treatments],
        looks=experiment.max_days or DEFAULT_PLANNED_LOOKS,
        shape=experiment.spending,
    )


def catalogue_for(
    config: LoadedConfig | None, metrics_dir: str | Path | None = None
) -> MetricRegistry:
    """The metrics a config's experiments can use: ``metrics_dir`` (else the config's
    ``metrics_dir``, else ``./metrics`` when there is one) plus the metrics shipped with
    xpkit, unless the config sets ``shipped_metrics = false``."""
    folder: str | Path | None = metrics_dir
    if folder is None and config is not None:
        folder = config.metrics_dir
    if folder is None:
        folder = project_metrics_dir()
    shipped = config.run.shipped_metrics if config is not None else True
    return load_catalogue(folder, shipped=shipped)


def engine_for(
    config: LoadedConfig,
    name: str | None = None,
    *,
    memory_limit: str | None = None,
    threads: int | None = None,
    temp_directory: str | None = None,
    frames: Mapping[str, object] | None = None,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> Engine:
    """The engine ``name`` (else the config's ``engine``) over the config's tables, with
    the command line's resources where given, else the config's; ``frames`` are
    in-memory tables beside them and ``connection`` a DuckDB connection to run on (both
    DuckDB's: see engines.duckdb)."""
    return open_engine(
        name or config.run.engine,
        config.run.tables,
        database=config.run.database,
        memory_limit=memory_limit or config.run.memory_limit,
        threads=threads or config.run.threads,
        temp_directory=temp_directory or config.run.temp_directory,
        timezone=config.run.timezone,
        frames=frames,
        connection=connection,
    )


def run_all(
    config: LoadedConfig,
    registry: MetricRegistry,
    experiment_ids: Sequence[str],
    out_dir: Path | None,
    *,
    engine: Engine | None = None,
    engine_name: str | None = None,
    memory_limit: str | None = None,
    threads: int | None = None,
    as_of: date | None = None,
    run_date: date | None = None,
    allow_invalid: bool = False,
    history: bool = False,
    on_published: Callable[[ExperimentRun], None] | None = None,
    slices: Sequence[str] | None = None,
    on_step: StepCallback | None = None,
    state_dir: Path | None = None,
    lookback: int = DEFAULT_RESTATEMENT_LOOKBACK,
) -> list[ExperimentRun]:
    """Run and publish each experiment in turn on one engine (``--engine`` or the config's).

    Every experiment's metrics and columns are checked before the first one runs, so a
    mistake in the third experiment of a config stops the job before anything is written.
    ``on_published`` is called with each run as soon as it is on disk. ``slices``
    replaces every listed experiment's configured slices. ``out_dir=None`` publishes
    nothing: the runs are returned, each a first look for the group-sequential rule (the
    earlier looks are the runs recorded under ``out_dir``). ``engine`` runs on an engine
    the caller opened (and closes) instead of opening one. ``on_step`` is told what the
    run is doing (:class:`RunStep`), for a progress display. ``state_dir`` makes the runs
    incremental (see :func:`run_experiment`): each experiment's new state is committed
    right after its run is published, so a run killed before that leaves the previous
    state in use.
    """
    total = len(experiment_ids)

    def report(experiment_id: str, index: int, name: str, rows: int | None = None) -> None:
        if on_step is not None:
            on_step(RunStep(experiment_id, index, total, name, rows))

    own = engine is None
    if engine is None:
        engine = engine_for(config, engine_name, memory_limit=memory_limit, threads=threads)
    try:
        report("", 0, "checking")
        if state_dir is not None:
            from xpkit.incremental import check_state_folder

            check_state_folder(state_dir, config.run.tables, out_dir)
        for experiment_id in experiment_ids:
            metrics = resolve_metrics(config, registry, experiment_id)
            check_schema(config, metrics, engine)
            slice_request(config, config.experiment(experiment_id), metrics, engine, slices)
        runs = []
        filed = run_date or datetime.now(UTC).date()
        for index, experiment_id in enumerate(experiment_ids, start=1):
            store = None
            if state_dir is not None:
                from xpkit.incremental import StateStore

                store = StateStore(state_dir, experiment_id)
            if store is not None:
                store.lock()
            try:
                runs.append(
                    _run_and_publish(
                        config,
                        registry,
                        experiment_id,
                        engine,
                        out_dir,
                        as_of=as_of,
                        run_date=filed,
                        allow_invalid=allow_invalid,
                        history=history,
                        slices=slices,
                        on_step=functools.partial(report, experiment_id, index),
                        state=store,
                        lookback=lookback,
                    )
                )
            finally:
                if store is not None:
                    store.release()
            report(experiment_id, index, "done")
            if out_dir is not None and on_published is not None:
                on_published(runs[-1])
        return runs
    finally:
        if own:
            engine.close()


def _run_and_publish(
    config: LoadedConfig,
    registry: MetricRegistry,
    experiment_id: str,
    engine: Engine,
    out_dir: Path | None,
    *,
    run_date: date,
    on_step: Callable[[str, int | None], None],
    **options: Any,
) -> ExperimentRun:
    """One experiment run, published under ``out_dir`` (when given), then its new state
    committed (when incremental): the state never runs ahead of the published runs."""
    run = run_experiment(
        config,
        registry,
        experiment_id,
        engine,
        run_date=run_date,
        past_fractions=(recorded_fractions(out_dir, experiment_id, run_date) if out_dir else ()),
        schema_checked=True,
        on_step=on_step,
        **options,
    )
    try:
        if out_dir is not None:
            on_step("writing", None)
            run = write_run(run, out_dir)
        if run.state is not None:
            run.state.commit(__version__)
    except BaseException:
        if run.state is not None:
            run.state.discard()
        raise
    return run
