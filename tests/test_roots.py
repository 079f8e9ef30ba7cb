"""The pure-Python Brent root finder: the same roots as scipy.optimize.brentq, within the
tolerances of the contract, and clear errors where no root can be found."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pytest
from scipy import optimize

from xpkit.stats.roots import RTOL_MIN, brentq

EPS = float(np.finfo(float).eps)

# name: (f, a, b, the root, or the point where f changes sign)
CASES: dict[str, tuple[Callable[[float], float], float, float, float]] = {
    "cubic": (lambda x: x**3 - 2 * x - 5, 2.0, 3.0, 2.0945514815423265),
    "quadratic, decreasing": (lambda x: 2 - x**2, 0.0, 5.0, math.sqrt(2)),
    "quadratic, bracket given high to low": (lambda x: x**2 - 2, 5.0, 0.0, math.sqrt(2)),
    "degree 20": (lambda x: x**20 - 1, 0.0, 1.5, 1.0),
    "degree 9, flat near zero": (lambda x: x**9 - 1e-9, 0.0, 4.0, 0.1),
    "exp": (lambda x: math.exp(x) - 10, 0.0, 5.0, math.log(10)),
    "exp, steep": (lambda x: math.exp(30 * x) - 1e5, -1.0, 1.0, math.log(1e5) / 30),
    "expm1 at a tiny root": (lambda x: math.expm1(x) - 1e-10, -1.0, 1.0, math.log1p(1e-10)),
    "tanh, steep step": (lambda x: math.tanh(50 * (x - 0.3)), -1.0, 2.0, 0.3),
    "atan, wide bracket": (lambda x: math.atan(x - 7), -100.0, 1000.0, 7.0),
    "atan, plateau": (lambda x: math.atan(x) - 1.5, 0.0, 1e4, math.tan(1.5)),
    "values near underflow": (lambda x: 1e-200 * (x - 0.5), 0.0, 3.0, 0.5),
    "log, -inf at the end": (
        lambda x: -math.inf if x == 0 else math.log(x),
        0.0,
        5.0,
        1.0,
    ),
    "cusp, infinite slope": (
        lambda x: math.copysign(abs(x - 0.2) ** 0.1, x - 0.2),
        -1.0,
        1.0,
        0.2,
    ),
    "large root": (lambda x: x - 1e6 - 1e-7, 0.0, 2e6, 1e6 + 1e-7),
    "step at a discontinuity": (lambda x: 1.0 if x >= 0.3 else -1.0, 0.0, 1.0, 0.3),
    "jump across zero": (lambda x: x + 2 if x > 1 / 3 else x - 2, 0.0, 1.0, 1 / 3),
}

TOLERANCES = {
    "brentq's defaults": (2e-12, 4 * EPS),
    "the tightest": (1e-15, 4 * EPS),
    "loose": (1e-6, 1e-6),
}


def counted(f: Callable[[float], float]) -> tuple[Callable[[float], float], list[float]]:
    points: list[float] = []

    def g(x: float) -> float:
        points.append(x)
        return f(x)

    return g, points


@pytest.mark.parametrize("tolerance", TOLERANCES.values(), ids=list(TOLERANCES))
@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_agrees_with_scipy_within_the_tolerance(
    case: tuple[Callable[[float], float], float, float, float], tolerance: tuple[float, float]
) -> None:
    f, a, b, root = case
    xtol, rtol = tolerance
    ours, our_points = counted(f)
    theirs, their_points = counted(f)
    x = brentq(ours, a, b, xtol=xtol, rtol=rtol)
    expected = optimize.brentq(theirs, a, b, xtol=xtol, rtol=rtol)
    assert type(x) is float
    # The contract: within xtol + rtol |x| of the root (a few ulps of slack where the
    # root itself, written in floating point above, is rounded).
    assert abs(x - root) <= xtol + rtol * abs(x) + 4 * EPS * abs(root), (x, root)
    # Both are within that of the root, so within twice that of each other.
    assert abs(x - expected) <= 2 * (xtol + rtol * max(abs(x), abs(expected)))
    # And about as quickly: the same method, so the same number of evaluations give or take.
    assert len(our_points) <= len(their_points) + 2, (len(our_points), len(their_points))
    assert all(min(a, b) <= p <= max(a, b) for p in our_points)


def test_a_sign_change_at_a_discontinuity_is_bracketed_to_the_tolerance() -> None:
    f, a, b, jump = CASES["jump across zero"][:4]
    x = brentq(f, a, b, xtol=1e-10, rtol=RTOL_MIN)
    width = 1e-10 + RTOL_MIN * abs(x)
    assert abs(x - jump) <= width
    # There is no zero: the answer is within ``width`` of the jump, so f changes sign
    # within ``width`` of it on one side.
    assert f(x - width) * f(x) < 0 or f(x) * f(x + width) < 0


@pytest.mark.parametrize("end", ["a", "b"])
def test_a_root_at_an_end_of_the_bracket_is_that_end(end: str) -> None:
    f, points = counted(lambda x: x * (x - 1.0))
    a, b = (0.0, 0.5) if end == "a" else (0.5, 1.0)
    # f(0.5) < 0 and f(0) = f(1) = 0: only the end where f is exactly zero brackets it.
    x = brentq(f, a, b)
    assert x == (a if end == "a" else b)
    assert x == optimize.brentq(lambda t: t * (t - 1.0), a, b)
    assert len(points) == 2  # the two ends, nothing else


def test_numpy_values_and_ends_are_accepted_and_a_float_returned() -> None:
    x = brentq(lambda t: np.float64(t) ** 2 - 2.0, np.float64(0.0), np.int64(2))
    assert type(x) is float
    assert x == pytest.approx(math.sqrt(2), abs=2e-12)


def test_ends_of_the_same_sign_are_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("f(a) and f(b) must have opposite signs")):
        brentq(lambda x: x**2 + 1, -1.0, 1.0)
    with pytest.raises(ValueError, match=re.escape("f(-1.0) = 2.0, f(1.0) = 2.0")):
        brentq(lambda x: x**2 + 1, -1.0, 1.0)
    with pytest.raises(ValueError, match="different signs"):  # scipy refuses them too
        optimize.brentq(lambda x: x**2 + 1, -1.0, 1.0)


def test_a_nan_value_is_refused_with_its_point() -> None:
    with pytest.raises(ValueError, match=re.escape("f(1.0) is NaN")):
        brentq(lambda x: math.nan if x == 1.0 else x, -1.0, 1.0)

    def hole(x: float) -> float:  # NaN inside the bracket, found on the way
        return math.nan if 0.2 < x < 0.8 else x - 0.5

    with pytest.raises(ValueError, match=r"f\(0\.5\) is NaN: no root can be bracketed"):
        brentq(hole, 0.0, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        optimize.brentq(hole, 0.0, 1.0)


def test_no_convergence_within_maxiter_names_the_bracket_left() -> None:
    def cubic(x: float) -> float:
        return x**3 - 2 * x - 5

    message = r"brentq did not converge in 3 iterations: the root lies in \[2\.09\d*, 2\.09\d*\]"
    with pytest.raises(ValueError, match=message):
        brentq(cubic, 2.0, 3.0, maxiter=3)
    with pytest.raises(RuntimeError, match="Failed to converge after 3 iterations"):
        optimize.brentq(cubic, 2.0, 3.0, maxiter=3)
    # Given as many iterations as scipy takes (its evaluations less the two ends), it does.
    f, points = counted(cubic)
    optimize.brentq(f, 2.0, 3.0)
    iterations = len(points) - 2
    x = brentq(cubic, 2.0, 3.0, maxiter=iterations)
    assert x == pytest.approx(2.0945514815423265, abs=2e-12)
    # A triple root is slow for both: the same failure at the defaults.
    with pytest.raises(ValueError, match="did not converge in 100 iterations"):
        brentq(lambda x: (x - 1) ** 3, -5.0, 2.0)
    with pytest.raises(RuntimeError, match="Failed to converge after 100 iterations"):
        optimize.brentq(lambda x: (x - 1) ** 3, -5.0, 2.0)
    # maxiter=0 evaluates the ends only, and answers when one of them is the root.
    assert brentq(lambda x: x, 0.0, 1.0, maxiter=0) == 0.0
    with pytest.raises(ValueError, match="did not converge in 0 iterations"):
        brentq(cubic, 2.0, 3.0, maxiter=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"xtol": 0.0}, "xtol must be positive, got 0.0"),
        ({"xtol": -1e-12}, "xtol must be positive, got -1e-12"),
        ({"xtol": math.nan}, "xtol must be positive, got nan"),
        ({"rtol": 1e-16}, "rtol must be at least 4 * eps = 8.88178e-16, got 1e-16"),
        ({"rtol": math.nan}, "rtol must be at least 4 * eps = 8.88178e-16, got nan"),
        ({"maxiter": -1}, "maxiter must be >= 0, got -1"),
    ],
)
def test_unusable_tolerances_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        brentq(lambda x: x, -1.0, 1.0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("a", "b"), [(-math.inf, 1.0), (0.0, math.nan)])
def test_ends_must_be_finite(a: float, b: float) -> None:
    with pytest.raises(ValueError, match="the bracket ends must be finite numbers"):
        brentq(lambda x: x, a, b)


def test_the_smallest_rtol_is_scipys() -> None:
    assert RTOL_MIN == 4 * EPS
    brentq(lambda x: x - 0.25, 0.0, 1.0, rtol=RTOL_MIN)
    optimize.brentq(lambda x: x - 0.25, 0.0, 1.0, rtol=RTOL_MIN)
