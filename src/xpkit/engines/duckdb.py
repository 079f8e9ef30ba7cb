"""DuckDB in process, the default engine: views over files, one statement, Arrow back."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterator, Mapping
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
    """DuckDB in process over Parquet files and/or a ``.duckdb`` database file.

    ``frames`` are in-memory tables by logical name (pandas or polars DataFrames, pyarrow
    Tables or Datasets, DuckDB relations: anything DuckDB scans from Python), registered
    as views beside the ``tables`` locations. ``connection`` runs everything on a
    connection the caller owns (a notebook's, whose tables and relations the run may then
    read) instead of a private one: it is left as it was found, open, its settings
    restored and the views this engine made dropped.
    """

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
        frames: Mapping[str, object] | None = None,
        connection: duckdb.DuckDBPyConnection | None = None,
    ) -> None:
        self._borrowed = connection is not None
        self._views: list[str] = []  # made on a borrowed connection: dropped at close
        self._restore: dict[str, str] = {}  # a borrowed connection's settings before ours
        self._own_temp: str | None = None
        if connection is not None:
            if database:
                raise DataError(
                    f"database {database!r} and a connection were both given; the run reads "
                    f"the connection's tables: attach the database to it (ATTACH), or leave "
                    f"out one of them"
                )
            self.con = connection
        else:
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
        # called. A borrowed connection keeps its own unless one is configured.
        if not temp_directory and not self._borrowed:
            own = Path(tempfile.gettempdir()) / f"xpkit-spill-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self._own_temp = str(own)
            weakref.finalize(self, shutil.rmtree, self._own_temp, True)
        try:
            # Scheduled runs write logs: no carriage-return progress bar in them. (Under
            # Jupyter without ipywidgets DuckDB refuses to change the setting at all, and
            # shows no bar either.)
            if not self._borrowed:
                with contextlib.suppress(duckdb.Error):
                    self._set("enable_progress_bar", "false")
            # A TIMESTAMPTZ becomes a calendar date in this zone, not in the machine's.
            self._set("TimeZone", exp.Literal.string(timezone).sql())
            if memory_limit:
                self._set("memory_limit", exp.Literal.string(memory_limit).sql())
            if threads:
                self._set("threads", str(int(threads)))
            spill = temp_directory or self._own_temp
            if spill:
                self._set("temp_directory", exp.Literal.string(str(spill)).sql())
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
        for name, frame in (frames or {}).items():
            try:
                self._register_frame(name, frame)
            except DataError:
                self.close()
                raise

    def _set(self, name: str, value: str) -> None:
        """``SET name = value``, remembering a borrowed connection's value to restore."""
        if self._borrowed and name not in self._restore:
            row = self.con.execute("SELECT current_setting(?)", [name]).fetchone()
            self._restore[name] = "" if row is None else str(row[0])
        self.con.execute(f"SET {name} = {value}")

    def _claim(self, name: str) -> str:
        """The view's quoted name; on a borrowed connection, refuse to replace a temporary
        table or view the caller already has under that name."""
        view = exp.to_table(name).sql("duckdb")
        if self._borrowed:
            taken = self.con.execute(
                "SELECT 1 FROM duckdb_views() WHERE temporary AND lower(view_name) = lower(?) "
                "UNION ALL SELECT 1 FROM duckdb_tables() WHERE temporary "
                "AND lower(table_name) = lower(?)",
                [name, name],
            ).fetchall()
            if taken:
                raise DataError(
                    f"table {name!r}: the connection already has a temporary view or table "
                    f"named {name!r}, which the run would replace; drop it first (DROP VIEW "
                    f"{view}), or run on another connection"
                )
            self._views.append(view)
        return view

    def _register(self, name: str, location: str) -> None:
        """A view named after the logical table, over the files or the database table."""
        if is_file_location(location):
            reader = "read_csv_auto" if location.endswith(".csv") else "read_parquet"
            view = self._claim(name)
            path = exp.Literal.string(location).sql("duckdb")
            self.con.execute(
                f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {reader}({path})"
            )
            if reader == "read_parquet" and not Path(location).is_file():
                self._check_one_schema(name, location, view, path)
        elif location != name:
            view = self._claim(name)
            target = exp.to_table(location).sql("duckdb")
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {target}")

    def _register_frame(self, name: str, frame: object) -> None:
        """A view named after the logical table over an in-memory object, read once here so
        that an object DuckDB cannot scan is reported with its table's name."""
        if exp.to_table(name).db:
            raise DataError(
                f"table {name!r}: an in-memory table needs a plain name (no schema): register "
                f"it under {exp.to_table(name).name!r} and name that in the metrics' sources"
            )
        view = self._claim(name)
        try:
            self.con.register(name, frame)
            self.con.sql(f"SELECT * FROM {view} LIMIT 0").fetchall()
        except duckdb.Error as err:
            if "another database" in str(err) or "another connection" in str(err):
                raise DataError(
                    f"table {name!r}: the DuckDB relation was made on another connection; "
                    f"pass that connection as connection= (duckdb.default_connection() for "
                    f"duckdb.sql(...)), or its data (relation.arrow())"
                ) from None
            kind = type(frame).__name__
            raise DataError(
                f"table {name!r}: DuckDB cannot read {'an' if kind[:1] in 'aeiouAEIOU' else 'a'} {kind} "
                f"({_first_line(err)}); pass a pandas or polars DataFrame, a pyarrow Table or "
                f"a DuckDB relation"
            ) from None

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
        with self._translated():
            relation = self.con.sql(sql)
            if relation is None:  # a statement without a result
                return pa.table({})
            # DuckDB 2 names it to_arrow_table(); 1.x returns a Table from arrow().
            fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
            return fetch()

    def write_parquet(self, sql: str, path: str) -> None:
        """Run one statement and write its result to the Parquet file ``path``, streamed
        (an incremental run's state is as long as the experiment has units)."""
        target = exp.Literal.string(path).sql("duckdb")
        with self._translated():
            # The rows' order does not matter here, and keeping it serialises the writers.
            (ordered,) = self.con.execute(
                "SELECT current_setting('preserve_insertion_order')"
            ).fetchall()[0]
            self.con.execute("SET preserve_insertion_order = false")
            try:
                self.con.execute(f"COPY ({sql}) TO {target} (FORMAT parquet)")
            finally:
                self.con.execute(f"SET preserve_insertion_order = {bool(ordered)}")

    def register_parquet(self, name: str, path: str | list[str]) -> None:
        """A view ``name`` over the Parquet file ``path`` (or files; replaced when it
        exists), dropped when the engine closes."""
        view = exp.to_table(name).sql("duckdb")
        paths = [path] if isinstance(path, str) else path
        location = exp.Array(expressions=[exp.Literal.string(p) for p in paths]).sql("duckdb")
        with self._translated():
            self.con.execute(
                f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM read_parquet({location})"
            )
        if self._borrowed and view not in self._views:
            self._views.append(view)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """DuckDB's errors as xpkit's: the user's to fix (DataError), the data's
        (EngineDataError) or the statement's (EngineStatementError)."""
        try:
            yield
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

    def _give_back(self) -> None:
        """A borrowed connection as it was found: our views dropped, its settings back."""
        views, self._views = self._views, []
        for view in views:
            with contextlib.suppress(duckdb.Error):
                self.con.execute(f"DROP VIEW IF EXISTS {view}")
        restore, self._restore = self._restore, {}
        for name, value in restore.items():
            try:
                self.con.execute(f"SET {name} = {exp.Literal.string(value).sql()}")
            except duckdb.Error:
                with contextlib.suppress(duckdb.Error):
                    self.con.execute(f"RESET {name}")

    def _spill(self) -> str:
        try:
            return str(
                self.con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0]
            )
        except duckdb.Error:  # pragma: no cover - a closed connection
            return "?"

    def close(self) -> None:
        if getattr(self, "con", None) is not None and not self._borrowed:
            self.con.close()
        elif getattr(self, "con", None) is not None:
            self._give_back()
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
