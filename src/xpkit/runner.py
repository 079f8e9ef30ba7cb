"""One experiment, end to end: resolve dates -> compile -> run -> moments -> stats -> scorecard.

Each step is a plain call into its own module with a typed value between them; this module
only orders them and carries provenance along.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from xpkit import __version__
from xpkit.analysis import MetricInfo, analyse
from xpkit.compile import (
    CompiledQuery,
    ExperimentDates,
    check_columns,
    compile_bounds,
    compile_exposure_health,
    compile_moments,
)
from xpkit.config import ExperimentConfig, LoadedConfig
from xpkit.decision import decide
from xpkit.engine import Engine
from xpkit.errors import ConfigError, DataError, MetricDefinitionError
from xpkit.health import AssignmentSummary, Check, exposure_checks, failed_gates, run_checks
from xpkit.history import HISTORY_FILE, build_history
from xpkit.metric import Metric
from xpkit.planning import PowerPlan, plan
from xpkit.readout import (
    assignment_counts,
    read_cells,
    read_history,
    read_moments,
)
from xpkit.registry import MetricRegistry
from xpkit.scorecard import (
    CHECKS_FILE,
    SCORECARD_FILE,
    Provenance,
    build_checks,
    build_scorecard,
    output_dir,
    write_atomic,
)
from xpkit.stopping import primary_looks, stopping_verdict


@dataclass(frozen=True)
class ExperimentRun:
    experiment_id: str
    scorecard: pa.Table
    checks: pa.Table
    valid: bool
    sql: str
    paths: tuple[Path, ...] = ()
    history: pa.Table | None = None


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


def resolve_dates(
    config: LoadedConfig,
    metrics: Sequence[type[Metric]],
    experiment_id: str,
    engine: Engine,
    as_of: date | None = None,
) -> ExperimentDates | None:
    """First/last assignment date and the as-of date; None when nothing was assigned."""
    experiment = config.experiment(experiment_id)
    bounds = compile_bounds(experiment, metrics, config.run.assignments, dialect=engine.dialect)
    row = engine.query(bounds.sql).to_pylist()[0]
    first, last = row.pop("first_assignment_date"), row.pop("last_assignment_date")
    if first is None:
        return None
    if as_of is None:
        last_dates = [d for d in row.values() if d is not None]
        if not last_dates:
            raise DataError(f"experiment {experiment_id!r}: the metric sources have no rows")
        # The earliest of the sources' last dates: a window is complete only when every
        # source has data through its end.
        as_of = min(last_dates)
    return ExperimentDates(first_assignment=first, last_assignment=last, as_of=as_of)


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
    dates = resolve_dates(config, metrics, experiment_id, engine, as_of)
    if dates is None:
        raise DataError(
            f"experiment {experiment_id!r}: no rows in the assignment table "
            f"{config.run.assignments.table!r}; check the experiment id"
        )
    return compile_moments(
        config.experiment(experiment_id),
        metrics,
        config.run.assignments,
        dates,
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
    dates = resolve_dates(config, metrics, experiment_id, engine, as_of)

    # One statement returns the assignment counts and every metric's sufficient statistics
    # (per cell; see readout); without any assignment there is nothing to read.
    query = None
    cells = None
    if dates is not None:
        query = compile_moments(experiment, metrics, assignments, dates, dialect=engine.dialect)
        assert query.layout is not None
        cells = read_cells(engine.query(query.sql), query.layout)
    summary = (
        [AssignmentSummary.from_row(r) for r in assignment_counts(cells)]
        if cells is not None
        else []
    )
    checks = run_checks(experiment, summary, exposure_configured=assignments.exposed is not None)
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
    always_valid: dict[tuple[str, str], tuple[float | None, float | None, float | None]] = {}
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
            last = max(by_date) if by_date else None
        for column, table in query.layout.row_counts.items():
            rows_read[table] = rows_read.get(table, 0) + cells.rows_read(column)
        infos = {
            m.name: MetricInfo(m.name, m.kind, m.higher_is_better, query.layout.metrics[m.name])
            for m in metrics
        }
        results = analyse(experiment, infos, moments)
        if history:
            history_table = build_history(experiment, infos, by_date, run_date)
            last_rows = [
                r
                for r in history_table.to_pylist()
                if r["population"] == "itt" and r["analysis_date"] == last
            ]
            always_valid = {
                (r["metric"], r["variant"]): (
                    r["always_valid_p_value"],
                    r["always_valid_ci_low"],
                    r["always_valid_ci_high"],
                )
                for r in last_rows
            }
        checks += _sample_checks(experiment, moments.variants("itt"))
    days = (dates.as_of - dates.first_assignment).days + 1 if dates else 0
    n_by_variant = {r.variant: r.effect.n_treatment for r in results if r.population == "itt"}
    n_control = next((r.effect.n_control for r in results if r.population == "itt"), 0)
    smallest = min([n_control, *n_by_variant.values()]) if results else 0
    n_total = n_control + sum(n_by_variant.values())
    higher = {name: info.higher_is_better for name, info in infos.items()}
    av_p = {key: value[0] for key, value in always_valid.items() if value[0] is not None}
    verdicts = {
        variant: stopping_verdict(
            experiment,
            primary_looks(results, variant, higher, av_p),
            n_total=n_total,
            days_observed=days,
            past_fractions=past_fractions,
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
        scorecard=scorecard,
        checks=build_checks(experiment.id, run_date, checks),
        valid=not failed_gates(checks),
        sql=sql,
        history=history_table if keep_history else None,
    )


def _sample_checks(experiment: ExperimentConfig, variants: list[str]) -> list[Check]:
    """Every configured variant must have analysable units once windows are applied."""
    missing = [v for v in experiment.weights if v not in variants]
    if not missing:
        return []
    return [
        Check(
            "variants_with_complete_windows",
            float(len(missing)),
            0,
            False,
            True,
            f"no unit with a complete window in variant(s) {missing}: nothing to compare yet",
        )
    ]


def write_run(run: ExperimentRun, out: Path) -> ExperimentRun:
    run_date = (
        run.scorecard.column("run_date")[0].as_py()
        if run.scorecard.num_rows
        else (run.checks.column("run_date")[0].as_py())
    )
    folder = output_dir(out, run.experiment_id, run_date)
    write_atomic(run.scorecard, folder / SCORECARD_FILE)
    write_atomic(run.checks, folder / CHECKS_FILE)
    paths = [folder / SCORECARD_FILE, folder / CHECKS_FILE]
    if run.history is not None:
        write_atomic(run.history, folder / HISTORY_FILE)
        paths.append(folder / HISTORY_FILE)
    return replace(run, paths=tuple(paths))


def power_plan(
    config: LoadedConfig,
    registry: MetricRegistry,
    experiment_id: str,
    metric_name: str,
    engine: Engine,
    *,
    mde_relative: float,
    power: float = 0.8,
) -> PowerPlan:
    """Plan sample size for ``metric_name`` from the experiment's data, with the same SQL."""
    experiment = config.experiment(experiment_id)
    # A pre-period as long as the analysis window, so the pre-period variance is on the
    # scale of the metric being planned (a 14-day sum varies more than a 7-day one).
    length = experiment.window[1] - experiment.window[0] + 1
    experiment = experiment.model_copy(update={"pre_window": (-length, -1)})
    metrics = resolve_metrics(config, registry, experiment_id, [metric_name])
    check_schema(config, metrics, engine)
    dates = resolve_dates(config, metrics, experiment_id, engine)
    if dates is None:
        raise DataError(f"experiment {experiment_id!r}: no assignments to plan from")
    query = compile_moments(
        experiment, metrics, config.run.assignments, dates, dialect=engine.dialect
    )
    assert query.layout is not None
    moments = read_moments(read_cells(engine.query(query.sql), query.layout), query.layout)
    cells = [moments.get("itt", v, metric_name) for v in moments.variants("itt")]
    control = moments.get("itt", experiment.control, metric_name)
    if control is None or not cells:
        raise DataError(
            f"experiment {experiment_id!r}: no control units with a complete window to plan from"
        )
    pooled = cells[0]
    for cell in cells[1:]:
        pooled = pooled.merge(cell)
    # Units with a complete window were assigned between the first assignment and
    # as_of - window end: that span is the enrolment rate's denominator.
    last_complete = dates.as_of - timedelta(days=experiment.window[1])
    enrolment_days = max((last_complete - dates.first_assignment).days + 1, 1)
    return plan(
        metric_name,
        query.layout.metrics[metric_name],
        control,
        pooled,
        weights=[experiment.weights[experiment.control]]
        + [experiment.weights[v] for v in experiment.treatments],
        units_per_day=pooled.n / enrolment_days,
        mde_relative=mde_relative,
        alpha=experiment.alpha,
        power=power,
    )
