"""Files that appear whole or not at all, and lock files that say who holds them.

``atomic_path``: write to a temporary name, then rename. ``FileLock``: one writer at a time
per lock file, created with O_CREAT|O_EXCL and holding the holder's pid, host and start
time; a crashed holder's lock stays on disk and is recognised as stale (a dead pid on this
host) and broken by the next taker.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

# A lock file without readable content (its taker died between creating and writing it)
# counts as stale once it is this old.
UNREADABLE_LOCK_STALE_SECONDS = 10.0


def fsync_path(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk; best effort where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` that replaces it only if the block completes.

    The temporary file is in the same folder (so the rename is atomic on one filesystem)
    and is removed when the block fails, so a crash never leaves a half-written ``path``.
    Its name starts with ``.`` and ends with ``.tmp``, so readers of ``*.parquet`` or
    ``*.json`` never pick it up. ``durable`` flushes the file before and the folder after
    the rename, so the new content survives a power loss once the block returns.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class LockHolder:
    """What a lock file says about the process that took it."""

    pid: int | None
    host: str | None
    started_at: str | None

    def describe(self) -> str:
        if self.pid is None:
            return "an unknown process (the lock file is empty or unreadable)"
        return f"pid {self.pid} on host {self.host}, since {self.started_at}"


class LockHeld(Exception):
    """The lock is held by a live (or unverifiable) process; callers word the message."""

    def __init__(self, path: Path, holder: LockHolder, waited: float) -> None:
        super().__init__(f"{path}: held by {holder.describe()}")
        self.path = path
        self.holder = holder
        self.waited = waited


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return True
    return True


def read_holder(path: Path) -> LockHolder:
    try:
        data = json.loads(path.read_text())
        return LockHolder(int(data["pid"]), str(data["host"]), str(data["started_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return LockHolder(None, None, None)


def _is_stale(path: Path, holder: LockHolder) -> bool:
    if holder.pid is None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        return age > UNREADABLE_LOCK_STALE_SECONDS
    return holder.host == socket.gethostname() and not _pid_alive(holder.pid)


class FileLock:
    """An exclusive lock file: ``with FileLock(path, wait=5):`` or ``acquire``/``release``.

    ``wait`` is how long to retry while a live process holds it before raising
    ``LockHeld``. A stale lock (its pid is dead on this host) is broken: moved aside under
    a unique name and checked to be the stale one before it is deleted, so two processes
    breaking the same stale lock never delete each other's fresh one.
    """

    def __init__(self, path: Path, *, wait: float = 5.0, poll: float = 0.1) -> None:
        self.path = path
        self.wait = wait
        self.poll = poll
        self.held = False

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        content = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with os.fdopen(fd, "w") as f:
            json.dump(content, f)
        return True

    def _break(self, seen: LockHolder) -> None:
        aside = self.path.with_name(f"{self.path.name}.broken-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if read_holder(aside) != seen:
            # Someone else broke the stale lock and took a fresh one: put theirs back.
            with suppress(OSError):
                os.link(aside, self.path)
        aside.unlink(missing_ok=True)

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        while True:
            if self._try_create():
                self.held = True
                return
            holder = read_holder(self.path)
            if _is_stale(self.path, holder):
                self._break(holder)
                continue
            waited = time.monotonic() - start
            if waited >= self.wait:
                raise LockHeld(self.path, holder, waited)
            time.sleep(min(self.poll, max(self.wait - waited, 0.0)))

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
