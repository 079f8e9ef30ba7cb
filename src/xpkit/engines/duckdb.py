"""DuckDB in process, the default engine: views over files, one statement, Arrow back."""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
import pyarrow as pa
from sqlglot import exp

from xpkit.errors import DataError
from xpkit.locations import is_file_location


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
        timezone: str = "UTC",
    ) -> None:
        self.con = duckdb.connect(database or ":memory:", read_only=bool(database))
        # Scheduled runs write logs: no carriage-return progress bar in them.
        self.con.execute("SET enable_progress_bar = false")
        # A TIMESTAMPTZ becomes a calendar date in this zone, not in the machine's.
        self.con.execute(f"SET TimeZone = {exp.Literal.string(timezone).sql()}")
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
        if is_file_location(location):
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
