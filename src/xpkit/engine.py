"""Run generated SQL where the data lives; bring back small Arrow tables.

An engine maps the logical table names that metrics and the configuration use to real
data (Parquet files, tables in a database), answers "which columns does this table
have?" (so unknown columns are reported with the metric's name before a query runs) and
executes a statement in its own dialect. DuckDB, in process, is the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import duckdb
import pyarrow as pa
from sqlglot import exp

from xpkit.errors import DataError


class Engine(Protocol):
    dialect: str

    def columns(self, table: str) -> list[str] | None:
        """Column names of a logical table, or None when it does not exist."""

    def query(self, sql: str) -> pa.Table:
        """Run one statement (in this engine's dialect) and return its result."""

    def close(self) -> None: ...


class DuckDBEngine:
    """DuckDB in process over Parquet files and/or a ``.duckdb`` database file."""

    dialect = "duckdb"

    def __init__(
        self,
        tables: Mapping[str, str] | None = None,
        *,
        database: str | None = None,
        memory_limit: str | None = None,
        threads: int | None = None,
        temp_directory: str | None = None,
    ) -> None:
        self.con = duckdb.connect(database or ":memory:", read_only=bool(database))
        # Scheduled runs write logs: no carriage-return progress bar in them.
        self.con.execute("SET enable_progress_bar = false")
        if memory_limit:
            self.con.execute(f"SET memory_limit = {exp.Literal.string(memory_limit).sql()}")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        if temp_directory:
            self.con.execute(f"SET temp_directory = {exp.Literal.string(temp_directory).sql()}")
        # Views over files: the generated SQL names logical tables, so the same statement
        # runs against files here and against real tables on a warehouse.
        for name, location in (tables or {}).items():
            try:
                self._register(name, location)
            except duckdb.Error as err:
                first_line = str(err).strip().splitlines()[0]
                raise DataError(f"table {name!r}: cannot read {location!r}: {first_line}") from None

    def _register(self, name: str, location: str) -> None:
        """A view named after the logical table, over the files or the database table."""
        if _is_file_location(location):
            reader = "read_csv_auto" if location.endswith(".csv") else "read_parquet"
            view = exp.to_table(name).sql("duckdb")
            path = exp.Literal.string(location).sql("duckdb")
            self.con.execute(
                f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {reader}({path})"
            )
        elif location != name:
            view = exp.to_table(name).sql("duckdb")
            target = exp.to_table(location).sql("duckdb")
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {target}")

    def columns(self, table: str) -> list[str] | None:
        try:
            rel = self.con.sql(f"SELECT * FROM {exp.to_table(table).sql('duckdb')} LIMIT 0")
        except duckdb.Error:
            return None
        return list(rel.columns)

    def query(self, sql: str) -> pa.Table:
        try:
            relation = self.con.sql(sql)
            if relation is None:  # a statement without a result
                return pa.table({})
            # DuckDB 2 names it to_arrow_table(); 1.x returns a Table from arrow().
            fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
            return fetch()
        except duckdb.CatalogException as err:
            raise DataError(f"the data does not match the configuration: {err}") from None
        except duckdb.OutOfMemoryException as err:
            raise DataError(
                f"DuckDB ran out of memory ({err}); raise the memory limit or set a "
                f"temp_directory with space to spill"
            ) from None

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> DuckDBEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_file_location(location: str) -> bool:
    return (
        location.endswith((".parquet", ".csv"))
        or any(c in location for c in "/\\*")
        or Path(location).is_file()
    )


def open_engine(
    name: str,
    tables: Mapping[str, str],
    *,
    database: str | None = None,
    memory_limit: str | None = None,
    threads: int | None = None,
) -> Engine:
    """The engine a run asked for, by name."""
    if name == "duckdb":
        return DuckDBEngine(tables, database=database, memory_limit=memory_limit, threads=threads)
    if name == "spark":
        from xpkit.spark_engine import SparkEngine  # optional dependency

        return SparkEngine(tables)
    raise DataError(f"unknown engine {name!r}; choose 'duckdb' or 'spark'")
