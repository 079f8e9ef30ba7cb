"""Seed metrics on the daily engagement table."""

from xpkit import Metric, Source


class EngagementDaily(Source):
    """One row per member and active day."""

    table = "engagement_daily"
    unit = "member_id"
    time = "date"


class WatchSeconds(Metric):
    """Seconds watched per member in the analysis window."""

    source = EngagementDaily
    expression = "SUM(watch_seconds)"
    covariate = "pre"


class Sessions(Metric):
    """Sessions started per member in the analysis window."""

    source = EngagementDaily
    expression = "SUM(sessions)"
    covariate = "pre"


class Plays(Metric):
    """Titles played per member in the analysis window."""

    source = EngagementDaily
    expression = "SUM(plays)"
    covariate = "pre"


class Streamers(Metric):
    """Share of members who watched anything in the analysis window."""

    source = EngagementDaily
    expression = "MAX(CASE WHEN watch_seconds > 0 THEN 1 ELSE 0 END)"
    kind = "proportion"
    covariate = "pre"


class Errors(Metric):
    """Playback errors per member in the analysis window (lower is better)."""

    source = EngagementDaily
    expression = "SUM(errors)"
    higher_is_better = False
    covariate = "pre"


class ErrorsPerPlay(Metric):
    """Playback errors per play (a ratio of per-member sums, analysed by the delta method)."""

    source = EngagementDaily
    expression = "SUM(errors)"
    denominator = "SUM(plays)"
    kind = "ratio"
    higher_is_better = False


class WatchSecondsPerSession(Metric):
    """Seconds watched per session."""

    source = EngagementDaily
    expression = "SUM(watch_seconds)"
    denominator = "SUM(sessions)"
    kind = "ratio"
    covariate = "pre"
