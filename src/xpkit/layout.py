"""The contract between the SQL and the statistics: which output column holds which sums.

The compiler writes a statement and, beside it, a :class:`MomentsLayout`; the readout
reads the statement's result through that layout, and the statistics find each metric's
per-unit columns (value, denominator, covariates by role, exposure) in its
:class:`MetricLayout`. Neither side knows how the other works: this module is all they
share, so it imports nothing of xpkit.
"""

from __future__ import annotations

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

    @staticmethod
    def shift_name(column: str) -> str:
        return SHIFT_PREFIX + column

    @staticmethod
    def sum_name(column: str) -> str:
        return SUM_PREFIX + column

    @staticmethod
    def product_name(a: str, b: str) -> str:
        return f"{PRODUCT_PREFIX}{a}__x__{b}"
