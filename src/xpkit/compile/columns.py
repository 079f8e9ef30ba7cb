"""Which per-unit columns a set of metrics needs, grouped into one scan per source.

Each metric asks for a value, maybe a denominator, and its CUPED covariates; columns that
compute the same thing (a metric and a ratio's numerator) are shared. Every column is a
sqlglot expression over the source's rows (alias ``s``), windowed by FILTER clauses, so
one scan serves the pre- and post-period and every metric's row filter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlglot import exp

from xpkit.define.metric import Metric, Source
from xpkit.layout import EXPOSURE_COLUMN, MetricLayout


@dataclass
class UnitColumn:
    name: str
    tree: exp.Expr  # per-unit aggregate over the source's rows (alias s)
    cap_value: float | None = None
    cap_percentile: float | None = None
    indicator: bool = False  # the unit's value is 1 where the aggregate is positive, else 0

    @property
    def key(self) -> tuple[str, float | None, float | None]:
        """What the column computes: two columns with one key hold the same values."""
        return self.tree.sql("duckdb"), self.cap_value, self.cap_percentile


@dataclass
class SourceScan:
    source: type[Source]
    columns: list[UnitColumn] = field(default_factory=list)
    names: dict[tuple[str, float | None, float | None], str] = field(default_factory=dict)
    # The scan's name in the statement: the source's name, with a number appended when
    # two sources (say, classes of one name in two metric files) share it.
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.source.name

    @property
    def cte(self) -> str:
        return f"xp_per_unit_{self.label}"


def unique_label(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... the first one not in ``taken`` (added to it)."""
    label, n = name, 1
    while label in taken:
        n += 1
        label = f"{name}_{n}"
    taken.add(label)
    return label


def _qualified(tree: exp.Expr) -> exp.Expr:
    """Copy of a metric fragment with every column qualified by the source alias ``s``."""
    tree = tree.copy()
    for col in tree.find_all(exp.Column):
        col.set("table", exp.to_identifier("s"))
    return tree


def _in_window(source: type[Source], days: tuple[int, int]) -> exp.Expr:
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


def _windowed(tree: exp.Expr, condition: exp.Expr) -> exp.Expr:
    """Apply ``condition`` to every aggregate in ``tree`` as ``AGG(...) FILTER (WHERE ...)``.

    One scan then serves the pre- and post-period and every metric's row filter; FILTER is
    what made a single scan fastest on DuckDB, and sqlglot rewrites it for dialects without
    it (e.g. ``SUM(IF(cond, x, NULL))`` on BigQuery).
    """

    def wrap(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.AggFunc) and not isinstance(node.parent, exp.Filter):
            return exp.Filter(this=node, expression=exp.Where(this=condition.copy()))
        return node

    # transform() rebuilds the tree bottom-up, so a fragment that is itself one aggregate
    # (the common case, SUM(x)) is wrapped too.
    return tree.copy().transform(wrap, copy=False)


def _condition(metric: type[Metric], window: exp.Expr) -> exp.Expr:
    if metric.filter_tree is None:
        return window
    return exp.and_(window, exp.paren(_qualified(metric.filter_tree)))


@dataclass
class QuantileColumn:
    """A quantile metric's input: the per-unit column (unit level), or the row-level value
    and the window condition its rows must meet (event level)."""

    metric: type[Metric]
    column: str | None = None
    value: exp.Expr | None = None
    condition: exp.Expr | None = None


def plan_columns(
    metrics: Sequence[type[Metric]],
    *,
    with_exposure: bool,
    window: tuple[int, int],
    pre_window: tuple[int, int],
) -> tuple[list[SourceScan], dict[str, MetricLayout], dict[str, QuantileColumn]]:
    """Group metrics by source and name every per-unit column each metric needs.

    Metrics that need the same per-unit column (``SUM(watch_seconds)`` over the window is
    both a metric and a ratio's numerator) share it: it is aggregated, kept and multiplied
    once.
    """
    scans: dict[type[Source], SourceScan] = {}
    layouts: dict[str, MetricLayout] = {}
    quantiles: dict[str, QuantileColumn] = {}
    for metric in metrics:
        if metric.source not in scans:
            label = unique_label(metric.source.name, {s.label for s in scans.values()})
            scans[metric.source] = SourceScan(metric.source, label=label)
        scan = scans[metric.source]
        post = _condition(metric, _in_window(metric.source, window))
        pre = _condition(metric, _in_window(metric.source, pre_window))

        def add(
            suffix: str,
            tree: exp.Expr,
            cond: exp.Expr,
            capped: bool,
            metric: type[Metric] = metric,
            scan: SourceScan = scan,
        ) -> str:
            column = UnitColumn(
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

        if metric.kind == "quantile":
            if metric.value_tree is None:
                # Unit level: the per-unit value is an ordinary column of the scan; its
                # histogram is taken over the analysed units' values.
                quantiles[metric.name] = QuantileColumn(
                    metric, column=add("value", metric.expression_tree, post, capped=False)
                )
            else:
                quantiles[metric.name] = QuantileColumn(
                    metric, value=_qualified(metric.value_tree), condition=post
                )
            continue
        value = add("value", metric.expression_tree, post, capped=True)
        denominator = None
        if metric.denominator_tree is not None:
            denominator = add("denominator", metric.denominator_tree, post, capped=False)
        covariates: list[str] = []
        pre_value = has_history = None
        if metric.covariate_tree is not None:
            pre_value = add("pre", metric.covariate_tree, pre, capped=True)
            covariates.append(pre_value)
            if metric.kind == "ratio" and metric.covariate == "pre":
                assert metric.denominator_tree is not None
                covariates.append(
                    add("pre_denominator", metric.denominator_tree, pre, capped=False)
                )
            has_history = _has_history_column(scan, pre_window)
            covariates.append(has_history)
        layouts[metric.name] = MetricLayout(
            metric=metric.name,
            kind=metric.kind,
            value=value,
            denominator=denominator,
            covariates=tuple(covariates),
            exposure=EXPOSURE_COLUMN if with_exposure else None,
            pre_value=pre_value,
            has_history=has_history,
        )
    return list(scans.values()), layouts, quantiles


def _has_history_column(scan: SourceScan, pre_window: tuple[int, int]) -> str:
    """A 0/1 covariate: did the unit have any pre-period row on this source?

    Units with no pre-period rows get covariate 0; without this indicator, CUPED would
    treat "no history" as "zero activity" and bias theta for new units.
    """
    name = f"{scan.label}__has_history"
    if all(c.name != name for c in scan.columns):
        # COUNT(*) FILTER (WHERE pre) > 0 rather than a MAX(CASE ...): a count of pre-period
        # rows is often an aggregate the scan has anyway (an active-days metric's covariate),
        # and DuckDB computes identical aggregates once; the per-unit values turn it into 0/1.
        rows = _windowed(exp.Count(this=exp.Star()), _in_window(scan.source, pre_window))
        scan.columns.append(UnitColumn(name=name, tree=rows, indicator=True))
    return name


# --------------------------------------------------------------------------------------
# Schema validation: unknown columns are named with the metric, before anything runs.
