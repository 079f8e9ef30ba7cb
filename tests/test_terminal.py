"""``xpkit show`` fits the terminal: 80 columns get a readable layout, colour only on a
terminal (never with NO_COLOR), and the history summarised unless --full."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from xpkit import cli
from xpkit.cli import main
from xpkit.output.storage import read_run, select_runs
from xpkit.output.terminal import Style, render_history, render_scorecard

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def out(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shown")
    result = CliRunner().invoke(
        main,
        ["run", "--config", str(sample_dir / "experiments.toml"), "--out", str(folder),
         "--history", "--run-date", "2024-04-05", "--quiet", "--experiment",
         "homepage_ranking_v2", "--slice", "device,country"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return folder


def _run(out: Path):
    (manifest,) = select_runs(out, "homepage_ranking_v2")
    return read_run(manifest)


@pytest.mark.parametrize("width", [80, 100, 160])
def test_every_line_fits_the_width(out: Path, width: int) -> None:
    run = _run(out)
    style = Style(width=width)
    text = render_scorecard(run.scorecard, run.checks, style) + "\n"
    text += render_history(run.history, style=style)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    # The numbers are all there at any width: every metric, slice value and verdict.
    for word in ("watch_seconds", "errors_per_play", "by device", "mobile", "JP", "Decision"):
        assert word in text


def test_wide_terminals_get_aligned_columns_narrow_ones_blocks(out: Path) -> None:
    run = _run(out)
    wide = render_scorecard(run.scorecard, run.checks, Style(width=200))
    narrow = render_scorecard(run.scorecard, run.checks, Style(width=80))
    assert re.search(r"^  metric\s+variant\s+role\s+n ctl/var", wide, re.M)
    assert not re.search(r"^  metric\s+variant\s+role", narrow, re.M)
    assert re.search(r"^  watch_seconds  treatment$", narrow, re.M)
    assert "rel lift [CI] " in narrow


def test_colour_only_when_asked(out: Path) -> None:
    run = _run(out)
    plain = render_scorecard(run.scorecard, run.checks, Style(color=False))
    coloured = render_scorecard(run.scorecard, run.checks, Style(color=True))
    assert not ANSI.search(plain)
    assert ANSI.search(coloured)
    assert ANSI.sub("", coloured) == plain


def test_colour_follows_the_terminal_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert cli._style().color
    monkeypatch.setenv("NO_COLOR", "1")
    assert not cli._style().color
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert not cli._style().color


def test_history_is_summarised_unless_full(out: Path) -> None:
    run = _run(out)
    days = len({r["analysis_date"] for r in run.history.to_pylist()})
    assert days > 5
    short = render_history(run.history, style=Style(width=160))
    full = render_history(run.history, style=Style(width=160, full=True))
    date_lines = lambda text: [x for x in text.splitlines() if re.match(r"\s+\d{4}-\d\d-\d\d", x)]  # noqa: E731
    assert len(date_lines(full)) == days * 6  # every day of each metric's series
    assert len(full.splitlines()) > 3 * len(short.splitlines())
    assert "(--full: every day)" in short
    result = CliRunner().invoke(main, ["show", str(out), "--full"])
    assert result.exit_code == 0 and len(result.output.splitlines()) > len(short.splitlines())
