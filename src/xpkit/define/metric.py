"""The analyst-facing API: ``Source`` and ``Metric`` declarations.

A metric is a small class. Its ``expression`` is a per-unit aggregate written in SQL (DuckDB
syntax); it is parsed by sqlglot when the class is defined, so a typo, a second statement,
DDL or DML fails at import time with the metric's name, never inside an engine::

    class WatchSeconds(Metric):
        \"\"\"Seconds watched per member in the analysis window.\"\"\"
        source = EngagementDaily
        expression = "SUM(watch_seconds)"
        covariate = "pre"        # CUPED on the same expression over the pre-period

Column names are checked against the source's real schema when an experiment runs.
"""

from __future__ import annotations

import hashlib
import re
from typing import ClassVar, Literal

import sqlglot

# Every metric is parsed in DuckDB's dialect when its class is defined: the dialect loads
# with xpkit rather than lazily inside the first metric definition (it takes ~0.07 s).
import sqlglot.dialects.duckdb  # noqa: F401
import sqlglot.errors
from sqlglot import exp
from sqlglot.errors import ParseError

from xpkit.errors import MetricDefinitionError

MetricKind = Literal["mean", "proportion", "ratio", "quantile"]

# Statement types that may never appear inside a metric expression: an expression is a
# fragment that ends up inside xpkit's SELECT, so anything that writes, defines or nests a
# query is a mistake (or an injection) and is rejected before any SQL is rendered.
_FORBIDDEN_NODES: tuple[type[exp.Expr], ...] = (
    exp.Select,
    exp.Subquery,
    exp.Union,
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Command,
    exp.Window,
    exp.Star,
)


def snake_case(name: str) -> str:
    """``WatchSeconds`` -> ``watch_seconds``; ``CTRClicks`` -> ``ctr_clicks``."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def parse_fragment(sql: str, *, owner: str, field: str, aggregate: bool) -> exp.Expr:
    """Parse one SQL expression, rejecting anything that is not a plain fragment.

    ``aggregate=True`` demands a per-unit aggregate (it must contain an aggregate function
    and no bare column outside one); ``aggregate=False`` demands a row-level predicate or
    value (no aggregate at all).
    """
    if not isinstance(sql, str) or not sql.strip():
        raise MetricDefinitionError(f"{owner}: `{field}` must be a non-empty SQL string")
    try:
        statements = sqlglot.parse(sql, read="duckdb")
    except ParseError as err:
        first = err.errors[0]["description"] if err.errors else str(err)
        raise MetricDefinitionError(
            f"{owner}: `{field}` is not valid SQL ({first}): {sql!r}"
        ) from None
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise MetricDefinitionError(
            f"{owner}: `{field}` must be a single expression, found {len(statements)} "
            f"statements: {sql!r}"
        )
    tree = statements[0]
    assert tree is not None  # None statements were dropped above
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN_NODES) and not (
            isinstance(node, exp.Star) and isinstance(node.parent, exp.Count)
        ):
            raise MetricDefinitionError(
                f"{owner}: `{field}` may only be an expression over the source's columns; "
                f"{type(node).__name__.upper()} is not allowed: {sql!r}"
            )
    has_agg = any(isinstance(n, exp.AggFunc) for n in tree.walk())
    if aggregate:
        if not has_agg:
            raise MetricDefinitionError(
                f"{owner}: `{field}` must be a per-unit aggregate such as SUM(col), "
                f"MAX(CASE ...) or COUNT(*): {sql!r}"
            )
        for col in tree.find_all(exp.Column):
            if col.find_ancestor(exp.AggFunc) is None:
                raise MetricDefinitionError(
                    f"{owner}: column {col.name!r} in `{field}` is used outside an aggregate; "
                    f"wrap it, e.g. SUM({col.name}): {sql!r}"
                )
    elif has_agg:
        raise MetricDefinitionError(
            f"{owner}: `{field}` is applied to each source row and may not aggregate: {sql!r}"
        )
    return tree


def referenced_columns(tree: exp.Expr) -> set[str]:
    return {c.name for c in tree.find_all(exp.Column)}


class Source:
    """Where a metric's rows come from.

    ``table`` is a logical name that the run configuration maps to a Parquet path/glob or
    a table in the database; ``unit`` is the randomisation unit's column and ``time`` the
    row's date (or timestamp) column.
    """

    table: ClassVar[str]
    unit: ClassVar[str] = "member_id"
    time: ClassVar[str] = "date"
    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        owner = f"source {cls.__name__}"
        if "name" not in cls.__dict__:
            cls.name = snake_case(cls.__name__)
        for attr in ("table", "unit", "time"):
            value = getattr(cls, attr, None)
            if not isinstance(value, str) or not value.strip():
                raise MetricDefinitionError(f"{owner}: `{attr}` must be a non-empty string")
        for attr in ("unit", "time"):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", getattr(cls, attr)):
                raise MetricDefinitionError(
                    f"{owner}: `{attr}` must be a plain column name, got {getattr(cls, attr)!r}"
                )
        if not isinstance(cls.name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", cls.name):
            raise MetricDefinitionError(
                f"{owner}: `name` must be letters, digits and _ (not starting with a digit), "
                f"got {cls.name!r}"
            )
        _check_table(cls.table, owner)


class Metric:
    """A per-unit metric over a post-assignment window.

    Attributes an analyst sets:

    - ``source``: a :class:`Source` subclass.
    - ``expression``: per-unit aggregate (``SUM(watch_seconds)``); units with no rows in the
      window count as 0, never dropped.
    - ``kind``: ``"mean"`` (default), ``"proportion"`` (expression is 0/1 per unit) or
      ``"ratio"`` (``expression`` / ``denominator``, both per-unit aggregates, analysed with
      the delta method).
    - ``denominator``: the per-unit aggregate under a ratio.
    - ``filter``: optional row predicate applied before aggregating (``device = 'tv'``).
    - ``covariate``: ``"pre"`` for CUPED on the same expression over the pre-assignment
      window, another per-unit aggregate evaluated over the pre-window, or ``None``.
    - ``cap``: winsorise the per-unit value at a fixed number (``cap = 86400``) or at a
      pooled percentile (``cap = "p99"``).
    - ``kind = "quantile"`` with ``quantile = 0.9``: the difference of the q-quantile
      between arms. Unit level with ``expression`` (the quantile of per-unit values), event
      level with ``value`` instead, a row-level expression (the quantile over all of the
      source's rows in the window, units as clusters). No CUPED, cap or sequential test:
      such metrics are refused with a message.
    - ``higher_is_better``: direction used by decisions and guardrails.
    - ``name``: defaults to the snake_case of the class name; the docstring is the
      description.
    """

    source: ClassVar[type[Source]]
    expression: ClassVar[str]
    kind: ClassVar[MetricKind] = "mean"
    denominator: ClassVar[str | None] = None
    filter: ClassVar[str | None] = None
    covariate: ClassVar[str | None] = None
    cap: ClassVar[float | str | None] = None
    quantile: ClassVar[float | None] = None
    value: ClassVar[str | None] = None
    higher_is_better: ClassVar[bool] = True
    name: ClassVar[str]
    description: ClassVar[str] = ""

    # Parsed forms, set at class definition.
    expression_tree: ClassVar[exp.Expr]
    denominator_tree: ClassVar[exp.Expr | None]
    filter_tree: ClassVar[exp.Expr | None]
    covariate_tree: ClassVar[exp.Expr | None]
    value_tree: ClassVar[exp.Expr | None]  # event-level quantile: the row-level value
    cap_value: ClassVar[float | None]
    cap_percentile: ClassVar[float | None]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = snake_case(cls.__name__)
        owner = f"metric {cls.name!r} ({cls.__module__}.{cls.__qualname__})"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", cls.name):
            raise MetricDefinitionError(
                f"{owner}: name must be lower snake_case letters, digits and _, got {cls.name!r}"
            )
        cls.description = " ".join((cls.__doc__ or "").split())
        source = getattr(cls, "source", None)
        if not (isinstance(source, type) and issubclass(source, Source) and source is not Source):
            raise MetricDefinitionError(f"{owner}: `source` must be a Source subclass")
        if cls.kind not in ("mean", "proportion", "ratio", "quantile"):
            raise MetricDefinitionError(
                f"{owner}: `kind` must be 'mean', 'proportion', 'ratio' or 'quantile', "
                f"got {cls.kind!r}"
            )
        cls.value_tree = None
        if cls.kind == "quantile":
            _check_quantile(cls, owner)
            if cls.value is not None:
                cls.value_tree = parse_fragment(
                    cls.value, owner=owner, field="value", aggregate=False
                )
                # What the metric reads, for the column checks, its hash and the probe that
                # binds it before the real statement: a row value must be a number, and
                # SUM refuses text with the metric named.
                cls.expression = f"SUM({cls.value_tree.sql('duckdb')})"
        elif cls.value is not None or cls.quantile is not None:
            raise MetricDefinitionError(
                f"{owner}: `value` and `quantile` are for kind = 'quantile' (kind is {cls.kind!r})"
            )
        expression = getattr(cls, "expression", None)
        if not isinstance(expression, str):
            raise MetricDefinitionError(
                f'{owner}: `expression` must be a SQL string such as "SUM(watch_seconds)", '
                f"got {expression!r}"
            )
        cls.expression_tree = parse_fragment(
            expression, owner=owner, field="expression", aggregate=True
        )
        if cls.kind == "ratio":
            if cls.denominator is None:
                raise MetricDefinitionError(f"{owner}: a ratio metric needs a `denominator`")
            cls.denominator_tree = parse_fragment(
                cls.denominator, owner=owner, field="denominator", aggregate=True
            )
        elif cls.denominator is not None:
            raise MetricDefinitionError(
                f"{owner}: `denominator` is only for kind = 'ratio' (kind is {cls.kind!r})"
            )
        else:
            cls.denominator_tree = None
        cls.filter_tree = (
            None
            if cls.filter is None
            else parse_fragment(cls.filter, owner=owner, field="filter", aggregate=False)
        )
        if cls.covariate is None:
            cls.covariate_tree = None
        elif cls.covariate == "pre":
            cls.covariate_tree = cls.expression_tree
        else:
            cls.covariate_tree = parse_fragment(
                cls.covariate, owner=owner, field="covariate", aggregate=True
            )
        cls.cap_value, cls.cap_percentile = _parse_cap(cls.cap, owner)
        if cls.kind == "ratio" and cls.cap is not None:
            raise MetricDefinitionError(f"{owner}: `cap` is not supported on ratio metrics")
        if not isinstance(cls.higher_is_better, bool):
            raise MetricDefinitionError(f"{owner}: `higher_is_better` must be True or False")

    @classmethod
    def columns_used(cls) -> set[str]:
        trees = [cls.expression_tree, cls.denominator_tree, cls.filter_tree, cls.covariate_tree]
        cols: set[str] = set()
        for tree in trees:
            if tree is not None:
                cols |= referenced_columns(tree)
        return cols

    @classmethod
    def definition_sha256(cls) -> str:
        """Hash of everything that defines the metric's numbers (for provenance)."""
        parts = [
            cls.name,
            cls.kind,
            cls.source.table,
            cls.source.unit,
            cls.source.time,
            cls.expression_tree.sql("duckdb"),
            "" if cls.denominator_tree is None else cls.denominator_tree.sql("duckdb"),
            "" if cls.filter_tree is None else cls.filter_tree.sql("duckdb"),
            "" if cls.covariate_tree is None else cls.covariate_tree.sql("duckdb"),
            repr(cls.cap),
            "" if cls.value_tree is None else cls.value_tree.sql("duckdb"),
            repr(cls.quantile),
            repr(cls.higher_is_better),
        ]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _check_quantile(cls: type[Metric], owner: str) -> None:
    """A quantile metric: a level in (0, 1), one of ``expression`` (unit level) or ``value``
    (event level), and none of what only means-based estimators support."""
    q = cls.quantile
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 < float(q) < 1.0:
        raise MetricDefinitionError(
            f"{owner}: a quantile metric needs `quantile` strictly between 0 and 1 "
            f"(quantile = 0.9 for the 90th percentile), got {q!r}"
        )
    has_expression = isinstance(getattr(cls, "expression", None), str)
    if has_expression == (cls.value is not None):
        raise MetricDefinitionError(
            f"{owner}: a quantile metric takes `expression` (a per-unit aggregate: the "
            f"quantile of per-unit values) or `value` (a row-level value: the quantile over "
            f"all rows, units as clusters), exactly one of them"
        )
    if cls.covariate is not None:
        raise MetricDefinitionError(
            f"{owner}: quantile metrics have no CUPED adjustment (xpkit has no validated "
            f"variance reduction for quantiles); remove `covariate`"
        )
    if cls.cap is not None:
        raise MetricDefinitionError(
            f"{owner}: `cap` does not apply to a quantile metric (a quantile is not moved by "
            f"a few extreme values); remove it"
        )


def _check_table(table: str, owner: str) -> None:
    """A logical table name: no control characters, and one sqlglot can quote."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in table):
        raise MetricDefinitionError(
            f"{owner}: `table` contains a control character (a newline, a tab...): {table!r}"
        )
    try:
        exp.to_table(table)
    except sqlglot.errors.SqlglotError as err:
        raise MetricDefinitionError(
            f"{owner}: `table` is not a table name ({str(err).splitlines()[0]}): {table!r}; "
            f"write it as name, schema.name or catalog.schema.name"
        ) from None


def _parse_cap(cap: object, owner: str) -> tuple[float | None, float | None]:
    if cap is None:
        return None, None
    if isinstance(cap, bool):
        raise MetricDefinitionError(f"{owner}: `cap` must be a number or 'pNN', got {cap!r}")
    if isinstance(cap, int | float):
        return float(cap), None
    if isinstance(cap, str):
        m = re.fullmatch(r"p(\d+(?:\.\d+)?)", cap.strip())
        if m and 0 < float(m.group(1)) < 100:
            return None, float(m.group(1)) / 100
    raise MetricDefinitionError(
        f"{owner}: `cap` must be a number (cap = 86400) or a percentile like 'p99', got {cap!r}"
    )
