"""Score (Miettinen–Nurminen) test and intervals for two independent proportions, from counts.

The normal Wald interval for ``p_t - p_c`` and the delta-method interval for the relative
lift under-cover when a group has few events (or few non-events). The score method
instead inverts the test whose variance is evaluated at the maximum-likelihood
proportions *restricted* to the null value under test, so it stays usable at low counts
(zero events included) and, because all three pieces invert the same statistic, the
p-value, the interval for the difference and the interval for the ratio always agree
about "no difference". ``bench/proportion_coverage.py`` compares it with the alternatives.

References: Miettinen & Nurminen (1985), "Comparative analysis of two rates", *Statistics
in Medicine* 4; Farrington & Manning (1990), *Statistics in Medicine* 9 (closed form of
the restricted estimate for the difference); Fagerland, Lydersen & Laake (2015),
"Recommended confidence intervals for two independent binomial proportions", *Statistical
Methods in Medical Research* 24.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from scipy import special

from xpkit.stats.lift import NAN, check_alpha, normal_quantile
from xpkit.stats.roots import RTOL_MIN, brentq

# Root-finding tolerance on the difference scale and on the log-ratio scale: far below
# anything a scorecard shows, and below the 1e-9 relative agreement the tests ask for.
_XTOL = 1e-15
_RTOL = RTOL_MIN  # the smallest relative tolerance brentq accepts


@dataclass(frozen=True)
class ScoreResult:
    """Score test of ``p_t = p_c`` and score intervals, for ``p_t - p_c`` and ``p_t / p_c``.

    ``se0`` is the standard error of ``p_t - p_c`` under the null (pooled proportion, with
    the N / (N - 1) correction), so ``z = diff / se0``. ``ratio_low``/``ratio_high`` are
    ``inf``-free: the upper limit is NaN when the control has no events (unbounded ratio).
    """

    diff: float
    se0: float
    z: float
    p_value: float
    diff_low: float
    diff_high: float
    ratio: float
    ratio_low: float
    ratio_high: float


def _restricted_diff(x_c: int, n_c: int, x_t: int, n_t: int, delta: float) -> tuple[float, float]:
    """Maximum-likelihood ``(p_c, p_t)`` subject to ``p_t - p_c = delta``.

    The likelihood equation is a cubic in ``p_t``; Farrington & Manning (1990) give its
    relevant root in closed (trigonometric) form. With ``theta = n_c / n_t`` and the
    observed proportions ``a_t``, ``a_c``:

        A = 1 + theta,  B = -(1 + theta + a_t + theta a_c + delta (theta + 2)),
        C = delta^2 + delta (2 a_t + theta + 1) + a_t + theta a_c,  D = -a_t delta (1 + delta),
        v = B^3 / (3A)^3 - B C / (6 A^2) + D / (2A),  u = sign(v) sqrt(B^2 / (3A)^2 - C / (3A)),
        p_t = 2 u cos((pi + arccos(v / u^3)) / 3) - B / (3A),  p_c = p_t - delta.
    """
    a_t, a_c = x_t / n_t, x_c / n_c
    theta = n_c / n_t
    big_a = 1.0 + theta
    big_b = -(1.0 + theta + a_t + theta * a_c + delta * (theta + 2.0))
    big_c = delta * delta + delta * (2.0 * a_t + theta + 1.0) + a_t + theta * a_c
    big_d = -a_t * delta * (1.0 + delta)
    v = big_b**3 / (3.0 * big_a) ** 3 - big_b * big_c / (6.0 * big_a**2) + big_d / (2.0 * big_a)
    u2 = big_b**2 / (3.0 * big_a) ** 2 - big_c / (3.0 * big_a)
    u = math.copysign(math.sqrt(max(u2, 0.0)), v)
    if u == 0.0:
        p_t = -big_b / (3.0 * big_a)
    else:
        cosine = min(1.0, max(-1.0, v / u**3))
        p_t = 2.0 * u * math.cos((math.pi + math.acos(cosine)) / 3.0) - big_b / (3.0 * big_a)
    p_t = min(1.0, max(0.0, p_t))
    p_c = min(1.0, max(0.0, p_t - delta))
    return p_c, p_t


def _restricted_ratio(x_c: int, n_c: int, x_t: int, n_t: int, ratio: float) -> tuple[float, float]:
    """Maximum-likelihood ``(p_c, p_t)`` subject to ``p_t = ratio * p_c``.

    Setting the derivative of the log-likelihood in ``p_c`` to zero gives the quadratic
    ``ratio N p_c^2 - (ratio (n_t + x_c) + x_t + n_c) p_c + (x_t + x_c) = 0``
    (``N = n_c + n_t``), whose smaller root is the estimate (Miettinen & Nurminen 1985).
    """
    big_a = ratio * (n_c + n_t)
    big_b = -(ratio * (n_t + x_c) + x_t + n_c)
    big_c = float(x_t + x_c)
    disc = max(big_b * big_b - 4.0 * big_a * big_c, 0.0)
    # The smaller root, in the cancellation-free form 2C / (-B + sqrt(disc)).
    p_c = 2.0 * big_c / (-big_b + math.sqrt(disc))
    p_c = min(1.0, max(0.0, p_c))
    return p_c, min(1.0, ratio * p_c)


def score_test(x_c: int, n_c: int, x_t: int, n_t: int, alpha: float = 0.05) -> ScoreResult:
    """Miettinen–Nurminen score test and intervals for two independent proportions.

    With ``N = n_c + n_t``, observed ``a_g = x_g / n_g`` and the restricted estimates
    ``(pc~, pt~)`` under the null value (see :func:`_restricted_diff` and
    :func:`_restricted_ratio`):

    * difference ``delta = p_t - p_c``:
      ``z(delta) = (a_t - a_c - delta) / sqrt([pt~(1 - pt~)/n_t + pc~(1 - pc~)/n_c] N/(N-1))``;
    * ratio ``phi = p_t / p_c``:
      ``z(phi) = (a_t - phi a_c) / sqrt([pt~(1 - pt~)/n_t + phi^2 pc~(1 - pc~)/n_c] N/(N-1))``.

    The ``1 - alpha`` interval is the set of null values with ``|z| <= z_{1-alpha/2}``
    (found by Brent's method; ``z`` is monotone in the null value). At ``delta = 0`` and
    ``phi = 1`` both statistics are the pooled test ``(a_t - a_c) / se0`` with
    ``se0^2 = p (1 - p) (1/n_c + 1/n_t) N / (N - 1)``, ``p = (x_c + x_t) / N``: the two-sided
    normal p-value of that ``z`` is below ``alpha`` exactly when the difference interval
    excludes 0 and the ratio interval excludes 1. This is what
    ``statsmodels.stats.proportion`` calls ``method="score"`` with ``correction=True``.

    Zero counts are allowed: ``x_t = 0`` gives a ratio interval from 0, and ``x_c = 0`` an
    unbounded ratio (upper limit NaN). Degenerate input — an empty group, or both groups
    with no events or both with no non-events — gives NaN throughout.
    """
    alpha = check_alpha(alpha)
    for name, x, n in (("control", x_c, n_c), ("treatment", x_t, n_t)):
        if n < 0 or not 0 <= x <= max(n, 0):
            raise ValueError(f"{name} count {x} out of range for {n} units")
    a_c = x_c / n_c if n_c else NAN
    a_t = x_t / n_t if n_t else NAN
    diff = a_t - a_c
    ratio = a_t / a_c if n_c and x_c else NAN
    total = n_c + n_t
    pooled = (x_c + x_t) / total if total else NAN
    if n_c == 0 or n_t == 0 or pooled in (0.0, 1.0):
        return ScoreResult(diff, NAN, NAN, NAN, NAN, NAN, ratio, NAN, NAN)
    correction = total / (total - 1.0)
    se0 = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_c + 1.0 / n_t) * correction)
    z = diff / se0
    p_value = float(2.0 * special.ndtr(-abs(z)))
    crit = normal_quantile(alpha)

    def diff_gap(delta: float, side: float) -> float:
        """``side * (diff - delta) - crit * se(delta)``: positive outside the interval."""
        p_c, p_t = _restricted_diff(x_c, n_c, x_t, n_t, delta)
        var = (p_t * (1.0 - p_t) / n_t + p_c * (1.0 - p_c) / n_c) * correction
        return side * (diff - delta) - crit * math.sqrt(max(var, 0.0))

    # At delta = -1 (or +1) the restricted proportions are (1, 0) (or (0, 1)) with no
    # variance, so the gap is diff + 1 (or 1 - diff) >= 0: the roots are bracketed.
    diff_low = -1.0 if diff <= -1.0 else _root(lambda d: diff_gap(d, 1.0), -1.0, diff)
    diff_high = 1.0 if diff >= 1.0 else _root(lambda d: diff_gap(d, -1.0), diff, 1.0)

    def ratio_gap(log_phi: float, side: float) -> float:
        phi = math.exp(log_phi)
        p_c, p_t = _restricted_ratio(x_c, n_c, x_t, n_t, phi)
        var = (p_t * (1.0 - p_t) / n_t + phi * phi * p_c * (1.0 - p_c) / n_c) * correction
        return side * (a_t - phi * a_c) - crit * math.sqrt(max(var, 0.0))

    if x_c == 0:  # unbounded ratio: no relative interval
        ratio_low = ratio_high = NAN
    else:
        # x_t = 0 has ratio 0 and lower limit 0; start the upper search as if x_t were 1.
        centre = math.log(ratio) if x_t else math.log(1.0 / (n_t * a_c))
        ratio_low = (
            0.0 if x_t == 0 else math.exp(_root_outward(lambda s: ratio_gap(s, 1.0), centre, -1.0))
        )
        ratio_high = math.exp(_root_outward(lambda s: ratio_gap(s, -1.0), centre, 1.0))
    return ScoreResult(
        diff=diff,
        se0=se0,
        z=z,
        p_value=p_value,
        diff_low=diff_low,
        diff_high=diff_high,
        ratio=ratio,
        ratio_low=ratio_low,
        ratio_high=ratio_high,
    )


def _root(f: Callable[[float], float], low: float, high: float) -> float:
    """Brent's root of ``f`` on ``[low, high]`` (``f(low) > 0 >= f(high)`` or the reverse);
    an end where ``f`` is already ``<= 0`` on both sides is returned as is."""
    f_low, f_high = f(low), f(high)
    if f_low <= 0.0 and f_high <= 0.0:
        return low if abs(f_low) <= abs(f_high) else high
    if f_low * f_high > 0.0:
        return NAN
    return brentq(f, low, high, xtol=_XTOL, rtol=_RTOL)


def _root_outward(f: Callable[[float], float], start: float, direction: float) -> float:
    """Root of ``f`` on the log-ratio scale: ``f < 0`` inside the interval, ``> 0`` beyond
    the limit in ``direction``. Steps back from ``start`` until inside, then doubles the
    step outward until the sign changes, then runs Brent's method on the bracket."""
    inside, step = start, 0.5
    for _ in range(60):
        if f(inside) <= 0.0:
            break
        inside -= direction * step
        step *= 2.0
    else:
        return NAN
    step = 0.5
    for _ in range(60):
        outside = inside + direction * step
        if f(outside) > 0.0:
            break
        step *= 2.0
    else:
        return NAN
    low, high = (inside, outside) if direction > 0 else (outside, inside)
    return brentq(f, low, high, xtol=1e-13, rtol=_RTOL)
