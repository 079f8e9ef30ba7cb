"""DuckDB in process, the default engine: views over files, one statement, Arrow back."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Mapping
from pathlib import Path

import duckdb
import pyarrow as pa
from sqlglot import exp

from xpkit.errors import DataError, EngineDataError, EngineStatementError
from xpkit.locations import is_file_location

# Errors raised by the data a statement reads, not by the statement's shape.
_DATA_ERRORS: tuple[type[duckdb.Error], ...] = (
    duckdb.ConversionException,
    duckdb.OutOfRangeException,
    duckdb.InvalidInputException,
    duckdb.IOException,
)


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
        try:
            self.con = duckdb.connect(database or ":memory:", read_only=bool(database))
        except duckdb.Error as err:
            raise DataError(
                f"database {database!r} cannot be opened as a DuckDB database file "
                f"({_first_line(err)}); point `database` at a .duckdb file, or list the "
                f"tables' files under [tables]"
            ) from None
        # Spill files go to a private folder removed at close, not the working directory.
        # Not created here: DuckDB makes the folder on its first spill, so runs that fit
        # in memory leave nothing behind; the finalizer removes it even if close() is not
        # called.
        self._own_temp: str | None = None
        if not temp_directory:
            own = Path(tempfile.gettempdir()) / f"xpkit-spill-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self._own_temp = str(own)
            weakref.finalize(self, shutil.rmtree, self._own_temp, True)
        try:
            # Scheduled runs write logs: no carriage-return progress bar in them.
            self.con.execute("SET enable_progress_bar = false")
            # A TIMESTAMPTZ becomes a calendar date in this zone, not in the machine's.
            self.con.execute(f"SET TimeZone = {exp.Literal.string(timezone).sql()}")
            if memory_limit:
                self.con.execute(f"SET memory_limit = {exp.Literal.string(memory_limit).sql()}")
            if threads:
                self.con.execute(f"SET threads = {int(threads)}")
            spill = temp_directory or self._own_temp
            self.con.execute(f"SET temp_directory = {exp.Literal.string(str(spill)).sql()}")
        except duckdb.Error as err:
            self.close()
            raise DataError(
                f"DuckDB refused the run settings (memory_limit={memory_limit!r}, "
                f"threads={threads!r}, temp_directory={temp_directory!r}): {_first_line(err)}"
            ) from None
        # Views over files: the generated SQL names logical tables, so the same statement
        # runs against files here and against real tables on a warehouse.
        for name, location in (tables or {}).items():
            try:
                self._register(name, location)
            except DataError:
                self.close()
                raise
            except duckdb.Error as err:
                self.close()
                hint = ""
                if "schema mismatch" in str(err):
                    hint = (
                        "; its files have different columns, so the location holds more "
                        "than one table: point it at one table's files (e.g. a narrower glob)"
                    )
                raise DataError(
                    f"table {name!r}: cannot read {location!r}: {_first_line(err)}{hint}"
                ) from None

    def _register(self, name: str, location: str) -> None:
        """A view named after the logical table, over the files or the database table."""
        if is_file_location(location):
            reader = "read_csv_auto" if location.endswith(".csv") else "read_parquet"
            view = exp.to_table(name).sql("duckdb")
            path = exp.Literal.string(location).sql("duckdb")
            self.con.execute(
                f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {reader}({path})"
            )
            if reader == "read_parquet" and not Path(location).is_file():
                self._check_one_schema(name, location, view, path)
        elif location != name:
            view = exp.to_table(name).sql("duckdb")
            target = exp.to_table(location).sql("duckdb")
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {target}")

    def _check_one_schema(self, name: str, location: str, view: str, path: str) -> None:
        """Every file of a glob or folder has the first file's columns (one table, not two).

        DuckDB takes the columns from the first file and fails on another file only once a
        query reaches it; the files' footers say it up front.
        """
        first = set(self.con.sql(f"SELECT * FROM {view} LIMIT 0").columns)
        every = self.con.sql(
            f"SELECT * FROM read_parquet({path}, union_by_name = true) LIMIT 0"
        ).columns
        extra = [c for c in every if c not in first]
        if extra:
            raise DataError(
                f"table {name!r}: the files at {location!r} do not share one schema (columns "
                f"{', '.join(extra)} are only in some of them), so the location holds more "
                f"than one table: point it at one table's files (e.g. a narrower glob)"
            )

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
        except duckdb.OutOfMemoryException as err:
            raise DataError(
                f"DuckDB ran out of memory ({_first_line(err)}); raise the limit with "
                f'--memory-limit (or memory_limit in the config, e.g. memory_limit = "8GB"), '
                f"lower --threads, or give it a spill folder with free space with "
                f"--temp-directory (temp_directory in the config; now {self._spill()!r})"
            ) from None
        except duckdb.CatalogException as err:
            if _MISSING_TABLE.search(str(err)):
                raise DataError(
                    f"the data does not match the configuration: {_first_line(err)}"
                ) from None
            raise EngineStatementError(_first_line(err)) from err  # e.g. an unknown function
        except _DATA_ERRORS as err:
            raise EngineDataError(_first_line(err)) from err
        except (duckdb.BinderException, duckdb.ParserException) as err:
            raise EngineStatementError(_first_line(err)) from err

    def _spill(self) -> str:
        try:
            return str(
                self.con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0]
            )
        except duckdb.Error:  # pragma: no cover - a closed connection
            return "?"

    def close(self) -> None:
        if getattr(self, "con", None) is not None:
            self.con.close()
        own_temp = getattr(self, "_own_temp", None)
        if own_temp:
            shutil.rmtree(own_temp, ignore_errors=True)
            self._own_temp = None

    def __enter__(self) -> DuckDBEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_MISSING_TABLE = re.compile(r"\b(Table|View)( Function)? with name .* does not exist", re.I)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
