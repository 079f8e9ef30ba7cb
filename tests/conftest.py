"""Shared fixtures: tiny hand-made tables and the generated sample data set."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[1]
METRICS_DIR = ROOT / "metrics"


def write_parquet(con: duckdb.DuckDBPyConnection, sql: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY ({sql}) TO '{path}' (FORMAT PARQUET)")
    return path


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample data at a small size plus the sample experiments.toml beside it."""
    from xpkit.sample_data.generate import write_sample

    out = tmp_path_factory.mktemp("sample")
    write_sample(out, members=40_000, seed=7)
    return out


@pytest.fixture()
def sample_copy(sample_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the sample folder a test may modify."""
    dst = tmp_path / "sample"
    shutil.copytree(sample_dir, dst)
    return dst


def spark_missing() -> str | None:
    if importlib.util.find_spec("pyspark") is None:
        return "PySpark is not installed (pip install 'xpkit[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (java_home and Path(java_home, "bin", "java").exists()):
        return "no Java runtime for a local Spark session"
    return None


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local Spark session for every Spark test (fails instead of skipping in CI)."""
    reason = spark_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the Spark tests", pytrace=False)
        pytest.skip(reason)
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("xpkit-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # The test tables are small: compiling whole-stage Java for the wide aggregates of
        # the moments statement costs more than running them (about 40% of the runtime).
        .config("spark.sql.codegen.wholeStage", "false")
        # Loopback only: the tests neither need nor look up the machine's network name.
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
