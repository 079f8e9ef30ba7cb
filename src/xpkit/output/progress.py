"""What a run is doing, on stderr: each experiment's steps, the time they take, rows read.

On a terminal (``live``) one line is rewritten in place, its clock ticking while a step
runs, and each experiment ends with a line that stays: how long each step took and how
many rows the statement read. Elsewhere (``xpkit run --progress`` into a log) each step
is a line of its own. The command line decides when to show it: on a terminal unless
``--quiet``, or when asked with ``--progress``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

STEPS = {
    "checking": "checking metrics and columns",
    "bounds": "reading the dates (bounds statement)",
    "state": "updating the incremental state",
    "statement": "running the statement",
    "statistics": "computing the statistics",
    "writing": "writing the tables",
}
_CLEAR = "\r\x1b[K"


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 60 else f"{int(value // 60)} min {value % 60:02.0f} s"


class Progress:
    """Prints the steps :func:`xpkit.runner.run_all` reports (see ``RunStep``)."""

    def __init__(
        self,
        stream: TextIO,
        *,
        live: bool,
        width: int = 100,
        clock: Callable[[], float] = time.perf_counter,
        tick: float = 0.5,
    ) -> None:
        self.stream = stream
        self.live = live
        self.width = width
        self.clock = clock
        self._lock = threading.Lock()
        self._line = ""  # the live line on screen, "" when none
        self._label = ""
        self._step = ""
        self._rows: int | None = None
        self._started = 0.0  # the experiment's start
        self._step_started = 0.0
        self._durations: dict[str, float] = {}
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if live:
            self._ticker = threading.Thread(target=self._tick, args=(tick,), daemon=True)
            self._ticker.start()

    def step(
        self,
        experiment_id: str,
        index: int,
        total: int,
        step: str,
        rows_read: int | None = None,
    ) -> None:
        """A step starts (``done``: the experiment is published)."""
        now = self.clock()
        with self._lock:
            if experiment_id:
                label = f"[{index}/{total}] {experiment_id}"
            else:
                label = f"{total} experiment{'s' if total != 1 else ''}"
            if label != self._label:
                self._label, self._started, self._durations = label, now, {}
                self._rows = None
            elif self._step:
                self._durations[self._step] = now - self._step_started
            if rows_read is not None:
                self._rows = rows_read
            if step == "done":
                self._finish(now)
                return
            self._step, self._step_started = step, now
            if self.live:
                self._draw(now)
            else:
                self._write_line(self._text(now))

    def clear(self) -> None:
        """Remove the live line (before other output goes to the same terminal)."""
        with self._lock:
            self._erase()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=1)
        self.clear()

    # -- drawing, with the lock held ----------------------------------------------------

    def _text(self, now: float) -> str:
        what = STEPS.get(self._step, self._step)
        text = f"{self._label}  {what}  {_seconds(now - self._started)}"
        if self._rows is not None and self._step in ("statistics", "writing"):
            text += f"  {self._rows:,} rows read"
        return text

    def _draw(self, now: float) -> None:
        text = self._text(now)[: max(self.width - 1, 20)]
        self.stream.write(_CLEAR + text)
        self.stream.flush()
        self._line = text

    def _erase(self) -> None:
        if self._line:
            self.stream.write(_CLEAR)
            self.stream.flush()
            self._line = ""

    def _write_line(self, text: str) -> None:
        self._erase()
        self.stream.write(text + "\n")
        self.stream.flush()

    def _finish(self, now: float) -> None:
        steps = ", ".join(f"{name} {_seconds(t)}" for name, t in self._durations.items())
        text = f"{self._label}  done in {_seconds(now - self._started)}"
        if steps:
            text += f" ({steps})"
        if self._rows is not None:
            text += f", {self._rows:,} rows read"
        self._write_line(text)
        self._step, self._label = "", ""

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every):
            with self._lock:
                if self._line and self._step:
                    self._draw(self.clock())
