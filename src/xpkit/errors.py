"""User-facing errors. Each maps to an exit code; none should surface as a traceback.

Exit codes: 0 ok; 1 internal error; 2 bad input (config, metric, missing table/column);
3 the run completed but a result is invalid (SRM or another gate tripped).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_INVALID_RESULT = 3


class XpkitError(Exception):
    """Base class: an error whose message is written for the user."""

    exit_code = EXIT_INTERNAL


class BadInputError(XpkitError):
    """The user's input (config, metric, data) is wrong; the message says how to fix it."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(BadInputError):
    """An experiments/run configuration problem, naming the file and the field."""


class MetricDefinitionError(BadInputError):
    """A metric or source declaration problem, naming the metric."""


class DataError(BadInputError):
    """A missing table or column, or data that cannot be analysed as configured."""


class EngineStatementError(Exception):
    """An engine rejected a statement (a binder or analysis error).

    Not an :class:`XpkitError`: when no caller can say whose input the statement came from
    (a metric's expression in a probe), it is a statement xpkit should not have generated,
    and it surfaces as an internal error with its traceback. ``reason`` is the engine's
    first line.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EngineDataError(DataError):
    """A statement failed on the data itself: a failed cast, an overflow, invalid input.

    A bad-input error on its own; the runner narrows it to the metric whose expression
    fails when it can. ``reason`` is the engine's first line.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"the engine could not compute the statement on this data: {reason}; check the "
            f"metrics' expressions and the columns' types"
        )
        self.reason = reason
