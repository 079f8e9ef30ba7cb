"""Shared fixtures: tiny hand-made tables and the generated sample data set."""

from __future__ import annotations

import shutil
from pathlib import Path

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
