"""Incremental runs: per-unit accumulators kept between scheduled runs (``--incremental``).

``refresh`` brings an experiment's state up to the run's as-of date by scanning only the
days since the last run (and recent days whose rows changed); ``store`` keeps the state on
disk, committed together with the run. See README ("Scheduling xpkit").
"""

from xpkit.incremental.refresh import Refreshed, refresh
from xpkit.incremental.store import (
    SourceMeta,
    StateLockedError,
    StateStore,
    StateVersion,
    check_state_folder,
)

__all__ = [
    "Refreshed",
    "SourceMeta",
    "StateLockedError",
    "StateStore",
    "StateVersion",
    "check_state_folder",
    "refresh",
]
