"""Metric classes + experiment config -> the statements a run executes, in any dialect.

The statement's skeleton is a Jinja template in ``sql_templates/``; everything spliced into
it (identifiers, literals, metric expressions) is first a sqlglot expression rendered by
sqlglot, so user values are quoted, never pasted. The filled template is parsed back by
sqlglot — a template bug is caught here, not in an engine — and written out pretty-printed
in the target dialect.

The compiler knows nothing of statistics: alongside the SQL it returns a
:class:`~xpkit.layout.MomentsLayout` that says which output columns hold which metric's sums.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlglot import exp

from xpkit.compile.columns import QuantileColumn, SourceScan, plan_columns, unique_label
from xpkit.compile.dialects import dialect as dialect_rules
from xpkit.compile.dialects import finish
from xpkit.compile.sql import date_literal, ident, render, string_literal, table_ref
from xpkit.compile.templates import render_template
from xpkit.config import (
    MISSING_SLICE,
    OTHER_SLICE,
    AssignmentColumns,
    ExperimentConfig,
    ExposureLog,
    UnitAttributes,
)
from xpkit.define.metric import Metric, Source
from xpkit.errors import MetricDefinitionError
from xpkit.layout import (
    BIN_COLUMN,
    CROSS_COLUMN,
    DEFAULT_EPS,
    EVENTS_COLUMN,
    PAIRS_COLUMN,
    PART_COLUMN,
    ROWS_PREFIX,
    SHIFT_PREFIX,
    SLICE_PREFIX,
    SUM_PREFIX,
    MomentsLayout,
    QuantileLayout,
    bin_key_sql,
)


@dataclass(frozen=True)
class ExperimentDates:
    """Dates resolved from the data (or given) before the statement is rendered."""

    first_assignment: date
    last_assignment: date
    as_of: date


@dataclass(frozen=True)
class SliceRequest:
    """The breakdowns one statement returns besides the overall cells.

    ``specs`` are one dimension or two each (``("device",)``, ``("device", "country")``);
    a dimension is a column of the assignment table, or of ``attributes`` when named in
    ``from_attributes``. Values beyond a dimension's ``top_k`` by units become
    ``"(other)"``, NULL becomes ``"(missing)"``.
    """

    specs: tuple[tuple[str, ...], ...]
    top_k: int = 20
    attributes: UnitAttributes | None = None
    from_attributes: frozenset[str] = frozenset()

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d for spec in self.specs for d in spec))


@dataclass(frozen=True)
class CompiledQuery:
    sql: str
    dialect: str
    layout: MomentsLayout | None = None
    sources: tuple[str, ...] = field(default=())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def _assignment_context(assignments: AssignmentColumns) -> dict[str, str]:
    exposed = render(
        exp.column(assignments.exposed)
        if assignments.exposed
        else exp.cast(exp.null(), exp.DataType.Type.BOOLEAN)
    )
    return {
        "table": table_ref(assignments.table),
        "experiment": ident(assignments.experiment),
        "unit": ident(assignments.unit),
        "variant": ident(assignments.variant),
        "timestamp": ident(assignments.timestamp),
        "exposed": exposed,
    }


def compile_moments(
    experiment: ExperimentConfig,
    metrics: Sequence[type[Metric]],
    assignments: AssignmentColumns,
    dates: ExperimentDates,
    *,
    dialect: str = "duckdb",
    slices: SliceRequest | None = None,
    state_sources: Mapping[str, Mapping[str, object]] | None = None,
    kept_cohorts: Sequence[date] = (),
    multi_units: str | None = None,
) -> CompiledQuery:
    """The one statement a run needs: per-cell sufficient statistics and assignment counts.

    A cell is (variant, multi_variant, exposed, assignment date); see the template for the
    columns and :mod:`xpkit.readout` for how cells add up to the assignment health counts,
    the ITT/TOT populations and the daily history. With ``slices``, the same statement
    also returns the cells of every slice value (grouping sets over the same per-unit
    values), marked by the slice columns the layout names. ``state_sources`` (source label
    -> :func:`xpkit.compile.state.cells_source`) reads those sources' per-unit values from
    an incremental run's state instead of scanning them, and ``kept_cohorts`` leaves out
    the units of those assignment dates (their cells are an earlier run's). ``multi_units``
    (a table of the units the state knows to have assignment rows on more than one date,
    with the first) lets the statement read only the assignment rows dated from the first
    date not kept: a unit with rows from then on whose first date is earlier is in that
    table, and left out.
    """
    if not metrics:
        raise MetricDefinitionError(f"experiment {experiment.id!r}: no metrics to compute")
    populations = [p for p in experiment.populations if p == "itt" or assignments.exposed]
    scans, layouts, quantile_columns = plan_columns(
        metrics,
        with_exposure=assignments.exposed is not None,
        window=experiment.window,
        pre_window=experiment.pre_window,
    )

    percentile_capped = [m.name for m in metrics if m.cap_percentile is not None]
    if percentile_capped and not dialect_rules(dialect).exact_percentile:
        raise MetricDefinitionError(
            f"metric(s) {percentile_capped} cap at a pooled percentile, which {dialect} has "
            f"no exact aggregate for; give them a fixed cap (cap = 86400) to print "
            f"{dialect} SQL, or print it for another dialect"
        )
    unit_columns, caps, capped_columns = _unit_value_columns(scans)

    moment_columns: list[str] = []
    products: list[tuple[str, str]] = []
    for metric_layout in layouts.values():
        cols = metric_layout.columns
        for c in cols:
            if c not in moment_columns:
                moment_columns.append(c)
        for i, a in enumerate(cols):
            for b in cols[i:]:
                if (a, b) not in products and (b, a) not in products:
                    products.append((a, b))

    first_day = min(experiment.window[0], experiment.pre_window[0])
    scan_start = dates.first_assignment + timedelta(days=first_day)
    scan_end = min(dates.as_of, dates.last_assignment + timedelta(days=experiment.window[1]))
    sql = render_template(
        "moments.sql.j2",
        a=_assignment_context(assignments),
        experiment_id=string_literal(experiment.id),
        window=experiment.window,
        pre_window=experiment.pre_window,
        as_of=date_literal(dates.as_of),
        scan_start=date_literal(scan_start),
        scan_end_exclusive=date_literal(scan_end + timedelta(days=1)),
        sources=[
            {
                "cte": scan.cte,
                "table": table_ref(scan.source.table),
                "table_comment": scan.source.table.replace("*/", ""),
                "unit": ident(scan.source.unit),
                "time": ident(scan.source.time),
                "rows_column": ident(ROWS_PREFIX + scan.label),
                "columns": [
                    {"name": ident(c.name), "sql": c.tree.sql("duckdb")} for c in scan.columns
                ],
                "state": (state_sources or {}).get(scan.label),
            }
            for scan in scans
        ],
        unit_columns=unit_columns,
        caps=caps,
        capped_columns=capped_columns,
        values_cte="xp_capped_values" if caps else "xp_unit_values",
        moment_columns=[ident(c) for c in moment_columns],
        products=[
            {"a": ident(a), "b": ident(b), "name": ident(MomentsLayout.product_name(a, b))}
            for a, b in products
        ],
        shift_prefix=SHIFT_PREFIX,
        sum_prefix=SUM_PREFIX,
        **_kept_context(kept_cohorts, dates.first_assignment, multi_units),
        **_slice_context(slices, assignments),
        **_quantile_context(
            quantile_columns,
            null_columns=["assignment_rows"]
            + [ROWS_PREFIX + s.label for s in scans]
            + [SHIFT_PREFIX + c for c in moment_columns]
            + [SUM_PREFIX + c for c in moment_columns]
            + [MomentsLayout.product_name(a, b) for a, b in products],
            scan_start=date_literal(scan_start),
            scan_end_exclusive=date_literal(scan_end + timedelta(days=1)),
        ),
    )
    layout = MomentsLayout(
        metrics=layouts,
        columns=tuple(moment_columns),
        products=tuple(products),
        row_counts={ROWS_PREFIX + s.label: s.source.table for s in scans},
        populations=tuple(populations),
        window_end=experiment.window[1],
        slices=slices.specs if slices else (),
        slice_columns={d: SLICE_PREFIX + d for d in slices.dimensions} if slices else {},
        quantiles={
            name: QuantileLayout(
                metric=name,
                q=float(q.metric.quantile or 0.0),
                level="unit" if q.column else "event",
                part=name,
                eps=DEFAULT_EPS,
            )
            for name, q in quantile_columns.items()
        },
    )
    return CompiledQuery(
        sql=finish(sql, dialect),
        dialect=dialect,
        layout=layout,
        sources=tuple(s.source.table for s in scans),
    )


def _kept_context(
    kept: Sequence[date], first_assignment: date, units: str | None = None
) -> dict[str, str]:
    """The assignment dates whose cells an incremental run keeps: as a list, and as the
    last of them plus the earlier dates that are not kept (a range a reader can prune by);
    with ``units`` (the state's units), the first date not kept, from which on the
    assignment rows are read."""
    if not kept:
        return {
            "kept_cohorts": "",
            "kept_through": "",
            "kept_holes": "",
            "multi_units": "",
            "kept_rows_from": "",
        }
    through, kept_days = max(kept), set(kept)
    start = min(first_assignment, min(kept))
    days = (start + timedelta(days=i) for i in range((through - start).days + 1))
    holes = [day for day in days if day not in kept_days]
    return {
        "kept_cohorts": ", ".join(date_literal(d) for d in sorted(kept)),
        "kept_through": date_literal(through),
        "kept_holes": ", ".join(date_literal(d) for d in holes),
        "multi_units": units or "",
        "kept_rows_from": date_literal(min(holes) if holes else through + timedelta(days=1)),
    }


def _quantile_context(
    quantiles: dict[str, QuantileColumn],
    *,
    null_columns: list[str],
    scan_start: str,
    scan_end_exclusive: str,
) -> dict:
    """Template values for the histograms of quantile metrics (see layout.QuantileLayout)."""
    unit, event = [], []
    for i, (name, q) in enumerate(quantiles.items()):
        part = string_literal(name)
        if q.column is not None:
            unit.append(
                {
                    "part": part,
                    "column": ident(q.column),
                    "key": bin_key_sql(f"v.{ident(q.column)}"),
                }
            )
            continue
        assert q.value is not None and q.condition is not None
        source = q.metric.source
        value = render(q.value)
        event.append(
            {
                "part": part,
                "keys_cte": ident(f"xp_events_{i}"),
                "ranks_cte": ident(f"xp_event_ranks_{i}"),
                "table": table_ref(source.table),
                "unit": ident(source.unit),
                "time": ident(source.time),
                "value": value,
                "key": bin_key_sql(f"({value})"),
                "condition": render(q.condition),
            }
        )
    return {
        "unit_quantiles": unit,
        "event_quantiles": event,
        "quantiles": bool(unit or event),
        "null_columns": [ident(c) for c in null_columns],
        "q_scan_start": scan_start,
        "q_scan_end_exclusive": scan_end_exclusive,
        "part_column": PART_COLUMN,
        "bin_column": BIN_COLUMN,
        "events_column": EVENTS_COLUMN,
        "pairs_column": PAIRS_COLUMN,
        "cross_column": CROSS_COLUMN,
    }


def _slice_context(slices: SliceRequest | None, assignments: AssignmentColumns) -> dict:
    """Template values for the slice columns: where each dimension is read, its top values,
    and one grouping set per breakdown (the overall cells are the empty set)."""
    if slices is None or not slices.specs:
        return {"dims": [], "grouping_sets": [], "attributes": None}
    dims = []
    for i, name in enumerate(slices.dimensions):
        raw = exp.cast(exp.column(name), "VARCHAR")
        dims.append(
            {
                "raw": ident(f"xp_dim_{i}"),
                "out": ident(SLICE_PREFIX + name),
                "top": ident(f"xp_top_{i}"),
                "from_attributes": name in slices.from_attributes,
                "sql": render(raw),
                "attribute_sql": render(exp.cast(exp.column(name, table="t"), "VARCHAR")),
            }
        )
    position = {name: d["out"] for name, d in zip(slices.dimensions, dims, strict=True)}
    attributes = None
    if slices.attributes is not None and slices.from_attributes:
        attributes = {
            "table": table_ref(slices.attributes.table),
            "unit": ident(slices.attributes.unit),
            "time": ident(slices.attributes.time) if slices.attributes.time else None,
        }
    return {
        "dims": dims,
        "top_k": exp.Literal.number(slices.top_k).sql("duckdb"),
        "missing": string_literal(MISSING_SLICE),
        "other": string_literal(OTHER_SLICE),
        "grouping_sets": [[position[d] for d in spec] for spec in slices.specs],
        "attributes": attributes,
    }


def _unit_value_columns(
    scans: Sequence[SourceScan],
) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """The per-unit value of every column, its pooled percentile cap, and the capped value.

    A unit without rows on a source gets 0 (``COALESCE``); an indicator column is 1 where
    its aggregate is positive; a fixed cap is ``LEAST(value, cap)``; a percentile cap is
    the pooled ``QUANTILE_CONT`` over the analysed units, applied in a later CTE.
    """
    unit_columns: list[dict[str, str]] = []
    caps: list[dict[str, str]] = []
    capped: list[dict[str, str]] = []
    for scan in scans:
        for col in scan.columns:
            value: exp.Expr = exp.func(
                "COALESCE", exp.column(col.name, table=scan.cte), exp.Literal.number(0)
            )
            if col.indicator:
                value = (
                    exp.case().when(value > 0, exp.Literal.number(1)).else_(exp.Literal.number(0))
                )
            if col.cap_value is not None:
                value = exp.func("LEAST", value, exp.Literal.number(col.cap_value))
            name = ident(col.name)
            unit_columns.append({"name": name, "sql": render(value)})
            own = exp.column(col.name, table="v")
            if col.cap_percentile is None:
                capped.append({"name": name, "sql": render(own)})
                continue
            quantile = exp.func(
                "QUANTILE_CONT", exp.column(col.name), exp.Literal.number(col.cap_percentile)
            )
            caps.append({"name": name, "sql": render(quantile)})
            least = exp.func("LEAST", own, exp.column(col.name, table="xp_caps"))
            capped.append({"name": name, "sql": render(least)})
    return unit_columns, caps, capped


def compile_bounds(
    experiment: ExperimentConfig,
    metrics: Sequence[type[Metric]],
    assignments: AssignmentColumns,
    *,
    dialect: str = "duckdb",
) -> CompiledQuery:
    """First/last assignment date and each source's last date (see bounds.sql.j2)."""
    # One last date per table and date column, named after its first source (numbered
    # when sources of one name read different tables).
    sources: dict[str, type[Source]] = {}
    seen: dict[tuple[str, str], str] = {}
    for metric in metrics:
        key = (metric.source.table, metric.source.time)
        if key not in seen:
            seen[key] = unique_label(metric.source.name, set(sources))
            sources[seen[key]] = metric.source
    sql = render_template(
        "bounds.sql.j2",
        a=_assignment_context(assignments),
        experiment_id=string_literal(experiment.id),
        sources=[
            {
                "table": table_ref(s.table),
                "time": ident(s.time),
                "alias": ident(f"last_date__{name}"),
            }
            for name, s in sources.items()
        ],
    )
    return CompiledQuery(
        sql=finish(sql, dialect), dialect=dialect, sources=tuple(s.table for s in sources.values())
    )


def compile_rows_after(
    source: type[Source], day: date, *, dialect: str = "duckdb"
) -> CompiledQuery:
    """How many rows of ``source`` are dated after ``day`` (rows from the future), and the
    last date on or before it (the source's real end)."""
    row_date = exp.cast(exp.column(source.time), "DATE")
    cut = exp.cast(exp.Literal.string(day.isoformat()), "DATE")
    after = exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=row_date > cut))
    last = exp.Filter(
        this=exp.Max(this=row_date.copy()),
        expression=exp.Where(this=row_date.copy() <= cut.copy()),
    )
    tree = exp.select(after.as_("n_rows"), last.as_("last_date")).from_(exp.to_table(source.table))
    return CompiledQuery(
        sql=finish(render(tree), dialect), dialect=dialect, sources=(source.table,)
    )


def compile_exposure_health(
    experiment: ExperimentConfig,
    assignments: AssignmentColumns,
    exposures: ExposureLog,
    *,
    dialect: str = "duckdb",
) -> CompiledQuery:
    """Counts of exposure events without an assignment or before it."""
    sql = render_template(
        "exposures.sql.j2",
        a=_assignment_context(assignments),
        x={
            "table": table_ref(exposures.table),
            "experiment": ident(exposures.experiment),
            "unit": ident(exposures.unit),
            "timestamp": ident(exposures.timestamp),
        },
        experiment_id=string_literal(experiment.id),
    )
    return CompiledQuery(sql=finish(sql, dialect), dialect=dialect)


# --------------------------------------------------------------------------------------
# Probes: cheap statements a run executes before the real one, so that an expression the
# engine rejects, or a column of the wrong type, is reported with its metric or table.

PROBE_UNIT = "xp_unit"
PROBE_TIME = "xp_time"


def compile_probe(metrics: Sequence[type[Metric]], *, dialect: str = "duckdb") -> CompiledQuery:
    """``LIMIT 0`` over the metrics' one source: binds every expression, runs nothing.

    The result is empty; its schema holds the types of the unit (``xp_unit``) and date
    (``xp_time``) columns. All ``metrics`` must share one source.
    """
    source = metrics[0].source
    columns: list[exp.Expr] = [
        exp.alias_(exp.column(source.unit, table="s"), PROBE_UNIT),
        exp.alias_(exp.func("MIN", exp.column(source.time, table="s")), PROBE_TIME),
    ]
    for i, metric in enumerate(metrics):
        trees = [metric.expression_tree, metric.denominator_tree, metric.covariate_tree]
        for j, tree in enumerate(t for t in trees if t is not None):
            value = _qualify(tree)
            if metric.filter_tree is not None:
                value = _filtered(value, _qualify(metric.filter_tree))
            columns.append(exp.alias_(value, f"xp_probe_{i}_{j}"))
    query = (
        exp.select(*columns)
        .from_(exp.alias_(exp.to_table(source.table), "s", table=True))
        .group_by(exp.column(source.unit, table="s"))
        .limit(0)
    )
    return CompiledQuery(sql=finish(query.sql("duckdb"), dialect), dialect=dialect)


def compile_assignment_probe(
    assignments: AssignmentColumns, *, dialect: str = "duckdb"
) -> CompiledQuery:
    """``LIMIT 0`` over the assignments: the types of the unit and timestamp columns."""
    query = (
        exp.select(
            exp.alias_(exp.column(assignments.unit), PROBE_UNIT),
            exp.alias_(exp.column(assignments.timestamp), PROBE_TIME),
        )
        .from_(exp.to_table(assignments.table))
        .limit(0)
    )
    return CompiledQuery(sql=finish(query.sql("duckdb"), dialect), dialect=dialect)


def compile_date_check(table: str, column: str, *, dialect: str = "duckdb") -> CompiledQuery:
    """For a date column stored as text: how many values do not read as a date, and one."""
    col = exp.column(column)
    bad = exp.and_(
        exp.Not(this=exp.Is(this=col.copy(), expression=exp.null())),
        exp.Is(
            this=exp.TryCast(this=col.copy(), to=exp.DataType.build("DATE")), expression=exp.null()
        ),
    )
    query = (
        exp.select(
            exp.alias_(exp.Count(this=exp.Star()), "bad_rows"),
            exp.alias_(exp.func("MIN", col.copy()), "example"),
        )
        .from_(exp.to_table(table))
        .where(bad)
    )
    return CompiledQuery(sql=finish(query.sql("duckdb"), dialect), dialect=dialect)


def _qualify(tree: exp.Expr) -> exp.Expr:
    tree = tree.copy()
    for col in tree.find_all(exp.Column):
        col.set("table", exp.to_identifier("s"))
    return tree


def _filtered(tree: exp.Expr, condition: exp.Expr) -> exp.Expr:
    def wrap(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.AggFunc) and not isinstance(node.parent, exp.Filter):
            return exp.Filter(this=node, expression=exp.Where(this=condition.copy()))
        return node

    return tree.transform(wrap)
