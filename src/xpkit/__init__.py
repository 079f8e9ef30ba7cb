"""xpkit: a SQL-first metrics repository and decision engine for online experiments."""

from xpkit.define.metric import Metric, Source

__version__ = "0.1.0"

__all__ = ["Metric", "Source", "__version__"]
