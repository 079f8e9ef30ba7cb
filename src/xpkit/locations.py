"""Where a configured table lives: a file (or glob, or remote object) or a database table.

One rule for the config (which resolves relative paths and checks that files exist) and
for the engines (which read a file location through a reader and a table name directly).
"""

from __future__ import annotations

from pathlib import Path

FILE_SUFFIXES = (".parquet", ".csv")


def is_remote(location: str) -> bool:
    """``scheme://...``: object stores and cluster filesystems, not the local disk."""
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme.replace("+", "").isalnum() and len(scheme) > 1


def is_file_location(location: str, base: Path | None = None) -> bool:
    """A path, glob or remote object rather than the name of a table in a database.

    Anything with a path separator or a wildcard, a known data-file suffix, a remote URL,
    or a bare name that is an existing file (relative to ``base``, else the working
    directory).
    """
    if is_remote(location) or location.endswith(FILE_SUFFIXES):
        return True
    if any(ch in location for ch in "/\\*"):
        return True
    return ((base / location) if base is not None else Path(location)).is_file()
