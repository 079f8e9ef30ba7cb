"""xpkit: a SQL-first metrics repository and decision engine for online experiments.

``xpkit.run`` (the Python API, :mod:`xpkit.api`) and its result types, and ``Metric`` and
``Source`` (which load sqlglot), are imported on first use, so ``import xpkit`` stays cheap
for the command line (``xpkit --version`` and ``--help`` load click alone).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xpkit.api import Result, Results, load_metrics, plotly_js, run
    from xpkit.define.metric import Metric, Source

__version__ = "0.1.0"

__all__ = [
    "Metric",
    "Result",
    "Results",
    "Source",
    "__version__",
    "load_metrics",
    "plotly_js",
    "run",
]

_API = ("Result", "Results", "load_metrics", "plotly_js", "run")
_DEFINE = ("Metric", "Source")


def __getattr__(name: str) -> Any:
    if name in _API:
        import xpkit.api

        return getattr(xpkit.api, name)
    if name in _DEFINE:
        from xpkit.define import metric

        return getattr(metric, name)
    raise AttributeError(f"module 'xpkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | set(_DEFINE))
