"""Bring one experiment's kept state up to an as-of date, reading only what changed.

For each source whose per-unit columns have accumulators (compile.state):

1. The state is used only if it was made under the same key (the accumulators' SQL, the
   source, the window, the assignment columns, the metrics' definitions, the engine and
   xpkit's version) and for an as-of date no later than this run's; otherwise the source
   starts again from nothing, which is a full scan of it.
2. The source's rows per day are counted for the days after the state's settle date: a day
   whose count changed since it was scanned got late rows, and is scanned again (restated).
   The count runs before the scan, so a row arriving between them is at worst scanned now
   and restated next time, never missed.
3. The delta statement scans the days after the last one scanned and the restated days for
   the kept units, and every day of their range for units that are new: staged as this
   run's piece of the state (a restated day's rows in the older pieces are voided). The
   close statement combines the pieces' rows of the units whose range is now over into one
   row per unit; a piece none of whose units is open any more is dropped.

The new state is committed by the caller once the run is published (store.StateStore);
until then the old one stays in use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlglot import exp

from xpkit.compile.dialects import finish
from xpkit.compile.sql import render
from xpkit.compile.state import (
    ASSIGNMENT_DATE,
    ROWS,
    UNIT,
    StatePlan,
    StateTables,
    cells_source,
    compile_assigned,
    compile_assignment_counts,
    compile_close,
    compile_day_counts,
    compile_delta,
    piece_rows,
    plan_state,
    units_table,
)
from xpkit.config import AssignmentColumns, ExperimentConfig
from xpkit.define.metric import Metric
from xpkit.engines.base import Engine
from xpkit.incremental.store import Piece, SourceMeta, StagedState, StateStore, StateVersion

MULTI_VIEW = "xp_state_multi"  # the units with assignment rows on more than one date
# Why a source starts from nothing when it never had a state: it is built, not rebuilt.
FIRST_RUN = "the first incremental run"
NEW_SOURCE = "not in the state yet"


@dataclass
class Refreshed:
    """A state brought up to date (staged, not committed) and what it took."""

    store: StateStore
    staged: StagedState
    as_of: date
    sources: dict[str, SourceMeta]
    assignment_counts: dict[str, int]
    # source label -> the cells statement's view of its state (compile_moments)
    state_sources: dict[str, dict[str, object]]
    rows_read: dict[str, int] = field(default_factory=dict)  # fact rows the scans read
    notes: list[str] = field(default_factory=list)  # what was scanned in full, and why
    # The cells kept from the last run, for the assignment dates whose units cannot have
    # changed (kept_cohorts); the statement leaves those units out.
    kept_cells: pa.Table | None = None
    kept_cohorts: list[date] = field(default_factory=list)
    # the units with assignment rows on more than one date (a view), for the statement
    multi_units: str | None = None
    cells_key: str | None = None  # None: the experiment's cells are not kept
    restated: set[date] = field(default_factory=set)
    # per source: the view of its units with assignment rows since the last run
    # (compile_assigned), and whether it went on from the last run's state
    assigned: dict[str, tuple[str, bool]] = field(default_factory=dict)
    from_state: date | None = None  # the as-of date of the state any source went on from

    def provenance(self) -> dict[str, object]:
        """How the run was computed, for its manifest: the state it went on from (None:
        built from all the rows), what was scanned in full, restated or rebuilt (the
        notes), the restated days and the assignment dates whose cells it kept."""
        return {
            "from_state_as_of": self.from_state.isoformat() if self.from_state else None,
            "notes": list(self.notes),
            "restated_days": [d.isoformat() for d in sorted(self.restated)],
            "kept_assignment_dates": [d.isoformat() for d in self.kept_cohorts],
        }

    def keep_cells(self, cells: pa.Table) -> None:
        """Stage this run's cells (a date whose window is not complete yet is kept for the
        runs before it is)."""
        if self.cells_key is None:
            return
        pq.write_table(cells, self.staged.cells)

    def commit(self, xpkit_version: str) -> StateVersion:
        return self.store.commit(
            self.staged,
            as_of=self.as_of,
            xpkit_version=xpkit_version,
            sources=self.sources,
            assignment_counts=self.assignment_counts,
            cells_key=self.cells_key,
        )

    def discard(self) -> None:
        self.store.discard(self.staged)


def _usable(
    previous: StateVersion | None, label: str, key: str, as_of: date, unusable: str | None
) -> tuple[SourceMeta | None, str | None]:
    """The source's kept state, or why it is not used (``unusable``: why there is none)."""
    if previous is None:
        return None, unusable or FIRST_RUN
    meta = previous.sources.get(label)
    if meta is None:
        return None, NEW_SOURCE
    if meta.key != key:
        return None, "its metrics, window, configuration or xpkit version changed"
    if meta.scanned_through > as_of:
        return None, f"the state is as of {meta.scanned_through}, after this run's {as_of}"
    return meta, None


def _counts(engine: Engine, sql: str) -> dict[str, int]:
    return {
        str(r["day"]): int(r["n_rows"])
        for r in engine.query(sql).to_pylist()
        if r["day"] is not None
    }


def _changed(days: list[date], now: dict[str, int], before: dict[str, int]) -> list[date]:
    return [d for d in days if now.get(d.isoformat(), 0) != before.get(d.isoformat(), 0)]


def refresh(
    store: StateStore,
    experiment: ExperimentConfig,
    metrics: Sequence[type[Metric]],
    assignments: AssignmentColumns,
    engine: Engine,
    *,
    as_of: date,
    lookback: int,
    context: Mapping[str, object],
    cells_context: Mapping[str, object] | None = None,
) -> Refreshed:
    """Stage the experiment's state as of ``as_of`` (see the module's text); ``lookback``
    is how many recent days are kept per day and checked for late rows; ``context`` goes
    into each source's key. ``cells_context`` (what else the cells depend on; None when
    they cannot be kept: slices, quantiles, pooled caps) keeps the cells of complete
    assignment dates, so that the next run computes only the others'."""
    plan: StatePlan = plan_state(experiment, metrics)
    previous = store.current()
    if previous is not None and not previous.sources:
        previous = None  # it kept nothing: every source was scanned in full
    staged = store.stage()
    settle_through = as_of - timedelta(days=lookback)
    done = Refreshed(store, staged, as_of, {}, {}, {})
    try:
        for label, why in plan.full.items():
            done.notes.append(f"{label}: scanned in full ({why})")
        if not plan.sources:
            return done
        # Assignment rows per day, one count for two uses: the recent days already seen
        # (rows that arrived late for one of them can move a unit's first assignment date,
        # which every kept accumulator is relative to: start again), and the days this
        # state will check next time.
        count_from, count_to = settle_through + timedelta(days=1), as_of
        if previous is not None:
            since = min(m.settle_through for m in previous.sources.values())
            count_from = min(count_from, since + timedelta(days=1))
            count_to = max(count_to, previous.as_of)
        counted = _counts(
            engine,
            compile_assignment_counts(
                experiment, assignments, count_from, count_to, dialect=engine.dialect
            ).sql,
        )
        if previous is not None:
            late = _changed(
                _days(since + timedelta(days=1), previous.as_of),
                counted,
                previous.assignment_counts,
            )
            if late:
                done.notes.append(
                    f"assignment rows changed on {', '.join(d.isoformat() for d in late)}: "
                    f"state rebuilt"
                )
                previous = None
                store.unusable = "assignment rows changed on days already seen"
        done.assignment_counts = {
            day: n
            for day, n in counted.items()
            if settle_through.isoformat() < day <= as_of.isoformat()
        }
        went_on = []
        for index, label in enumerate(plan.sources):
            went_on.append(
                _refresh_source(
                    done,
                    plan,
                    label,
                    index,
                    previous,
                    experiment,
                    metrics,
                    assignments,
                    engine,
                    lookback=lookback,
                    context=context,
                    settle_through=settle_through,
                )
            )
        reused = previous is not None and all(went_on)
        if previous is not None and any(went_on):
            done.from_state = previous.as_of
        _keep_multi(done, engine, previous)
        if cells_context is not None and not plan.full:
            _keep_cells(
                done,
                plan,
                previous if reused else None,
                experiment,
                assignments,
                engine,
                cells_context,
            )
        return done
    except BaseException:
        store.discard(staged)
        raise


def _keep_multi(done: Refreshed, engine: Engine, previous: StateVersion | None) -> None:
    """Stage the units with assignment rows on more than one date: the last state's, and
    those this run found (the first source's units since the last run; all of them when
    it started again)."""
    view, went_on = next(iter(done.assigned.values()))
    found: exp.Query = exp.select(UNIT, ASSIGNMENT_DATE).from_(view).where("xp_multi")
    if went_on and previous is not None:
        engine.register_parquet("xp_state_old_multi", str(previous.multi))
        found = exp.union(
            found, exp.select(UNIT, ASSIGNMENT_DATE).from_("xp_state_old_multi"), distinct=True
        )
    engine.write_parquet(finish(render(found), engine.dialect), str(done.staged.multi))
    engine.register_parquet(MULTI_VIEW, str(done.staged.multi))


def _keep_cells(
    done: Refreshed,
    plan: StatePlan,
    previous: StateVersion | None,
    experiment: ExperimentConfig,
    assignments: AssignmentColumns,
    engine: Engine,
    cells_context: Mapping[str, object],
) -> None:
    """Which of the last run's cells this run keeps: the assignment dates none of whose
    units got assignment rows since, whose range no restated day falls in, and whose window
    was complete then or is not complete yet."""
    keys = {label: meta.key for label, meta in done.sources.items()}
    text = json.dumps({"sources": keys, **cells_context}, sort_keys=True, default=str)
    done.cells_key = hashlib.sha256(text.encode()).hexdigest()
    if previous is None or previous.cells_key != done.cells_key or not previous.cells.exists():
        return
    kept = pq.read_table(previous.cells)
    dirty = {
        day + timedelta(days=offset)
        for day in done.restated
        for offset in range(-plan.window[1], -plan.window[0] + 1)
    }
    # The known units with assignment rows since (any source's: each holds them all).
    view, _ = next(iter(done.assigned.values()))
    touched = engine.query(
        f"SELECT DISTINCT {ASSIGNMENT_DATE} FROM {view} WHERE NOT xp_new"
    ).to_pylist()
    dirty |= {r["assignment_date"] for r in touched}
    # A date whose window is complete now and was not: its units' values are needed.
    was_open = kept.filter(pc.equal(kept.column("window_complete"), False))
    window_end = timedelta(days=experiment.window[1])
    dirty |= {
        day
        for day in was_open.column("assignment_date").to_pylist()
        if day is not None and day + window_end <= done.as_of
    }
    dates = sorted(set(kept.column("assignment_date").to_pylist()) - dirty - {None})
    if not dates:
        return
    done.kept_cohorts = dates
    done.multi_units = MULTI_VIEW
    done.kept_cells = kept.filter(
        pc.is_in(kept.column("assignment_date"), value_set=pa.array(dates, type=pa.date32()))
    )


def _refresh_source(
    done: Refreshed,
    plan: StatePlan,
    label: str,
    index: int,
    previous: StateVersion | None,
    experiment: ExperimentConfig,
    metrics: Sequence[type[Metric]],
    assignments: AssignmentColumns,
    engine: Engine,
    *,
    lookback: int,
    context: Mapping[str, object],
    settle_through: date,
) -> bool:
    """Refresh one source's state; True when it went on from the previous state."""
    state = plan.sources[label]
    source = state.source
    staged = done.staged
    as_of = done.as_of
    dialect = engine.dialect
    definitions = {m.name: m.definition_sha256() for m in metrics if m.source is state.source}
    key = plan.key(label, {**context, "lookback": lookback, "metrics": definitions})
    meta, reason = _usable(previous, label, key, as_of, done.store.unusable)
    name = f"xp_state_{index}"
    window_end = plan.window[1]
    pieces: list[Piece] = []
    closed_files: list[str] = []
    closed_paths: list[str] = []
    known = open_units = None
    closed_before = date.min
    if meta is not None and previous is not None:
        pieces = list(meta.pieces)
        closed_files = list(meta.closed)
        closed_paths = [str(p) for p in previous.closed(label)]
        closed_before = meta.settle_through - timedelta(days=window_end)
        old_pieces = old_closed = None
        if pieces:
            old_pieces = f"{name}_old_pieces"
            engine.register_parquet(old_pieces, [str(p) for p in previous.pieces(label)])
            open_units = units_table(old_pieces, None, closed_before)
        if closed_paths:
            old_closed = f"{name}_old_closed"
            engine.register_parquet(old_closed, closed_paths)
        known = units_table(old_pieces, old_closed, closed_before)
    else:
        made = "built" if reason in (FIRST_RUN, NEW_SOURCE) else "rebuilt"
        done.notes.append(f"{label}: state {made} from all its rows ({reason})")

    # Rows per day since the settled days: late rows, and this run's new days.
    count_from = (meta.settle_through if meta else settle_through) + timedelta(days=1)
    counts = _counts(engine, compile_day_counts(source, count_from, as_of, dialect=dialect).sql)
    rescan: list[date] = []
    restated: list[date] = []
    if meta is not None:
        restated = _changed(_days(count_from, meta.scanned_through), counts, meta.counts)
        if restated:
            done.restated |= set(restated)
            done.notes.append(
                f"{label}: late rows on {', '.join(d.isoformat() for d in restated)}, restated"
            )
        rescan = restated + _days(meta.scanned_through + timedelta(days=1), as_of)

    assigned = f"{name}_assigned"
    engine.write_parquet(
        compile_assigned(
            experiment,
            assignments,
            as_of=as_of,
            since=previous.as_of if meta is not None and previous is not None else None,
            known=known,
            dialect=dialect,
        ).sql,
        str(staged.scratch(label, "assigned")),
    )
    engine.register_parquet(assigned, str(staged.scratch(label, "assigned")))
    done.assigned[label] = (assigned, meta is not None)
    new_units = render(exp.paren(exp.select(UNIT, ASSIGNMENT_DATE).from_(assigned).where("xp_new")))
    first = engine.query(
        f"SELECT MIN({ASSIGNMENT_DATE}) AS first FROM {assigned} WHERE xp_new"
    ).to_pylist()
    first_new = first[0]["first"] if first else None
    # Nothing new: an empty range (the statement still names the new units, none).
    new_from = (
        first_new + timedelta(days=plan.window[0]) if first_new else as_of + timedelta(days=1)
    )

    # This run's piece: the rows it reads, per unit (and day).
    number = max((p.index for p in pieces), default=0) + 1
    delta = f"{name}_delta"
    engine.write_parquet(
        compile_delta(
            experiment,
            assignments,
            plan,
            label,
            as_of=as_of,
            open_units=open_units,
            new_units=new_units,
            rescan=rescan,
            new_from=new_from,
            settle_through=settle_through,
            piece=number,
            dialect=dialect,
        ).sql,
        str(staged.piece(label)),
    )
    engine.register_parquet(delta, str(staged.piece(label)))
    (read,) = engine.query(
        f"SELECT SUM({ROWS}) AS n, COUNT(*) AS k, MAX({ASSIGNMENT_DATE}) AS last FROM {delta}"
    ).to_pylist()
    done.rows_read[source.table] = done.rows_read.get(source.table, 0) + int(read["n"] or 0)
    # A restated day is in this piece now: the older pieces' rows of it are not used.
    pieces = [dataclasses.replace(p, voided=tuple(sorted({*p.voided, *restated}))) for p in pieces]
    paths = [str(p) for p in previous.pieces(label)] if meta is not None and previous else []
    if read["k"]:
        pieces.append(Piece(f"{staged.version}.parquet", number, read["last"]))
        paths.append(str(staged.piece(label)))

    # The units whose range is over by the settle date: one row each, never changed again.
    closed_through = settle_through - timedelta(days=window_end)
    in_use = [(p.index, p.voided) for p in pieces]
    all_pieces = f"{name}_all_pieces"
    if paths:
        engine.register_parquet(all_pieces, paths)
        engine.write_parquet(
            compile_close(
                experiment,
                assignments,
                plan,
                label,
                as_of=as_of,
                pieces=all_pieces,
                rows=piece_rows(in_use, closed_before if meta is not None else None),
                closed_through=closed_through,
                dialect=dialect,
            ).sql,
            str(staged.closed(label)),
        )
        just_closed = f"{name}_just_closed"
        engine.register_parquet(just_closed, str(staged.closed(label)))
        closed_now = engine.query(f"SELECT COUNT(*) AS n FROM {just_closed}").to_pylist()[0]["n"]
        if closed_now:
            closed_files.append(f"{staged.version}.parquet")
            closed_paths.append(str(staged.closed(label)))
    # A piece all of whose units are closed is not needed any more.
    kept = [
        (p, path) for p, path in zip(pieces, paths, strict=True) if p.last_date > closed_through
    ]
    tables = StateTables(
        closed=f"{name}_closed" if closed_paths else None,
        pieces=f"{name}_pieces" if kept else None,
        rows=piece_rows([(p.index, p.voided) for p, _ in kept], closed_through),
    )
    if tables.closed:
        engine.register_parquet(tables.closed, closed_paths)
    if tables.pieces:
        engine.register_parquet(tables.pieces, [path for _, path in kept])
    done.state_sources[label] = cells_source(tables, state)
    done.sources[label] = SourceMeta(
        key=key,
        table=source.table,
        scanned_through=as_of,
        settle_through=settle_through,
        counts={d: n for d, n in counts.items() if d > settle_through.isoformat()},
        closed=tuple(closed_files),
        pieces=tuple(p for p, _ in kept),
    )
    return meta is not None


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
