"""Published runs -> one self-contained HTML report (``xpkit report``).

A separate stage: it reads only what ``xpkit run`` published, through the readers of
output/storage.py (a manifest per run, its Parquet tables, all of one run), never an
engine. The page works offline: Plotly's JavaScript is inlined from the installed plotly
package and nothing is loaded from anywhere else.

Per experiment, in this order: the decision banners (an invalid result first, in red),
the health checks with the SRM counts against the expected split, the forest plot of
relative lifts (ITT; TOT, selection-biased, and CACE behind a toggle), the effect over
time from the run's history, and the provenance (version, hashes, rows read, the SQL).

Slices and quantiles, from scorecards that carry them:

- ``slice_dimension`` / ``slice_value``: overall rows carry ``"(all)"`` in both. When the
  columns exist, every overall panel (banners, forest, numbers) uses the overall rows
  only, and the slice rows get a forest per dimension (``_slice_charts``) with their
  ``heterogeneity_p_value`` / ``heterogeneity_i2`` when present.
- ``metric_kind = "quantile"``: such metrics are labelled as quantiles wherever a metric
  is named.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import jinja2
import pyarrow as pa

from xpkit import __version__
from xpkit.errors import BadInputError
from xpkit.files import atomic_path
from xpkit.output import charts
from xpkit.output.charts import Chart, Row, finite, num, pct
from xpkit.output.schemas import EFFECT_COLUMNS, HISTOGRAMS_METADATA_KEY, SQL_METADATA_KEY
from xpkit.output.storage import Manifest, PublishedRun, read_run, select_runs
from xpkit.output.validate import validate_table

OVERALL = "(all)"
TEMPLATE = "report.html.j2"
FRAGMENT = "notebook.html.j2"
STYLES = "report.css"
SCRIPT = "report.js"
# An experiment's sections, top to bottom; a notebook may show some of them.
PARTS = ("banners", "health", "effects", "history", "provenance")
# Shown under a notebook's chart while Plotly's JavaScript is not on the page.
PLOTLY_MISSING = (
    "The chart needs Plotly's JavaScript, which xpkit inlines into the first result a "
    "Python session shows; that output is not on this page (cleared, or the notebook is "
    "not trusted). Run xpkit.plotly_js() in a cell to load it, and the charts draw."
)
DECISION_LABELS = {
    "ship": "SHIP",
    "no_ship": "NO SHIP",
    "keep_running": "KEEP RUNNING",
    "invalid": "INVALID",
}
# "control 7993 (49.68% vs 50.00%)": a variant's units, observed and expected share, as
# the SRM checks of decide/health.py write them.
_SRM_COUNT = re.compile(
    r"(?:^|, )(?P<variant>[^,]+?) (?P<units>\d+) \((?P<observed>[\d.]+)% vs (?P<expected>[\d.]+)%\)"
)


@dataclass(frozen=True)
class Banner:
    variant: str
    control: str
    decision: str
    label: str
    reasons: tuple[str, ...]
    invalid: bool


@dataclass(frozen=True)
class SrmRow:
    variant: str
    units: int
    observed: float
    expected: float
    expected_units: float

    @property
    def difference(self) -> float:
        return self.units - self.expected_units


@dataclass(frozen=True)
class SrmTable:
    check: Row  # the SRM check's row of the checks table
    rows: tuple[SrmRow, ...]


@dataclass(frozen=True)
class SliceChart:
    dimension: str
    chart: Chart
    heterogeneity: tuple[Row, ...]  # a slice row per metric x variant that has the test


@dataclass(frozen=True)
class Provenance:
    xpkit_version: str
    run_id: str
    committed_at: str
    computed_at: str
    config_sha256: str
    sql_sha256: str
    metric_sha256: tuple[tuple[str, str], ...]
    rows_read: tuple[tuple[str, int], ...]
    files: tuple[tuple[str, str], ...]
    sql: str | None
    sql_verified: bool
    computed: str = ""  # from what: all the rows, or a kept state (the manifest's record)


@dataclass
class ExperimentPage:
    experiment_id: str
    anchor: str
    run_date: str
    as_of: str
    valid: bool
    invalid_reason: str
    empty: bool
    withheld: bool
    banners: list[Banner]
    checks: list[Row]
    srm: list[SrmTable]
    forest: Chart | None
    numbers: list[Row]  # the overall scorecard rows, for the table under the forest
    history: Chart | None
    history_note: str
    provenance: Provenance
    slices: list[SliceChart] = field(default_factory=list)
    distributions: list[Chart] = field(default_factory=list)

    @property
    def charts(self) -> list[Chart]:
        return self.charts_in(PARTS)

    def charts_in(self, parts: Collection[str]) -> list[Chart]:
        """The charts of the sections ``parts`` shows (the forests are the effects')."""
        found = [self.forest] if "effects" in parts else []
        found += [self.history] if "history" in parts else []
        found += [s.chart for s in self.slices] if "effects" in parts else []
        found += self.distributions if "effects" in parts else []
        return [c for c in found if c is not None]

    @property
    def status(self) -> str:
        """The one word a table of contents shows: invalid, or the variants' decisions."""
        if not self.valid or self.empty:
            return "invalid"
        kinds = {b.decision for b in self.banners}
        for kind in ("no_ship", "ship", "keep_running"):
            if kind in kinds:
                return kind
        return "keep_running"


def _overall(scorecard: pa.Table) -> tuple[list[Row], list[Row]]:
    """The overall rows and the slice rows (none when the scorecard has no slice columns)."""
    rows = scorecard.to_pylist()
    if not {"slice_dimension", "slice_value"} <= set(scorecard.column_names):
        return rows, []
    overall = [r for r in rows if r["slice_dimension"] in (None, OVERALL)]
    return overall, [r for r in rows if r["slice_dimension"] not in (None, OVERALL)]


def _metric_label(r: Row) -> str:
    """A forest row's label: the metric, then its role and kind (``quantile`` included)."""
    sub = " · ".join(x for x in (r.get("role") or "", r.get("metric_kind") or "") if x)
    return charts.wrap_name(str(r["metric"])) + charts.sublabel(sub)


def _slice_label(r: Row) -> str:
    """A slice forest row's label: the slice value, then its metric (and ``quantile``)."""
    sub = str(r["metric"]) + (" · quantile" if r.get("metric_kind") == "quantile" else "")
    return charts.wrap_name(str(r["slice_value"])) + charts.sublabel(sub)


def _banners(rows: Sequence[Row]) -> list[Banner]:
    out: dict[str, Banner] = {}
    for r in rows:
        if r["variant"] in out or r.get("decision") is None:
            continue
        out[r["variant"]] = Banner(
            variant=r["variant"],
            control=r.get("control_variant") or "control",
            decision=r["decision"],
            label=DECISION_LABELS.get(r["decision"], str(r["decision"]).upper()),
            reasons=tuple(r.get("decision_reasons") or ()),
            invalid=r["decision"] == "invalid" or not r.get("valid", True),
        )
    return sorted(out.values(), key=lambda b: not b.invalid)


def srm_counts(detail: str) -> list[SrmRow]:
    """Each variant's units and shares from an SRM check's detail (empty if it has none)."""
    counts = detail.rsplit("units: ", 1)[-1] if "units: " in detail else ""
    found = [
        (m["variant"], int(m["units"]), float(m["observed"]) / 100, float(m["expected"]) / 100)
        for m in _SRM_COUNT.finditer(counts)
    ]
    total = sum(units for _, units, _, _ in found)
    return [SrmRow(v, units, obs, exp, exp * total) for v, units, obs, exp in found]


def _fold_slice_checks(checks: list[Row]) -> list[Row]:
    """The per-slice SRM checks as one row (with the failed ones kept in full): a
    breakdown by 40 values would otherwise bury the experiment's own checks."""
    per_slice = [c for c in checks if str(c["name"]).startswith("srm_slice:")]
    if not per_slice:
        return checks
    passed = [c for c in per_slice if c["passed"]]
    summary = dict(
        per_slice[0],
        name="srm per slice",
        value=float(len(passed)),
        threshold=None,
        passed=len(passed) == len(per_slice),
        gate=False,
        detail=f"{len(passed)} of {len(per_slice)} slice values split as configured; a failed "
        "one invalidates that slice's rows only",
    )
    return [c for c in checks if not (c in per_slice and c["passed"])] + [summary]


def _srm(checks: Sequence[Row]) -> list[SrmTable]:
    tables = [SrmTable(c, tuple(srm_counts(c["detail"] or ""))) for c in checks]
    return [s for s in tables if s.rows]


def _variants(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(r["variant"] for r in rows))


def _notes(rows: Sequence[Row]) -> dict[str, str]:
    notes: dict[str, str] = {}
    for r in rows:
        if r.get("population_note"):
            notes.setdefault(r["population"], str(r["population_note"]))
    return notes


def _slice_charts(prefix: str, rows: Sequence[Row], colors: Mapping[str, str]) -> list[SliceChart]:
    """A forest per slice dimension: one row per metric x slice value."""
    out = []
    for i, dimension in enumerate(dict.fromkeys(r["slice_dimension"] for r in rows)):
        these = [r for r in rows if r["slice_dimension"] == dimension]
        chart = charts.forest(
            f"{prefix}-slices-{i}",
            these,
            key=lambda r: (r["metric"], r["slice_value"]),
            label=_slice_label,
            colors=colors,
            notes=_notes(these),
        )
        tested: dict[tuple[str, str], Row] = {}
        for r in these:
            if any(
                finite(r.get(c)) is not None for c in ("heterogeneity_p_value", "heterogeneity_i2")
            ):
                tested.setdefault((r["metric"], r["variant"]), r)
        out.append(SliceChart(str(dimension), chart, tuple(tested.values())))
    return out


def _look_bounds(rows: Sequence[Row]) -> dict[tuple[str, str], tuple[float, float]]:
    """The group-sequential rule's effect bounds at this look: +-z * SE (ITT rows)."""
    out = {}
    for r in rows:
        z, se = finite(r.get("sequential_z_bound")), finite(r.get("abs_se"))
        rule = r.get("stopping_rule")
        if r["population"] != "itt" or rule != "group_sequential":
            continue
        if z is not None and se is not None:
            out[(r["metric"], r["variant"])] = (-z * se, z * se)
    return out


def _distributions(
    anchor: str, run: RunTables, rows: Sequence[Row], colors: Mapping[str, str]
) -> list[Chart]:
    """One chart per quantile metric whose histograms the scorecard file keeps."""
    raw = (run.scorecard.schema.metadata or {}).get(HISTOGRAMS_METADATA_KEY)
    if raw is None:
        return []
    kept = json.loads(raw)
    levels = {r["metric"]: r.get("quantile_level") for r in rows}
    out = []
    for i, (metric, populations) in enumerate(kept.items()):
        level = levels.get(metric)
        if "itt" in populations and level is not None:
            q = float(level)
            out.append(
                charts.distribution(f"{anchor}-dist-{i}", metric, q, populations["itt"], colors)
            )
    return out


def _provenance(run: RunTables, first: Row | None, rows: Sequence[Row]) -> Provenance:
    m = run.manifest
    metadata = run.scorecard.schema.metadata or {}
    raw = metadata.get(SQL_METADATA_KEY)
    sql = raw.decode() if raw is not None else None
    sha = str(first.get("sql_sha256") or "") if first else ""
    rows_read = first.get("rows_read") if first else None
    pairs = list(rows_read.items()) if isinstance(rows_read, dict) else list(rows_read or [])
    metric_sha = dict.fromkeys(r["metric"] for r in rows)
    for r in rows:
        metric_sha[r["metric"]] = metric_sha[r["metric"]] or r.get("metric_sha256")
    return Provenance(
        xpkit_version=str(first.get("xpkit_version")) if first else m.xpkit_version if m else "",
        run_id=m.run_id if m else "",
        committed_at=_when(m.committed_at) if m else "",
        computed_at=_when(first.get("computed_at")) if first else "",
        config_sha256=str(first.get("config_sha256") or "") if first else "",
        sql_sha256=sha,
        metric_sha256=tuple((k, str(v or "")) for k, v in metric_sha.items()),
        rows_read=tuple((str(t), int(n)) for t, n in pairs),
        files=tuple(sorted(m.files.items())) if m else (),
        sql=sql,
        sql_verified=sql is not None and hashlib.sha256(sql.encode()).hexdigest() == sha,
        computed=_computed(m.incremental) if m and m.recorded else "",
    )


def _computed(incremental: Mapping[str, object] | None) -> str:
    """How a published run was computed, from its manifest, in one line."""
    if incremental is None:
        return "all the rows (a full run)"
    start = incremental.get("from_state_as_of")
    parts = [
        f"the incremental state as of {start} and the rows since"
        if start
        else "all the rows (an incremental run building its state)"
    ]
    notes = incremental.get("notes")
    if isinstance(notes, list):
        parts += [str(n) for n in notes]  # what it built, rebuilt, restated or scanned in full
    return "; ".join(parts)


def _when(value: object) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS UTC`` (text that is not one is kept)."""
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(moment, datetime):
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if value is None else str(value)


def _anchor(experiment_id: str, taken: set[str]) -> str:
    base = "exp-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", experiment_id).strip("-") or "x")
    anchor, i = base, 1
    while anchor in taken:
        i += 1
        anchor = f"{base}-{i}"
    taken.add(anchor)
    return anchor


@dataclass(frozen=True)
class RunTables:
    """A run's tables, published (with its manifest) or not: a notebook shows a run that
    was computed in the session and maybe never written."""

    experiment_id: str
    run_date: date
    scorecard: pa.Table
    checks: pa.Table
    history: pa.Table | None
    manifest: Manifest | None = None

    @classmethod
    def of(cls, run: PublishedRun) -> RunTables:
        m = run.manifest
        return cls(m.experiment_id, m.run_date, run.scorecard, run.checks, run.history, m)


def experiment_page(run: PublishedRun | RunTables, anchor: str) -> ExperimentPage:
    """Everything the page shows of one run (published, or only computed)."""
    if isinstance(run, PublishedRun):
        run = RunTables.of(run)
    rows, slice_rows = _overall(run.scorecard)
    checks = _fold_slice_checks(run.checks.to_pylist())
    first = rows[0] if rows else None
    valid = bool(first["valid"]) if first else False
    withheld = not valid and all(r.get(c) is None for r in rows for c in EFFECT_COLUMNS)
    colors = charts.variant_colors(_variants(rows + slice_rows))
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    forest = None
    if rows and not withheld:
        forest = charts.forest(
            f"{anchor}-forest",
            rows,
            key=lambda r: r["metric"],
            label=_metric_label,
            colors=colors,
            notes=_notes(rows),
        )
    history, history_note = None, ""
    if run.history is None:
        history_note = (
            "This run has no history: run xpkit run with --history to publish the daily estimates."
        )
    elif withheld:
        history_note = (
            "The effect over time is withheld with the effects: the result is invalid (see above)."
        )
    else:
        looks = [r for r in run.history.to_pylist() if r["population"] == "itt"]
        if looks:
            banners = _banners(rows)
            history = charts.history(
                f"{anchor}-history",
                looks,
                colors=colors,
                metrics=metrics,
                decision_day=str(first["as_of"]) if first else None,
                decision_text=", ".join(f"{b.variant}: {b.label}" for b in banners),
                look_bounds=_look_bounds(rows),
            )
        else:
            history_note = "The run's history has no ITT rows."
    return ExperimentPage(
        experiment_id=run.experiment_id,
        anchor=anchor,
        run_date=run.run_date.isoformat(),
        as_of=str(first["as_of"]) if first else "",
        valid=valid,
        invalid_reason=str(first.get("invalid_reason") or "") if first else "",
        empty=first is None,
        withheld=withheld,
        banners=_banners(rows),
        checks=checks,
        srm=_srm(checks),
        forest=forest,
        numbers=rows if not withheld else [],
        history=history,
        history_note=history_note,
        provenance=_provenance(run, first, rows),
        slices=_slice_charts(anchor, slice_rows, colors) if slice_rows and not withheld else [],
        distributions=_distributions(anchor, run, rows, colors) if not withheld else [],
    )


def _read(run: PublishedRun) -> PublishedRun:
    """The run with each table checked to be one of xpkit's (a message naming the file)."""
    m = run.manifest
    validate_table(run.scorecard, m.file("scorecard"), "scorecard")
    validate_table(run.checks, m.file("checks"), "checks")
    if run.history is not None:
        validate_table(run.history, m.file("history"), "history")
    return run


def _resource(name: str) -> str:
    return importlib.resources.files("xpkit.output").joinpath(name).read_text("utf-8")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_resource),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(pct=pct, num=num, p=lambda x: num(x, "{:.3g}"))
    env.globals.update(
        significant=charts.significant,
        populations=charts.POPULATION_LABELS,
        decisions=DECISION_LABELS,
        css=_resource(STYLES),
        js=_resource(SCRIPT),
    )
    return env


def render(
    pages: Sequence[ExperimentPage], *, out: Path, title: str, generated_at: datetime
) -> str:
    from plotly.offline import get_plotlyjs

    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=title,
            pages=pages,
            parts=PARTS,
            out=str(out),
            generated_at=generated_at.strftime("%Y-%m-%d %H:%M UTC"),
            xpkit_version=__version__,
            plotly_js=get_plotlyjs(),
        )
    )


def render_fragment(
    pages: Sequence[ExperimentPage],
    *,
    root: str,
    parts: Collection[str] = PARTS,
    plotly_js: bool = False,
    toc: bool = False,
) -> str:
    """The sections of ``pages`` as one element for a notebook's output (``root`` is its
    id, unique on the page): ``parts`` of :data:`PARTS` only, the table of contents with
    ``toc``, Plotly's JavaScript inlined with ``plotly_js``."""
    library = ""
    if plotly_js:
        from plotly.offline import get_plotlyjs

        library = get_plotlyjs()
    return (
        _environment()
        .get_template(FRAGMENT)
        .render(
            root=root,
            pages=pages,
            parts=frozenset(parts),
            toc=toc,
            plotly_js=library,
            missing=PLOTLY_MISSING,
        )
    )


def build_report(
    out: Path,
    experiment_id: str | None = None,
    run_date: date | None = None,
    *,
    generated_at: datetime | None = None,
) -> str:
    """The HTML of the newest committed run of each experiment under ``out`` (or of one
    experiment, or the runs filed under ``run_date``)."""
    if out.is_file():
        raise BadInputError(
            f"{out}: a file; the report reads the output folder (the --out of xpkit run), "
            "e.g. xpkit report OUT --out report.html"
        )
    manifests = select_runs(out, experiment_id, run_date)
    taken: set[str] = set()
    pages = [
        experiment_page(_read(read_run(m)), _anchor(m.experiment_id, taken)) for m in manifests
    ]
    title = "xpkit report" + (f": {experiment_id}" if experiment_id is not None else "")
    return render(pages, out=out, title=title, generated_at=generated_at or datetime.now(UTC))


def write_report(
    out: Path,
    path: Path,
    experiment_id: str | None = None,
    run_date: date | None = None,
) -> Path:
    """Write the report to ``path`` (atomically: a failed write leaves the old file)."""
    text = build_report(out, experiment_id, run_date)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
            tmp.chmod(0o644)
    except OSError as err:
        raise BadInputError(
            f"--out {path}: cannot write the report ({err.strerror or err}); choose a file "
            "in a folder you can write to"
        ) from None
    return path
