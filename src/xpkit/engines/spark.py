"""Run the generated SQL on Spark when one machine is not enough.

The statement is the same one DuckDB runs, written in the Spark dialect by
:func:`xpkit.compile.dialects.finish`; Spark scans the fact tables where they live and only the
per-variant moments (a few rows) come back to Python.

The session is the usual Spark one: an active session if there is one (a notebook, a job
started with ``spark-submit``), else ``SparkSession.builder.getOrCreate()``, which picks up
``spark-defaults.conf``, ``SPARK_REMOTE`` (Spark Connect) and the submit-time settings.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlglot import exp

from xpkit.errors import BadInputError, DataError, EngineDataError, EngineStatementError
from xpkit.locations import is_file_location

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Dates come from casting timestamps in the session zone, which is the config's timezone
# on every engine, so windows line up across engines and machines.
_TIME_ZONE_KEY = "spark.sql.session.timeZone"
# Spark's error conditions for names that do not resolve to data.
_MISSING_DATA = (
    "TABLE_OR_VIEW_NOT_FOUND",
    "PATH_NOT_FOUND",
    "UNRESOLVED_COLUMN",
    "UNRESOLVED_FIELD",
    "UNRESOLVED_MAP_KEY",
)


def _analysis_exception() -> type[Exception]:
    from pyspark.errors import AnalysisException

    return AnalysisException


def _spark_exception() -> type[Exception]:
    """Every error PySpark raises for a failed statement (analysis, cast, overflow...)."""
    from pyspark.errors import PySparkException

    return PySparkException


class SparkEngine:
    """Spark SQL over temp views named after the configuration's logical tables."""

    dialect = "spark"

    def __init__(
        self,
        tables: Mapping[str, str] | None = None,
        *,
        session: SparkSession | None = None,
        app_name: str = "xpkit",
        timezone: str = "UTC",
    ) -> None:
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise BadInputError(
                "the Spark engine needs PySpark: pip install 'xpkit[spark]' "
                "(and a Java runtime for a local session)"
            ) from None
        self._owns_session = False
        if session is None:
            session = SparkSession.getActiveSession()
        if session is None:
            # A session of xpkit's own writes no console progress bar (carriage returns in
            # a scheduled job's log), as the DuckDB engine does not.
            session = (
                SparkSession.builder.appName(app_name)
                .config("spark.ui.showConsoleProgress", "false")
                .getOrCreate()
            )
            self._owns_session = True
        self.spark: SparkSession = session
        # A session we were handed keeps its own time zone once we are done with it.
        self._previous_time_zone = session.conf.get(_TIME_ZONE_KEY, None)
        session.conf.set(_TIME_ZONE_KEY, timezone)
        self._views: list[str] = []
        for name, location in (tables or {}).items():
            self._register(name, location)

    def _register(self, name: str, location: str) -> None:
        if is_file_location(location):
            if len(exp.to_table(name).parts) > 1:
                raise DataError(
                    f"table {name!r}: a file location needs a plain table name (no schema), "
                    f"because it is registered as a temporary view"
                )
            reader = self.spark.read
            try:
                with _quiet_query_context_logs():
                    frame = (
                        reader.options(header=True, inferSchema=True).csv(location)
                        if location.endswith(".csv")
                        else reader.parquet(location)
                    )
            except _analysis_exception() as err:
                raise DataError(
                    f"table {name!r}: cannot read {location!r}: {_first_line(err)}"
                ) from None
            frame.createOrReplaceTempView(name)
            self._views.append(name)
        elif location != name:
            # A logical name over an existing table: the generated SQL names logical tables,
            # so a view keeps it unchanged whatever the catalog calls the table.
            try:
                with _quiet_query_context_logs():
                    frame = self.spark.table(_quoted(location))
            except _analysis_exception() as err:
                raise DataError(
                    f"table {name!r}: cannot read {location!r}: {_first_line(err)}"
                ) from None
            frame.createOrReplaceTempView(name)
            self._views.append(name)

    def columns(self, table: str) -> list[str] | None:
        try:
            with _quiet_query_context_logs():
                return list(self.spark.table(_quoted(table)).columns)
        except _analysis_exception():
            return None

    def query(self, sql: str) -> pa.Table:
        try:
            with _quiet_query_context_logs():
                return _to_arrow(self.spark.sql(sql))
        except _analysis_exception() as err:
            # A missing table, file or column is the user's to fix; any other analysis
            # error is a statement the caller must attribute (a metric's expression in a
            # probe), else one xpkit should not have generated, and surfaces as such.
            if _condition(err).startswith(_MISSING_DATA):
                raise DataError(
                    f"the data does not match the configuration: {_first_line(err)}"
                ) from None
            raise EngineStatementError(_first_line(err)) from err
        except _spark_exception() as err:
            # Raised while running: a failed cast, an overflow, a bad date in the data.
            raise EngineDataError(_first_line(err)) from err

    def write_parquet(self, sql: str, path: str) -> None:
        """Run one statement and write its result as Parquet under the folder ``path``."""
        try:
            with _quiet_query_context_logs():
                self.spark.sql(sql).write.mode("overwrite").parquet(path)
        except _analysis_exception() as err:
            raise EngineStatementError(_first_line(err)) from err
        except _spark_exception() as err:
            raise EngineDataError(_first_line(err)) from err

    def register_parquet(self, name: str, path: str | list[str]) -> None:
        """A temporary view ``name`` over the Parquet data at ``path`` (or paths; replaced
        when it exists), dropped when the engine closes."""
        paths = [path] if isinstance(path, str) else path
        with _quiet_query_context_logs():
            self.spark.read.parquet(*paths).createOrReplaceTempView(name)
        if name not in self._views:
            self._views.append(name)

    def close(self) -> None:
        if self._owns_session:
            self.spark.stop()
            return
        for view in self._views:
            self.spark.catalog.dropTempView(view)
        if self._previous_time_zone is None:
            self.spark.conf.unset(_TIME_ZONE_KEY)
        else:
            self.spark.conf.set(_TIME_ZONE_KEY, self._previous_time_zone)

    def __enter__(self) -> SparkEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _quoted(table: str) -> str:
    return exp.to_table(table).sql("spark")


def _condition(err: Exception) -> str:
    """Spark's error condition (``getCondition`` from 4.0, ``getErrorClass`` before)."""
    for getter in ("getCondition", "getErrorClass"):
        method = getattr(err, getter, None)
        if method is not None:
            return method() or ""
    return ""


def _first_line(err: Exception) -> str:
    """The reason without the logical plan Spark appends to analysis errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextmanager
def _quiet_query_context_logs() -> Iterator[None]:
    """Silence PySpark's own logging of an analysis error while we translate it.

    PySpark >= 4 logs every failed statement with its Java stack trace before raising; the
    error still reaches the caller as a one-line DataError, so the log would only bury it.
    """
    try:
        from pyspark.logger import PySparkLogger
    except ImportError:  # PySpark 3.5 does not log them
        yield
        return
    # PySparkLogger.getLogger creates them with the class that accepts PySpark's extra
    # keyword arguments; a plain logging.getLogger here would make its later calls fail.
    loggers = [
        PySparkLogger.getLogger(name)
        for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger")
    ]
    previous = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        yield
    finally:
        for lg, was in zip(loggers, previous, strict=True):
            lg.disabled = was


def _to_arrow(frame: DataFrame) -> pa.Table:
    to_arrow = getattr(frame, "toArrow", None)  # PySpark >= 4
    if to_arrow is not None:
        return to_arrow()
    # PySpark 3.5: the result is a few rows of moments, so collecting Rows is cheap and keeps
    # integers, decimals and dates as they are (pandas would turn NULL integers into floats).
    rows = frame.collect()
    columns: dict[str, list[Any]] = {c: [row[c] for row in rows] for c in frame.columns}
    return pa.table(columns)
