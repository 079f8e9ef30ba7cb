"""define: the analyst-facing declarations (Metric, Source) and the registry that loads them."""

from xpkit.define.metric import Metric, Source

__all__ = ["Metric", "Source"]
