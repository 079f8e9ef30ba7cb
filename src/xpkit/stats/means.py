"""Differences in means: Welch's t-test and the two-proportion z-test."""

from __future__ import annotations

from xpkit.moments import Moments
from xpkit.stats.effect import Effect
from xpkit.stats.lift import (
    NAN,
    build_effect,
    check_alpha,
    relative_lift,
    safe_div,
    safe_sqrt,
    welch_df,
)


def group_mean(moments: Moments, column: str) -> float:
    """Mean of ``column``; NaN for an empty group (whose stored mean is a placeholder 0)."""
    value = moments.mean_of(column)
    return value if moments.n > 0 else NAN


def welch_test(
    control: Moments, treatment: Moments, column: str = "value", alpha: float = 0.05
) -> Effect:
    """Welch's unequal-variance t-test of ``mean_t - mean_c`` (method ``"welch"``).

    With sample variances ``s_g^2`` (ddof 1) and ``a = s_c^2 / n_c``, ``b = s_t^2 / n_t``:

        se = sqrt(a + b),   t = (mean_t - mean_c) / se,
        df = (a + b)^2 / (a^2 / (n_c - 1) + b^2 / (n_t - 1))   (Welch–Satterthwaite)

    and the interval is ``diff -/+ t_{df, 1-alpha/2} * se``. Reference: Welch (1947),
    "The generalization of 'Student's' problem when several different population variances
    are involved", *Biometrika* 34. ``extra`` holds ``df`` and ``t``.

    Degenerate input: a group with fewer than two units has no variance, and two groups with
    zero variance have ``se = 0``; both give NaN ``se``/``df``/interval/p-value (the point
    difference is still reported when both groups have units).
    """
    alpha = check_alpha(alpha)
    mean_c, mean_t = group_mean(control, column), group_mean(treatment, column)
    var_mean_c = safe_div(control.var_of(column), control.n)
    var_mean_t = safe_div(treatment.var_of(column), treatment.n)
    se = safe_sqrt(var_mean_c + var_mean_t)
    df = welch_df(var_mean_c, var_mean_t, control.n, treatment.n)
    diff = mean_t - mean_c
    return build_effect(
        method="welch",
        n_control=control.n,
        n_treatment=treatment.n,
        mean_control=mean_c,
        mean_treatment=mean_t,
        estimate=diff,
        se=se,
        alpha=alpha,
        df=df,
        relative=relative_lift(mean_c, mean_t, var_mean_c, var_mean_t, 0.0, alpha),
        extra={"t": safe_div(diff, se)},
    )


def _check_binary(moments: Moments, column: str) -> None:
    """Reject a column that cannot be per-unit 0/1: its mean must lie in [0, 1] and its
    centred sum of squares must equal ``n p (1 - p)``, which holds only for 0/1 values."""
    if moments.n == 0:
        return
    p = moments.mean_of(column)
    ss = moments.comoment[moments.index(column), moments.index(column)]
    expected = moments.n * p * (1.0 - p)
    tolerance = 1e-6 * max(expected, 1.0)
    if not (-1e-12 <= p <= 1.0 + 1e-12) or abs(ss - expected) > tolerance:
        raise ValueError(
            f"column {column!r} is not a per-unit 0/1 indicator (mean {p:.6g}, sum of "
            f"squared deviations {ss:.6g}, a 0/1 column would give {expected:.6g}); "
            "use a mean metric or make the expression return 0 or 1 per unit"
        )


def proportion_test(
    control: Moments, treatment: Moments, column: str = "value", alpha: float = 0.05
) -> Effect:
    """Two-proportion z-test of ``p_t - p_c`` (method ``"two_proportion_z"``).

    ``column`` holds a 0/1 indicator per unit, so its mean is the proportion. Both the
    p-value and the interval use the unpooled Wald standard error

        se = sqrt(p_c (1 - p_c) / n_c + p_t (1 - p_t) / n_t),   z = (p_t - p_c) / se,

    interval ``diff -/+ z_{1-alpha/2} * se``. The textbook test pools the proportions under
    H0 for the p-value; doing so can put 0 outside the interval while the p-value says "not
    significant" (or the reverse). A scorecard must never show both, so one standard error
    serves both. Reference: Agresti (2013), *Categorical Data Analysis*, 3rd ed., sec. 3.1.
    ``extra`` holds ``z``.

    Degenerate input: an empty group, or both proportions at 0 or at 1, gives NaN
    ``se``/interval/p-value. A column whose moments cannot come from 0/1 values raises
    ``ValueError`` naming the column (a bad metric definition, not a statistical edge case).
    """
    alpha = check_alpha(alpha)
    _check_binary(control, column)
    _check_binary(treatment, column)
    p_c, p_t = group_mean(control, column), group_mean(treatment, column)
    var_mean_c = safe_div(p_c * (1.0 - p_c), control.n)
    var_mean_t = safe_div(p_t * (1.0 - p_t), treatment.n)
    se = safe_sqrt(var_mean_c + var_mean_t)
    diff = p_t - p_c
    return build_effect(
        method="two_proportion_z",
        n_control=control.n,
        n_treatment=treatment.n,
        mean_control=p_c,
        mean_treatment=p_t,
        estimate=diff,
        se=se,
        alpha=alpha,
        relative=relative_lift(p_c, p_t, var_mean_c, var_mean_t, 0.0, alpha),
        extra={"z": safe_div(diff, se)},
    )
