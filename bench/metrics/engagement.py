"""Metrics of the performance benchmark: the repository's engagement metrics plus a few more.

The registry collects the classes defined in this folder's own modules, so the repository's
metrics are declared here again as thin subclasses; every metric keeps its name, its SQL and
its source class, so all of them share one scan of ``engagement_daily``.
"""

from xpkit.metrics import engagement as repo
from xpkit.metrics.engagement import EngagementDaily

from xpkit import Metric


class WatchSeconds(repo.WatchSeconds):
    __doc__ = repo.WatchSeconds.__doc__


class Sessions(repo.Sessions):
    __doc__ = repo.Sessions.__doc__


class Plays(repo.Plays):
    __doc__ = repo.Plays.__doc__


class Streamers(repo.Streamers):
    __doc__ = repo.Streamers.__doc__


class Errors(repo.Errors):
    __doc__ = repo.Errors.__doc__


class ErrorsPerPlay(repo.ErrorsPerPlay):
    __doc__ = repo.ErrorsPerPlay.__doc__


class WatchSecondsPerSession(repo.WatchSecondsPerSession):
    __doc__ = repo.WatchSecondsPerSession.__doc__


class PlaysPerSession(Metric):
    """Titles played per session (a ratio of per-member sums, analysed by the delta method)."""

    source = EngagementDaily
    expression = "SUM(plays)"
    denominator = "SUM(sessions)"
    kind = "ratio"
    covariate = "pre"


class ActiveDays(Metric):
    """Days with any activity per member in the analysis window."""

    source = EngagementDaily
    expression = "COUNT(*)"
    covariate = "pre"


class WatchSecondsCapped(Metric):
    """Seconds watched per member, capped at 86,400 s (one day of viewing) per window."""

    source = EngagementDaily
    expression = "SUM(watch_seconds)"
    cap = 86400
    covariate = "pre"


class WatchSecondsP90(Metric):
    """90th percentile of watch seconds per member (a unit-level quantile metric)."""

    source = repo.EngagementDaily
    expression = "SUM(watch_seconds)"
    kind = "quantile"
    quantile = 0.9
