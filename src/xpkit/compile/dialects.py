"""Where each output dialect differs from the DuckDB SQL the templates are written in.

The templates are DuckDB SQL; :func:`finish` parses a rendered statement back with sqlglot
and writes it in the target dialect. sqlglot translates syntax; what it cannot know is
where a dialect *means* something else by the same words. Each dialect's rules live in
one :class:`Dialect` (a subclass where it rewrites the tree), the way sqlglot keeps a
dialect's pieces in its own subclass.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from xpkit.errors import MetricDefinitionError


class Dialect:
    """A target dialect: sqlglot's name for it and what the statement must avoid there."""

    #: CTEs accept ``AS MATERIALIZED``; elsewhere the hint is dropped and the engine decides
    #: (Spark reuses the shared exchange).
    materialized_ctes: bool = False
    #: Has an exact percentile aggregate. Without one (BigQuery's PERCENTILE_CONT is a
    #: window function only; Trino has approx_percentile alone) pooled percentile caps
    #: cannot be written without changing the numbers.
    exact_percentile: bool = True

    def __init__(self, name: str) -> None:
        self.name = name

    def rewrite(self, tree: exp.Expr) -> None:
        """Change, in place, what this dialect reads differently; nothing by default."""


class _Materializing(Dialect):
    materialized_ctes = True


class _NoExactPercentile(Dialect):
    exact_percentile = False


class _Spark(Dialect):
    def rewrite(self, tree: exp.Expr) -> None:
        """Rewrite the DuckDB constructs that Spark reads differently.

        - ``QUANTILE_CONT(x, q)``: sqlglot writes ``PERCENTILE_CONT(x, q)``, which Spark
          rejects (it only knows the ``WITHIN GROUP`` form). ``PERCENTILE(x, q)`` is Spark's
          exact percentile with the same linear interpolation, so pooled caps agree with
          DuckDB's.
        - ``AVG``: DuckDB's is always DOUBLE; Spark's AVG of a DECIMAL (an integer metric
          with a fractional cap, ``LEAST(SUM(n), 2.5)``) stays DECIMAL, which turns the
          shifted sums of products into DECIMAL arithmetic rounded to 6 decimal places. A
          DOUBLE cast keeps the moments in the same floating-point arithmetic on both
          engines.
        """
        for node in list(tree.find_all(exp.PercentileCont)):
            if not isinstance(node.parent, exp.WithinGroup):
                node.replace(exp.Quantile(this=node.this, quantile=node.expression))
        for avg in list(tree.find_all(exp.Avg)):
            # The whole aggregate call, including its FILTER or OVER clause, is cast.
            call: exp.Expr = avg
            while isinstance(call.parent, exp.Filter | exp.Window) and call.arg_key == "this":
                call = call.parent
            parent = call.parent
            if isinstance(parent, exp.Cast) and parent.is_type(exp.DataType.Type.DOUBLE):
                continue
            cast = exp.Cast(to=exp.DataType.build("DOUBLE"))
            call.replace(cast)
            cast.set("this", call)


_DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (
        _Materializing("duckdb"),
        _Spark("spark"),
        _NoExactPercentile("bigquery"),
        Dialect("snowflake"),
        _NoExactPercentile("trino"),
        _Materializing("postgres"),
    )
}
DIALECTS: tuple[str, ...] = tuple(_DIALECTS)


def dialect(name: str) -> Dialect:
    """The rules of dialect ``name``; an unknown name is an error that lists the known ones."""
    try:
        return _DIALECTS[name]
    except KeyError:
        raise MetricDefinitionError(
            f"unknown dialect {name!r}; choose one of {', '.join(DIALECTS)}"
        ) from None


def finish(sql: str, dialect_name: str) -> str:
    """Parse rendered DuckDB SQL back with sqlglot and write it in ``dialect_name``, pretty."""
    target = dialect(dialect_name)
    tree = sqlglot.parse_one(sql, read="duckdb")
    if not target.materialized_ctes:
        for cte in tree.find_all(exp.CTE):
            cte.set("materialized", None)
    target.rewrite(tree)
    return tree.sql(dialect=target.name, pretty=True)
