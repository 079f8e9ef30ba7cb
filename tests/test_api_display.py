"""How results show themselves: the report's sections in a notebook, the terminal's text
elsewhere, and Plotly's JavaScript inlined once per Python session.

The notebook HTML of a run must carry the same figures and tables as ``xpkit report``'s
page of the same run published (read back from both pages); each table object shows its
own sections. In headless Chromium (skipped without it, except in CI), outputs placed on
one page as a notebook places them draw their charts from the one inlined library, and an
output shown before the library waits for it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from plotly.offline import get_plotlyjs

import xpkit
import xpkit.api.results as results_module
from tests.browser import Page, chromium, find_chromium
from xpkit.cli import main
from xpkit.output.report import build_report
from xpkit.output.terminal import Style, render_history, render_scorecard

RUN_DATE = "2024-04-05"
HOMEPAGE = "homepage_ranking_v2"
CHART = re.compile(r'<script type="application/json" data-chart="([^"]+)">(.*?)</script>', re.S)
LIBRARY = get_plotlyjs()[:2000]  # enough of plotly.min.js to tell it is inlined


@pytest.fixture(scope="module")
def result(sample_dir: Path) -> xpkit.Result:
    return xpkit.run(
        sample_dir / "experiments.toml", HOMEPAGE, run_date=RUN_DATE, history=True, threads=1
    )


@pytest.fixture(scope="module")
def report_page(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``xpkit report``'s page of the same run, published by ``xpkit run``."""
    out = tmp_path_factory.mktemp("published")
    args = ["run", "--config", str(sample_dir / "experiments.toml"), "--out", str(out)]
    args += ["--experiment", HOMEPAGE, "--history", "--run-date", RUN_DATE, "--threads", "1"]
    ran = CliRunner().invoke(main, [*args, "--quiet"])
    assert ran.exit_code == 0, ran.output
    return build_report(out, HOMEPAGE)


@pytest.fixture()
def fresh_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if no output of this Python session had shown Plotly's JavaScript yet."""
    monkeypatch.setattr(results_module, "_plotly_sent", False)


def figures(page: str) -> dict[str, Any]:
    """Each chart's figure by its id's suffix (``forest``, ``history``, ``slices-0``...)."""
    found = {}
    for chart_id, text in CHART.findall(page):
        suffix = re.sub(r"^(exp-[^-]+|xpkit-[0-9a-f]+-\d+)-", "", chart_id)
        found[suffix] = json.loads(text)
    return found


def table(page: str, css_class: str) -> list[str]:
    """The rows of every ``<table class="{css_class} ...">`` of a page, as text."""
    blocks = re.findall(rf'<table class="{css_class}[^"]*">(.*?)</table>', page, re.S)
    return [re.sub(r"\s+", " ", b).strip() for b in blocks]


def test_a_result_shows_the_report_s_charts_and_tables(
    result: xpkit.Result, report_page: str, fresh_session: None
) -> None:
    html = result._repr_html_()
    mine, theirs = figures(html), figures(report_page)
    assert set(mine) == {"forest", "history", "slices-0", "slices-1", "dist-0", "dist-1"}
    assert mine == theirs
    for css_class in ("checks", "srm", "heterogeneity"):
        assert table(html, css_class) == table(report_page, css_class), css_class
        assert table(html, css_class)
    numbers = re.compile(r'<details class="numbers">.*?</details>', re.S)
    assert numbers.findall(html) == numbers.findall(report_page)
    banner = re.compile(r'<div class="banner .*?</div>\s*</div>', re.S)
    assert banner.findall(html) == banner.findall(report_page) != []
    # A run that was never published says so where the report names the run.
    assert '<dd class="hash">not published</dd>' in html
    assert "<dt>files</dt>" not in html


def test_plotly_s_javascript_is_inlined_once_per_session(
    result: xpkit.Result, fresh_session: None
) -> None:
    first = result._repr_html_()
    later = [result._repr_html_(), result.scorecard._repr_html_(), result.checks._repr_html_()]
    assert LIBRARY in first and 'new Event("xpkit-plotly")' in first
    assert all(LIBRARY not in h for h in later)
    assert LIBRARY in result.to_html(plotlyjs=True)  # asked for: always
    assert LIBRARY in xpkit.plotly_js()._repr_html_()  # again on the page, for the waiting
    assert LIBRARY not in result.to_html(plotlyjs=False)


def test_each_table_shows_its_own_sections(result: xpkit.Result, sample_dir: Path) -> None:
    heads = re.compile(r"<h3>([^<]+)</h3>")
    assert heads.findall(result.to_html()) == [
        "Health",
        "Effects",
        "Slices",
        "Distributions of the quantile metrics",
        "Effect over time",
        "Provenance",
    ]
    assert heads.findall(result.scorecard.to_html()) == [
        "Effects",
        "Slices",
        "Distributions of the quantile metrics",
        "Provenance",
    ]
    assert 'class="banner banner-' in result.scorecard.to_html()
    assert heads.findall(result.checks.to_html()) == ["Health"]
    assert result.history is not None
    assert heads.findall(result.history.to_html()) == ["Effect over time"]
    # Several experiments: every section, and a table of contents linking them.
    every = xpkit.run(sample_dir / "experiments.toml", run_date=RUN_DATE)
    page = every.to_html()
    assert len(re.findall(r'<nav class="toc"', page)) == 1
    anchors = re.findall(r'<a href="#(xpkit-[0-9a-f]+-\d+)">', page)
    assert len(anchors) == 4 and all(f'id="{a}"' in page for a in anchors)


def test_text_is_what_the_command_line_prints(result: xpkit.Result) -> None:
    assert result.history is not None
    style = Style()
    assert repr(result) == (
        render_scorecard(result.scorecard.to_arrow(), result.checks.to_arrow(), style)
        + "\n\n"
        + render_history(result.history.to_arrow(), style=style)
    )
    assert str(result) == repr(result)
    assert repr(result.scorecard) == render_scorecard(result.scorecard.to_arrow(), None, style)
    assert repr(result.checks).startswith(f"Health checks of {HOMEPAGE}\n  [PASS] ")
    assert repr(result.history).startswith("Effect over time (ITT)")
    assert repr(result.decision) == "\n".join(str(d) for d in result.decision.values())
    assert str(result.decision["treatment"]).startswith("treatment vs control: KEEP RUNNING\n  - ")


# -- in a browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser_path() -> str:
    found = find_chromium()
    if found is None:
        reason = "no Chromium to open notebook outputs in (Debian: apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the browser tests", pytrace=False)
        pytest.skip(reason)
    return found


@pytest.fixture()
def page(browser_path: str) -> Iterator[Page]:
    with chromium(browser_path) as browser:
        tab = browser.new_page()
        tab.set_viewport(1100, 900)
        yield tab


def notebook_page(path: Path, outputs: list[str]) -> Path:
    """Outputs one after another, as a notebook's cells put them on its page."""
    cells = "\n".join(f'<div class="output">{html}</div>' for html in outputs)
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'></head><body>{cells}</body></html>",
        encoding="utf-8",
    )
    return path


def drawn(page: Page, count: int, tries: int = 150) -> list[str | None]:
    """Each output root's number of drawn charts, once ``count`` of them are drawn."""
    script = (
        "Array.from(document.querySelectorAll('div.xpkit'))"
        ".map(function (d) { return d.getAttribute('data-charts-ready'); })"
    )
    for _ in range(tries):
        states = page.evaluate(script)
        if sum(s is not None for s in states) >= count:
            return list(states)
        time.sleep(0.1)
    return list(page.evaluate(script))


def test_outputs_share_one_inlined_library(
    page: Page, result: xpkit.Result, tmp_path: Path, fresh_session: None
) -> None:
    outputs = [result._repr_html_(), result.scorecard._repr_html_(), result.checks._repr_html_()]
    page.goto(notebook_page(tmp_path / "nb.html", outputs).as_uri())
    # forest, slices x2, quantile distributions x2, history; the checks: none
    assert drawn(page, 3) == ["6", "5", "0"]
    assert page.evaluate("document.querySelectorAll('.plotly-missing').length") == 0
    traces = page.evaluate(
        "Array.from(document.querySelectorAll('div.xpkit')[1].querySelectorAll('.js-plotly-plot'))"
        ".map(function (d) { return d.querySelectorAll('.scatterlayer .trace').length; })"
    )
    assert len(traces) == 5 and all(t > 0 for t in traces)
    assert page.errors() == []


def test_an_output_without_the_library_waits_for_it(
    page: Page, result: xpkit.Result, tmp_path: Path
) -> None:
    assert result.history is not None
    early = result.history.to_html(plotlyjs=False)
    path = notebook_page(tmp_path / "nb.html", [early])
    page.goto(path.as_uri())
    assert drawn(page, 1, tries=10) == [None]
    note = page.evaluate("document.querySelector('.plotly-missing').textContent")
    assert "Run xpkit.plotly_js() in a cell to load it" in note
    path = notebook_page(tmp_path / "nb2.html", [early, xpkit.plotly_js()._repr_html_()])
    page.goto(path.as_uri())
    assert drawn(page, 2) == ["1", "0"]  # the history; the library's own output has none
    assert page.evaluate("document.querySelectorAll('.plotly-missing').length") == 0
    assert page.errors() == []
