"""The contract between the SQL and the statistics: which output column holds which sums.

The compiler writes a statement and, beside it, a :class:`MomentsLayout`; the readout
reads the statement's result through that layout, and the statistics find each metric's
per-unit columns (value, denominator, covariates by role, exposure) in its
:class:`MetricLayout`. Neither side knows how the other works: this module is all they
share, so it imports nothing of xpkit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SHIFT_PREFIX = "shift__"
SUM_PREFIX = "sum__"
PRODUCT_PREFIX = "prod__"
ROWS_PREFIX = "rows_read__"
SLICE_PREFIX = "xp_slice__"
EXPOSURE_COLUMN = "exposed"


@dataclass(frozen=True)
class MetricLayout:
    """The per-unit columns of one metric, in the order its moments are kept.

    ``covariates`` are the CUPED regressors in order. ``pre_value`` names the one among
    them that is the metric's own value over the pre-period (what power planning takes the
    variance of), ``has_history`` the 0/1 indicator of any pre-period row; both are None
    when the metric has no covariate.
    """

    metric: str
    kind: str
    value: str
    denominator: str | None = None
    covariates: tuple[str, ...] = ()
    exposure: str | None = None
    pre_value: str | None = None
    has_history: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        cols = [self.value]
        if self.denominator:
            cols.append(self.denominator)
        cols.extend(self.covariates)
        if self.exposure:
            cols.append(self.exposure)
        return tuple(cols)


@dataclass(frozen=True)
class QuantileLayout:
    """Where one quantile metric's histogram is in the statement's result.

    Its rows are the ones whose ``PART_COLUMN`` is ``part``: per cell and bin key
    (``BIN_COLUMN``), ``n`` units (unit level), or the events, pairs and cross sums of
    :mod:`xpkit.stats.quantiles` (event level; plus one row per cell with a NULL key whose
    ``n`` is the units with at least one event).
    """

    metric: str
    q: float
    level: str  # "unit" | "event"
    part: str
    eps: float


PART_COLUMN = "xp_part"
BIN_COLUMN = "xp_bin"
EVENTS_COLUMN = "xp_events"
PAIRS_COLUMN = "xp_pairs"
CROSS_COLUMN = "xp_cross"


@dataclass(frozen=True)
class MomentsLayout:
    """How to read the wide result of the moments statement."""

    metrics: dict[str, MetricLayout]
    columns: tuple[str, ...]
    products: tuple[tuple[str, str], ...]
    row_counts: dict[str, str]  # output column -> source table
    populations: tuple[str, ...]  # "itt", and "tot" when exposure is configured
    window_end: int  # last day of the window: a cell's analysis date is assignment + this
    # Breakdowns the statement returns besides the overall cells: one dimension or two each,
    # and each dimension's output column (NULL in the cells of the other breakdowns).
    slices: tuple[tuple[str, ...], ...] = ()
    slice_columns: dict[str, str] = field(default_factory=dict)
    # Quantile metrics have histograms instead of moments (rows marked by PART_COLUMN).
    quantiles: dict[str, QuantileLayout] = field(default_factory=dict)

    @staticmethod
    def shift_name(column: str) -> str:
        return SHIFT_PREFIX + column

    @staticmethod
    def sum_name(column: str) -> str:
        return SUM_PREFIX + column

    @staticmethod
    def product_name(a: str, b: str) -> str:
        return f"{PRODUCT_PREFIX}{a}__x__{b}"


# --------------------------------------------------------------------------------------
# Quantile bins: the key the SQL computes for a value and the stats read back
# (xpkit.stats.quantile_bins explains the bins and their error bound).
OFFSET = 2**30
DEFAULT_EPS = 1e-3
MIN_EPS, MAX_EPS = 1e-6, 0.1


def check_eps(eps: float) -> float:
    eps = float(eps)
    if not MIN_EPS <= eps <= MAX_EPS:
        raise ValueError(f"eps must be within [{MIN_EPS}, {MAX_EPS}], got {eps}")
    return eps


def gamma_of(eps: float) -> float:
    """The bins' growth factor ``(1 + eps) / (1 - eps)``."""
    eps = check_eps(eps)
    return (1.0 + eps) / (1.0 - eps)


def bin_key_sql(column: str, eps: float = DEFAULT_EPS) -> str:
    """The bin key as a DuckDB (and Spark) SQL expression of ``column`` (already quoted).

    ``ln(gamma)`` is spliced as the shortest decimal that round-trips the double Python
    uses, cast to DOUBLE (a bare decimal literal would be a DECIMAL in DuckDB).
    """
    log_gamma = f"CAST('{math.log(gamma_of(eps))!r}' AS DOUBLE)"
    index = f"CAST(CEIL(LN(ABS({column})) / {log_gamma}) AS BIGINT) + {OFFSET}"
    return f"CASE WHEN {column} > 0 THEN {index} WHEN {column} < 0 THEN -({index}) ELSE 0 END"
