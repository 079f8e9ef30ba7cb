"""Published runs on disk: a run is one unit, committed by its manifest.

Layout under the output folder ``OUT`` (``<exp>`` is the experiment's folder name, see
``folder_name``; ``<day>`` the run date, YYYY-MM-DD)::

    OUT/runs/<exp>/<day>.json                  the run's manifest, committed last
    OUT/runs/<exp>/<day>.lock                  only while a writer publishes
    OUT/scorecards/<exp>/<day>/data.parquet
    OUT/checks/<exp>/<day>/data.parquet
    OUT/history/<exp>/<day>/data.parquet       only when the run has a history

One dataset folder per kind, without ``key=`` folder names: pandas, pyarrow, polars and
DuckDB read ``OUT/scorecards`` whole, with ``experiment_id`` (string), ``run_date``
(date32) and ``run_id`` inside the files rather than inferred from the path.

Publishing (``publish``): take the lock of (experiment, run date); roll forward a run
whose commit was interrupted and delete a killed run's leftovers; write every table to a
hidden staged file beside its final place (``.data.<run_id>.staged``: no reader's
``*.parquet`` glob matches it); commit the manifest atomically (the commit point); rename
the staged files to their final names and delete a history the new run does not have;
release the lock. Readers (``select_runs``, ``read_run``, ``recorded_fractions``) go
through manifests only, read each kind from its final file when that file's run id is the
manifest's and from the staged file otherwise (rolling it forward when they can take the
lock), so they see the last committed run whole, never a mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import string
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from xpkit.errors import BadInputError, ConfigError
from xpkit.files import FileLock, LockHeld, atomic_path, fsync_path
from xpkit.locations import table_reading
from xpkit.output.schemas import RUN_ID_FIELD

KINDS = ("scorecard", "checks", "history")
KIND_FOLDERS = {"scorecard": "scorecards", "checks": "checks", "history": "history"}
REQUIRED_KINDS = ("scorecard", "checks")
DATA_FILE = "data.parquet"
RUNS_FOLDER = "runs"
MANIFEST_FORMAT = 1
RUN_ID_KEY = b"xpkit.run_id"
MAX_FOLDER_NAME = 100
LOCK_WAIT_SECONDS = 5.0
_SAFE = frozenset(string.ascii_letters + string.digits + "._-")


class RunLockedError(BadInputError):
    """Another process is publishing the same experiment and run date."""


class RunReadError(BadInputError):
    """No committed run to read, or a committed run's files are missing or foreign."""


def folder_name(experiment_id: str) -> str:
    """The experiment's folder name: injective, portable, at most ``MAX_FOLDER_NAME`` chars.

    Characters outside [A-Za-z0-9._-] (so ``%``, ``/`` and NUL too) and a leading ``.``
    are percent-encoded as UTF-8 bytes. A longer name keeps a prefix and ends in ``~`` and
    16 hex digits of the id's SHA-256 (``~`` is otherwise always encoded).
    """
    parts = []
    for i, ch in enumerate(experiment_id):
        if ch in _SAFE and not (i == 0 and ch == "."):
            parts.append(ch)
        else:
            parts.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    name = "".join(parts) or "%"  # "" (never a valid id) still gets a name of its own
    if len(name) <= MAX_FOLDER_NAME:
        return name
    prefix = name[: MAX_FOLDER_NAME - 17]
    cut = prefix.find("%", len(prefix) - 2)  # never end inside a %XX escape
    if cut != -1:
        prefix = prefix[:cut]
    digest = hashlib.sha256(experiment_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{prefix}~{digest[:16]}"


def manifest_path(out: Path, experiment_id: str, run_date: date) -> Path:
    return out / RUNS_FOLDER / folder_name(experiment_id) / f"{run_date.isoformat()}.json"


def lock_path(out: Path, experiment_id: str, run_date: date) -> Path:
    return manifest_path(out, experiment_id, run_date).with_suffix(".lock")


def table_path(out: Path, kind: str, experiment_id: str, run_date: date) -> Path:
    folder = out / KIND_FOLDERS[kind] / folder_name(experiment_id) / run_date.isoformat()
    return folder / DATA_FILE


def _staged_path(final: Path, run_id: str) -> Path:
    return final.with_name(f".data.{run_id}.staged")


@dataclass(frozen=True)
class Manifest:
    """A committed run: its id, what it is of, and each kind's file (relative to ``out``)."""

    out: Path
    path: Path
    run_id: str
    experiment_id: str
    run_date: date
    xpkit_version: str
    committed_at: str
    files: Mapping[str, str]
    # How an incremental run was computed (incremental.refresh.Refreshed.provenance);
    # None for a full run. A manifest written before xpkit recorded it has no such key:
    # how its run was computed is not known (recorded False).
    incremental: Mapping[str, object] | None = None
    recorded: bool = True

    def file(self, kind: str) -> Path:
        return self.out / self.files[kind]

    def staged_file(self, kind: str) -> Path:
        return _staged_path(self.file(kind), self.run_id)

    def to_json(self) -> dict[str, object]:
        return {
            "format": MANIFEST_FORMAT,
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "run_date": self.run_date.isoformat(),
            "xpkit_version": self.xpkit_version,
            "committed_at": self.committed_at,
            "files": dict(self.files),
            "incremental": None if self.incremental is None else dict(self.incremental),
        }


@dataclass(frozen=True)
class PublishedRun:
    """A committed run's tables, all of the manifest's run."""

    manifest: Manifest
    scorecard: pa.Table
    checks: pa.Table
    history: pa.Table | None


def _incremental(value: object) -> Mapping[str, object] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"'incremental' is {type(value).__name__}, not an object")
    return value


def load_manifest(out: Path, path: Path) -> Manifest:
    """Parse and check a manifest file (its place must match what it says it is of)."""
    fix = "delete it (that run's files are then ignored) and re-run the experiment for that date"
    try:
        data = json.loads(path.read_text())
        files = {str(k): str(v) for k, v in data["files"].items()}
        manifest = Manifest(
            out=out,
            path=path,
            run_id=str(data["run_id"]),
            experiment_id=str(data["experiment_id"]),
            run_date=date.fromisoformat(data["run_date"]),
            xpkit_version=str(data.get("xpkit_version", "")),
            committed_at=str(data.get("committed_at", "")),
            files=files,
            incremental=_incremental(data.get("incremental")),
            recorded="incremental" in data,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise RunReadError(f"{path}: not a readable xpkit run manifest ({err}); {fix}") from None
    expected = manifest_path(out, manifest.experiment_id, manifest.run_date)
    wrong = [k for k in REQUIRED_KINDS if k not in files] + [
        k for k, v in files.items() if k not in KINDS or ".." in PurePosixPath(v).parts
    ]
    if wrong or path.name != expected.name or path.parent.name != expected.parent.name:
        raise RunReadError(
            f"{path}: this manifest (experiment {manifest.experiment_id!r}, run date "
            f"{manifest.run_date}) is not where xpkit filed it ({expected}) or lists "
            f"unexpected files {wrong}; {fix}"
        )
    return manifest


def _load_if_exists(out: Path, path: Path) -> Manifest | None:
    return load_manifest(out, path) if path.exists() else None


def _reached(step: str) -> None:
    """Called after each step of a publish; tests replace it to crash the writer there."""


def _lock(out: Path, experiment_id: str, run_date: date, wait: float) -> FileLock:
    return FileLock(lock_path(out, experiment_id, run_date), wait=wait)


def _lock_error(err: LockHeld, experiment_id: str, run_date: date) -> RunLockedError:
    return RunLockedError(
        f"{err.path}: another xpkit run is publishing experiment {experiment_id!r} for run "
        f"date {run_date} (the lock is held by {err.holder.describe()}; waited "
        f"{err.waited:.1f}s). Let it finish and re-run; if that process no longer runs "
        f"(e.g. it was killed on another host), delete {err.path} and re-run."
    )


def _stamp(table: pa.Table, run_id: str) -> pa.Table:
    """The table with its run id in the ``run_id`` column and in the file's metadata."""
    column = pa.array([run_id] * table.num_rows, type=pa.string())
    i = table.schema.get_field_index(RUN_ID_FIELD.name)
    table = (
        table.set_column(i, RUN_ID_FIELD, column)
        if i >= 0
        else table.append_column(RUN_ID_FIELD, column)
    )
    metadata = dict(table.schema.metadata or {})
    metadata[RUN_ID_KEY] = run_id.encode()
    return table.replace_schema_metadata(metadata)


def _roll_forward(manifest: Manifest, step: Callable[[str], None] = lambda _: None) -> None:
    """Give each kind the manifest's file under its final name (the lock must be held)."""
    for kind in KINDS:
        if kind in manifest.files:
            with contextlib.suppress(FileNotFoundError):  # already rolled forward
                os.replace(manifest.staged_file(kind), manifest.file(kind))
            step(f"published {kind}")
        else:
            stale = table_path(manifest.out, kind, manifest.experiment_id, manifest.run_date)
            if stale.exists():
                stale.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    stale.parent.rmdir()
                step(f"removed {kind}")


def _needs_roll_forward(manifest: Manifest) -> bool:
    for kind in KINDS:
        if kind in manifest.files:
            if manifest.staged_file(kind).exists():
                return True
        elif table_path(manifest.out, kind, manifest.experiment_id, manifest.run_date).exists():
            return True
    return False


def _recover(out: Path, experiment_id: str, run_date: date) -> None:
    """Under the lock: finish a committed run, delete what uncommitted ones left behind."""
    manifest = _load_if_exists(out, manifest_path(out, experiment_id, run_date))
    if manifest is not None:
        if manifest.experiment_id != experiment_id:
            raise RunReadError(
                f"{manifest.path}: filed for experiment {manifest.experiment_id!r}, whose "
                f"folder name is the same as {experiment_id!r}'s; rename one of the two ids"
            )
        _roll_forward(manifest)
    for kind in KINDS:
        folder = table_path(out, kind, experiment_id, run_date).parent
        for leftover in folder.glob(".data.*.staged"):
            leftover.unlink(missing_ok=True)
    runs = manifest_path(out, experiment_id, run_date)
    for pattern in (f".{runs.name}.*.tmp", f"{runs.stem}.lock.broken-*"):
        for leftover in runs.parent.glob(pattern):
            leftover.unlink(missing_ok=True)


def publish(
    out: Path,
    experiment_id: str,
    run_date: date,
    tables: Mapping[str, pa.Table],
    *,
    xpkit_version: str,
    lock_wait: float | None = None,
    incremental: Mapping[str, object] | None = None,
) -> PublishedRun:
    """Publish one run's tables (by kind) as one unit; see the module docstring.
    ``incremental``: how an incremental run was computed, kept in the manifest.

    A second writer of the same experiment and run date waits up to ``lock_wait`` seconds
    (default ``LOCK_WAIT_SECONDS``) for the first to finish, then fails naming the holder.
    """
    if set(tables) - set(KINDS) or set(REQUIRED_KINDS) - set(tables):
        raise ValueError(
            f"tables must be {REQUIRED_KINDS} and optionally history, not {list(tables)}"
        )
    run_id = uuid.uuid4().hex
    stamped = {kind: _stamp(tables[kind], run_id) for kind in KINDS if kind in tables}
    lock = _lock(
        out, experiment_id, run_date, LOCK_WAIT_SECONDS if lock_wait is None else lock_wait
    )
    try:
        lock.acquire()
    except LockHeld as err:
        raise _lock_error(err, experiment_id, run_date) from None
    try:
        _reached("locked")
        _recover(out, experiment_id, run_date)
        _reached("recovered")
        files = {}
        staged = []
        try:
            for kind, table in stamped.items():
                final = table_path(out, kind, experiment_id, run_date)
                final.parent.mkdir(parents=True, exist_ok=True)
                staged.append(_staged_path(final, run_id))
                pq.write_table(table, staged[-1])
                fsync_path(staged[-1])
                files[kind] = final.relative_to(out).as_posix()
                _reached(f"staged {kind}")
            manifest = Manifest(
                out=out,
                path=manifest_path(out, experiment_id, run_date),
                run_id=run_id,
                experiment_id=experiment_id,
                run_date=run_date,
                xpkit_version=xpkit_version,
                committed_at=datetime.now(UTC).isoformat(timespec="seconds"),
                files=files,
                incremental=incremental,
            )
            with atomic_path(manifest.path, durable=True) as tmp:
                tmp.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n")
        except BaseException:
            for path in staged:  # not committed: the previous run stays the published one
                path.unlink(missing_ok=True)
            raise
        _reached("committed")
        _roll_forward(manifest, _reached)
        _reached("published")
    finally:
        lock.release()
    return PublishedRun(manifest, stamped["scorecard"], stamped["checks"], stamped.get("history"))


def _run_id_of(table: pa.Table) -> str | None:
    """The table's run id, when its metadata and its ``run_id`` column agree on one."""
    stamped = (table.schema.metadata or {}).get(RUN_ID_KEY)
    if stamped is None:
        return None
    run_id = stamped.decode()
    column = table.column(RUN_ID_FIELD.name) if RUN_ID_FIELD.name in table.column_names else None
    if column is not None and set(column.to_pylist()) - {run_id}:
        return None
    return run_id


def _read_parquet(path: Path, columns: Sequence[str] | None) -> pa.Table | None:
    try:
        with open(path, "rb") as f:  # one open: a concurrent rename cannot switch files
            return pq.read_table(f, columns=list(columns) if columns is not None else None)
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowInvalid) as err:
        raise RunReadError(
            f"{path}: not a readable Parquet file ({err}); re-run the experiment for that "
            "date to publish it again"
        ) from None


def _try_roll_forward(manifest: Manifest) -> None:
    """Finish an interrupted commit if the lock is free (never waits; read-only is fine)."""
    try:
        with FileLock(manifest.path.with_suffix(".lock"), wait=0):
            fresh = _load_if_exists(manifest.out, manifest.path)
            if fresh is not None and fresh.run_id == manifest.run_id:
                _roll_forward(fresh)
    except (LockHeld, OSError):
        pass


class _Moved(Exception):
    """A kind's file is not of the manifest's run (a newer run may have been committed)."""


def _read_kind(manifest: Manifest, kind: str, columns: Sequence[str] | None) -> pa.Table:
    for path in (manifest.file(kind), manifest.staged_file(kind), manifest.file(kind)):
        table = _read_parquet(path, columns)
        if table is not None and _run_id_of(table) == manifest.run_id:
            return table
    raise _Moved(kind)


def _read_kinds(
    manifest: Manifest, kinds: Sequence[str], columns: Sequence[str] | None = None
) -> tuple[Manifest, dict[str, pa.Table]]:
    """The kinds' tables, all of one committed run (re-reading the manifest if it moved)."""
    for _attempt in range(5):
        if _needs_roll_forward(manifest):
            _try_roll_forward(manifest)
        try:
            tables = {k: _read_kind(manifest, k, columns) for k in kinds if k in manifest.files}
            return manifest, tables
        except _Moved as moved:
            fresh = _load_if_exists(manifest.out, manifest.path)
            if fresh is None or fresh.run_id == manifest.run_id:
                kind = str(moved)
                raise RunReadError(
                    f"{manifest.path}: the {kind} of run {manifest.run_id} is missing or "
                    f"belongs to another run ({manifest.file(kind)}); re-run experiment "
                    f"{manifest.experiment_id!r} with --run-date {manifest.run_date} to "
                    "publish it again"
                ) from None
            manifest = fresh
    raise RunReadError(
        f"{manifest.path}: the run kept changing while being read (another xpkit run is "
        "publishing it); try again when it has finished"
    )


def read_run(manifest: Manifest) -> PublishedRun:
    """Every table of a committed run, all of that one run."""
    manifest, tables = _read_kinds(manifest, KINDS)
    return PublishedRun(manifest, tables["scorecard"], tables["checks"], tables.get("history"))


def list_runs(out: Path, experiment_id: str | None = None) -> list[Manifest]:
    """The committed runs under ``out`` (of one experiment), by experiment id then date."""
    root = out / RUNS_FOLDER
    if experiment_id is not None:
        folders = [root / folder_name(experiment_id)]
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    manifests = [load_manifest(out, p) for folder in folders for p in sorted(folder.glob("*.json"))]
    if experiment_id is not None:
        manifests = [m for m in manifests if m.experiment_id == experiment_id]
    return sorted(manifests, key=lambda m: (m.experiment_id, m.run_date))


# Marks an incremental run's --state folder (xpkit.incremental.store writes it): not an
# --out folder, so readers pointed at it say so.
STATE_MARKER = ".xpkit-state"


def _check_out(out: Path) -> None:
    if not out.exists():
        raise RunReadError(f"{out}: no such file or folder; give the --out folder of xpkit run")
    if not out.is_dir():
        raise RunReadError(
            f"{out}: a file; show reads the output folder (the --out of xpkit run), e.g. "
            "xpkit show OUT --experiment ID --run-date YYYY-MM-DD"
        )
    if not (out / RUNS_FOLDER).is_dir():
        old = next(out.glob("experiment_id=*"), None) is not None
        raise RunReadError(
            f"{out}: no committed runs here (no {RUNS_FOLDER}/ folder of run manifests); "
            + (
                "this folder has the old experiment_id=/run_date= layout, which is no longer "
                "read: re-run the experiments with --out pointing here"
                if old
                else "this is the --state folder of incremental runs: give the --out folder "
                "of xpkit run"
                if (out / STATE_MARKER).exists()
                else "give the --out folder of xpkit run"
            )
        )


def check_out_folder(out_dir: Path, tables: Mapping[str, str]) -> None:
    """Before computing: the folder a run publishes to can be written, and no table (a
    logical name -> location map) reads it."""
    probe = out_dir / "experiment_id=x" / "run_date=2000-01-01" / "scorecard.parquet"
    reader = table_reading(out_dir, probe, tables)
    if reader is not None:
        raise ConfigError(
            f"--out {out_dir}: the folder is inside table {reader[0]!r}'s location "
            f"{reader[1]!r}, so a later run would read its own scorecards as data; "
            f"write them to a folder outside the tables' paths"
        )
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise BadInputError(
            f"--out {out_dir}: {existing} is a file, not a folder; choose another --out"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(
            f"--out {out_dir}: folder {existing} is not writable; choose a folder you can "
            f"write to, or fix its permissions"
        )


def select_runs(
    out: Path, experiment_id: str | None = None, run_date: date | None = None
) -> list[Manifest]:
    """The newest committed run of each experiment (or of one, or the one of ``run_date``)."""
    _check_out(out)
    runs = list_runs(out, experiment_id)
    what = f"experiment {experiment_id!r}" if experiment_id is not None else "any experiment"
    if not runs:
        known = sorted({m.experiment_id for m in list_runs(out)})
        raise RunReadError(
            f"{out}: no committed run of {what}; experiments with runs here: "
            f"{', '.join(map(repr, known)) or 'none'}"
        )
    if run_date is not None:
        chosen = [m for m in runs if m.run_date == run_date]
        if not chosen:
            dates = sorted({m.run_date.isoformat() for m in runs})
            raise RunReadError(
                f"{out}: no committed run of {what} filed under {run_date}; run dates "
                f"here: {', '.join(dates)}"
            )
        return chosen
    latest = {m.experiment_id: m for m in runs}  # sorted by date: the last one wins
    return list(latest.values())


def recorded_fractions(out: Path, experiment_id: str, before: date) -> list[float]:
    """Information fractions of this experiment's committed runs filed before ``before``.

    The group-sequential rule needs the earlier looks; the recorded scorecards are the
    run history, so a scheduled daily job applies the right boundary at every look.
    """
    fractions = []
    for manifest in list_runs(out, experiment_id):
        if manifest.run_date >= before:
            continue
        _, tables = _read_kinds(manifest, ("scorecard",), ["information_fraction", "run_id"])
        values = tables["scorecard"].column("information_fraction").to_pylist()
        known = [v for v in values if v is not None]
        if known:
            fractions.append(float(known[0]))
    return fractions
