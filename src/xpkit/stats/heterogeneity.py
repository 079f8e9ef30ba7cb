"""Heterogeneity of one effect across the slices of a pre-treatment dimension.

The inputs are per-slice effects (an estimate ``b_k`` with standard error ``s_k`` from any
estimator) or, for the slice-versus-complement contrasts, per-slice per-arm
:class:`~xpkit.moments.Moments`. Three questions, one function family each:

- do the slices differ at all? :func:`heterogeneity_test` (Cochran's Q, I^2);
- which slices differ from the rest? :func:`slice_vs_complement` for one dimension, then
  :func:`discover` across every candidate of the experiment (Benjamini–Hochberg);
- what is each slice's effect, borrowing strength from the others? :func:`shrink`
  (normal–normal empirical Bayes, tau^2 by REML or DerSimonian–Laird).

Usable slices: a slice enters the sums only when its estimate is finite and its standard
error finite and > 0. A zero standard error comes from degenerate data (a constant metric,
a single unit) and would get infinite weight; NaN is an estimator that could not run.
Per-slice outputs are NaN for slices left out, and ``used`` says which were kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import special

from xpkit.moments import Moments
from xpkit.stats.effect import Effect
from xpkit.stats.lift import NAN
from xpkit.stats.means import welch_test
from xpkit.stats.multiple import adjust_pvalues
from xpkit.stats.roots import brentq

Estimator = Callable[[Moments, Moments], Effect]

# REML by Fisher scoring: stop when a step moves tau^2 by less than this fraction of
# (tau^2 + the median sampling variance); far below any digit a scorecard shows.
_REML_RTOL = 1e-12
_REML_MAX_ITER = 500


ArrayIn = Sequence[float] | np.ndarray


def _arrays(estimates: ArrayIn, ses: ArrayIn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimates, standard errors and the mask of usable slices (see the module doc)."""
    b = np.asarray(estimates, dtype=float).reshape(-1)
    s = np.asarray(ses, dtype=float).reshape(-1)
    if b.shape != s.shape:
        raise ValueError(f"{b.size} estimates but {s.size} standard errors")
    with np.errstate(invalid="ignore"):
        used = np.isfinite(b) & np.isfinite(s) & (s > 0.0)
    return b, s, used


@dataclass(frozen=True)
class Heterogeneity:
    """Cochran's Q test that every slice has the same effect (see :func:`heterogeneity_test`).

    ``pooled``/``pooled_se``: the inverse-variance (fixed-effect) mean of the used slices.
    ``df = k - 1`` for the ``k`` used slices; with ``k < 2`` there is nothing to compare and
    ``q``, ``p_value``, ``i2`` (and ``pooled`` when ``k = 0``) are NaN.
    """

    q: float
    df: int
    p_value: float
    i2: float
    pooled: float
    pooled_se: float
    used: np.ndarray


def heterogeneity_test(estimates: ArrayIn, ses: ArrayIn) -> Heterogeneity:
    """Cochran's Q (the Wald test of equal effects) across the slices of one dimension.

    With weights ``w_k = 1 / s_k^2`` and the fixed-effect mean ``b_F = sum w b / sum w``:

        Q = sum_k w_k (b_k - b_F)^2  ~  chi^2_{k-1}  under H0: every slice's effect equal,

    and ``I^2 = max(0, (Q - df) / Q)`` (0 when ``Q = 0``), the share of the spread of the
    estimates beyond sampling noise (Higgins & Thompson 2002, *Stat. Med.* 21). Q is the
    Wald statistic of the interaction terms of ``y ~ treatment * C(slice)``: with
    homoskedastic OLS when the ``s_k`` use the model's pooled residual variance, with HC2
    robust errors when they are the per-slice Welch standard errors (the model is saturated
    in the slice x arm cells, so HC2's leverage correction ``1 / (1 - 1/n_cell)`` turns each
    cell's ``sum e^2 / n^2`` into ``s_cell^2 / n``, ddof 1). The chi-square reference treats
    the ``s_k`` as known: fine for the thousands of units per slice of an online test,
    possibly liberal for slices of a few dozen. Reference: Cochran (1954), *Biometrics* 10.
    """
    b, s, used = _arrays(estimates, ses)
    k = int(used.sum())
    if k == 0:
        return Heterogeneity(NAN, 0, NAN, NAN, NAN, NAN, used)
    w = 1.0 / s[used] ** 2
    pooled = float(np.sum(w * b[used]) / w.sum())
    pooled_se = float(1.0 / math.sqrt(w.sum()))
    if k < 2:
        return Heterogeneity(NAN, 0, NAN, NAN, pooled, pooled_se, used)
    q = float(np.sum(w * (b[used] - pooled) ** 2))
    df = k - 1
    i2 = max(0.0, (q - df) / q) if q > 0.0 else 0.0
    return Heterogeneity(q, df, float(special.chdtrc(df, q)), i2, pooled, pooled_se, used)


@dataclass(frozen=True)
class SliceContrasts:
    """Each slice's effect against the effect in all other slices combined, per slice.

    ``estimate``/``se``: the slice's own effect; ``complement_*``: the effect in the union
    of the other slices; ``difference = estimate - complement_estimate`` with
    ``difference_se``, ``z`` and two-sided normal ``p_values`` (NaN where undefined).
    """

    estimate: np.ndarray
    se: np.ndarray
    complement_estimate: np.ndarray
    complement_se: np.ndarray
    difference: np.ndarray
    difference_se: np.ndarray
    z: np.ndarray
    p_values: np.ndarray


def effect_arrays(
    effects: Sequence[Effect], scale: Literal["abs", "rel"] = "abs"
) -> tuple[np.ndarray, np.ndarray]:
    """Estimates and standard errors of ``effects`` on one scale: ``abs_effect``/``abs_se``
    or ``rel_lift``/``rel_se`` (NaN where the relative lift is undefined)."""
    if scale not in ("abs", "rel"):
        raise ValueError(f"unknown scale {scale!r}; use 'abs' or 'rel'")
    if scale == "abs":
        pairs = [(e.abs_effect, e.abs_se) for e in effects]
    else:
        pairs = [
            (NAN, NAN) if e.rel_lift is None or e.rel_se is None else (e.rel_lift, e.rel_se)
            for e in effects
        ]
    values = np.array(pairs, dtype=float).reshape(-1, 2)
    return values[:, 0], values[:, 1]


def slice_vs_complement(
    control: Sequence[Moments],
    treatment: Sequence[Moments],
    estimator: Estimator = welch_test,
    scale: Literal["abs", "rel"] = "abs",
) -> SliceContrasts:
    """Each slice's effect minus the effect of its complement, with a z-test of zero.

    ``control[k]``/``treatment[k]`` are slice ``k``'s per-arm moments; the slices must
    partition the experiment's units (one dimension's values, or the cells of a two-way
    cross). The complement's arms are the merged moments of the other slices
    (:meth:`Moments.merge`, exact pooling of counts, means and co-moments, built from
    prefix and suffix unions so each complement costs O(1) merges), so its effect is the
    estimator run on the complement's own data, not an average of slice effects. A summary
    ``(n, mean, variance)`` per arm is ``Moments(n, ("value",), [mean], [[(n - 1) var]])``.

    Slice and complement hold disjoint units assigned independently, so

        d_k = b_k - b_{-k},   se(d_k) = sqrt(s_k^2 + s_{-k}^2),   p = 2 Phi(-|d_k| / se).

    The complement's variance includes the between-slice spread of the metric, which is
    right for units randomised without stratification on the dimension. ``estimator`` is
    any ``(control, treatment) -> Effect`` (default Welch on column ``"value"``; bind other
    arguments with ``functools.partial``); ``scale`` picks its absolute or relative effect.
    """
    k = len(control)
    if len(treatment) != k:
        raise ValueError(f"{k} control slices but {len(treatment)} treatment slices")
    if k < 2:
        raise ValueError("a slice needs a complement: pass at least two slices")
    own = effect_arrays([estimator(c, t) for c, t in zip(control, treatment, strict=True)], scale)
    comp_c, comp_t = _complements(control), _complements(treatment)
    rest = effect_arrays([estimator(c, t) for c, t in zip(comp_c, comp_t, strict=True)], scale)
    diff = own[0] - rest[0]
    se = np.sqrt(own[1] ** 2 + rest[1] ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(diff) & np.isfinite(se) & (se > 0.0)
        z = np.where(ok, diff / np.where(ok, se, 1.0), NAN)
    p = np.where(ok, 2.0 * special.ndtr(-np.abs(z)), NAN)
    return SliceContrasts(own[0], own[1], rest[0], rest[1], diff, se, z, p)


def _complements(slices: Sequence[Moments]) -> list[Moments]:
    """For each ``k`` the merged moments of every slice but ``k`` (prefix x suffix unions)."""
    empty = Moments.empty(slices[0].columns)
    prefix, suffix = [empty], [empty]
    for m in slices[:-1]:
        prefix.append(prefix[-1].merge(m))
    for m in slices[:0:-1]:
        suffix.append(suffix[-1].merge(m))
    return [p.merge(s) for p, s in zip(prefix, suffix[::-1], strict=True)]


@dataclass(frozen=True)
class Discoveries:
    """Multiplicity-adjusted p-values and which candidates are discoveries at ``alpha``."""

    p_values: np.ndarray
    adjusted: np.ndarray
    discovered: np.ndarray
    alpha: float
    method: str


def discover(
    p_values: ArrayIn,
    alpha: float = 0.05,
    method: Literal["bh", "holm"] = "bh",
) -> Discoveries:
    """Discoveries among all slice candidates of one experiment.

    Pass the p-values of every candidate at once -- every dimension's
    :func:`slice_vs_complement` and any two-way cells, e.g.
    ``np.concatenate([c.p_values for c in contrasts])``: correcting dimension by dimension
    would let the number of dimensions inflate the false discoveries. Adjustment by
    :func:`xpkit.stats.multiple.adjust_pvalues`; a candidate is discovered when its
    adjusted p-value is ``<= alpha``; NaN (an untestable slice) is never discovered and
    does not count in ``m``.

    ``"bh"`` (default) controls the false discovery rate when the tests are independent or
    positively dependent. Contrasts of one dimension are not independent (slice ``j`` lies
    in slice ``k``'s complement), and their two-sided tests fall outside the PRDS theorem;
    ``bench/slice_discovery.py`` measures the family-wise error under no heterogeneity
    (where it equals the FDR) below ``alpha``. ``"holm"`` controls the family-wise error
    under any dependence, at a loss of power.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha}")
    if method not in ("bh", "holm"):
        raise ValueError(f"unknown method {method!r}; use 'bh' or 'holm'")
    p = np.asarray(p_values, dtype=float).reshape(-1)
    adjusted = adjust_pvalues(p.tolist(), method)
    with np.errstate(invalid="ignore"):
        discovered = adjusted <= alpha
    return Discoveries(p, adjusted, discovered, float(alpha), method)


@dataclass(frozen=True)
class Shrinkage:
    """Empirical-Bayes slice effects (see :func:`shrink`); per-slice arrays in input order.

    ``shrinkage[k] = s_k^2 / (tau2 + s_k^2)``: the share of the way slice ``k`` is moved
    from its own estimate towards ``mu`` (0: kept as is, 1: replaced by ``mu``).
    """

    method: str
    tau2: float
    mu: float
    mu_se: float
    estimates: np.ndarray
    sds: np.ndarray
    shrinkage: np.ndarray
    used: np.ndarray


def between_variance(
    estimates: ArrayIn,
    ses: ArrayIn,
    method: Literal["reml", "dl"] = "reml",
) -> float:
    """The between-slice variance ``tau^2`` of ``b_k ~ N(mu, tau^2 + s_k^2)``, ``>= 0``.

    ``"dl"``, DerSimonian & Laird (1986, *Control. Clin. Trials* 7), method of moments:
    ``tau^2 = max(0, (Q - (k - 1)) / (S1 - S2 / S1))`` with ``S_r = sum w_k^r``, ``w = 1/s^2``.

    ``"reml"``: the maximiser over ``tau^2 >= 0`` of the restricted log-likelihood

        l(t) = -1/2 [ sum log(v_k + t) + log sum w_k(t) + sum w_k(t) (b_k - mu(t))^2 ],

    ``v = s^2``, ``w(t) = 1 / (v + t)``, ``mu(t) = sum w b / sum w``, by Fisher scoring
    (Viechtbauer 2005, *J. Educ. Behav. Stat.* 30) from the DL value and from the best
    point of a log grid, keeping the higher maximum (see ``_reml``): score
    ``1/2 [sum w^2 (b - mu)^2 - tr P]``, information ``1/2 tr P^2`` with
    ``tr P = S1 - S2/S1``, ``tr P^2 = S2 - 2 S3/S1 + (S2/S1)^2``. Each step is truncated at 0
    and halved until ``l`` does not decrease, so ``l`` climbs monotonically to a maximum
    (the boundary ``0`` when the score there is negative). NaN for fewer than two slices.
    """
    if method not in ("reml", "dl"):
        raise ValueError(f"unknown method {method!r}; use 'reml' or 'dl'")
    b, s, used = _arrays(estimates, ses)
    b, v = b[used], s[used] ** 2
    if b.size < 2:
        return NAN
    w = 1.0 / v
    s1, s2 = w.sum(), np.sum(w**2)
    q = float(np.sum(w * (b - np.sum(w * b) / s1) ** 2))
    dl = max(0.0, (q - (b.size - 1)) / (s1 - s2 / s1))
    return dl if method == "dl" else _reml(b, v, dl)


def _reml_loglik(b: np.ndarray, v: np.ndarray, tau2: np.ndarray | float) -> np.ndarray:
    """The restricted log-likelihood of :func:`between_variance` at each ``tau2``."""
    t = np.asarray(tau2, dtype=float)[..., None]
    w = 1.0 / (v + t)
    sw = w.sum(axis=-1)
    mu = np.sum(w * b, axis=-1) / sw
    quad = np.sum(w * (b - mu[..., None]) ** 2, axis=-1)
    return -0.5 * (np.sum(np.log(v + t), axis=-1) + np.log(sw) + quad)


def _reml(b: np.ndarray, v: np.ndarray, start: float) -> float:
    """REML ``tau^2``: the better of Fisher scoring from the DL value and from the best
    point of a log grid. With standard errors orders of magnitude apart (a huge slice
    beside a tiny one) the likelihood can have two local maxima; scoring from DL alone
    found the lower one for 8 of 3000 random inputs with ses spread over e^-4..e^4. The
    likelihood falls like ``-(k - 1)/2 log tau^2`` once ``tau^2`` is well past ``T =
    (max b - min b)^2 + max v``, so the grid runs from 0 and ``1e-3 min v`` to ``10 T``,
    96 points a factor of <= 1.5 apart for any realistic spread of ses."""
    top = 10.0 * (float(np.ptp(b)) ** 2 + float(v.max()))
    grid = np.concatenate([[0.0], np.geomspace(1e-3 * float(v.min()), top, 96)])
    best = float(grid[int(np.argmax(_reml_loglik(b, v, grid)))])
    found = [_fisher_scoring(b, v, t) for t in {start, best}]
    return _polish(b, v, max(found, key=lambda t: float(_reml_loglik(b, v, t))))


def _reml_score(b: np.ndarray, v: np.ndarray, tau2: float) -> float:
    w = 1.0 / (v + tau2)
    s1, s2 = w.sum(), np.sum(w**2)
    mu = np.sum(w * b) / s1
    return float(0.5 * (np.sum(w**2 * (b - mu) ** 2) - (s1 - s2 / s1)))


def _polish(b: np.ndarray, v: np.ndarray, tau2: float) -> float:
    """The root of the REML score next to ``tau2``, to a few ulps.

    Fisher scoring stops where the likelihood no longer rises measurably, which near a
    flat maximum can be ~1e-8 relative away from it: a run on another engine, whose inputs
    differ in the 13th digit, would then shrink differently in the 7th. The score is
    steep where the likelihood is flat, so its root (Brent's method in a bracket grown
    around ``tau2``) is as reproducible as the inputs.
    """
    if tau2 <= 0.0:
        return tau2
    step = tau2 * 1e-6
    for _ in range(60):
        lo, hi = max(0.0, tau2 - step), tau2 + step
        f_lo, f_hi = _reml_score(b, v, lo), _reml_score(b, v, hi)
        if f_lo > 0.0 > f_hi:
            return brentq(lambda t: _reml_score(b, v, t), lo, hi, rtol=1e-15)
        if lo == 0.0 and f_lo <= 0.0:
            return tau2
        step *= 4.0
    return tau2


def _fisher_scoring(b: np.ndarray, v: np.ndarray, start: float) -> float:
    """The local REML maximum reached from ``start`` (steps as in :func:`between_variance`)."""
    scale = float(np.median(v))
    tau2, ll = start, float(_reml_loglik(b, v, start))
    for _ in range(_REML_MAX_ITER):
        w = 1.0 / (v + tau2)
        s1, s2, s3 = w.sum(), np.sum(w**2), np.sum(w**3)
        mu = np.sum(w * b) / s1
        score = 0.5 * (np.sum(w**2 * (b - mu) ** 2) - (s1 - s2 / s1))
        info = 0.5 * (s2 - 2.0 * s3 / s1 + (s2 / s1) ** 2)
        step = float(score / info) if info > 0.0 else 0.0
        for _ in range(60):
            new = max(0.0, tau2 + step)
            new_ll = float(_reml_loglik(b, v, new))
            if new_ll >= ll or abs(new - tau2) <= _REML_RTOL * (tau2 + scale):
                break
            step /= 2.0
        if new_ll < ll:  # no step up the likelihood is left: a maximum to rounding
            return tau2
        moved = abs(new - tau2)
        tau2, ll = new, new_ll
        if moved <= _REML_RTOL * (tau2 + scale):
            return tau2
    return tau2


def shrink(
    estimates: ArrayIn,
    ses: ArrayIn,
    method: Literal["reml", "dl"] = "reml",
) -> Shrinkage:
    """Empirical-Bayes (normal–normal) estimates of each slice's effect.

    Model: slice ``k``'s true effect ``theta_k ~ N(mu, tau^2)`` and ``b_k | theta_k ~
    N(theta_k, s_k^2)``. With ``tau^2`` from :func:`between_variance` (REML by default: DL
    is a one-step moment estimate and less efficient when the ``s_k`` differ), the
    random-effects mean ``mu = sum w b / sum w``, ``w = 1 / (tau^2 + s^2)``, has
    ``Var(mu) = 1 / sum w``, and with ``B_k = s_k^2 / (tau^2 + s_k^2)``

        theta_k | data  has mean  mu + (1 - B_k) (b_k - mu)
                        and variance  (1 - B_k) s_k^2 + B_k^2 Var(mu).

    The variance is exact given ``tau^2`` under a flat prior on ``mu`` (the second term is
    the uncertainty in ``mu``); the uncertainty in ``tau^2`` is not included, so the
    ``sds`` are too small when ``tau^2`` is poorly determined (Morris 1983, *JASA* 78):
    ``bench/slice_discovery.py`` measures the 95 % intervals ``estimate -/+ 1.96 sd`` of
    five device slices covering 80 % of true effects when their spread is about a large
    slice's se, 86-94 % for larger spreads and 96 % for none. Use the shrunken estimates
    to rank and display slices, and the raw intervals (or :func:`slice_vs_complement`
    with :func:`discover`) for claims. With ``tau^2 = 0`` every slice gets ``mu`` and sd
    ``se(mu)``; noisy slices move most. Fewer than two usable slices: nothing to borrow
    from, so ``tau2``/``mu`` are NaN and the used slices keep their raw estimates and
    standard errors (``shrinkage`` 0).
    """
    b, s, used = _arrays(estimates, ses)
    tau2 = between_variance(b, s, method)
    if math.isnan(tau2):
        keep = np.where(used, b, NAN), np.where(used, s, NAN)
        return Shrinkage(method, NAN, NAN, NAN, keep[0], keep[1], np.where(used, 0.0, NAN), used)
    v = s[used] ** 2
    w = 1.0 / (tau2 + v)
    mu = float(np.sum(w * b[used]) / w.sum())
    var_mu = 1.0 / float(w.sum())
    factor = v / (tau2 + v)
    estimates_out, sds, shrinkage_out = (np.full(b.shape, NAN) for _ in range(3))
    estimates_out[used] = mu + (1.0 - factor) * (b[used] - mu)
    sds[used] = np.sqrt((1.0 - factor) * v + factor**2 * var_mu)
    shrinkage_out[used] = factor
    return Shrinkage(method, tau2, mu, math.sqrt(var_mu), estimates_out, sds, shrinkage_out, used)
