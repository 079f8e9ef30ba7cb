"""What :func:`xpkit.run` returns: a run's tables, its decision, and how it shows itself.

A :class:`Result` is one experiment's run; :class:`Results` several, by experiment id.
Their tables (:class:`Scorecard`, :class:`Checks`, :class:`History`) convert with
``to_arrow()`` (the tables a run publishes, as they are), ``to_pandas()`` and
``to_polars()`` (pandas and polars are imported only then).

Display: in a notebook (``_repr_html_``) each object shows the report's sections for its
part of the run — a result everything ``xpkit report`` shows of an experiment, the
scorecard its decisions, effects and provenance, the checks its health, the history its
effect over time — with the report's tables and Plotly charts (output/report.py renders
them). Elsewhere (``repr``, ``str``) it is the text ``xpkit run`` prints.

Plotly's JavaScript is inlined, never loaded from the network: into the first HTML a
Python session shows (about 5 MB, once per kernel rather than once per output), and any
later output draws its charts with it. An output whose page lacks it (the first output
was cleared, or the notebook is not trusted) says so under each chart and draws as soon
as :func:`plotly_js` is displayed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import pyarrow as pa

from xpkit.config import ALL_SLICES
from xpkit.output.storage import Manifest
from xpkit.output.terminal import Style, render_checks, render_history, render_scorecard
from xpkit.runner import ExperimentRun

if TYPE_CHECKING:
    import pandas
    import polars

DECISION_LABELS = {
    "ship": "SHIP",
    "no_ship": "NO SHIP",
    "keep_running": "KEEP RUNNING",
    "invalid": "INVALID",
}
_plotly_sent = False  # has this Python session shown Plotly's JavaScript yet?


def _include_plotly(plotlyjs: bool | None) -> bool:
    """Whether this output inlines Plotly's JavaScript: when asked to, or (``None``) when
    no output of this session has yet."""
    global _plotly_sent
    include = (not _plotly_sent) if plotlyjs is None else plotlyjs
    _plotly_sent = _plotly_sent or include
    return include


@dataclass(frozen=True)
class _Run:
    """A run and, when it was published, its manifest (for the provenance)."""

    run: ExperimentRun
    manifest: Manifest | None = None


def _html(
    runs: Sequence[_Run], parts: Sequence[str], *, toc: bool = False, plotlyjs: bool | None
) -> str:
    from xpkit.output.report import RunTables, experiment_page, render_fragment

    token = uuid.uuid4().hex[:10]
    pages = [
        experiment_page(
            RunTables(
                r.run.experiment_id,
                r.run.run_date,
                r.run.scorecard,
                r.run.checks,
                r.run.history,
                r.manifest,
            ),
            f"xpkit-{token}-{i}",
        )
        for i, r in enumerate(runs)
    ]
    return render_fragment(
        pages,
        root=f"xpkit-{token}",
        parts=parts,
        toc=toc,
        plotly_js=_include_plotly(plotlyjs),
    )


def _concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Several runs' tables as one (without the file metadata, which is one run's)."""
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables])


class RunTable:
    """One of a run's tables (or several runs' tables of one kind, stacked)."""

    parts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, table: pa.Table, runs: Sequence[_Run]) -> None:
        self._table = table
        self._runs = tuple(runs)

    def to_arrow(self) -> pa.Table:
        """The table as published (a pyarrow Table with xpkit's schema)."""
        return self._table

    def to_pandas(self) -> pandas.DataFrame:
        return self._table.to_pandas()

    def to_polars(self) -> polars.DataFrame:
        import polars

        frame = polars.from_arrow(self._table)
        assert isinstance(frame, polars.DataFrame)
        return frame

    @property
    def num_rows(self) -> int:
        return int(self._table.num_rows)

    @property
    def column_names(self) -> list[str]:
        return list(self._table.column_names)

    def __len__(self) -> int:
        return self.num_rows

    def to_html(self, plotlyjs: bool | None = None) -> str:
        """The notebook's HTML (``plotlyjs``: inline Plotly's JavaScript; ``None``: when
        this session has not shown it yet)."""
        return _html(self._runs, self.parts, toc=len(self._runs) > 1, plotlyjs=plotlyjs)

    def _repr_html_(self) -> str:
        return self.to_html()

    def _text(self, run: ExperimentRun, style: Style) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        style = Style()
        return "\n\n".join(self._text(r.run, style) for r in self._runs)


class Scorecard(RunTable):
    """One row per population x metric x treatment variant (and slice): effects, intervals,
    p-values, guardrails, the decision and its provenance."""

    parts = ("banners", "effects", "provenance")

    def _text(self, run: ExperimentRun, style: Style) -> str:
        return render_scorecard(run.scorecard, None, style)


class Checks(RunTable):
    """The health checks: sample ratio, multi-variant units, exposure, data defects..."""

    parts = ("health",)

    def _text(self, run: ExperimentRun, style: Style) -> str:
        return render_checks(run.checks, style)


class History(RunTable):
    """The estimates as of each day, with the always-valid p-values and intervals."""

    parts = ("history",)

    def _text(self, run: ExperimentRun, style: Style) -> str:
        if run.history is None:
            return f"Experiment {run.experiment_id}: no history (run with history=True)"
        return render_history(run.history, style=style)


@dataclass(frozen=True)
class Decision:
    """A treatment variant's decision against the control, with its reasons."""

    variant: str
    control: str
    decision: str  # ship | no_ship | keep_running | invalid
    reasons: tuple[str, ...]

    def __str__(self) -> str:
        label = DECISION_LABELS.get(self.decision, self.decision.upper())
        lines = [f"{self.variant} vs {self.control}: {label}"]
        return "\n".join(lines + [f"  - {reason}" for reason in self.reasons])


class Decisions(dict[str, Decision]):
    """Decisions by treatment variant."""

    def __repr__(self) -> str:
        return "\n".join(str(d) for d in self.values()) or "(no decision)"


def _decisions(scorecard: pa.Table) -> Decisions:
    out = Decisions()
    for r in scorecard.to_pylist():
        if r.get("slice_dimension") not in (None, ALL_SLICES) or r.get("decision") is None:
            continue
        if r["variant"] not in out:
            out[r["variant"]] = Decision(
                variant=r["variant"],
                control=r.get("control_variant") or "",
                decision=r["decision"],
                reasons=tuple(r.get("decision_reasons") or ()),
            )
    return out


class _Tables:
    """The scorecard, checks and history of one or more runs, and their conversions."""

    _runs: tuple[_Run, ...]

    @property
    def scorecard(self) -> Scorecard:
        return Scorecard(_concat([r.run.scorecard for r in self._runs]), self._runs)

    @property
    def checks(self) -> Checks:
        return Checks(_concat([r.run.checks for r in self._runs]), self._runs)

    @property
    def history(self) -> History | None:
        """The daily history (runs made with ``history=True``), else None."""
        kept = [r for r in self._runs if r.run.history is not None]
        if not kept:
            return None
        return History(_concat([h for r in kept if (h := r.run.history) is not None]), kept)

    @property
    def valid(self) -> bool:
        """False when a health gate failed (the decision is then "invalid")."""
        return all(r.run.valid for r in self._runs)

    def to_arrow(self) -> pa.Table:
        """The scorecard as a pyarrow Table."""
        return self.scorecard.to_arrow()

    def to_pandas(self) -> pandas.DataFrame:
        """The scorecard as a pandas DataFrame."""
        return self.scorecard.to_pandas()

    def to_polars(self) -> polars.DataFrame:
        """The scorecard as a polars DataFrame."""
        return self.scorecard.to_polars()

    def to_html(self, plotlyjs: bool | None = None) -> str:
        """The notebook's HTML: the report's sections for each run (``plotlyjs``: inline
        Plotly's JavaScript; ``None``: when this session has not shown it yet)."""
        from xpkit.output.report import PARTS

        return _html(self._runs, PARTS, toc=len(self._runs) > 1, plotlyjs=plotlyjs)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        style = Style()
        texts = []
        for r in self._runs:
            text = render_scorecard(r.run.scorecard, r.run.checks, style)
            if r.run.history is not None:
                text += "\n\n" + render_history(r.run.history, style=style)
            texts.append(text)
        return "\n\n".join(texts)


class Result(_Tables):
    """One experiment's run: ``decision``, ``scorecard``, ``checks``, ``history``, ``sql``."""

    def __init__(self, run: ExperimentRun, manifest: Manifest | None = None) -> None:
        self._runs = (_Run(run, manifest),)
        self.run = run

    @property
    def experiment_id(self) -> str:
        return self.run.experiment_id

    @property
    def run_date(self) -> date:
        return self.run.run_date

    @property
    def sql(self) -> str:
        """The one statement the run executed (in its engine's dialect)."""
        return self.run.sql

    @property
    def run_id(self) -> str | None:
        """The published run's id (None when nothing was written)."""
        return self.run.run_id

    @property
    def paths(self) -> tuple[Path, ...]:
        """The files published (each table's, then the manifest); empty without ``out=``."""
        return self.run.paths

    @property
    def decision(self) -> Decisions:
        """Per treatment variant: ship, no_ship, keep_running or invalid, with reasons."""
        return _decisions(self.run.scorecard)


class Results(_Tables, Mapping[str, Result]):
    """Several experiments' runs by experiment id (in the config's order); the tables and
    conversions stack every run's rows."""

    def __init__(self, results: Sequence[Result]) -> None:
        self._results = {r.experiment_id: r for r in results}
        self._runs = tuple(run for r in results for run in r._runs)

    def __getitem__(self, experiment_id: str) -> Result:
        try:
            return self._results[experiment_id]
        except KeyError:
            known = ", ".join(self._results)
            raise KeyError(f"no result for experiment {experiment_id!r} (known: {known})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    @property
    def invalid(self) -> list[str]:
        """The ids of the experiments whose result is invalid."""
        return [i for i, r in self._results.items() if not r.valid]

    @property
    def decision(self) -> dict[str, Decisions]:
        """Each experiment's decisions, by experiment id."""
        return {i: r.decision for i, r in self._results.items()}


class PlotlyJS:
    """Plotly's JavaScript for a notebook page (from the installed plotly package): charts
    waiting for it draw once it is shown."""

    def _repr_html_(self) -> str:
        from xpkit.output.report import render_fragment

        _include_plotly(True)
        return render_fragment([], root=f"xpkit-{uuid.uuid4().hex[:10]}", plotly_js=True)

    def __repr__(self) -> str:
        return "Plotly's JavaScript (shown as HTML in a notebook)"


def plotly_js() -> PlotlyJS:
    """Show this in a notebook cell to put Plotly's JavaScript on the page again (after the
    output that carried it was cleared): every xpkit chart waiting for it then draws."""
    return PlotlyJS()
