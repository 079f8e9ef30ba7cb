"""A bracketed root finder: Brent's method in pure Python.

The group-sequential bounds, the score intervals of two proportions, the power solver and
the REML polish of the slice shrinkage each need the root of a smooth function of one
variable inside a known bracket. ``scipy.optimize.brentq`` does that, but importing
``scipy.optimize`` loads ``scipy.linalg``, ``scipy.sparse`` and ``scipy.spatial`` with it,
a quarter of a second of every ``xpkit run`` for a loop of a few dozen steps. The loop's own
cost (microseconds a step) is nothing next to the functions it evaluates, so it is written
here, with the contract of ``brentq``.

Contract. ``brentq(f, a, b)`` needs ``f(a)`` and ``f(b)`` of opposite signs (or one of them
exactly zero, and that end is returned). It returns an ``x`` with ``f(x) == 0`` or with a
sign change of ``f`` within ``xtol + rtol * |x|`` of it, so for a continuous ``f`` the root
``x0`` it converges to satisfies ``|x - x0| <= xtol + rtol * |x|``. A function that jumps
across zero (a discontinuity) gives the point of the jump to the same tolerance. It raises
:class:`ValueError` when the ends do not bracket a root, when ``f`` returns NaN, when the
tolerances are unusable or when ``maxiter`` evaluations were not enough.

Algorithm (R. P. Brent, *Algorithms for Minimization without Derivatives*, 1973, ch. 4;
the ``zeroin`` of Forsythe, Malcolm & Moler, *Computer Methods for Mathematical
Computations*, 1977, sec. 7.2). Three points are kept:

- ``best``: the end of the current bracket where ``|f|`` is smallest, the estimate;
- ``contra``: the other end, where ``f`` has the opposite sign, so a root lies between;
- ``prev``: the value ``best`` had before the last step (the third interpolation point).

Each step proposes a move from ``best``: where the secant through ``prev`` and ``best``
crosses zero when ``prev`` is ``contra``, otherwise inverse quadratic interpolation (``x``
as a quadratic in ``f`` through the three points, evaluated at ``f = 0``). The move is kept
only if it stays within the three quarters of the bracket next to ``best`` and is shorter
than half the move before last; otherwise, or when the last move did not make ``|f|``
smaller, the step is a bisection. The halving rule bounds the work by about the square of
the bisection count even where interpolation is poor (Brent's guarantee), while near a
simple root the interpolation converges superlinearly. No move is shorter than the
tolerance, so the last bracket, at most twice the tolerance wide, has two distinct ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable

EPS = 2.220446049250313e-16  # float64 machine epsilon
RTOL_MIN = 4 * EPS  # a smaller relative tolerance cannot move the estimate by a whole ulp
XTOL_DEFAULT = 2e-12
MAXITER_DEFAULT = 100


def brentq(
    f: Callable[[float], float],
    a: float,
    b: float,
    *,
    xtol: float = XTOL_DEFAULT,
    rtol: float = RTOL_MIN,
    maxiter: int = MAXITER_DEFAULT,
) -> float:
    """The root of ``f`` between ``a`` and ``b`` by Brent's method (see the module docstring).

    ``f(a)`` and ``f(b)`` must have opposite signs, or one of them be zero (that end is
    the answer). The result ``x`` is within ``xtol + rtol * |x|`` of a root (or of a sign
    change) of ``f``. ``xtol`` must be positive, ``rtol`` at least ``4 * eps``, and at most
    ``maxiter`` evaluations of ``f`` are made after the two ends. Raises ValueError when
    the ends do not bracket a root, when ``f`` returns NaN, or without convergence.
    """
    if not xtol > 0:
        raise ValueError(f"xtol must be positive, got {xtol!r}")
    if not rtol >= RTOL_MIN:
        raise ValueError(f"rtol must be at least 4 * eps = {RTOL_MIN:.6g}, got {rtol!r}")
    if maxiter < 0:
        raise ValueError(f"maxiter must be >= 0, got {maxiter!r}")
    a, b = float(a), float(b)
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"the bracket ends must be finite numbers, got [{a!r}, {b!r}]")
    fa, fb = _value(f, a), _value(f, b)
    if fa == 0.0:
        return a
    if fb == 0.0:
        return b
    if (fa > 0.0) == (fb > 0.0):
        raise ValueError(
            f"f(a) and f(b) must have opposite signs to bracket a root: "
            f"f({a!r}) = {fa!r}, f({b!r}) = {fb!r}"
        )

    prev, f_prev = a, fa
    best, f_best = b, fb
    contra, f_contra = a, fa
    step = step_before = best - prev
    evaluations = 0
    while True:
        if (f_best > 0.0) == (f_contra > 0.0):
            # The last step crossed the root: the point before it is the other end now.
            contra, f_contra = prev, f_prev
            step = step_before = best - prev
        if abs(f_contra) < abs(f_best):
            # Keep the smaller |f| as the estimate; the old estimate becomes both the
            # contrapoint and the previous point (the next interpolation is a secant).
            prev, best, contra = best, contra, best
            f_prev, f_best, f_contra = f_best, f_contra, f_best

        tol = 0.5 * (xtol + rtol * abs(best))
        half = 0.5 * (contra - best)  # from the estimate to the bracket's middle
        if f_best == 0.0 or abs(half) <= tol:
            return best
        if evaluations == maxiter:
            low, high = sorted((best, contra))
            raise ValueError(
                f"brentq did not converge in {maxiter} iterations: the root lies in "
                f"[{low!r}, {high!r}], wider than xtol + rtol * |x| = {2 * tol:.3g}"
            )

        move, interpolated = half, False  # bisect unless interpolation is possible and safe
        if (
            abs(step_before) >= tol
            and abs(f_prev) > abs(f_best)
            and math.isfinite(f_prev)
            and math.isfinite(f_contra)
        ):
            proposed = _interpolate(prev, f_prev, best, f_best, contra, f_contra)
            # Inside the three quarters of the bracket next to the estimate (on the
            # contrapoint's side) and under half the move before last: accept it.
            if proposed is not None and (
                0.0 < proposed / half < 1.5 - tol / abs(half)
                and abs(proposed) < 0.5 * abs(step_before)
            ):
                move, interpolated = proposed, True
        if interpolated:
            step_before, step = step, move
        else:
            step = step_before = half

        prev, f_prev = best, f_best
        best += move if abs(move) > tol else math.copysign(tol, half)
        f_best = _value(f, best)
        evaluations += 1


def _interpolate(
    prev: float, f_prev: float, best: float, f_best: float, contra: float, f_contra: float
) -> float | None:
    """The move from ``best`` to where the interpolant of ``x`` as a function of ``f``
    crosses ``f = 0``: linear (the secant) through ``prev`` and ``best`` when ``prev`` is
    the contrapoint, quadratic through all three points otherwise. None when two of the
    points share a function value, so no such interpolant exists.

    The quadratic is Lagrange's form ``x(0) = sum_i x_i prod_{j != i} f_j / (f_j - f_i)``
    less ``best``; as the weights add up to one, that is the sum over the two other points
    of ``(x_i - best)`` times their weight. Written with the differences from ``best`` and
    ratios of function values, the move neither cancels (a root next to a large ``best``)
    nor overflows (large function values).
    """
    if prev == contra:
        if f_prev == f_best:
            return None
        return (prev - best) * (f_best / (f_best - f_prev))
    if f_prev in (f_best, f_contra) or f_best == f_contra:
        return None
    weight_prev = (f_best / (f_best - f_prev)) * (f_contra / (f_contra - f_prev))
    weight_contra = (f_prev / (f_prev - f_contra)) * (f_best / (f_best - f_contra))
    move = (prev - best) * weight_prev + (contra - best) * weight_contra
    return move if math.isfinite(move) else None


def _value(f: Callable[[float], float], x: float) -> float:
    value = float(f(x))
    if math.isnan(value):
        raise ValueError(f"f({x!r}) is NaN: no root can be bracketed through it")
    return value
