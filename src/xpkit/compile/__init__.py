"""compile: metric classes + experiment config -> SQL statements and their layout.

Knows SQL and the config, nothing of statistics. Public entry points: the statements
(:func:`compile_moments`, :func:`compile_bounds`, :func:`compile_exposure_health`),
:func:`check_columns`, and the dialect list.
"""

from xpkit.compile.dialects import DIALECTS
from xpkit.compile.schema import check_columns, slice_sources
from xpkit.compile.statements import (
    CompiledQuery,
    ExperimentDates,
    SliceRequest,
    compile_bounds,
    compile_exposure_health,
    compile_moments,
    compile_rows_after,
)

__all__ = [
    "DIALECTS",
    "CompiledQuery",
    "ExperimentDates",
    "SliceRequest",
    "check_columns",
    "compile_bounds",
    "compile_exposure_health",
    "compile_moments",
    "compile_rows_after",
    "slice_sources",
]
