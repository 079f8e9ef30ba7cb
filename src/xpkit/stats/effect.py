"""The result type every treatment-versus-control estimator returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Effect:
    """One treatment-versus-control comparison of one metric.

    ``abs_*`` is the difference treatment - control; ``rel_*`` is that difference divided by
    ``|control mean|`` (so the sign never flips on a negative baseline). ``rel_lift`` and its
    interval are ``None`` when the control mean is too close to zero for a ratio to mean
    anything. ``p_value`` is two-sided unless ``method`` says otherwise.
    """

    method: str
    n_control: int
    n_treatment: int
    mean_control: float
    mean_treatment: float
    abs_effect: float
    abs_se: float
    abs_ci_low: float
    abs_ci_high: float
    rel_lift: float | None
    rel_se: float | None
    rel_ci_low: float | None
    rel_ci_high: float | None
    p_value: float
    alpha: float
    df: float | None = None  # degrees of freedom of a t-based interval; None: normal
    extra: dict[str, float] = field(default_factory=dict)
