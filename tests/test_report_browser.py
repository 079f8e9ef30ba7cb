"""The report in headless Chromium: no script error, every chart drawn, readable at two widths.

A report of the sample experiments' real run (plus a copy of one with slice rows) is
opened from disk in a fresh headless Chromium, driven through the DevTools protocol
(tests/browser.py). The traces and points of every chart are read from Plotly's DOM and
compared with counts taken from the published Parquet; the population and metric
toggles are clicked; the page must not scroll sideways at 1366 or 400 pixels, and every
chart must fit its column. Screenshots at both widths are kept in test-artifacts/report/.

Needs Chromium (Debian: ``apt-get install chromium``): skipped without it, except in CI
(CI=true), where a missing browser fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import Page, chromium, find_chromium
from tests.test_report import RUN_DATE, SLICED, invoke, publish_sample, publish_sliced
from xpkit.output.storage import read_run, select_runs

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "report"
LAPTOP = (1366, 900)
NARROW = (400, 860)

CHARTS_JS = """
Array.from(document.querySelectorAll('.js-plotly-plot')).map(function (div) {
  return {
    id: div.id,
    drawn: div.querySelectorAll('.scatterlayer .trace').length,
    markers: div.querySelectorAll('.scatterlayer .trace .points path').length,
    width: div.getBoundingClientRect().width,
    layout_width: div._fullLayout.width,
    column: div.parentElement.getBoundingClientRect().width,
    traces: div.data.map(function (t) {
      return {
        name: t.name,
        group: t.meta ? t.meta.group : null,
        visible: t.visible !== false,
        mode: t.mode,
        fill: t.fill || null,
        points: (t.x || []).filter(function (x) { return x !== null && x !== undefined; }).length
      };
    })
  };
})
"""


@pytest.fixture(scope="module")
def browser_path() -> str:
    found = find_chromium()
    if found is None:
        reason = "no Chromium to open the report in (Debian: apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the browser tests", pytrace=False)
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def report(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = publish_sample(sample_dir, tmp_path_factory.mktemp("browser") / "out")
    publish_sliced(out)
    path = out.parent / "report.html"
    result = invoke("report", str(out), "--out", str(path))
    assert result.exit_code == 0, result.output
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, ARTIFACTS / "report.html")
    return out, path


@pytest.fixture(scope="module")
def page(browser_path: str, report: tuple[Path, Path]) -> Iterator[Page]:
    _, path = report
    with chromium(browser_path) as browser:
        tab = browser.new_page()
        tab.send("Network.enable")
        tab.set_viewport(*LAPTOP)
        tab.goto(path.resolve().as_uri())
        tab.evaluate("window.xpkitReport.ready")
        yield tab


def expected_charts(out: Path) -> dict[str, list[tuple[str, str, int]]]:
    """(group, trace name, points) of every chart, from the published Parquet alone."""
    charts: dict[str, list[tuple[str, str, int]]] = {}
    for manifest in select_runs(out):
        run = read_run(manifest)
        rows = run.scorecard.to_pylist()
        overall = [r for r in rows if r.get("slice_dimension") in (None, "(all)")]
        if not overall[0]["valid"] and all(r["rel_lift"] is None for r in overall):
            continue  # invalid: effects (and so the charts) withheld
        anchor = f"exp-{manifest.experiment_id}"
        variants = list(dict.fromkeys(r["variant"] for r in rows))
        forest = [
            (
                p,
                v,
                sum(
                    1
                    for r in overall
                    if (r["population"], r["variant"]) == (p, v) and r["rel_lift"] is not None
                ),
            )
            for p in ("itt", "tot", "cace")
            if any(r["population"] == p for r in overall)
            for v in variants
        ]
        guardrails = {r["metric"] for r in overall if r["guardrail_margin"] is not None}
        if guardrails:
            forest.append(("*", "non-inferiority margin", 2 * len(guardrails)))
        charts[f"{anchor}-forest"] = forest
        looks = [r for r in run.history.to_pylist() if r["population"] == "itt"]
        series = []
        for metric in dict.fromkeys(
            r["metric"] for r in overall if any(h["metric"] == r["metric"] for h in looks)
        ):
            for v in variants:
                days = sum(1 for h in looks if (h["metric"], h["variant"]) == (metric, v))
                series += [
                    (metric, f"{v}: always-valid interval", 2 * days),
                    (metric, f"{v}: fixed-horizon CI", 2 * days),
                    (metric, v, days),
                ]
        charts[f"{anchor}-history"] = series
        cuts = [r for r in rows if r.get("slice_dimension") not in (None, "(all)")]
        for i, dimension in enumerate(dict.fromkeys(r["slice_dimension"] for r in cuts)):
            mine = [r for r in cuts if r["slice_dimension"] == dimension]
            traces = [
                (
                    p,
                    v,
                    sum(
                        1
                        for r in mine
                        if (r["population"], r["variant"]) == (p, v) and r["rel_lift"] is not None
                    ),
                )
                for p in ("itt", "tot", "cace")
                if any(r["population"] == p for r in mine)
                for v in variants
            ]
            guarded = {
                (r["metric"], r["slice_value"]) for r in mine if r["guardrail_margin"] is not None
            }
            if guarded:
                traces.append(("*", "non-inferiority margin", 2 * len(guarded)))
            charts[f"{anchor}-slices-{i}"] = traces
        kept = (run.scorecard.schema.metadata or {}).get(b"xpkit.histograms")
        levels = {r["metric"]: r.get("quantile_level") for r in overall}
        for i, (metric, populations) in enumerate(json.loads(kept or b"{}").items()):
            if "itt" in populations and levels.get(metric) is not None:
                charts[f"{anchor}-dist-{i}"] = [
                    (None, v, len(h["values"])) for v, h in populations["itt"].items()
                ]
    return charts


def charts_on(page: Page) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in page.evaluate(CHARTS_JS)}


def test_no_script_errors_and_nothing_fetched(page: Page) -> None:
    assert page.errors() == []
    fetched = [
        e["params"]["request"]["url"]
        for e in page.browser.events("Network.requestWillBeSent", page.session)
    ]
    assert fetched and all(
        url.split(":", 1)[0] in ("file", "data", "blob", "about") for url in fetched
    ), fetched


def test_every_chart_has_its_traces_and_points(page: Page, report: tuple[Path, Path]) -> None:
    out, _ = report
    expected = expected_charts(out)
    found = charts_on(page)
    assert sorted(found) == sorted(expected)
    counts = {}
    for chart_id, want in expected.items():
        traces = found[chart_id]["traces"]
        assert [(t["group"], t["name"], t["points"]) for t in traces] == want, chart_id
        visible = [t for t in traces if t["visible"]]
        first = traces[0]["group"]
        assert all(t["group"] in (first, "*") for t in visible), chart_id
        assert found[chart_id]["drawn"] == len(visible), chart_id  # Plotly drew each one
        markers = sum(t["points"] for t in visible if t["mode"] in ("markers", "lines+markers"))
        assert found[chart_id]["markers"] == markers, chart_id
        counts[chart_id] = (len(traces), [t["points"] for t in traces])
    (ARTIFACTS / "chart-counts.json").write_text(json.dumps(counts, indent=1) + "\n")
    # The sample: artwork_abc has 2 treatment variants x 3 populations, with an errors guardrail.
    assert len(found["exp-artwork_abc-forest"]["traces"]) == 7
    assert [t["points"] for t in found["exp-artwork_abc-forest"]["traces"][:2]] == [4, 4]


def test_the_population_toggle_shows_tot_labelled_selection_biased(page: Page) -> None:
    chart = "exp-homepage_ranking_v2-forest"
    label = page.evaluate(
        f'document.querySelector(\'button[data-toggle-for="{chart}"][data-group="tot"]\').textContent'
    )
    assert label == "TOT (selection-biased)"
    page.evaluate(
        f'document.querySelector(\'button[data-toggle-for="{chart}"][data-group="tot"]\').click()'
    )
    page.evaluate("new Promise(r => setTimeout(r, 300))")
    traces = charts_on(page)[chart]["traces"]
    assert {t["group"] for t in traces if t["visible"]} == {"tot", "*"}
    assert charts_on(page)[chart]["markers"] == sum(
        t["points"] for t in traces if t["group"] == "tot"
    )
    note = page.evaluate(f"document.querySelector('[data-note-of=\"{chart}\"]').textContent")
    assert "SELECTED ON EXPOSURE" in note
    pressed = page.evaluate(
        f"Array.from(document.querySelectorAll('button[data-toggle-for=\"{chart}\"]')).map(b => b.getAttribute('aria-pressed'))"
    )
    assert pressed == ["false", "true", "false"]
    page.evaluate(
        f'document.querySelector(\'button[data-toggle-for="{chart}"][data-group="itt"]\').click()'
    )
    assert page.errors() == []


def test_the_metric_menu_switches_the_effect_over_time(page: Page) -> None:
    chart = "exp-artwork_abc-history"
    options = page.evaluate(
        f"Array.from(document.querySelector('select[data-toggle-for=\"{chart}\"]').options).map(o => o.value)"
    )
    assert options[0] == "plays" and len(options) == 4
    page.evaluate(
        f"""(function () {{
          var menu = document.querySelector('select[data-toggle-for="{chart}"]');
          menu.value = "errors";
          menu.dispatchEvent(new Event("change"));
        }})()"""
    )
    page.evaluate("new Promise(r => setTimeout(r, 300))")
    found = charts_on(page)[chart]
    assert {t["group"] for t in found["traces"] if t["visible"]} == {"errors"}
    assert found["drawn"] == 6  # two variants: two bands and an estimate each
    title = page.evaluate(f"document.getElementById('{chart}')._fullLayout.yaxis.title.text")
    assert title == "errors: treatment − control"
    assert page.errors() == []


def fits(page: Page, width: int) -> None:
    """Nothing scrolls sideways, and every chart was laid out to its column's width."""
    page.evaluate("new Promise(r => setTimeout(r, 600))")  # Plotly's resize handler
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    for chart_id, c in charts_on(page).items():
        assert c["width"] <= c["column"] + 0.5, chart_id
        assert abs(c["layout_width"] - c["width"]) <= 1, chart_id
        assert c["width"] >= min(300, width - 60), chart_id


def test_readable_at_a_laptop_and_a_narrow_width(page: Page) -> None:
    page.set_viewport(*LAPTOP)
    fits(page, LAPTOP[0])
    page.screenshot(ARTIFACTS / "laptop-1366.png", *LAPTOP)
    page.set_viewport(*NARROW, mobile=True)
    fits(page, NARROW[0])
    page.screenshot(ARTIFACTS / "narrow-400.png", *NARROW, mobile=True)
    page.set_viewport(*LAPTOP)
    assert page.errors() == []
    for name in ("laptop-1366.png", "narrow-400.png"):
        assert (ARTIFACTS / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_slices_and_the_sql_copy_button(page: Page) -> None:
    assert page.evaluate(f"document.querySelectorAll('#exp-{SLICED} h4').length") >= 2
    copied = page.evaluate(
        """(function () {
          var button = document.querySelector('button[data-copy="exp-homepage_ranking_v2-sql"]');
          button.closest('details').open = true;
          button.click();
          return new Promise(r => setTimeout(() => r(button.textContent), 200));
        })()"""
    )
    assert copied in ("Copied", "Select and copy by hand")
    assert page.errors() == []
    assert RUN_DATE in page.evaluate("document.body.textContent")
