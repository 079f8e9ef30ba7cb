"""What every engine offers: the columns of a logical table, and one statement run to Arrow.

An engine maps the logical table names that metrics and the configuration use to real
data (Parquet files, tables in a database), answers "which columns does this table
have?" (so unknown columns are reported with the metric's name before a query runs) and
executes a statement in its own dialect.
"""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa


class Engine(Protocol):
    dialect: str

    def columns(self, table: str) -> list[str] | None:
        """Column names of a logical table, or None when it does not exist."""

    def query(self, sql: str) -> pa.Table:
        """Run one statement (in this engine's dialect) and return its result."""

    def write_parquet(self, sql: str, path: str) -> None:
        """Run one statement and write its result as Parquet at ``path`` (a file, or a
        folder of files on a distributed engine)."""

    def register_parquet(self, name: str, path: str | list[str]) -> None:
        """Make the Parquet data ``write_parquet`` wrote at ``path`` (or at each of a list
        of paths, one table) the table ``name``."""

    def close(self) -> None: ...
