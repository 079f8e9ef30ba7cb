"""An incremental run's state on disk: versions that appear whole, and a pointer to one.

::

    STATE/<experiment folder>/current.json        {"version": "<id>"}: the state in use
    STATE/<experiment folder>/<id>/meta.json       what it holds (see StateVersion)
    STATE/<experiment folder>/<id>/cells.parquet   the complete assignment dates' cells
    STATE/<experiment folder>/<id>/multi.parquet   the units with assignment rows on more
                                                   than one date
    STATE/<experiment folder>/pieces/<source>/<id>.parquet    the rows the run <id> read,
                                                   per unit (and day): kept while any of
                                                   its units' range is open
    STATE/<experiment folder>/closed/<source>/<id>.parquet    units whose range closed in
                                                   the run <id>, one row each
    STATE/<experiment folder>/.lock                one incremental run at a time
    STATE/.xpkit-state                             marks the folder as xpkit's own

Both kinds of Parquet file are written once and never rewritten. A run writes its new
state into a staging folder of its own, and only after the run itself is published moves
its piece and its closed units under ``pieces/`` and ``closed/``, renames the folder to its
version id and replaces ``current.json`` (atomically); then it removes the older versions
and the files no version names. A run killed at any point leaves ``current.json`` naming the
previous state, whole and usable: the next run starts from it and scans the days since.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from xpkit.errors import BadInputError, ConfigError
from xpkit.files import FileLock, LockHeld, atomic_path, fsync_path
from xpkit.locations import table_reading
from xpkit.output.storage import STATE_MARKER, folder_name

STATE_FORMAT = 2  # 1: open units rewritten each run (.open/.partials), not read
POINTER = "current.json"
META = "meta.json"
STAGING_PREFIX = ".staging-"
LOCK_WAIT = 5.0  # seconds a run waits for another run of the experiment to let go
CLOSED = "closed"
PIECES = "pieces"
MULTI = "multi.parquet"
_MARKER_TEXT = (
    "This folder holds the state of xpkit's incremental runs (xpkit run --incremental).\n"
    "Each run removes what its state no longer uses under it: keep nothing else here.\n"
    "Delete the folder to rebuild the state: the next incremental run reads all the rows.\n"
)
_VERSION = re.compile(r"[0-9]{8}T[0-9]{6}-[0-9a-f]{8}")


class StateLockedError(BadInputError):
    """Another incremental run of the experiment is using the state folder."""


class StateFolderError(BadInputError):
    """The state folder cannot be created or written."""


@dataclass(frozen=True)
class Piece:
    """The rows one run read for one source, per unit (and day), under ``pieces/<source>/``.

    ``index``: its number among the source's pieces (the file's ``xp_piece`` column);
    ``last_date``: its units' latest assignment date (it is dropped once that date's units
    are closed); ``voided``: days a later run scanned again (restated): this piece's rows
    of those days are not used.
    """

    name: str
    index: int
    last_date: date
    voided: tuple[date, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "index": self.index,
            "last_date": self.last_date.isoformat(),
            "voided": [d.isoformat() for d in self.voided],
        }

    @classmethod
    def from_json(cls, data: dict) -> Piece:
        return cls(
            name=str(data["name"]),
            index=int(data["index"]),
            last_date=date.fromisoformat(data["last_date"]),
            voided=tuple(date.fromisoformat(d) for d in data["voided"]),
        )


@dataclass(frozen=True)
class SourceMeta:
    """One source's kept accumulators.

    ``key``: the hash of what they depend on (see compile.state.StatePlan.key);
    ``scanned_through``: the last day scanned; ``settle_through``: the last day whose rows
    no later run looks at again (the units whose range ended by then are closed; the pieces
    hold later days per unit and day); ``counts``: the source's rows per day for the days
    after ``settle_through``, as seen when they were last scanned (a changed count means
    late rows: the day is restated); ``closed``: the files of its units whose range is over
    (under ``closed/<source>/``); ``pieces``: the files of what each run read for the
    others (under ``pieces/<source>/``).
    """

    key: str
    table: str
    scanned_through: date
    settle_through: date
    counts: dict[str, int] = field(default_factory=dict)
    closed: tuple[str, ...] = ()
    pieces: tuple[Piece, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "table": self.table,
            "scanned_through": self.scanned_through.isoformat(),
            "settle_through": self.settle_through.isoformat(),
            "counts": dict(sorted(self.counts.items())),
            "closed": list(self.closed),
            "pieces": [p.to_json() for p in self.pieces],
        }

    @classmethod
    def from_json(cls, data: dict) -> SourceMeta:
        return cls(
            key=str(data["key"]),
            table=str(data["table"]),
            scanned_through=date.fromisoformat(data["scanned_through"]),
            settle_through=date.fromisoformat(data["settle_through"]),
            counts={str(k): int(v) for k, v in data["counts"].items()},
            closed=tuple(str(c) for c in data["closed"]),
            pieces=tuple(Piece.from_json(p) for p in data["pieces"]),
        )


@dataclass(frozen=True)
class StateVersion:
    """A committed state: its folder, the as-of date it was made for, and its sources."""

    path: Path
    version: str
    experiment_id: str
    as_of: date
    xpkit_version: str
    sources: dict[str, SourceMeta]
    # assignment rows per day after the earliest settle date, as last seen
    assignment_counts: dict[str, int] = field(default_factory=dict)
    # the key of the complete assignment dates' cells kept in cells.parquet, if any
    cells_key: str | None = None

    @property
    def cells(self) -> Path:
        return self.path / "cells.parquet"

    @property
    def multi(self) -> Path:
        return self.path / MULTI

    def closed(self, label: str) -> list[Path]:
        folder = self.path.parent / CLOSED / label
        return [folder / name for name in self.sources[label].closed]

    def pieces(self, label: str) -> list[Path]:
        folder = self.path.parent / PIECES / label
        return [folder / p.name for p in self.sources[label].pieces]


@dataclass
class StagedState:
    """A new state being written: its files go in ``path`` until :meth:`StateStore.commit`."""

    path: Path
    version: str

    @property
    def cells(self) -> Path:
        return self.path / "cells.parquet"

    @property
    def multi(self) -> Path:
        """The units with assignment rows on more than one date (and their first date)."""
        return self.path / MULTI

    def closed(self, label: str) -> Path:
        """This run's newly closed units, moved under ``closed/`` on commit."""
        return self.path / f"{label}.closed.parquet"

    def piece(self, label: str) -> Path:
        """The rows this run read (the delta), moved under ``pieces/`` on commit."""
        return self.path / f"{label}.piece.parquet"

    def scratch(self, label: str, name: str) -> Path:
        """A file the run needs on its way (new units, the delta): not part of the state."""
        return self.path / "scratch" / f"{label}.{name}.parquet"


def check_state_folder(root: Path, tables: Mapping[str, str], out_dir: Path | None = None) -> None:
    """Before computing: ``root`` (``--state``) is a folder of xpkit's own, apart from the
    run's ``out_dir``, and no table (a logical name -> location map) reads it.

    A run deletes what its state no longer uses under an experiment's folder, so a folder
    that already holds anything else (a project folder, a data folder) is refused, never
    cleaned: one that is missing, empty (but for hidden files) or marked as xpkit's
    (``STATE_MARKER``, written by the first run) is taken, and so is an unmarked one whose
    every entry is an experiment's state.
    """
    if out_dir is not None:
        state, out = root.resolve(), out_dir.resolve()
        where = (
            "is the --out folder"
            if state == out
            else "is inside the --out folder"
            if out in state.parents
            else "holds the --out folder"
            if state in out.parents
            else None
        )
        if where is not None:
            raise StateFolderError(
                f"--state {root} {where}; keep the state in a folder of its own beside it "
                f"(e.g. --state {out_dir.parent / (out_dir.name + '-state')})"
            )
    reader = table_reading(root, root / "x" / PIECES / "y" / "z.parquet", tables)
    if reader is not None:
        raise ConfigError(
            f"--state {root}: the folder is inside table {reader[0]!r}'s location "
            f"{reader[1]!r}, so a later run would read the state's Parquet files as data; "
            f"keep the state in a folder outside the tables' paths"
        )
    if not root.is_dir() or (root / STATE_MARKER).exists():
        return
    foreign = sorted(
        entry.name + ("/" if entry.is_dir() else "")
        for entry in root.iterdir()
        if not entry.name.startswith(".") and not _is_experiment_state(entry)
    )
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise StateFolderError(
            f"--state {root}: the folder already holds what xpkit did not write ({shown}); "
            f"an incremental run removes what its state no longer uses under the folder, "
            f"so the state needs a folder of its own: give --state (or state in the config) "
            f"a new or empty folder, e.g. {root / 'xpkit-state'}"
        )


def _is_experiment_state(entry: Path) -> bool:
    """Could ``entry`` be an experiment's state folder, with nothing in it but xpkit's?"""
    if not entry.is_dir():
        return False
    for item in entry.iterdir():
        name = item.name
        if name in (CLOSED, PIECES) or (_VERSION.fullmatch(name) and item.is_dir()):
            continue
        if name == POINTER or name.startswith(STAGING_PREFIX):
            continue
        if name.startswith(".") and not item.is_dir():
            continue  # the lock, a broken lock set aside, an interrupted write's temporary
        return False
    return True


class StateStore:
    """The state folder of one experiment under ``root`` (``--state``)."""

    def __init__(self, root: Path, experiment_id: str) -> None:
        self.root = root
        self.experiment_id = experiment_id
        self.folder = root / folder_name(experiment_id)
        self._lock: FileLock | None = None
        # Why the last current() found no usable state although there is one (None: none)
        self.unusable: str | None = None

    def lock(self, wait: float | None = None) -> None:
        """Hold the experiment's state until :meth:`release`: one incremental run at a time."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            marker = self.root / STATE_MARKER
            if not marker.exists():
                with atomic_path(marker) as tmp:
                    tmp.write_text(_MARKER_TEXT)
        except OSError as err:
            raise StateFolderError(
                f"experiment {self.experiment_id!r}: cannot keep its incremental state in "
                f"{self.folder} ({err.strerror or err}); give --state (or state in the "
                f"config) a folder xpkit can create and write"
            ) from None
        lock = FileLock(self.folder / ".lock", wait=LOCK_WAIT if wait is None else wait)
        try:
            lock.acquire()
        except LockHeld as err:
            raise StateLockedError(
                f"experiment {self.experiment_id!r}: another incremental run is using its "
                f"state in {self.folder} ({err.holder.describe()}); wait for it to finish, "
                f"or give this run another --state folder"
            ) from None
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def current(self) -> StateVersion | None:
        """The committed state, or None when there is none (or it cannot be read: it is
        then rebuilt, never half-used)."""
        pointer = self.folder / POINTER
        self.unusable = None
        if not pointer.exists():
            return None
        self.unusable = "the state in the folder cannot be read whole"
        try:
            version = str(json.loads(pointer.read_text())["version"])
            path = self.folder / version
            meta = json.loads((path / META).read_text())
            if meta.get("format") != STATE_FORMAT:
                self.unusable = (
                    f"the state in the folder is in format {meta.get('format')}, this xpkit "
                    f"keeps format {STATE_FORMAT}"
                )
                return None
            if meta.get("experiment") != self.experiment_id:
                return None
            sources = {k: SourceMeta.from_json(v) for k, v in meta["sources"].items()}
            found = StateVersion(
                path=path,
                version=version,
                experiment_id=self.experiment_id,
                as_of=date.fromisoformat(meta["as_of"]),
                xpkit_version=str(meta["xpkit_version"]),
                sources=sources,
                assignment_counts={str(k): int(v) for k, v in meta["assignment_counts"].items()},
                cells_key=meta.get("cells_key"),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        files = [found.multi] if sources else []
        if found.cells_key is not None and found.cells.exists():
            files.append(found.cells)
        for label in sources:
            files += [*found.pieces(label), *found.closed(label)]
        if not all(f.exists() for f in files):
            return None
        damaged = next((f for f in files if not _whole_parquet(f)), None)
        if damaged is not None:
            self.unusable = (
                f"its file {damaged.relative_to(self.folder)} is cut short or damaged, not "
                f"a whole Parquet file"
            )
            return None
        self.unusable = None
        return found

    def stage(self) -> StagedState:
        version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        path = self.folder / f"{STAGING_PREFIX}{version}"
        (path / "scratch").mkdir(parents=True)
        return StagedState(path, version)

    def commit(
        self,
        staged: StagedState,
        *,
        as_of: date,
        xpkit_version: str,
        sources: dict[str, SourceMeta],
        assignment_counts: dict[str, int],
        cells_key: str | None = None,
    ) -> StateVersion:
        """Make ``staged`` the state in use, then remove the older ones."""
        shutil.rmtree(staged.path / "scratch", ignore_errors=True)
        name = f"{staged.version}.parquet"
        for label, meta_of in sources.items():
            # This run's piece and closed units join the kept ones (a new name: never
            # overwritten), when the state names them.
            for new, kind, named in (
                (staged.piece(label), PIECES, name in {p.name for p in meta_of.pieces}),
                (staged.closed(label), CLOSED, name in meta_of.closed),
            ):
                if new.exists() and named:
                    target = self.folder / kind / label / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    fsync_tree(new)
                    new.rename(target)
                    fsync_path(target.parent)
                elif new.exists():
                    _remove(new)  # nothing read, or no unit's range closed, in this run
        meta = {
            "format": STATE_FORMAT,
            "experiment": self.experiment_id,
            "as_of": as_of.isoformat(),
            "xpkit_version": xpkit_version,
            "sources": {k: v.to_json() for k, v in sorted(sources.items())},
            "assignment_counts": dict(sorted(assignment_counts.items())),
            "cells_key": cells_key if staged.cells.exists() else None,
        }
        with atomic_path(staged.path / META, durable=True) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
        fsync_tree(staged.path)
        final = self.folder / staged.version
        staged.path.rename(final)
        fsync_path(self.folder)
        with atomic_path(self.folder / POINTER, durable=True) as tmp:
            tmp.write_text(json.dumps({"version": staged.version}) + "\n")
        for other in self.folder.iterdir():
            if other.is_dir() and other.name not in (staged.version, CLOSED, PIECES):
                shutil.rmtree(other, ignore_errors=True)
        kept = {(CLOSED, label, n) for label, m in sources.items() for n in m.closed}
        kept |= {(PIECES, label, p.name) for label, m in sources.items() for p in m.pieces}
        for kind in (CLOSED, PIECES):
            for label_folder in (self.folder / kind).glob("*"):
                for file in label_folder.iterdir():
                    if (kind, label_folder.name, file.name) not in kept:
                        _remove(file)
        return StateVersion(
            path=final,
            version=staged.version,
            experiment_id=self.experiment_id,
            as_of=as_of,
            xpkit_version=xpkit_version,
            sources=sources,
            assignment_counts=assignment_counts,
            cells_key=cells_key if (final / "cells.parquet").exists() else None,
        )

    def discard(self, staged: StagedState) -> None:
        shutil.rmtree(staged.path, ignore_errors=True)


def _whole_parquet(path: Path) -> bool:
    """Is ``path`` (a file, or a folder of part files as Spark writes) whole Parquet: the
    magic bytes at both ends and a footer that fits? A file cut short (a full disk, a copy
    interrupted) fails it; the bytes in between are the engine's to check."""
    if path.is_dir():
        parts = [p for p in path.rglob("*.parquet") if not p.name.startswith((".", "_"))]
        return all(_whole_parquet(p) for p in parts)
    try:
        with path.open("rb") as file:
            head = file.read(4)
            size = file.seek(0, 2)
            if size < 12:
                return False
            file.seek(size - 8)
            tail = file.read(8)
    except OSError:
        return False
    footer = int.from_bytes(tail[:4], "little")
    return head == b"PAR1" and tail[4:] == b"PAR1" and footer <= size - 12


def fsync_tree(path: Path) -> None:
    """Flush a file, or every file under a folder (a distributed engine writes folders)."""
    if path.is_dir():
        for file in path.rglob("*"):
            if file.is_file():
                fsync_path(file)
    else:
        fsync_path(path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
