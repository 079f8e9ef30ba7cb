"""xpkit: a SQL-first metrics repository and decision engine for online experiments.

``xpkit.run`` (the Python API, :mod:`xpkit.api`) and its result types are imported on
first use, so ``import xpkit`` stays cheap for the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xpkit.define.metric import Metric, Source

if TYPE_CHECKING:
    from xpkit.api import Result, Results, load_metrics, plotly_js, run

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


def __getattr__(name: str) -> Any:
    if name in _API:
        import xpkit.api

        return getattr(xpkit.api, name)
    raise AttributeError(f"module 'xpkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
