"""Where a configured table lives: a file (or glob, or remote object) or a database table.

One rule for the config (which resolves relative paths and checks that files exist) and
for the engines (which read a file location through a reader and a table name directly).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

FILE_SUFFIXES = (".parquet", ".csv")


def is_remote(location: str) -> bool:
    """``scheme://...``: object stores and cluster filesystems, not the local disk."""
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme.replace("+", "").isalnum() and len(scheme) > 1


def is_file_location(location: str, base: Path | None = None) -> bool:
    """A path, glob or remote object rather than the name of a table in a database.

    Anything with a path separator or a wildcard, a known data-file suffix, a remote URL,
    or a bare name that is an existing file or folder (relative to ``base``, else the working
    directory).
    """
    if is_remote(location) or location.endswith(FILE_SUFFIXES):
        return True
    if any(ch in location for ch in "/\\*"):
        return True
    return ((base / location) if base is not None else Path(location)).exists()


def _pattern(glob_text: str) -> re.Pattern[str]:
    """A glob as a regular expression over '/'-separated paths (``**`` spans folders)."""
    out = []
    i = 0
    while i < len(glob_text):
        ch = glob_text[i]
        if glob_text.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if glob_text.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[" and "]" in glob_text[i + 1 :]:
            end = glob_text.index("]", i + 1)
            body = glob_text[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out))


def location_matches(location: str, path: Path) -> bool:
    """Would a table read at ``location`` (a file, a folder or a glob) read ``path``?

    An existing file or folder is taken literally (a folder reads every file below it);
    anything else is a glob, ``**`` matching any number of folders.
    """
    if is_remote(location):
        return False
    target = Path(os.path.abspath(path)).as_posix()
    where = Path(os.path.abspath(location))
    if where.exists():
        return target == where.as_posix() or (
            where.is_dir() and target.startswith(where.as_posix().rstrip("/") + "/")
        )
    return _pattern(where.as_posix()).fullmatch(target) is not None


def table_reading(folder: Path, probe: Path, tables: Mapping[str, str]) -> tuple[str, str] | None:
    """The first table (name, location) that would read ``folder`` or ``probe``, a file
    xpkit writes under it: a folder xpkit writes to must not be a table's data."""
    for name, location in tables.items():
        if location_matches(location, probe) or location_matches(location, folder):
            return name, location
    return None
