"""Rendering helpers: every identifier and literal spliced into a template goes through sqlglot.

A value from a user (an experiment id, a table or column name, a date) is never pasted
into SQL text: it becomes a sqlglot node first and is written out by sqlglot, so quoting
and escaping are sqlglot's, in one place.
"""

from __future__ import annotations

import functools
from datetime import date

from sqlglot import exp


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


def render(tree: exp.Expr) -> str:
    """A sqlglot expression as the DuckDB text the templates are written in."""
    return tree.sql("duckdb")
