"""Every output column is described, in the Parquet files and in docs/outputs.md, and the
document is the one the schemas generate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.test_errors_data import run, world
from xpkit.output.docs import render_outputs
from xpkit.output.schemas import (
    ADDED_SCORECARD_COLUMNS,
    CHECKS_SCHEMA,
    HISTORY_SCHEMA,
    SCORECARD_SCHEMA,
    description,
)
from xpkit.output.validate import validate_scorecard

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "outputs.md"


@pytest.mark.parametrize("schema", [SCORECARD_SCHEMA, CHECKS_SCHEMA, HISTORY_SCHEMA])
def test_every_column_has_a_description(schema: pa.Schema) -> None:
    missing = [f.name for f in schema if len(description(f)) < 10]
    assert not missing, missing


def test_docs_outputs_md_is_generated_from_the_schemas() -> None:
    assert DOC.is_file(), "write it with: python -m xpkit.output.docs docs/outputs.md"
    assert DOC.read_text() == render_outputs(), (
        "docs/outputs.md is out of date: regenerate it with "
        "`python -m xpkit.output.docs docs/outputs.md`"
    )
    for schema in (SCORECARD_SCHEMA, CHECKS_SCHEMA, HISTORY_SCHEMA):
        for field in schema:
            assert f"| `{field.name}` |" in DOC.read_text()


def test_the_check_mode_fails_on_a_stale_document(tmp_path: Path) -> None:
    stale = tmp_path / "outputs.md"
    stale.write_text("# old\n")
    command = [sys.executable, "-m", "xpkit.output.docs", "--check", str(stale)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "out of date" in done.stderr
    subprocess.run(command[:3] + [str(stale)], check=True, capture_output=True)
    assert subprocess.run(command, capture_output=True, check=False).returncode == 0


def test_published_files_carry_the_descriptions_and_the_metric_description(
    tmp_path: Path,
) -> None:
    config = world(
        tmp_path,
        metrics="from xpkit import Metric, Source\n\n\nclass Daily(Source):\n"
        '    table = "daily"\n\n\nclass Played(Metric):\n'
        '    """Titles played per member,\n    over the window."""\n\n'
        '    source = Daily\n    expression = "SUM(played)"\n',
    )
    assert run(config, "--history").exit_code == 0
    out = tmp_path / "out"
    for kind, schema in (
        ("scorecards", SCORECARD_SCHEMA),
        ("checks", CHECKS_SCHEMA),
        ("history", HISTORY_SCHEMA),
    ):
        (path,) = (out / kind).rglob("data.parquet")
        written = pq.read_schema(path)
        for field in schema:
            assert description(written.field(field.name)) == description(field), field.name
    (path,) = (out / "scorecards").rglob("data.parquet")
    values = set(pq.read_table(path).column("metric_description").to_pylist())
    assert values == {"Titles played per member, over the window."}


def test_a_scorecard_written_before_the_column_reads_with_no_description(tmp_path: Path) -> None:
    assert ADDED_SCORECARD_COLUMNS["metric_description"] is None
    row = {name: None for name in SCORECARD_SCHEMA.names}
    row.update(metric="m", population="itt", valid=True)
    table = pa.Table.from_pylist([row], schema=SCORECARD_SCHEMA).drop_columns(
        ["metric_description"]
    )
    read = validate_scorecard(table, tmp_path / "old.parquet")
    assert read.column("metric_description").to_pylist() == [None]
    assert read.column_names == SCORECARD_SCHEMA.names
