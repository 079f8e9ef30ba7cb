"""``xpkit report``: one offline HTML page from the published runs, and its mistakes.

The report reads only what ``xpkit run`` published; these tests publish the sample
experiments (two of them invalid by design), then check what the page says and draws
(the figures are read back from the page's JSON, the expectations from the Parquet).
The page in a real browser: tests/test_report_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from xpkit.cli import main
from xpkit.output.report import experiment_page, srm_counts
from xpkit.output.schemas import SQL_METADATA_KEY
from xpkit.output.storage import publish, read_run, select_runs

RUN_DATE = "2024-04-05"
SLICED = "homepage_sliced"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def publish_sample(sample: Path, out: Path) -> Path:
    """The sample experiments run with their history and published under ``out``."""
    result = invoke(
        "run",
        "--config",
        str(sample / "experiments.toml"),
        "--out",
        str(out),
        "--history",
        "--run-date",
        RUN_DATE,
        "--quiet",
    )
    assert result.exit_code == 3, result.output  # player_srm, search_exposure_bug: invalid
    return out


def sliced(scorecard: pa.Table, experiment_id: str = SLICED) -> pa.Table:
    """A scorecard with the slice columns: its rows as the overall ones, plus slice rows
    (ITT watch_seconds and sessions by device, watch_seconds by country), and ``sessions``
    marked a quantile metric."""
    rows = [r for r in scorecard.to_pylist() if r["slice_dimension"] == "(all)"]
    for r in rows:
        r["experiment_id"] = experiment_id
        r.update(slice_dimension="(all)", slice_value="(all)")
        r.update(heterogeneity_p_value=None, heterogeneity_i2=None)
        if r["metric"] == "sessions":
            r["metric_kind"] = "quantile"
    extra = []
    cuts = {"device": ["tv", "mobile"], "country": ["US", "BR", "IN"]}
    for dimension, values in cuts.items():
        metrics = ["watch_seconds", "sessions"] if dimension == "device" else ["watch_seconds"]
        for r in rows:
            if r["population"] != "itt" or r["metric"] not in metrics:
                continue
            for i, value in enumerate(values):
                shift = 0.01 * (i - 1)
                extra.append(
                    dict(
                        r,
                        slice_dimension=dimension,
                        slice_value=value,
                        rel_lift=r["rel_lift"] + shift,
                        rel_ci_low=r["rel_ci_low"] + shift - 0.02,
                        rel_ci_high=r["rel_ci_high"] + shift + 0.02,
                        heterogeneity_p_value=0.03 if dimension == "device" else 0.6,
                        heterogeneity_i2=0.45 if dimension == "device" else 0.0,
                    )
                )
    return pa.Table.from_pylist(rows + extra, schema=scorecard.schema)


def publish_sliced(out: Path) -> None:
    """Publish homepage_ranking_v2's run again as ``homepage_sliced``, with slice rows."""
    (manifest,) = select_runs(out, "homepage_ranking_v2")
    run = read_run(manifest)
    relabel = lambda t: t.set_column(  # noqa: E731
        t.schema.get_field_index("experiment_id"),
        "experiment_id",
        pa.array([SLICED] * t.num_rows, pa.string()),
    )
    tables = {"scorecard": sliced(run.scorecard), "checks": relabel(run.checks)}
    if run.history is not None:
        tables["history"] = relabel(run.history)
    publish(out, SLICED, date.fromisoformat(RUN_DATE), tables, xpkit_version="0.1.0")


@pytest.fixture(scope="module")
def published(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = publish_sample(sample_dir, tmp_path_factory.mktemp("report") / "out")
    publish_sliced(out)
    return out


@pytest.fixture(scope="module")
def page(published: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("page") / "report.html"
    result = invoke("report", str(published), "--out", str(path))
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.output
    return path.read_text()


def figures(html: str) -> dict[str, dict]:
    found = re.findall(
        r'<script type="application/json" data-chart="([^"]+)">(.*?)</script>', html, re.S
    )
    return {chart_id: json.loads(text) for chart_id, text in found}


def section(html: str, experiment_id: str) -> str:
    start = html.index(f'data-experiment="{experiment_id}"')
    end = html.find("<section", start)
    return html[start : end if end != -1 else len(html)]


def scorecard_of(out: Path, experiment_id: str) -> list[dict]:
    (manifest,) = select_runs(out, experiment_id)
    return read_run(manifest).scorecard.to_pylist()


def test_the_page_is_self_contained(page: str) -> None:
    # Nothing is fetched: no element loads a script, style, frame or image from a URL.
    sources = re.findall(
        r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?([^\"' >]+)", page
    )
    assert not [s for s in sources if re.match(r"(?i)(https?:)?//", s)], sources
    assert "<link" not in page
    assert (
        re.search(r"<script>\s*/\*\*?\s*\n?\s*\* plotly\.js", page[:20000]) or "plotly.js" in page
    )
    assert page.count("Plotly.newPlot") >= 1


def test_every_experiment_of_the_latest_run_is_in_it(page: str, published: Path) -> None:
    for experiment in (
        "artwork_abc",
        "homepage_ranking_v2",
        "player_srm",
        "search_exposure_bug",
        SLICED,
    ):
        assert f'data-experiment="{experiment}"' in page
        assert f'href="#exp-{experiment}"' in page


def test_an_invalid_result_is_red_and_first(page: str) -> None:
    srm = section(page, "player_srm")
    alert = srm.index('class="alert"')
    assert alert < srm.index('class="banners"') < srm.index("<h3>Health</h3>")
    assert "INVALID RESULT — do not use these numbers for a decision" in srm
    assert "SAMPLE RATIO MISMATCH" in srm
    assert 'class="banner banner-invalid" data-variant="treatment" data-decision="invalid"' in srm
    assert "Effects are withheld" in srm and "effect over time is withheld" in srm
    assert 'data-chart="exp-player_srm-forest"' not in page
    assert 'class="alert"' not in section(page, "homepage_ranking_v2")


def test_each_treatment_variant_has_a_decision_banner_with_its_reasons(
    page: str, published: Path
) -> None:
    abc = section(page, "artwork_abc")
    for variant in ("treatment_a", "treatment_b"):
        assert f'data-variant="{variant}" data-decision="no_ship"' in abc
    for reason in scorecard_of(published, "artwork_abc")[0]["decision_reasons"]:
        assert reason.replace("'", "&#39;") in abc


def test_the_health_panel_has_every_check_and_the_srm_counts(page: str, published: Path) -> None:
    (manifest,) = select_runs(published, "player_srm")
    checks = read_run(manifest).checks.to_pylist()
    srm = section(page, "player_srm")
    for c in checks:
        assert f"<code>{c['name']}</code>" in srm
    gate = next(c for c in checks if c["name"] == "srm_assignment")
    counts = srm_counts(gate["detail"])
    assert [r.variant for r in counts] == ["control", "treatment"]
    assert sum(r.units for r in counts) == sum(
        int(n) for n in re.findall(r" (\d+) \(", gate["detail"])
    )
    assert all(r.expected == 0.5 for r in counts)
    assert f"{counts[0].units:,}" in srm and f"{counts[0].expected_units:,.0f}" in srm
    assert "Sample ratio: <code>srm_assignment</code>" in srm


def test_the_forest_has_a_trace_per_population_and_variant(page: str, published: Path) -> None:
    rows = scorecard_of(published, "artwork_abc")
    forest = figures(page)["exp-artwork_abc-forest"]
    traces = [t for t in forest["data"] if t["meta"]["group"] != "*"]
    expected = {
        (p, v): sum(
            1
            for r in rows
            if (r["population"], r["variant"]) == (p, v) and r["rel_lift"] is not None
        )
        for p in ("itt", "tot", "cace")
        for v in ("treatment_a", "treatment_b")
    }
    assert {(t["meta"]["group"], t["name"]): len(t["x"]) for t in traces} == expected
    assert [t["visible"] for t in traces] == [t["meta"]["group"] == "itt" for t in traces]
    (margin,) = [t for t in forest["data"] if t["meta"]["group"] == "*"]
    assert [x for x in margin["x"] if x is not None] == [0.10, 0.10]  # errors: a rise of 10%
    # treatment_b's errors guardrail is breached: an x, in red
    b_itt = next(t for t in traces if t["meta"]["group"] == "itt" and t["name"] == "treatment_b")
    assert b_itt["marker"]["symbol"][-1] == "x"
    assert b_itt["marker"]["symbol"][0] == "circle"  # plays: adjusted p < alpha


def test_the_population_toggle_labels_tot_selection_biased(page: str) -> None:
    home = section(page, "homepage_ranking_v2")
    buttons = re.findall(r'data-group="(\w+)"[^>]*>([^<]+)</button>', home)
    assert [g for g, _ in buttons][:3] == ["itt", "tot", "cace"]
    assert dict(buttons)["tot"] == "TOT (selection-biased)"


def test_the_effect_over_time_has_both_intervals_and_the_decision_day(
    page: str, published: Path
) -> None:
    (manifest,) = select_runs(published, "homepage_ranking_v2")
    history = read_run(manifest).history.to_pylist()
    itt = [r for r in history if r["population"] == "itt"]
    days = sorted({r["analysis_date"] for r in itt})
    figure = figures(page)["exp-homepage_ranking_v2-history"]
    metrics = list(dict.fromkeys(r["metric"] for r in itt))
    assert len(figure["data"]) == 3 * len(metrics)  # always-valid band, CI band, estimate
    estimates = [t for t in figure["data"] if t["mode"] == "lines+markers"]
    assert [t["meta"]["group"] for t in estimates] == metrics
    assert all(len(t["x"]) == len(days) for t in estimates)
    bands = [t for t in figure["data"] if t.get("fill") == "toself"]
    assert all(len(t["x"]) == 2 * len(days) for t in bands)
    (line,) = figure["layout"]["shapes"]
    as_of = scorecard_of(published, "homepage_ranking_v2")[0]["as_of"]
    assert line["x0"] == str(as_of) == str(days[-1])
    assert figure["layout"]["annotations"][0]["text"] == "decision day"


def test_provenance_carries_the_runs_sql_and_hashes(page: str, published: Path) -> None:
    (manifest,) = select_runs(published, "homepage_ranking_v2")
    scorecard = read_run(manifest).scorecard
    sql = scorecard.schema.metadata[SQL_METADATA_KEY].decode()
    first = scorecard.to_pylist()[0]
    assert hashlib.sha256(sql.encode()).hexdigest() == first["sql_sha256"]
    home = section(page, "homepage_ranking_v2")
    for value in (
        first["sql_sha256"],
        first["config_sha256"],
        first["xpkit_version"],
        manifest.run_id,
    ):
        assert value in home
    assert "its sha256 matches the scorecard's" in home
    assert 'data-copy="exp-homepage_ranking_v2-sql"' in home
    assert "experiment_id = &#39;homepage_ranking_v2&#39;" in home  # the SQL, escaped
    for table, n in first["rows_read"]:
        assert f"<code>{table}</code> {n:,}" in home


def test_slices_use_the_overall_rows_and_get_a_forest_per_dimension(
    page: str, published: Path
) -> None:
    found = figures(page)
    plain, cut = found["exp-homepage_ranking_v2-forest"], found[f"exp-{SLICED}-forest"]
    assert [len(t["x"]) for t in cut["data"]] == [len(t["x"]) for t in plain["data"]]
    device, country = found[f"exp-{SLICED}-slices-0"], found[f"exp-{SLICED}-slices-1"]
    assert [(t["name"], len(t["x"])) for t in device["data"]] == [("treatment", 4)]
    assert [(t["name"], len(t["x"])) for t in country["data"]] == [("treatment", 3)]
    assert device["layout"]["yaxis"]["ticktext"][0].startswith("tv<br>")
    body = section(page, SLICED)
    assert "<h4>By device</h4>" in body and "<h4>By country</h4>" in body
    heterogeneity = r'<code>sessions</code> · treatment</td><td class="num" data-label="heterogeneity p">0.03</td><td class="num" data-label="I²">45%</td>'
    assert heterogeneity in body
    # The sample's own slices (device and country, configured) get their forests too.
    real = section(page, "homepage_ranking_v2")
    assert "<h4>By device</h4>" in real and "<h4>By country</h4>" in real
    assert "Slices" not in section(page, "artwork_abc")


def test_quantile_metrics_are_labelled(page: str) -> None:
    labels = figures(page)[f"exp-{SLICED}-forest"]["layout"]["yaxis"]["ticktext"]
    (sessions,) = [t for t in labels if t.startswith("sessions<br>")]
    assert "quantile" in sessions
    assert not any(
        "quantile" in t
        for t in figures(page)["exp-artwork_abc-forest"]["layout"]["yaxis"]["ticktext"]
    )
    # The sample's own quantile metrics (play start latency) are labelled too.
    home = figures(page)["exp-homepage_ranking_v2-forest"]["layout"]["yaxis"]["ticktext"]
    assert any(t.startswith("start_<br>latency_p95<br>") and "quantile" in t for t in home)


def test_one_experiment_and_a_run_date(published: Path, tmp_path: Path) -> None:
    path = tmp_path / "deep" / "one.html"
    result = invoke(
        "report",
        str(published),
        "--experiment",
        "artwork_abc",
        "--run-date",
        RUN_DATE,
        "--out",
        str(path),
    )
    assert result.exit_code == 0, result.output
    html = path.read_text()
    assert 'data-experiment="artwork_abc"' in html
    assert 'data-experiment="homepage_ranking_v2"' not in html
    assert set(figures(html)) == {"exp-artwork_abc-forest", "exp-artwork_abc-history"}


def test_a_run_without_history_or_sql_says_how_to_get_them(published: Path, tmp_path: Path) -> None:
    (manifest,) = select_runs(published, "artwork_abc")
    run = read_run(manifest)
    out = tmp_path / "out"
    old = run.scorecard.replace_schema_metadata({})  # published by an xpkit without the SQL
    publish(
        out,
        "artwork_abc",
        manifest.run_date,
        {"scorecard": old, "checks": run.checks},
        xpkit_version="0.1.0",
    )
    (republished,) = select_runs(out)
    page = experiment_page(read_run(republished), "exp-a")
    assert page.history is None and "--history" in page.history_note
    assert page.provenance.sql is None and not page.provenance.sql_verified
    path = tmp_path / "r.html"
    assert invoke("report", str(out), "--out", str(path)).exit_code == 0
    html = path.read_text()
    assert "xpkit sql --experiment artwork_abc --as-of 2024-04-04" in html
    assert "run xpkit run with --history" in html


def assert_bad_input(result: Result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for part in parts:
        assert part in result.output, (part, result.output)


def test_a_missing_out_dir_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = invoke("report", str(missing), "--out", str(tmp_path / "r.html"))
    assert_bad_input(
        result, f"{missing}: no such file or folder", "give the --out folder of xpkit run"
    )
    assert not (tmp_path / "r.html").exists()


def test_a_folder_without_runs_names_it(tmp_path: Path) -> None:
    result = invoke("report", str(tmp_path), "--out", str(tmp_path / "r.html"))
    assert_bad_input(result, f"{tmp_path}: no committed runs here (no runs/ folder")


def test_a_file_instead_of_the_folder_names_it(published: Path, tmp_path: Path) -> None:
    (manifest,) = select_runs(published, "artwork_abc")
    path = manifest.file("scorecard")
    result = invoke("report", str(path), "--out", str(tmp_path / "r.html"))
    assert_bad_input(
        result,
        f"{path}: a file; the report reads the output folder",
        "xpkit report OUT --out report.html",
    )


def test_an_unknown_experiment_lists_the_known_ones(published: Path, tmp_path: Path) -> None:
    result = invoke(
        "report", str(published), "--experiment", "nope", "--out", str(tmp_path / "r.html")
    )
    assert_bad_input(
        result, "no committed run of experiment 'nope'", "experiments with runs here: 'artwork_abc'"
    )


def test_a_run_date_without_a_run_lists_the_dates(published: Path, tmp_path: Path) -> None:
    result = invoke(
        "report", str(published), "--run-date", "2024-01-01", "--out", str(tmp_path / "r.html")
    )
    assert_bad_input(
        result,
        "no committed run of any experiment filed under 2024-01-01",
        f"run dates here: {RUN_DATE}",
    )


def test_a_malformed_run_date_is_a_usage_error(published: Path, tmp_path: Path) -> None:
    result = invoke(
        "report", str(published), "--run-date", "2024-13-40", "--out", str(tmp_path / "r.html")
    )
    assert_bad_input(
        result,
        "Invalid value for '--run-date'",
        "'2024-13-40' does not match the format '%Y-%m-%d'",
    )


def test_an_out_file_that_cannot_be_written_names_it(published: Path, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    target = tmp_path / "a_file" / "r.html"
    result = invoke("report", str(published), "--experiment", "artwork_abc", "--out", str(target))
    assert_bad_input(
        result,
        f"--out {target}: cannot write the report",
        "choose a file in a folder you can write to",
    )
    folder = invoke("report", str(published), "--out", str(tmp_path))
    assert_bad_input(folder, "Invalid value for '--out'", "is a directory")


def test_a_foreign_table_in_a_run_names_the_file(published: Path, tmp_path: Path) -> None:
    (manifest,) = select_runs(published, "artwork_abc")
    run = read_run(manifest)
    out = tmp_path / "out"
    broken = run.checks.drop_columns(["threshold"])
    publish(
        out,
        "artwork_abc",
        manifest.run_date,
        {"scorecard": run.scorecard, "checks": broken},
        xpkit_version="0.1.0",
    )
    result = invoke("report", str(out), "--out", str(tmp_path / "r.html"))
    (republished,) = select_runs(out)
    assert_bad_input(result, str(republished.file("checks")), "missing column(s) threshold")


def test_the_sql_is_kept_in_the_scorecard_file_only(published: Path) -> None:
    (manifest,) = select_runs(published, "homepage_ranking_v2")
    scorecard = pq.read_table(manifest.file("scorecard"))
    checks = pq.read_table(manifest.file("checks"))
    assert SQL_METADATA_KEY in scorecard.schema.metadata
    assert SQL_METADATA_KEY not in checks.schema.metadata
    assert scorecard.schema.remove_metadata().equals(
        pq.read_schema(manifest.file("scorecard")).remove_metadata()
    )
