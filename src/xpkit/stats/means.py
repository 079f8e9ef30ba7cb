"""Differences in means: Welch's t-test and the two-proportion z- or score test."""

from __future__ import annotations

import math

from xpkit.moments import Moments
from xpkit.stats.effect import Effect
from xpkit.stats.lift import (
    NAN,
    RelativeLift,
    build_effect,
    check_alpha,
    normal_quantile,
    relative_lift,
    safe_div,
    safe_sqrt,
    welch_df,
)
from xpkit.stats.proportions import score_test

# Below this many events (or non-events) in either group the normal Wald interval, and
# above all the delta-method relative interval, under-cover; bench/proportion_coverage.py
# shows the delta-method relative interval at 93.5-94.0% with 20 expected control events,
# 94.4-94.7% with 40 and 94.6-94.8% with 50, while the score intervals stay within
# [94.8%, 96.2%] from 5 expected events up (exact binomial enumeration).
SMALL_COUNT = 50


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


def _count(moments: Moments, column: str) -> int:
    """Number of units with value 1 (the checked 0/1 column's sum, rounded)."""
    return round(moments.n * moments.mean_of(column)) if moments.n else 0


def proportion_test(
    control: Moments, treatment: Moments, column: str = "value", alpha: float = 0.05
) -> Effect:
    """Difference of two proportions ``p_t - p_c``: the z-test (method
    ``"two_proportion_z"``) or, with few events, the score test (``"two_proportion_score"``).

    ``column`` holds a 0/1 indicator per unit, so its mean is the proportion and
    ``x_g = n_g p_g`` the number of events.

    Rule: with ``m = min(n_c, n_t) * min(p, 1 - p)``, the smallest expected number of
    events or non-events in a group under H0 (``p`` the pooled proportion), the score
    method is used when ``m < SMALL_COUNT`` (50) and the z-test otherwise. The rule uses
    pooled counts on purpose: switching on each group's own count selects the Wald
    interval exactly when the control count is high, and that selection alone cut the
    relative interval's coverage to 93% at 50 expected events in the simulation. The z-test's normal approximation
    (and still more the delta method for the relative lift) under-covers with few events:
    at a 0.2% rate with 1000 units per arm the relative interval covered 51-65% and was
    suppressed in 86-88% of draws, see ``bench/proportion_coverage.py``. Above the threshold
    both methods cover alike and the z-test is kept, so ordinary metrics are unchanged.

    z-test: both the p-value and the interval use the unpooled Wald standard error

        se = sqrt(p_c (1 - p_c) / n_c + p_t (1 - p_t) / n_t),   z = (p_t - p_c) / se,

    interval ``diff -/+ z_{1-alpha/2} * se``, and the relative lift is the delta method of
    :func:`xpkit.stats.lift.relative_lift`. The textbook test pools the proportions under
    H0 for the p-value; doing so can put 0 outside the interval while the p-value says "not
    significant" (or the reverse). A scorecard must never show both, so one standard error
    serves both. Reference: Agresti (2013), *Categorical Data Analysis*, 3rd ed., sec. 3.1.

    Score method (Miettinen & Nurminen 1985, :func:`xpkit.stats.proportions.score_test`):
    the p-value is the pooled score test with the ``N / (N - 1)`` correction, the interval
    for the difference and the interval for the ratio ``p_t / p_c`` invert the same
    statistic, so again "0 outside the interval" and "p < alpha" always agree (and so
    does "1 outside the ratio interval"). ``abs_se`` is the pooled standard error under H0
    (``abs_effect / abs_se`` is the score z); the intervals are not symmetric about the
    estimate. The relative lift is ``p_t / p_c - 1`` with the ratio interval minus 1;
    ``rel_se`` is that interval's half-width over ``z_{1-alpha/2}``. The relative lift is
    ``None`` only when ``x_c = 0``.

    ``extra`` holds ``z`` and ``min_count`` (``m``).

    Degenerate input: an empty group, or both proportions at 0 or at 1, gives NaN
    ``se``/interval/p-value. A column whose moments cannot come from 0/1 values raises
    ``ValueError`` naming the column (a bad metric definition, not a statistical edge case).
    """
    alpha = check_alpha(alpha)
    _check_binary(control, column)
    _check_binary(treatment, column)
    n_c, n_t = control.n, treatment.n
    x_c, x_t = _count(control, column), _count(treatment, column)
    min_count = _min_expected_count(x_c, n_c, x_t, n_t)
    if n_c > 0 and n_t > 0 and min_count < SMALL_COUNT:
        return _score_effect(x_c, n_c, x_t, n_t, alpha, min_count)
    p_c, p_t = group_mean(control, column), group_mean(treatment, column)
    var_mean_c = safe_div(p_c * (1.0 - p_c), n_c)
    var_mean_t = safe_div(p_t * (1.0 - p_t), n_t)
    se = safe_sqrt(var_mean_c + var_mean_t)
    diff = p_t - p_c
    return build_effect(
        method="two_proportion_z",
        n_control=n_c,
        n_treatment=n_t,
        mean_control=p_c,
        mean_treatment=p_t,
        estimate=diff,
        se=se,
        alpha=alpha,
        relative=relative_lift(p_c, p_t, var_mean_c, var_mean_t, 0.0, alpha),
        extra={"z": safe_div(diff, se), "min_count": float(min_count)},
    )


def _min_expected_count(x_c: int, n_c: int, x_t: int, n_t: int) -> float:
    """Smallest expected number of events or non-events in a group under H0,
    ``min_g n_g * min(p, 1 - p)`` with ``p`` the pooled proportion (0 for an empty group)."""
    total = n_c + n_t
    if n_c == 0 or n_t == 0:
        return 0.0
    pooled = (x_c + x_t) / total
    return min(n_c, n_t) * min(pooled, 1.0 - pooled)


def _score_effect(x_c: int, n_c: int, x_t: int, n_t: int, alpha: float, min_count: float) -> Effect:
    """The Effect of :func:`proportion_test`'s score path (see there)."""
    res = score_test(x_c, n_c, x_t, n_t, alpha)
    relative = None
    if math.isfinite(res.ratio):
        low, high = res.ratio_low - 1.0, res.ratio_high - 1.0
        intervals_ok = math.isfinite(low) and math.isfinite(high)
        relative = RelativeLift(
            lift=res.ratio - 1.0,
            se=(high - low) / (2.0 * normal_quantile(alpha)) if intervals_ok else NAN,
            ci_low=low if intervals_ok else NAN,
            ci_high=high if intervals_ok else NAN,
        )
    return Effect(
        method="two_proportion_score",
        n_control=n_c,
        n_treatment=n_t,
        mean_control=x_c / n_c,
        mean_treatment=x_t / n_t,
        abs_effect=res.diff,
        abs_se=res.se0,
        abs_ci_low=res.diff_low,
        abs_ci_high=res.diff_high,
        rel_lift=None if relative is None else relative.lift,
        rel_se=None if relative is None else relative.se,
        rel_ci_low=None if relative is None else relative.ci_low,
        rel_ci_high=None if relative is None else relative.ci_high,
        p_value=res.p_value,
        alpha=alpha,
        extra={"z": res.z, "min_count": float(min_count)},
    )
