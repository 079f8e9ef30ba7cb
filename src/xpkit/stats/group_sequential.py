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

Joint distribution. The score ``S_k = Z_k sqrt(t_k)`` is a Brownian motion with drift
observed at ``t_1, t_2, ...``: ``S_k ~ drift * t_k + W(t_k)``, where ``drift`` is the mean
of the z statistic at full information (``0`` under ``H0``), so the increments are
independent ``N(drift (t_k - t_{k-1}), t_k - t_{k-1})`` and
``corr(Z_j, Z_k) = sqrt(t_j / t_k)``. The exit probabilities come from the recursive
numerical integration of Armitage, McPherson & Rowe (1969, "Repeated significance tests
on accumulating data", JRSS A 132): carry the sub-density ``f_k(s)`` of ``S_k`` on the
paths that have not yet stopped and, with ``d = t_k - t_{k-1}``, ``sigma = sqrt(d)``
and ``b_k = c_k sqrt(t_k)``,

    f_1(s)       = phi((s - drift t_1) / sqrt(t_1)) / sqrt(t_1),  |s| < b_1
    f_k(s)       = integral f_{k-1}(u) phi((s - u - drift d) / sigma) / sigma du,  |s| < b_k
    P(up at k)   = integral f_{k-1}(u) Phi((u + drift d - b_k) / sigma) du
    P(down at k) = integral f_{k-1}(u) Phi((-b_k - u - drift d) / sigma) du

Quadrature. Jennison & Turnbull (*Group Sequential Methods with Applications to Clinical
Trials*, 2000, ch. 19) evaluate these integrals with Simpson's rule on a grid dense in the
centre; its error falls as ``m^-4`` in their grid parameter and, measured against adaptive
quadrature, still leaves errors up to 1e-6 in ``z`` with ``m = 64`` (2.5e-7 at 28 daily
looks): its points are sparse where the small early spends are decided, and the cut at
each bound costs Simpson its smoothness. Here each continuation region ``(-b_k, b_k)`` is
split into panels integrated by 10-point Gauss-Legendre: panels at most twice the
narrowest scale of the integrands (the spread ``sqrt(t_k)`` of ``S_k`` and the increments
into and out of look ``k``, so close looks are resolved) and, next to a bound ``x``
standard deviations from the mean, as narrow as the tail's decay length ``sqrt(t_k) / x``,
doubling inward. An unbounded side stops 12 standard deviations out. The exit
probabilities then agree with nested adaptive quadrature to about 1e-15 and the bounds,
the roots by Brent's method (to 1e-12 in ``z``) of ``P(up at k) + P(down at k) =
alpha*(t_k) - alpha*(t_{k-1})``, to about 1e-12.

Design. ``crossing_probability`` runs the recursion for given bounds and drift;
``design_power`` is the probability that the test rejects in the direction of the true
effect, and ``inflation_factor`` the ratio ``(drift_GS / drift_fixed)^2`` of the maximum
sample size of the group-sequential design to that of the fixed-horizon test with the same
``alpha`` and power, ``drift_fixed = z_{1-alpha/2} + z_{power}`` (Jennison & Turnbull,
2000, sections 2.3-2.5 and 7.2). Rejections on the wrong side (probability below
``Phi(-z_{1-alpha/2} - drift)``) are left out of the power, as in the fixed-horizon
formula.

Several hypotheses. Running a group-sequential test on each of ``m`` hypotheses (metrics,
or variants against control) with level ``alpha / m`` each keeps the family-wise error
rate at ``alpha`` whatever the dependence between the hypotheses: by Bonferroni's
inequality the probability that any of the ``m`` tests ever crosses is at most the sum of
their ``m`` levels. Each hypothesis keeps its own spending function and information
fractions; nothing needs to be shared between them. Sharper splits that exploit the
correlation between the statistics exist (Maurer & Bretz, 2013, "Multiple testing in
group sequential trials using graphical approaches", Stat. Biopharm. Res. 5), but need it
to be known.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from xpkit.stats.lift import check_alpha
from xpkit.stats.roots import brentq

SpendingShape = Literal["obrien_fleming", "pocock"]
CrossingSide = Literal["both", "upper", "lower"]

_GL_NODES = 10  # Gauss-Legendre nodes per panel
_PANEL = 2.0  # panel width in units of the narrowest scale of the integrands
_EDGE = 1.0  # panel width at a cut bound, in units of the tail's decay length
_TAIL_SD = 12.0  # an unbounded side is cut this many sd from the mean: mass < 1e-32
_Z_MAX = 40.0  # a bound beyond this is "never cross": the tail is below 1e-300
_BRENT_XTOL = 1e-12


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
    check_alpha(alpha)
    fractions = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
    per_side = alpha / 2
    if shape == "obrien_fleming":
        with np.errstate(divide="ignore"):
            # 2 - 2 Phi(x) written as 2 Phi(-x): no cancellation when the spend is tiny.
            return 2 * (2 * special.ndtr(special.ndtri(per_side / 2) / np.sqrt(fractions)))
    if shape == "pocock":
        return 2 * per_side * np.log1p((math.e - 1) * fractions)
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
) -> Boundaries:
    """Lan-DeMets bounds for looks at the given increasing information fractions.

    Bound ``c_k`` solves ``P_H0(|Z_j| < c_j, j < k; |Z_k| >= c_k) = alpha*(t_k) -
    alpha*(t_{k-1})`` (Lan & DeMets, 1983), by the recursion in the module docstring.
    A look at ``t = 1`` spends whatever alpha is left. ``spend_all_at_last=True`` does the
    same for a last look taken before the plan's sample size was reached (the experiment
    ends early on the calendar): its spending time is set to 1 while its correlation with
    earlier looks still uses the real information fraction.
    """
    check_alpha(alpha)
    t = _check_fractions(information_fractions)
    spend_t = t.copy()
    if spend_all_at_last:
        spend_t[-1] = 1.0
    cumulative = alpha_spending(spend_t, alpha, shape)
    increments = np.diff(cumulative, prepend=0.0)

    bounds = np.empty(t.size)
    # Look 1: Z_1 is standard normal, so the bound is a plain normal quantile.
    bounds[0] = _bound_from_tail(increments[0])
    recursion = _Recursion(t, drift=0.0)
    recursion.start(bounds[0])
    for k in range(1, t.size):
        bounds[k] = recursion.solve_bound(k, increments[k])
        if k + 1 < t.size:
            recursion.advance(k, bounds[k])
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


# -- design ----------------------------------------------------------------------------
def crossing_probability(
    fractions: Sequence[float] | ArrayLike,
    bounds_z: Sequence[float] | ArrayLike,
    drift: float = 0.0,
    *,
    side: CrossingSide = "both",
) -> np.ndarray:
    """Probability of stopping at or before each look, when ``S_k ~ drift t_k + W(t_k)``.

    ``bounds_z[k]`` is the critical ``|z|`` at look ``k`` (``inf``: that look cannot stop)
    and ``drift`` the mean of the z statistic at information fraction 1, so ``Z_k`` has
    mean ``drift sqrt(t_k)``. Entry ``k`` is the cumulative probability that the test has
    stopped by look ``k``: through either bound (``side="both"``), or through the upper
    (``Z >= c``) or lower (``Z <= -c``) bound only, counting a path at its first crossing.
    Under ``drift = 0`` with the bounds of :func:`spending_boundaries` it is
    ``alpha*(t_k)``. Computed by the recursion in the module docstring.
    """
    t = _check_fractions(fractions)
    c = np.asarray(bounds_z, dtype=float).reshape(-1)
    if c.shape != t.shape:
        raise ValueError(f"need one bound per look: {t.size} fractions, {c.size} bounds")
    if np.any(np.isnan(c)) or np.any(c < 0):
        raise ValueError("bounds must be >= 0 (inf for a look that cannot stop)")
    if not math.isfinite(drift):
        raise ValueError(f"drift must be finite, got {drift}")
    if side not in ("both", "upper", "lower"):
        raise ValueError(f"unknown side {side!r}; use 'both', 'upper' or 'lower'")
    recursion = _Recursion(t, drift=float(drift))
    up = np.empty(t.size)
    down = np.empty(t.size)
    up[0], down[0] = recursion.start(c[0])
    for k in range(1, t.size):
        up[k], down[k] = recursion.exit_mass(k, c[k] * math.sqrt(t[k]))
        if k + 1 < t.size:
            recursion.advance(k, c[k])
    per_look = {"both": up + down, "upper": up, "lower": down}[side]
    return np.minimum(np.cumsum(per_look), 1.0)


def design_power(
    fractions: Sequence[float] | ArrayLike,
    alpha: float,
    shape: SpendingShape,
    drift: float,
) -> float:
    """Power of the Lan-DeMets design at the looks ``fractions`` against ``drift``.

    ``drift`` is the mean of the final z statistic (``effect / se`` at information
    fraction 1). The power is the probability that the first crossing is on the side of
    the effect's sign -- ``P(Z_k >= c_k`` before any other crossing``)`` for a positive
    drift -- with the bounds of :func:`spending_boundaries`. The fixed-horizon analogue is
    ``Phi(|drift| - z_{1-alpha/2})``.
    """
    bounds = spending_boundaries(fractions, alpha, shape)
    side: CrossingSide = "upper" if drift >= 0 else "lower"
    return float(crossing_probability(bounds.information_fractions, bounds.z, drift, side=side)[-1])


def inflation_factor(
    fractions: Sequence[float] | ArrayLike,
    alpha: float = 0.05,
    power: float = 0.9,
    shape: SpendingShape = "obrien_fleming",
) -> float:
    """Maximum sample size of the design over that of the fixed-horizon test.

    ``fractions`` are the looks as fractions of the maximum sample size (the last is 1).
    With ``drift_GS`` the drift at which :func:`design_power` equals ``power`` and
    ``drift_fixed = z_{1-alpha/2} + z_{power}`` the one of the fixed-horizon test with the
    same ``alpha`` and power, the factor is ``(drift_GS / drift_fixed)^2``, because the
    drift grows as the square root of the sample size (Jennison & Turnbull, 2000,
    section 2.5). Multiply a fixed-horizon sample size by it to get the design's maximum.
    """
    check_alpha(alpha)
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    t = _check_fractions(fractions)
    if t[-1] != 1.0:
        raise ValueError("the last look must be at fraction 1: the maximum sample size")
    bounds = spending_boundaries(t, alpha, shape)
    fixed = float(special.ndtri(1 - alpha / 2) + special.ndtri(power))

    def shortfall(drift: float) -> float:
        return float(crossing_probability(t, bounds.z, drift, side="upper")[-1]) - power

    # At drift 0 the upper crossing probability is alpha / 2, below any sensible power.
    if power <= alpha / 2:
        raise ValueError(f"power must exceed alpha / 2 = {alpha / 2}, got {power}")
    low = 0.0
    high = 2 * fixed
    while shortfall(high) < 0:
        high *= 2
    drift = brentq(shortfall, low, high, xtol=1e-13, rtol=1e-15)
    return float((drift / fixed) ** 2)


# -- the recursion ---------------------------------------------------------------------
class _Recursion:
    """Sub-density of ``S_k`` on the paths still running, on quadrature nodes (module doc)."""

    def __init__(self, t: np.ndarray, drift: float) -> None:
        self.t = t
        self.drift = drift
        self.sigma = np.sqrt(np.diff(t, prepend=0.0))  # sd of each increment; sigma_1 = sqrt(t_1)
        self.nodes = np.empty(0)
        self.weighted = np.empty(0)  # quadrature weight times sub-density at each node

    def _set_nodes(self, k: int, c: float) -> np.ndarray:
        """Nodes and weights for look ``k``'s continuation region ``|Z_k| < c``."""
        sd = math.sqrt(self.t[k])
        # The integrands over this region vary on the scale of the increments into and out
        # of look k and of the spread of S_k itself.
        scale = min(sd, self.sigma[k], self.sigma[k + 1] if k + 1 < self.t.size else sd)
        self.nodes, weights = _quadrature(self.drift * self.t[k], sd, c * sd, scale)
        return weights

    def start(self, c1: float) -> tuple[float, float]:
        """Set up look 1 (bound ``c1``); return its upper and lower exit probabilities."""
        sd = math.sqrt(self.t[0])
        mean = self.drift * self.t[0]
        b = c1 * sd
        up = float(special.ndtr((mean - b) / sd))
        down = float(special.ndtr((-b - mean) / sd))
        weights = self._set_nodes(0, c1)
        self.weighted = weights * _npdf((self.nodes - mean) / sd) / sd
        return up, down

    def exit_mass(self, k: int, b: float) -> tuple[float, float]:
        """Upper and lower exit probabilities at look ``k`` for the bound ``b`` on ``S_k``."""
        if self.nodes.size == 0:
            return 0.0, 0.0
        sigma = self.sigma[k]
        shifted = self.nodes + self.drift * (self.t[k] - self.t[k - 1])
        up = float(self.weighted @ special.ndtr((shifted - b) / sigma))
        down = float(self.weighted @ special.ndtr((-b - shifted) / sigma))
        return up, down

    def solve_bound(self, k: int, target: float) -> float:
        """The ``c`` whose exit probability at look ``k`` (both sides) is ``target``."""
        if target <= 0:
            return math.inf
        root_t = math.sqrt(self.t[k])

        def excess(c: float) -> float:
            up, down = self.exit_mass(k, c * root_t)
            return up + down - target

        if excess(0.0) <= 0:
            # More alpha than probability left to spend (only with extreme inputs): reject.
            return 0.0
        if excess(_Z_MAX) >= 0:
            return _Z_MAX
        return brentq(excess, 0.0, _Z_MAX, xtol=_BRENT_XTOL, rtol=1e-15)

    def advance(self, k: int, c: float) -> None:
        """Move the sub-density from look ``k - 1`` to look ``k``, truncated at ``|Z_k| < c``."""
        old_nodes, old_weighted = self.nodes, self.weighted
        weights = self._set_nodes(k, c)
        if old_nodes.size == 0 or self.nodes.size == 0:
            self.nodes = self.weighted = np.empty(0)
            return
        sigma = self.sigma[k]
        shift = self.drift * (self.t[k] - self.t[k - 1])
        w = (self.nodes[:, None] - old_nodes[None, :] - shift) / sigma
        density = np.exp(-0.5 * w * w) @ old_weighted / (sigma * math.sqrt(2 * math.pi))
        self.weighted = weights * density


_GL_X, _GL_W = np.polynomial.legendre.leggauss(_GL_NODES)


def _quadrature(
    mean: float, sd: float, bound: float, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre panels over ``(-bound, bound)`` for a density of ``S`` ~ (mean, sd).

    Panels are at most ``_PANEL * scale`` wide, and graded near each finite bound: there
    a density whose tail is cut ``x`` standard deviations from its mean decays over
    ``sd / x``, so the panel at the bound is that wide and the widths double inward.
    An unbounded side stops ``_TAIL_SD`` standard deviations out. Empty when the region
    is (``bound <= 0``).
    """
    if not bound > 0:
        return np.empty(0), np.empty(0)
    width = _PANEL * scale
    lo = max(-bound, mean - _TAIL_SD * sd)
    hi = min(bound, mean + _TAIL_SD * sd)
    if hi <= lo:
        return np.empty(0), np.empty(0)
    edges_lo = _graded_edges(lo, 1.0, mean, sd, width, lo == -bound)
    edges_hi = _graded_edges(hi, -1.0, mean, sd, width, hi == bound)
    inner_lo, inner_hi = edges_lo[-1], edges_hi[-1]
    if inner_hi - inner_lo > 0:
        n = max(1, math.ceil((inner_hi - inner_lo) / width))
        middle = np.linspace(inner_lo, inner_hi, n + 1)
        edges = np.concatenate((edges_lo[:-1], middle, edges_hi[-2::-1]))
    else:  # the graded ends meet: a narrow region, uniform panels are fine
        n = max(1, math.ceil((hi - lo) / min(width, _edge_width(lo, mean, sd, width))))
        edges = np.linspace(lo, hi, n + 1)
    left, right = edges[:-1, None], edges[1:, None]
    half = (right - left) / 2
    nodes = (left + half) + half * _GL_X
    weights = half * _GL_W
    return nodes.ravel(), np.broadcast_to(weights, nodes.shape).ravel()


def _edge_width(end: float, mean: float, sd: float, width: float) -> float:
    return min(width, _EDGE * sd / max(1.0, abs(end - mean) / sd))


def _graded_edges(
    end: float, direction: float, mean: float, sd: float, width: float, cut: bool
) -> np.ndarray:
    """Panel edges from ``end`` inward, doubling from the edge width up to ``width``."""
    step = _edge_width(end, mean, sd, width) if cut else width
    edges = [end]
    while step < width:
        edges.append(edges[-1] + direction * step)
        step *= 2
    return np.array(edges)


def _check_fractions(information_fractions: Sequence[float] | ArrayLike) -> np.ndarray:
    t = np.asarray(information_fractions, dtype=float).reshape(-1)
    if t.size == 0:
        raise ValueError("need at least one information fraction")
    if not (np.all(np.isfinite(t)) and t[0] > 0 and t[-1] <= 1 and np.all(np.diff(t) > 0)):
        raise ValueError(
            f"information fractions must be strictly increasing in (0, 1], got {t.tolist()}; "
            "a re-run of the same data cut is the same look, not a new one"
        )
    return t


def _bound_from_tail(two_sided_tail: float) -> float:
    if two_sided_tail <= 0:
        return math.inf
    return float(min(-special.ndtri(min(two_sided_tail, 1.0) / 2), _Z_MAX))


def _npdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
