"""Group-sequential tests: Lan-DeMets alpha spending with two-sided symmetric boundaries.

A pre-registered number of looks trades the unlimited peeking of the always-valid methods
for more power at the planned horizon. At look ``k`` with information fraction ``t_k``
(``0 < t_1 < ... < t_K <= 1``) the z statistic of the effect is compared with a bound
``c_k``; the bounds are chosen so that, under ``H0``, the probability of first crossing at
look ``k`` is the increment ``alpha*(t_k) - alpha*(t_{k-1})`` of a spending function
(Lan & DeMets, 1983, "Discrete sequential boundaries for clinical trials", Biometrika 70).
For a two-sided symmetric test the spending function is applied to each side with level
``a = alpha / 2`` and the two sides are added (DeMets & Lan, 1994, Stat. Med. 13; the
convention of gsDesign, rpact and ldbounds, and the one their published tables use):

    O'Brien-Fleming type:  alpha*(t) = 2 * (2 - 2 Phi(z_{1-a/2} / sqrt(t)))
    Pocock type:           alpha*(t) = 2 * a ln(1 + (e - 1) t) = alpha ln(1 + (e - 1) t)

Both reach ``alpha`` at ``t = 1``. (Applying the O'Brien-Fleming form to the two-sided
``alpha`` directly, ``2 - 2 Phi(z_{1-alpha/2} / sqrt(t))``, spends more early: 4.38
rather than 4.88 at the first of five equally spaced looks.)

Because only the spending function is fixed in advance, the number and timing of looks may
change as the experiment runs: each look's bound depends only on the information
fractions of the looks already taken.

Joint distribution. The score ``S_k = Z_k sqrt(t_k)`` is a Brownian motion observed at
``t_1, t_2, ...`` (independent ``N(0, t_k - t_{k-1})`` increments under ``H0``), so
``corr(Z_j, Z_k) = sqrt(t_j / t_k)``. The bounds are computed by the recursive numerical
integration of Armitage, McPherson & Rowe (1969, "Repeated significance tests on
accumulating data", JRSS A 132): carry the sub-density ``f_k(s)`` of ``S_k`` on the paths
that have not yet stopped, and at each look, with ``sigma^2 = t_k - t_{k-1}``,

    f_k(s)       = integral f_{k-1}(u) phi((s - u) / sigma) / sigma du,  |s| < c_k sqrt(t_k)
    P(exit at k) = integral f_{k-1}(u) P(|u + sigma W| >= c_k sqrt(t_k)) du

(Jennison & Turnbull, *Group Sequential Methods*, 2000, ch. 19). The quadrature
represents ``f_{k-1}`` as piecewise linear on a fine grid and integrates the Gaussian
kernel and its tail probabilities against it in closed form, so the result stays accurate
however close two looks are (a small ``sigma`` makes the kernel too narrow for a
fixed-node Simpson rule). The grid is cut at 8.5 standard deviations of ``S_k``, beyond
which the mass is below 1e-16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special

SpendingShape = Literal["obrien_fleming", "pocock"]

_GRID_SD = 8.5  # grid half-width in standard deviations of S_k
_Z_MAX = 40.0  # a bound beyond this is "never cross": the tail is below 1e-300


@dataclass(frozen=True)
class Boundaries:
    """Two-sided symmetric group-sequential bounds: reject at look ``k`` if ``|Z_k| >= z[k]``."""

    information_fractions: np.ndarray
    z: np.ndarray  # critical |z| per look; inf when a look spends no alpha
    nominal_p: np.ndarray  # two-sided p-value a look needs: 2 (1 - Phi(z))
    alpha_spent: np.ndarray  # cumulative alpha*(t_k) spent up to and including each look
    alpha: float
    shape: SpendingShape


@dataclass(frozen=True)
class LookDecision:
    """The verdict of the group-sequential rule at the current look."""

    information_fraction: float
    z: float
    z_bound: float
    nominal_p_bound: float
    alpha_spent: float  # cumulative, including this look
    crossed: bool
    final: bool  # the last planned look: all of alpha has now been spent


def alpha_spending(
    t: ArrayLike, alpha: float = 0.05, shape: SpendingShape = "obrien_fleming"
) -> np.ndarray:
    """Cumulative two-sided type I error ``alpha*(t)`` allowed by information fraction ``t``.

    Each side spends ``alpha / 2`` through the chosen shape; the result is their sum.
    """
    _check_alpha(alpha)
    t = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
    per_side = alpha / 2
    if shape == "obrien_fleming":
        with np.errstate(divide="ignore"):
            # 2 - 2 Phi(x) written as 2 Phi(-x): no cancellation when the spend is tiny.
            return 2 * (2 * special.ndtr(special.ndtri(per_side / 2) / np.sqrt(t)))
    if shape == "pocock":
        return 2 * per_side * np.log1p((math.e - 1) * t)
    raise ValueError(f"unknown spending shape {shape!r}; use 'obrien_fleming' or 'pocock'")


def information_fraction(n: float, planned_n: float) -> float:
    """``min(1, n / planned_n)``: the share of the planned sample seen so far.

    Units are the right clock when the per-unit variance is stable; when it is not, the
    ratio of variances ``se_planned^2 / se_now^2`` is the exact information fraction. An
    experiment that overruns its plan is capped at 1 (the final look).
    """
    if planned_n <= 0:
        raise ValueError(f"planned_n must be positive, got {planned_n}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return min(1.0, n / planned_n)


def spending_boundaries(
    information_fractions: Sequence[float] | ArrayLike,
    alpha: float = 0.05,
    shape: SpendingShape = "obrien_fleming",
    *,
    spend_all_at_last: bool = False,
    grid_points: int = 1001,
) -> Boundaries:
    """Lan-DeMets bounds for looks at the given increasing information fractions.

    A look at ``t = 1`` spends whatever alpha is left. ``spend_all_at_last=True`` does the
    same for a last look taken before the plan's sample size was reached (the experiment
    ends early on the calendar): its spending time is set to 1 while its correlation with
    earlier looks still uses the real information fraction.
    """
    _check_alpha(alpha)
    t = np.asarray(information_fractions, dtype=float).reshape(-1)
    if t.size == 0:
        raise ValueError("need at least one information fraction")
    if not (np.all(np.isfinite(t)) and t[0] > 0 and t[-1] <= 1 and np.all(np.diff(t) > 0)):
        raise ValueError(
            f"information fractions must be strictly increasing in (0, 1], got {t.tolist()}; "
            "a re-run of the same data cut is the same look, not a new one"
        )
    if grid_points < 51:
        raise ValueError("grid_points must be at least 51")
    spend_t = t.copy()
    if spend_all_at_last:
        spend_t[-1] = 1.0
    cumulative = alpha_spending(spend_t, alpha, shape)
    increments = np.diff(cumulative, prepend=0.0)

    bounds = np.empty(t.size)
    # Look 1: Z_1 is standard normal, so the bound is a plain normal quantile.
    bounds[0] = _bound_from_tail(increments[0])
    grid, density = _first_density(t[0], bounds[0], grid_points)
    for k in range(1, t.size):
        sigma = math.sqrt(t[k] - t[k - 1])
        bounds[k] = _solve_bound(grid, density, sigma, t[k], increments[k])
        if k + 1 < t.size:
            grid, density = _propagate(grid, density, sigma, t[k], bounds[k], grid_points)
    return Boundaries(
        information_fractions=t,
        z=bounds,
        nominal_p=2 * special.ndtr(-bounds),
        alpha_spent=cumulative,
        alpha=alpha,
        shape=shape,
    )


def check_look(
    past_fractions: Sequence[float],
    current_fraction: float,
    z: float,
    alpha: float = 0.05,
    shape: SpendingShape = "obrien_fleming",
    *,
    final: bool = False,
) -> LookDecision:
    """Is the group-sequential bound crossed at the current look?

    ``past_fractions`` are the information fractions of the looks already taken (from the
    run history, in order), ``current_fraction`` that of this look and ``z`` the current
    effect's z statistic. The current look is the final one when its fraction reaches 1 or
    when ``final=True`` (the experiment stops before its planned sample size); either way
    the remaining alpha is spent on it.
    """
    fractions = [float(f) for f in past_fractions]
    if fractions and fractions[-1] >= 1.0:
        raise ValueError(
            "a previous look already reached the planned sample size: the group-sequential "
            "test is complete, and its final look is the result to report"
        )
    fractions.append(min(1.0, float(current_fraction)))
    is_final = final or fractions[-1] >= 1.0
    bounds = spending_boundaries(fractions, alpha, shape, spend_all_at_last=is_final)
    bound = float(bounds.z[-1])
    return LookDecision(
        information_fraction=fractions[-1],
        z=float(z),
        z_bound=bound,
        nominal_p_bound=float(bounds.nominal_p[-1]),
        alpha_spent=float(bounds.alpha_spent[-1]),
        crossed=bool(abs(z) >= bound),
        final=is_final,
    )


# -- the recursion ---------------------------------------------------------------------
def _bound_from_tail(two_sided_tail: float) -> float:
    if two_sided_tail <= 0:
        return math.inf
    return float(min(-special.ndtri(min(two_sided_tail, 1.0) / 2), _Z_MAX))


def _first_density(t1: float, c1: float, points: int) -> tuple[np.ndarray, np.ndarray]:
    sd = math.sqrt(t1)
    half = min(c1, _GRID_SD) * sd
    grid = np.linspace(-half, half, points)
    return grid, _npdf(grid / sd) / sd


def _solve_bound(
    grid: np.ndarray, density: np.ndarray, sigma: float, t: float, target: float
) -> float:
    """The ``c`` with P(not stopped before, ``|S_k| >= c sqrt(t)``) = ``target``."""
    if target <= 0:
        return math.inf

    def excess(c: float) -> float:
        return _exit_mass(grid, density, sigma, c * math.sqrt(t)) - target

    if excess(0.0) <= 0:
        # More alpha than probability left to spend (only with extreme inputs): reject.
        return 0.0
    if excess(_Z_MAX) >= 0:
        return _Z_MAX
    return float(optimize.brentq(excess, 0.0, _Z_MAX, xtol=1e-12, rtol=1e-14))


def _propagate(
    grid: np.ndarray, density: np.ndarray, sigma: float, t: float, c: float, points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-density of ``S_k`` on the continuation region ``|s| < c sqrt(t)``."""
    half = min(c, _GRID_SD) * math.sqrt(t)
    new_grid = np.linspace(-half, half, points)
    # w = (u - s) / sigma; the integral of a linear piece against phi(w) is closed form.
    w = (grid[None, :] - new_grid[:, None]) / sigma
    cdf, sf, pdf = special.ndtr(w), special.ndtr(-w), _npdf(w)
    wa = w[:, :-1]
    # Differences of the upper tail where both ends are positive: no 1 - 1 cancellation.
    d_cdf = np.where(wa > 0, sf[:, :-1] - sf[:, 1:], cdf[:, 1:] - cdf[:, :-1])
    slope = np.diff(density) / (np.diff(grid) / sigma)  # d density / dw
    # integral over [w_a, w_b] of (f_a + slope (w - w_a)) phi(w) dw
    pieces = density[:-1] * d_cdf + slope * (pdf[:, :-1] - pdf[:, 1:] - wa * d_cdf)
    return new_grid, np.maximum(pieces.sum(axis=1), 0.0)


def _exit_mass(grid: np.ndarray, density: np.ndarray, sigma: float, b: float) -> float:
    """integral f(u) [P(u + sigma W >= b) + P(u + sigma W <= -b)] du for piecewise-linear f."""
    upper = _linear_times_cdf(grid, density, sigma, b)
    lower = _linear_times_cdf(-grid[::-1], density[::-1], sigma, b)  # mirror u -> -u
    return upper + lower


def _linear_times_cdf(grid: np.ndarray, density: np.ndarray, sigma: float, b: float) -> float:
    """integral f(u) Phi((u - b) / sigma) du, f linear between grid nodes, in closed form.

    With ``x = (u - b) / sigma``: ``I0 = x Phi + phi`` is an antiderivative of ``Phi`` and
    ``I1 = ((x^2 - 1) Phi + x phi) / 2`` one of ``x Phi``.
    """
    x = (grid - b) / sigma
    cdf, pdf = special.ndtr(x), _npdf(x)
    i0 = x * cdf + pdf
    i1 = 0.5 * ((x * x - 1) * cdf + x * pdf)
    d0, d1 = np.diff(i0), np.diff(i1)
    xa = x[:-1]
    slope = np.diff(density) / np.diff(x)
    # integral over [x_a, x_b] of (f_a + slope (x - x_a)) Phi(x) dx, times dx/du = sigma
    return float(sigma * np.sum(density[:-1] * d0 + slope * (d1 - xa * d0)))


def _npdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
