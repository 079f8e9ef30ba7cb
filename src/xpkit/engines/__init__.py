"""engines: run generated SQL where the data lives and bring back small Arrow tables.

DuckDB in process is the default; Spark (an optional dependency) runs the same statement
in its dialect. Engines know tables and SQL text, nothing of metrics or statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from xpkit.engines.base import Engine
from xpkit.errors import DataError

if TYPE_CHECKING:
    import duckdb

__all__ = ["Engine", "open_engine"]


def open_engine(
    name: str,
    tables: Mapping[str, str],
    *,
    database: str | None = None,
    memory_limit: str | None = None,
    threads: int | None = None,
    timezone: str = "UTC",
    temp_directory: str | None = None,
    frames: Mapping[str, object] | None = None,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> Engine:
    """The engine a run asked for, by name (each imported only when asked for).

    ``memory_limit``, ``threads`` and ``temp_directory`` (the spill folder) are DuckDB's;
    a Spark session takes its resources from its own configuration. ``frames`` (in-memory
    tables by logical name) and ``connection`` (a DuckDB connection the caller owns) are
    DuckDB's too.
    """
    if name == "duckdb":
        from xpkit.engines.duckdb import DuckDBEngine

        return DuckDBEngine(
            tables,
            database=database,
            memory_limit=memory_limit,
            threads=threads,
            timezone=timezone,
            temp_directory=temp_directory,
            frames=frames,
            connection=connection,
        )
    if frames or connection is not None:
        raise DataError(
            f"in-memory tables and a DuckDB connection run on the duckdb engine, not "
            f"{name!r}; give the {name} engine's tables as locations in the config's [tables]"
        )
    if name == "spark":
        from xpkit.engines.spark import SparkEngine  # optional dependency

        return SparkEngine(tables, timezone=timezone)
    raise DataError(f"unknown engine {name!r}; choose 'duckdb' or 'spark'")
