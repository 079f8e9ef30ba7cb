"""xpkit: a SQL-first metrics repository and decision engine for online experiments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Metric", "Source", "__version__"]

if TYPE_CHECKING:
    from xpkit.define.metric import Metric, Source


def __getattr__(name: str) -> Any:
    """``Metric`` and ``Source`` on first use: they load sqlglot, which ``xpkit --version``
    and ``xpkit --help`` do not need."""
    if name in ("Metric", "Source"):
        from xpkit.define import metric

        return getattr(metric, name)
    raise AttributeError(f"module 'xpkit' has no attribute {name!r}")
