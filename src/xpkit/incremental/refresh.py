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
   the kept units, and every day of their range for units that are new; the fold statement
   combines it with the state into the new state, staged beside the old one.

The new state is committed by the caller once the run is published (store.StateStore);
until then the old one stays in use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from xpkit.compile.state import (
    ROWS,
    StatePlan,
    StateTables,
    cells_source,
    compile_day_counts,
    compile_delta,
    compile_fold,
    compile_new_units,
    plan_state,
)
from xpkit.config import AssignmentColumns, ExperimentConfig
from xpkit.define.metric import Metric
from xpkit.engines.base import Engine
from xpkit.incremental.store import SourceMeta, StagedState, StateStore, StateVersion


@dataclass
class Refreshed:
    """A state brought up to date (staged, not committed) and what it took."""

    store: StateStore
    staged: StagedState
    as_of: date
    sources: dict[str, SourceMeta]
    # source label -> the cells statement's view of its state (compile_moments)
    state_sources: dict[str, dict[str, object]]
    rows_read: dict[str, int] = field(default_factory=dict)  # fact rows the scans read
    rows_counted: dict[str, int] = field(default_factory=dict)  # rows counted per day
    notes: list[str] = field(default_factory=list)  # what was scanned in full, and why

    def commit(self, xpkit_version: str) -> StateVersion:
        return self.store.commit(
            self.staged, as_of=self.as_of, xpkit_version=xpkit_version, sources=self.sources
        )

    def discard(self) -> None:
        self.store.discard(self.staged)


def _usable(
    previous: StateVersion | None, label: str, key: str, as_of: date
) -> tuple[SourceMeta | None, str | None]:
    """The source's kept state, or why it is not used."""
    if previous is None:
        return None, "no state yet"
    meta = previous.sources.get(label)
    if meta is None:
        return None, "not in the state yet"
    if meta.key != key:
        return None, "its metrics, window, configuration or xpkit version changed"
    if meta.scanned_through > as_of:
        return None, f"the state is as of {meta.scanned_through}, after this run's {as_of}"
    return meta, None


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
) -> Refreshed:
    """Stage the experiment's state as of ``as_of`` (see the module's text); ``lookback``
    is how many recent days are kept per day and checked for late rows; ``context`` goes
    into each source's key."""
    plan: StatePlan = plan_state(experiment, metrics)
    previous = store.current()
    staged = store.stage()
    done = Refreshed(store, staged, as_of, {}, {})
    try:
        for label, why in plan.full.items():
            done.notes.append(f"{label}: scanned in full ({why})")
        settle_through = as_of - timedelta(days=lookback)
        for index, (label, state) in enumerate(plan.sources.items()):
            source = state.source
            definitions = {
                m.name: m.definition_sha256() for m in metrics if m.source is state.source
            }
            key = plan.key(label, {**context, "lookback": lookback, "metrics": definitions})
            meta, reason = _usable(previous, label, key, as_of)
            old: StateTables | None = None
            if meta is not None and previous is not None:
                old = StateTables(f"xp_state_{index}_old_settled", f"xp_state_{index}_old_partials")
                engine.register_parquet(old.settled, str(previous.settled(label)))
                engine.register_parquet(old.partials, str(previous.partials(label)))
            else:
                done.notes.append(f"{label}: state rebuilt from all its rows ({reason})")

            # Rows per day since the settled days: late rows, and this run's new days.
            count_from = (meta.settle_through if meta else settle_through) + timedelta(days=1)
            counted = engine.query(
                compile_day_counts(source, count_from, as_of, dialect=engine.dialect).sql
            ).to_pylist()
            counts = {str(r["day"]): int(r["n_rows"]) for r in counted if r["day"] is not None}
            done.rows_counted[source.table] = done.rows_counted.get(source.table, 0) + sum(
                counts.values()
            )
            rescan: list[date] = []
            if meta is not None:
                seen = meta.scanned_through
                restated = [
                    day
                    for day in _days(count_from, seen)
                    if counts.get(day.isoformat(), 0) != meta.counts.get(day.isoformat(), 0)
                ]
                if restated:
                    done.notes.append(
                        f"{label}: late rows on {', '.join(d.isoformat() for d in restated)}, "
                        f"restated"
                    )
                rescan = restated + list(_days(seen + timedelta(days=1), as_of))

            new = engine.query(
                compile_new_units(
                    experiment,
                    assignments,
                    as_of,
                    old.settled if old else None,
                    dialect=engine.dialect,
                ).sql
            ).to_pylist()[0]
            new_from = None
            if new["n_units"]:
                new_from = new["first_assignment"] + timedelta(days=plan.window[0])
            if not new_from and not (rescan and old):
                new_from = as_of + timedelta(days=1)  # nothing to scan: an empty delta
            delta = f"xp_state_{index}_delta"
            engine.write_parquet(
                compile_delta(
                    experiment,
                    assignments,
                    plan,
                    label,
                    as_of=as_of,
                    known=old.settled if old else None,
                    rescan=rescan if old else [],
                    new_from=new_from,
                    dialect=engine.dialect,
                ).sql,
                str(staged.delta(label)),
            )
            engine.register_parquet(delta, str(staged.delta(label)))
            read = engine.query(f"SELECT SUM({ROWS}) AS n FROM {delta}").to_pylist()[0]["n"]
            done.rows_read[source.table] = done.rows_read.get(source.table, 0) + int(read or 0)

            tables = StateTables(f"xp_state_{index}_settled", f"xp_state_{index}_partials")
            for part, path in (
                ("settled", staged.settled(label)),
                ("partials", staged.partials(label)),
            ):
                engine.write_parquet(
                    compile_fold(
                        experiment,
                        assignments,
                        plan,
                        label,
                        as_of=as_of,
                        part=part,
                        old=old,
                        delta=delta,
                        rescan=rescan if old else [],
                        settle_through=settle_through,
                        dialect=engine.dialect,
                    ).sql,
                    str(path),
                )
            engine.register_parquet(tables.settled, str(staged.settled(label)))
            engine.register_parquet(tables.partials, str(staged.partials(label)))
            done.state_sources[label] = cells_source(tables, state)
            done.sources[label] = SourceMeta(
                key=key,
                table=source.table,
                scanned_through=as_of,
                settle_through=settle_through,
                counts={d: n for d, n in counts.items() if d > settle_through.isoformat()},
            )
        return done
    except BaseException:
        store.discard(staged)
        raise


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
