"""The SQL xpkit prints, per dialect, is reviewed like code: any change shows up as a diff.

``tests/golden/`` holds what ``xpkit sql`` prints for the experiment of test_compile (fixed
dates, so no data is needed) in every dialect. A change to a template or to the dialect
rewrites fails here until the new files are written and reviewed:

    XPKIT_UPDATE_GOLDEN=1 pytest tests/test_golden_sql.py
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
import sqlglot

from tests.test_compile import DATES, EXPERIMENT, METRICS
from xpkit.compile import DIALECTS, compile_moments
from xpkit.config import AssignmentColumns

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("XPKIT_UPDATE_GOLDEN") == "1"


def golden_path(dialect: str) -> Path:
    return GOLDEN / f"moments.{dialect}.sql"


def printed_sql(dialect: str) -> str:
    """What ``xpkit sql --dialect DIALECT`` prints (click.echo adds the final newline)."""
    query = compile_moments(EXPERIMENT, METRICS, AssignmentColumns(), DATES, dialect=dialect)
    return query.sql + "\n"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_sql_matches_the_golden_file(dialect: str) -> None:
    path = golden_path(dialect)
    sql = printed_sql(dialect)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sql)
    assert path.exists(), f"{path} is missing; create it with XPKIT_UPDATE_GOLDEN=1"
    expected = path.read_text()
    if sql != expected:
        diff = difflib.unified_diff(
            expected.splitlines(), sql.splitlines(), str(path), "generated", lineterm=""
        )
        pytest.fail(
            f"the {dialect} SQL changed; review the diff, then rewrite the golden files with "
            f"XPKIT_UPDATE_GOLDEN=1:\n" + "\n".join(list(diff)[:80]),
            pytrace=False,
        )


@pytest.mark.parametrize("dialect", DIALECTS)
def test_golden_file_parses_in_its_dialect(dialect: str) -> None:
    tree = sqlglot.parse_one(golden_path(dialect).read_text(), read=dialect)
    assert isinstance(tree, sqlglot.exp.Query)
    assert tree.find(sqlglot.exp.With) is not None


def test_there_is_one_golden_file_per_dialect() -> None:
    """A file left over from a removed dialect would never be checked again."""
    assert sorted(p.name for p in GOLDEN.glob("*.sql")) == sorted(
        golden_path(d).name for d in DIALECTS
    )
