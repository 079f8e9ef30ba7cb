"""The metrics catalogue as text: one line per metric (name, kind, source, file), then its
description, every line within the given width (80 columns by default)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from xpkit.define.registry import MetricRegistry, shipped_metrics_dir

_KIND = len("proportion")
_GAP = "  "


def _shown_file(file: Path | None, base: Path) -> str:
    """The file relative to ``base`` when below it; a shipped file as ``xpkit:<name>``."""
    if file is None:
        return "?"
    try:
        return "xpkit:" + file.resolve().relative_to(shipped_metrics_dir().resolve()).as_posix()
    except ValueError:
        pass
    try:
        return os.path.relpath(file, base) if file.is_relative_to(base) else str(file)
    except ValueError:  # another drive
        return str(file)


def _fit(text: str, width: int, *, left: bool = False) -> str:
    """``text`` cut to ``width`` characters with an ellipsis (at the start with ``left``)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    return "…" + text[-(width - 1) :] if left else text[: width - 1] + "…"


def render_catalogue(registry: MetricRegistry, *, width: int = 80, base: Path | None = None) -> str:
    """Every metric of ``registry``, sorted by name, within ``width`` columns."""
    base = base or Path.cwd()
    rows = []
    for name in sorted(registry.metrics):
        metric = registry.metrics[name]
        rows.append(
            (
                name,
                metric.kind,
                metric.source.table,
                _shown_file(registry.file_of(name), base),
                metric.description,
            )
        )
    if not rows:
        return f"no metrics in {registry.origin}"
    width = max(width, 40)
    name_w = min(max(len("name"), *(len(r[0]) for r in rows)), 28)
    source_w = min(max(len("source"), *(len(r[2]) for r in rows)), 20)
    file_w = max(width - name_w - _KIND - source_w - 3 * len(_GAP), 8)
    if name_w + _KIND + source_w + file_w + 3 * len(_GAP) > width:
        source_w = max(len("source"), width - name_w - _KIND - file_w - 3 * len(_GAP))

    def line(name: str, kind: str, source: str, file: str) -> str:
        cells = [
            _fit(name, name_w).ljust(name_w),
            kind.ljust(_KIND),
            _fit(source, source_w).ljust(source_w),
            _fit(file, file_w, left=True),
        ]
        return _GAP.join(cells).rstrip()

    lines = [line("name", "kind", "source", "file")]
    for name, kind, source, file, description in rows:
        lines.append(line(name, kind, source, file))
        if description:
            lines += textwrap.wrap(
                description, width=width, initial_indent="    ", subsequent_indent="    "
            )
    lines.append("")
    lines += textwrap.wrap(f"{len(rows)} metrics from {registry.origin}", width=width)
    return "\n".join(lines)
