"""On Spark too, an expression the engine rejects or cannot compute names the metric.

One local session for the module (it takes ~10 s to start); every case runs the command
line with ``--engine spark``, which reuses the active session and leaves it running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_errors_data import FACTS, SOURCE, assert_message, metric, run, world

pytestmark = pytest.mark.spark


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("SUM(frobnicate(played))", "UNRESOLVED_ROUTINE"),
        ("SUM(played) + SUM(title = 1)", "title"),
        ("SUM(CAST(title AS INTEGER))", "x0"),
    ],
    ids=["unknown_function", "type_mismatch", "failed_cast"],
)
def test_spark_errors_name_the_metric(
    spark: Any, tmp_path: Path, expression: str, reason: str
) -> None:
    config = world(
        tmp_path, metrics=SOURCE + metric("SUM(played)", name="Fine") + metric(expression)
    )
    result = run(config, "--engine", "spark")
    assert_message(result, "metric 'played'", "table 'daily'", reason)
    assert "metric 'fine'" not in result.output


def test_spark_a_date_column_stored_as_text(spark: Any, tmp_path: Path) -> None:
    facts = FACTS.replace(
        "DATE '2024-01-01' + INTERVAL (d) DAY AS date",
        "strftime(DATE '2024-01-01' + INTERVAL (d) DAY, '%d/%m/%Y') AS date",
    )
    result = run(world(tmp_path, facts=facts), "--engine", "spark")
    assert_message(result, "column 'date' of table 'daily' holds text")


def test_spark_the_tiny_world_runs(spark: Any, tmp_path: Path) -> None:
    result = run(world(tmp_path), "--engine", "spark")
    assert result.exit_code == 0, result.output
