"""Sources on the plays table: one row per play, for quantile metrics over events."""

from xpkit import Metric, Source


class Plays(Source):
    """One row per play, with its start latency in milliseconds (``start_latency_ms``).

    The sample data has it for homepage_ranking_v2 members on the days of their analysis
    window. Event-level quantile metrics (the p95 of start latency over all plays, members
    as clusters) are defined on it.
    """

    table = "plays"
    unit = "member_id"
    time = "date"


class StartLatencyP95(Metric):
    """95th percentile of play start latency over all plays (event level, members as
    clusters)."""

    source = Plays
    value = "start_latency_ms"
    kind = "quantile"
    quantile = 0.95
    higher_is_better = False


class StartLatencyMedian(Metric):
    """Median play start latency over all plays (event level, members as clusters)."""

    source = Plays
    value = "start_latency_ms"
    kind = "quantile"
    quantile = 0.5
    higher_is_better = False
