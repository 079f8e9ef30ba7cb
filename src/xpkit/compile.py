"""Metric classes + experiment config -> SQL, for any dialect sqlglot writes.

The statement's skeleton is a Jinja template in ``sql_templates/``; everything spliced into
it (identifiers, literals, metric expressions) is first rendered by sqlglot, so user values
are quoted, never pasted. The filled template is parsed back by sqlglot — a template bug is
caught here, not in an engine — and written out pretty-printed in the target dialect.

The compiler knows nothing of statistics: alongside the SQL it returns a
:class:`MomentsLayout` that says which output columns hold which metric's sums.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.resources
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache

import jinja2
import sqlglot
from sqlglot import exp

from xpkit.config import AssignmentColumns, ExperimentConfig, ExposureLog
from xpkit.errors import DataError, MetricDefinitionError
from xpkit.metric import Metric, Source

DIALECTS: tuple[str, ...] = ("duckdb", "spark", "bigquery", "snowflake", "trino", "postgres")
# Dialects whose CTEs accept AS MATERIALIZED; elsewhere the hint is dropped and the engine
# decides (Spark reuses the shared exchange).
_MATERIALIZING_DIALECTS = {"duckdb", "postgres"}
# Dialects without an exact percentile aggregate (BigQuery's PERCENTILE_CONT is a window
# function only; Trino has approx_percentile alone): pooled percentile caps cannot be
# written for them without changing the numbers.
_NO_EXACT_PERCENTILE = {"bigquery", "trino"}

SHIFT_PREFIX = "shift__"
SUM_PREFIX = "sum__"
PRODUCT_PREFIX = "prod__"
ROWS_PREFIX = "rows_read__"
EXPOSURE_COLUMN = "exposed"


# --------------------------------------------------------------------------------------
# Rendering helpers: every spliced value goes through sqlglot.
# --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)  # the same names recur in every product of a statement
def ident(name: str) -> str:
    """A column or CTE name, quoted only where needed."""
    return exp.to_identifier(name).sql("duckdb")


def table_ref(name: str) -> str:
    """A (possibly schema-qualified) table name."""
    return exp.to_table(name).sql("duckdb")


def string_literal(value: str) -> str:
    return exp.Literal.string(value).sql("duckdb")


def date_literal(value: date) -> str:
    return exp.cast(exp.Literal.string(value.isoformat()), "DATE").sql("duckdb")


@cache
def _templates() -> jinja2.Environment:
    root = importlib.resources.files("xpkit.sql_templates")
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: root.joinpath(name).read_text()),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # SQL, not HTML: values are escaped by sqlglot before splicing
        keep_trailing_newline=True,
    )


def render_template(name: str, **context: object) -> str:
    return _templates().get_template(name).render(**context)


def finish(sql: str, dialect: str) -> str:
    """Parse rendered DuckDB SQL back with sqlglot and write it in ``dialect``, pretty."""
    if dialect not in DIALECTS:
        raise MetricDefinitionError(
            f"unknown dialect {dialect!r}; choose one of {', '.join(DIALECTS)}"
        )
    tree = sqlglot.parse_one(sql, read="duckdb")
    if dialect not in _MATERIALIZING_DIALECTS:
        for cte in tree.find_all(exp.CTE):
            cte.set("materialized", None)
    if dialect == "spark":
        _spark_semantics(tree)
    return tree.sql(dialect=dialect, pretty=True)


def _spark_semantics(tree: exp.Expression) -> None:
    """Rewrite, in place, the DuckDB constructs that Spark reads differently.

    - ``QUANTILE_CONT(x, q)``: sqlglot writes ``PERCENTILE_CONT(x, q)``, which Spark rejects
      (it only knows the ``WITHIN GROUP`` form). ``PERCENTILE(x, q)`` is Spark's exact
      percentile with the same linear interpolation, so pooled caps agree with DuckDB's.
    - ``AVG``: DuckDB's is always DOUBLE; Spark's AVG of a DECIMAL (an integer metric with
      a fractional cap, ``LEAST(SUM(n), 2.5)``) stays DECIMAL, which turns the shifted sums
      of products into DECIMAL arithmetic rounded to 6 decimal places. A DOUBLE cast keeps
      the moments in the same floating-point arithmetic on both engines.
    """
    for node in list(tree.find_all(exp.PercentileCont)):
        if not isinstance(node.parent, exp.WithinGroup):
            node.replace(exp.Quantile(this=node.this, quantile=node.expression))
    for node in list(tree.find_all(exp.Avg)):
        # The whole aggregate call, including its FILTER or OVER clause, is what gets cast.
        call: exp.Expression = node
        while isinstance(call.parent, exp.Filter | exp.Window) and call.arg_key == "this":
            call = call.parent
        if isinstance(call.parent, exp.Cast) and call.parent.is_type(exp.DataType.Type.DOUBLE):
            continue
        cast = exp.Cast(to=exp.DataType.build("DOUBLE"))
        call.replace(cast)
        cast.set("this", call)


# --------------------------------------------------------------------------------------
# Layout: which per-unit columns each metric needs, and where its sums land.
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricLayout:
    """The per-unit columns of one metric, in the order its moments are kept."""

    metric: str
    kind: str
    value: str
    denominator: str | None = None
    covariates: tuple[str, ...] = ()
    exposure: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        cols = [self.value]
        if self.denominator:
            cols.append(self.denominator)
        cols.extend(self.covariates)
        if self.exposure:
            cols.append(self.exposure)
        return tuple(cols)


@dataclass(frozen=True)
class MomentsLayout:
    """How to read the wide result of the moments statement."""

    metrics: dict[str, MetricLayout]
    columns: tuple[str, ...]
    products: tuple[tuple[str, str], ...]
    row_counts: dict[str, str]  # output column -> source table
    populations: tuple[str, ...]  # "itt", and "tot" when exposure is configured
    window_end: int  # last day of the window: a cell's analysis date is assignment + this

    @staticmethod
    def shift_name(column: str) -> str:
        return SHIFT_PREFIX + column

    @staticmethod
    def sum_name(column: str) -> str:
        return SUM_PREFIX + column

    @staticmethod
    def product_name(a: str, b: str) -> str:
        return f"{PRODUCT_PREFIX}{a}__x__{b}"


@dataclass(frozen=True)
class ExperimentDates:
    """Dates resolved from the data (or given) before the statement is rendered."""

    first_assignment: date
    last_assignment: date
    as_of: date


@dataclass(frozen=True)
class CompiledQuery:
    sql: str
    dialect: str
    layout: MomentsLayout | None = None
    sources: tuple[str, ...] = field(default=())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass
class _UnitColumn:
    name: str
    tree: exp.Expression  # per-unit aggregate over the source's rows (alias s)
    cap_value: float | None = None
    cap_percentile: float | None = None
    indicator: bool = False  # the unit's value is 1 where the aggregate is positive, else 0

    @property
    def key(self) -> tuple[str, float | None, float | None]:
        """What the column computes: two columns with one key hold the same values."""
        return self.tree.sql("duckdb"), self.cap_value, self.cap_percentile


@dataclass
class _SourceScan:
    source: type[Source]
    columns: list[_UnitColumn] = field(default_factory=list)
    names: dict[tuple[str, float | None, float | None], str] = field(default_factory=dict)

    @property
    def cte(self) -> str:
        return f"xp_per_unit_{self.source.name}"


def _qualified(tree: exp.Expression) -> exp.Expression:
    """Copy of a metric fragment with every column qualified by the source alias ``s``."""
    tree = tree.copy()
    for col in tree.find_all(exp.Column):
        col.set("table", exp.to_identifier("s"))
    return tree


def _in_window(source: type[Source], days: tuple[int, int]) -> exp.Expression:
    """The row's day, counted from the unit's assignment date, is within ``days``.

    One integer offset against two literals is cheaper per row than comparing the row's date
    with two per-unit date columns, and the join's build side carries one date per unit
    instead of four.
    """
    day = exp.DateDiff(
        this=exp.cast(exp.column(source.time, table="s"), "DATE"),
        expression=exp.column("assignment_date", table="u"),
        unit=exp.var("DAY"),
    )
    return exp.Between(this=day, low=exp.Literal.number(days[0]), high=exp.Literal.number(days[1]))


def _windowed(tree: exp.Expression, condition: exp.Expression) -> exp.Expression:
    """Apply ``condition`` to every aggregate in ``tree`` as ``AGG(...) FILTER (WHERE ...)``.

    One scan then serves the pre- and post-period and every metric's row filter; FILTER is
    what made a single scan fastest on DuckDB, and sqlglot rewrites it for dialects without
    it (e.g. ``SUM(IF(cond, x, NULL))`` on BigQuery).
    """

    def wrap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.AggFunc) and not isinstance(node.parent, exp.Filter):
            return exp.Filter(this=node, expression=exp.Where(this=condition.copy()))
        return node

    # transform() rebuilds the tree bottom-up, so a fragment that is itself one aggregate
    # (the common case, SUM(x)) is wrapped too.
    return tree.copy().transform(wrap, copy=False)


def _condition(metric: type[Metric], window: exp.Expression) -> exp.Expression:
    if metric.filter_tree is None:
        return window
    return exp.and_(window, exp.paren(_qualified(metric.filter_tree)))


def plan_columns(
    metrics: Sequence[type[Metric]],
    *,
    with_exposure: bool,
    window: tuple[int, int],
    pre_window: tuple[int, int],
) -> tuple[list[_SourceScan], dict[str, MetricLayout]]:
    """Group metrics by source and name every per-unit column each metric needs.

    Metrics that need the same per-unit column (``SUM(watch_seconds)`` over the window is
    both a metric and a ratio's numerator) share it: it is aggregated, kept and multiplied
    once.
    """
    scans: dict[type[Source], _SourceScan] = {}
    layouts: dict[str, MetricLayout] = {}
    for metric in metrics:
        scan = scans.setdefault(metric.source, _SourceScan(metric.source))
        post = _condition(metric, _in_window(metric.source, window))
        pre = _condition(metric, _in_window(metric.source, pre_window))

        def add(
            suffix: str,
            tree: exp.Expression,
            cond: exp.Expression,
            capped: bool,
            metric: type[Metric] = metric,
            scan: _SourceScan = scan,
        ) -> str:
            column = _UnitColumn(
                name=f"{metric.name}__{suffix}",
                tree=_windowed(_qualified(tree), cond),
                cap_value=metric.cap_value if capped else None,
                cap_percentile=metric.cap_percentile if capped else None,
            )
            key = column.key
            if key not in scan.names:
                scan.names[key] = column.name
                scan.columns.append(column)
            return scan.names[key]

        value = add("value", metric.expression_tree, post, capped=True)
        denominator = None
        if metric.denominator_tree is not None:
            denominator = add("denominator", metric.denominator_tree, post, capped=False)
        covariates: list[str] = []
        if metric.covariate_tree is not None:
            covariates.append(add("pre", metric.covariate_tree, pre, capped=True))
            if metric.kind == "ratio" and metric.covariate == "pre":
                assert metric.denominator_tree is not None
                covariates.append(
                    add("pre_denominator", metric.denominator_tree, pre, capped=False)
                )
            covariates.append(_has_history_column(scan, pre_window))
        layouts[metric.name] = MetricLayout(
            metric=metric.name,
            kind=metric.kind,
            value=value,
            denominator=denominator,
            covariates=tuple(covariates),
            exposure=EXPOSURE_COLUMN if with_exposure else None,
        )
    return list(scans.values()), layouts


def _has_history_column(scan: _SourceScan, pre_window: tuple[int, int]) -> str:
    """A 0/1 covariate: did the unit have any pre-period row on this source?

    Units with no pre-period rows get covariate 0; without this indicator, CUPED would
    treat "no history" as "zero activity" and bias theta for new units.
    """
    name = f"{scan.source.name}__has_history"
    if all(c.name != name for c in scan.columns):
        # COUNT(*) FILTER (WHERE pre) > 0 rather than a MAX(CASE ...): a count of pre-period
        # rows is often an aggregate the scan has anyway (an active-days metric's covariate),
        # and DuckDB computes identical aggregates once; the per-unit values turn it into 0/1.
        rows = _windowed(exp.Count(this=exp.Star()), _in_window(scan.source, pre_window))
        scan.columns.append(_UnitColumn(name=name, tree=rows, indicator=True))
    return name


# --------------------------------------------------------------------------------------
# Schema validation: unknown columns are named with the metric, before anything runs.
# --------------------------------------------------------------------------------------
def check_columns(
    metrics: Sequence[type[Metric]],
    assignments: AssignmentColumns,
    schemas: Mapping[str, Sequence[str]],
) -> None:
    """Raise a DataError naming the metric (or the assignment setting) and the column."""

    def missing(table: str, wanted: Sequence[str], owner: str) -> None:
        available = schemas.get(table)
        if available is None:
            raise DataError(f"{owner}: table {table!r} is not configured or does not exist")
        lowered = {c.lower() for c in available}
        for col in wanted:
            if col.lower() not in lowered:
                close = difflib.get_close_matches(col, list(available), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise DataError(
                    f"{owner}: column {col!r} does not exist in table {table!r}{hint} "
                    f"(columns: {', '.join(available)})"
                )

    wanted = [assignments.experiment, assignments.unit, assignments.variant, assignments.timestamp]
    if assignments.exposed:
        wanted.append(assignments.exposed)
    missing(assignments.table, wanted, "assignments")
    for metric in metrics:
        cols = sorted(metric.columns_used() | {metric.source.unit, metric.source.time})
        missing(metric.source.table, cols, f"metric {metric.name!r}")


# --------------------------------------------------------------------------------------
# The statements.
# --------------------------------------------------------------------------------------
def _assignment_context(assignments: AssignmentColumns) -> dict[str, str]:
    exposed = (
        exp.column(assignments.exposed).sql("duckdb")
        if assignments.exposed
        else "CAST(NULL AS BOOLEAN)"
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
) -> CompiledQuery:
    """The one statement a run needs: per-cell sufficient statistics and assignment counts.

    A cell is (variant, multi_variant, exposed, assignment date); see the template for the
    columns and :mod:`xpkit.readout` for how cells add up to the assignment health counts,
    the ITT/TOT populations and the daily history.
    """
    if not metrics:
        raise MetricDefinitionError(f"experiment {experiment.id!r}: no metrics to compute")
    populations = [p for p in experiment.populations if p == "itt" or assignments.exposed]
    scans, layouts = plan_columns(
        metrics,
        with_exposure=assignments.exposed is not None,
        window=experiment.window,
        pre_window=experiment.pre_window,
    )

    percentile_capped = [m.name for m in metrics if m.cap_percentile is not None]
    if percentile_capped and dialect in _NO_EXACT_PERCENTILE:
        raise MetricDefinitionError(
            f"metric(s) {percentile_capped} cap at a pooled percentile, which {dialect} has "
            f"no exact aggregate for; give them a fixed cap (cap = 86400) to print "
            f"{dialect} SQL, or print it for another dialect"
        )

    unit_columns = []
    caps = []
    for scan in scans:
        for col in scan.columns:
            raw = f"COALESCE({scan.cte}.{ident(col.name)}, 0)"
            if col.indicator:
                raw = f"CASE WHEN {raw} > 0 THEN 1 ELSE 0 END"
            if col.cap_value is not None:
                raw = f"LEAST({raw}, {exp.Literal.number(col.cap_value).sql('duckdb')})"
            unit_columns.append({"name": ident(col.name), "sql": raw})
            if col.cap_percentile is not None:
                caps.append(
                    {
                        "name": ident(col.name),
                        "sql": f"QUANTILE_CONT({ident(col.name)}, {col.cap_percentile!r})",
                    }
                )
    capped_names = {c["name"] for c in caps}
    capped_columns = [
        {
            "name": c["name"],
            "sql": f"LEAST(v.{c['name']}, xp_caps.{c['name']})"
            if c["name"] in capped_names
            else f"v.{c['name']}",
        }
        for c in unit_columns
    ]

    moment_columns: list[str] = []
    products: list[tuple[str, str]] = []
    for layout in layouts.values():
        cols = layout.columns
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
                "rows_column": ident(ROWS_PREFIX + scan.source.name),
                "columns": [
                    {"name": ident(c.name), "sql": c.tree.sql("duckdb")} for c in scan.columns
                ],
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
    )
    layout = MomentsLayout(
        metrics=layouts,
        columns=tuple(moment_columns),
        products=tuple(products),
        row_counts={ROWS_PREFIX + s.source.name: s.source.table for s in scans},
        populations=tuple(populations),
        window_end=experiment.window[1],
    )
    return CompiledQuery(
        sql=finish(sql, dialect),
        dialect=dialect,
        layout=layout,
        sources=tuple(s.source.table for s in scans),
    )


def compile_bounds(
    experiment: ExperimentConfig,
    metrics: Sequence[type[Metric]],
    assignments: AssignmentColumns,
    *,
    dialect: str = "duckdb",
) -> CompiledQuery:
    """First/last assignment date and each source's last date (see bounds.sql.j2)."""
    sources: dict[str, type[Source]] = {}
    for metric in metrics:
        sources.setdefault(metric.source.name, metric.source)
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
