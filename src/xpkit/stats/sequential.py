"""Always-valid inference: p-values and intervals that stay valid under continuous peeking.

Both methods here work on what a fixed-horizon estimator reports at each look -- an
estimate of the effect (treatment - control, absolute or relative) and its standard
error -- so they apply unchanged to means, proportions, delta-method ratios and
CUPED-adjusted effects. Looks are along the last axis of the inputs, in time order; each
look's estimate must be computed on *all* data up to that look (cumulative, nested data),
which is what makes the sequence behave like a Gaussian random walk.

mSPRT (Johari, Pekelis & Walsh, "Always valid inference: continuous monitoring of A/B
tests", arXiv:1512.04922, 2017; Operations Research, 2022). With ``V = se^2`` and a normal
mixing distribution ``theta ~ N(theta0, tau^2)`` over the alternative, the mixture
likelihood ratio of the asymptotically normal estimate is::

    Lambda(theta0) = sqrt(V / (V + tau^2)) * exp(tau^2 (est - theta0)^2 / (2 V (V + tau^2)))

``Lambda`` is a nonnegative martingale under ``H0: theta = theta0``, so by Ville's
inequality ``P(sup_k Lambda_k >= 1/alpha) <= alpha``. The always-valid p-value at look
``k`` is ``min(1, min_{j<=k} 1/Lambda_j)`` and the always-valid interval is the running
intersection of ``{theta0 : Lambda_j(theta0) < 1/alpha}``, whose half-width at one look is::

    sqrt( V (V + tau^2) / tau^2 * (2 ln(1/alpha) + ln((V + tau^2) / V)) )

Asymptotic confidence sequence (Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2), 2021, the
two-sided normal-mixture boundary; Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas,
"Time-uniform central limit theory and asymptotic confidence sequences", arXiv:2103.06476,
2021, which licenses the plug-in variance). With ``t`` units so far and ``a = rho^2 t``::

    est +/- se * sqrt( 2 (a + 1) / a * ln( sqrt(a + 1) / alpha ) )

This is the same normal-mixture boundary as the mSPRT, parameterised on the standardised
scale: with ``se = sigma / sqrt(t)`` it equals the mSPRT interval for ``tau = rho * sigma``.
The practical difference is the clock -- the mSPRT counts information in ``1/se^2``, the
confidence sequence in units -- and the tuning: ``rho`` is chosen to make the boundary
tightest at a chosen sample size ``t_opt``::

    rho = sqrt( (-2 ln alpha + ln(1 - 2 ln alpha)) / t_opt )

(Howard et al., 2021; the exact minimiser solves ``a = -2 ln alpha + ln(1 + a)``
and differs from this closed form by <0.01 % in width).

Both guarantees are asymptotic when ``se`` is estimated from the data (plug-in variance):
they hold once each arm has enough units for the CLT, and they assume a constant
treatment effect over time. A running-intersection interval that comes out empty
(``ci_low > ci_high``) is an event of probability at most ``alpha`` under those
assumptions; treat it as evidence that they fail (typically a time-varying effect).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from xpkit.stats.lift import check_alpha
from xpkit.stats.power import minimum_detectable_effect


@dataclass(frozen=True)
class SequentialResult:
    """Per-look always-valid inference; arrays have the shape of the inputs (looks last).

    ``p_values`` never increase and the interval never widens from one look to the next
    (running minimum / running intersection), so the latest look carries all the evidence.
    ``rejected[..., k]`` is ``p_values[..., k] <= alpha``: once true it stays true.

    ``e_values[..., k]`` is the mixture likelihood ratio *at* look ``k``, ``Lambda_k`` (for
    the confidence sequence, its mixture martingale ``M_k``); a look without information
    carries the previous look's value (1 before the first informative look). What is and
    is not an e-value (``E_H0[.] <= 1``):

    - ``Lambda_k`` at a fixed look, and ``Lambda_tau`` at any stopping time ``tau`` -- a
      look chosen using only the data seen so far, e.g. "the first day some decision rule
      fires" -- by optional stopping of a nonnegative martingale with ``Lambda_0 = 1``;
      so is ``Lambda_{tau_i}`` for hypothesis-specific stopping times ``tau_i`` when the
      units are independent over time (each ``Lambda_i`` is then a martingale for the
      data of all hypotheses together). These are what e-BH
      (:func:`xpkit.stats.multiple.e_bh`) may combine across hypotheses: e-BH on them
      controls the FDR at ``alpha`` at that stopping time under any dependence.
    - NOT the running maximum ``max_{j<=k} Lambda_j = 1 / p_values[..., k]``: its
      expectation under ``H0`` grows with the number of looks, and feeding it to e-BH
      voids the guarantee. Ville's inequality makes ``1 / max`` a valid p-value per
      hypothesis (which is what ``p_values`` reports), not an e-value.

    As with the p-values the guarantee is asymptotic under a plug-in variance.
    """

    method: str
    alpha: float
    theta0: float
    tuning: float  # tau for the mSPRT, rho for the confidence sequence
    estimates: np.ndarray
    p_values: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    rejected: np.ndarray
    e_values: np.ndarray

    @property
    def e_value(self) -> np.ndarray | float:
        """The e-value at the latest look, ``e_values[..., -1]`` (a float for 1-D input)."""
        last = self.e_values[..., -1]
        return float(last) if last.ndim == 0 else last

    @property
    def first_rejection(self) -> int | None:
        """Index of the first look whose always-valid p-value is <= alpha (1-D input only)."""
        if self.rejected.ndim != 1:
            raise ValueError("first_rejection is defined for a single sequence of looks")
        hits = np.flatnonzero(self.rejected)
        return int(hits[0]) if hits.size else None


def msprt_log_likelihood_ratio(
    estimate: ArrayLike, se: ArrayLike, tau: float, theta0: float = 0.0
) -> np.ndarray:
    """``ln Lambda`` of the normal-mixture SPRT (Johari et al., 2017) for each look.

    Computed on the log scale because ``Lambda`` overflows float64 for estimates a few
    dozen standard errors from ``theta0``.
    """
    _check_positive("tau", tau)
    est = np.asarray(estimate, dtype=float)
    var = np.asarray(se, dtype=float) ** 2
    total = var + tau**2
    return 0.5 * np.log(var / total) + tau**2 * (est - theta0) ** 2 / (2 * var * total)


def msprt(
    estimates: Sequence[float] | ArrayLike,
    ses: Sequence[float] | ArrayLike,
    tau: float,
    alpha: float = 0.05,
    theta0: float = 0.0,
) -> SequentialResult:
    """Always-valid p-values and intervals from the mSPRT, one entry per look.

    ``tau`` is the standard deviation of the mixing distribution, on the scale of the
    estimates (absolute units for an absolute effect, a fraction for a relative lift);
    see :func:`tau_from_mde` for the default. A look whose standard error is missing,
    zero or not finite carries no information: it repeats the previous look's result.
    """
    check_alpha(alpha)
    raw, est, se, valid = _looks(estimates, ses)
    log_lr = np.where(valid, msprt_log_likelihood_ratio(est, se, tau, theta0), 0.0)
    var = se**2
    with np.errstate(divide="ignore", invalid="ignore"):
        half_width = np.sqrt(
            var * (var + tau**2) / tau**2 * (2 * math.log(1 / alpha) + np.log1p(tau**2 / var))
        )
    return _running(
        "msprt", alpha, theta0, tau, raw, log_lr, np.where(valid, half_width, np.inf), valid
    )


def confidence_sequence(
    estimates: Sequence[float] | ArrayLike,
    ses: Sequence[float] | ArrayLike,
    n_units: Sequence[float] | ArrayLike,
    *,
    rho: float | None = None,
    t_opt: float | None = None,
    alpha: float = 0.05,
    theta0: float = 0.0,
) -> SequentialResult:
    """Asymptotic confidence sequence (normal-mixture boundary) with running intersection.

    ``n_units`` is the sample size behind each look (e.g. total units in both arms). Give
    either ``rho`` directly or ``t_opt``, the sample size -- in the same unit as
    ``n_units`` -- at which the sequence should be tightest; ``rho`` then follows from
    :func:`cs_rho`. A small ``t_opt`` buys narrow early intervals at the price of wider
    late ones; the planned final sample size is the natural default. The p-value reported
    is the always-valid p-value of the same mixture martingale,
    ``M = (1 + a)^(-1/2) exp(a z^2 / (2 (1 + a)))`` with ``z = (est - theta0) / se``.
    """
    check_alpha(alpha)
    if (rho is None) == (t_opt is None):
        raise ValueError("give exactly one of rho or t_opt")
    if rho is None:
        assert t_opt is not None  # exactly one of them was given
        rho = cs_rho(t_opt, alpha)
    _check_positive("rho", rho)
    raw, est, se, valid = _looks(estimates, ses)
    t = np.broadcast_to(np.asarray(n_units, dtype=float), est.shape)
    valid = valid & np.isfinite(t) & (t > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = rho**2 * t
        z = (est - theta0) / se
        log_m = -0.5 * np.log1p(a) + a * z**2 / (2 * (1 + a))
        half_width = se * np.sqrt(2 * (a + 1) / a * (0.5 * np.log1p(a) + math.log(1 / alpha)))
    return _running(
        "confidence_sequence",
        alpha,
        theta0,
        rho,
        raw,
        np.where(valid, log_m, 0.0),
        np.where(valid, half_width, np.inf),
        valid,
    )


def cs_rho(t_opt: float, alpha: float = 0.05) -> float:
    """Mixture scale ``rho`` that makes the two-sided boundary tightest at ``t_opt`` units.

    ``rho = sqrt((-2 ln alpha + ln(1 - 2 ln alpha)) / t_opt)`` (Howard et al., 2021).
    """
    check_alpha(alpha)
    _check_positive("t_opt", t_opt)
    log_term = -2 * math.log(alpha)
    return math.sqrt((log_term + math.log1p(log_term)) / t_opt)


def tau_from_mde(mde: float) -> float:
    """Default mixing scale: ``tau = |MDE|``, the effect size the experiment is powered for.

    Why: for a true effect ``delta`` the expected log mixture likelihood ratio at any fixed
    look, ``E[ln Lambda] = 1/2 ln(V/(V+tau^2)) + tau^2 (delta^2 + V) / (2 V (V+tau^2))``, is
    maximised at ``tau^2 = delta^2`` whatever ``V`` is. Putting the mixture's mass at the
    effects the experiment was sized for therefore makes the test fastest where it matters.
    (With the MDE at 80 % power for the planned horizon, ``tau^2 ~ 7.85 V_planned``, which
    is within 1 % of the confidence sequence tuned at ``t_opt`` = the planned sample size.)
    """
    if not math.isfinite(mde) or mde == 0:
        raise ValueError(f"mde must be finite and non-zero, got {mde}")
    return abs(mde)


def tau_from_variance(
    variance: float,
    n_total: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    allocation: Sequence[float] = (0.5, 0.5),
    variance_reduction: float = 0.0,
) -> float:
    """``tau`` from a pre-period per-unit variance and the planned sample size.

    The MDE of the planned design (:func:`xpkit.stats.power.minimum_detectable_effect`)
    on the absolute scale, passed through :func:`tau_from_mde`. For a relative-lift
    analysis divide the result by ``|baseline mean|``.
    """
    return tau_from_mde(
        minimum_detectable_effect(
            n_total,
            variance,
            alpha=alpha,
            power=power,
            allocation=allocation,
            variance_reduction=variance_reduction,
        )
    )


# -- helpers ---------------------------------------------------------------------------
def _looks(
    estimates: ArrayLike, ses: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(raw estimates, estimates and ses with placeholders at invalid looks, valid mask)."""
    est, se = np.broadcast_arrays(np.asarray(estimates, dtype=float), np.asarray(ses, dtype=float))
    if est.ndim == 0:
        est, se = est.reshape(1), se.reshape(1)
    valid = np.isfinite(est) & np.isfinite(se) & (se > 0)
    # Placeholders keep the arithmetic warning-free; invalid looks are masked out after.
    return est.copy(), np.where(valid, est, 0.0), np.where(valid, se, 1.0), valid


def _running(
    method: str,
    alpha: float,
    theta0: float,
    tuning: float,
    est: np.ndarray,
    log_lr: np.ndarray,
    half_width: np.ndarray,
    valid: np.ndarray | None = None,
) -> SequentialResult:
    # Invalid looks arrive with an infinite half-width, so they never narrow the interval
    # (inf - inf would be nan: the placeholder estimate keeps it finite).
    centre = np.where(np.isfinite(half_width), est, 0.0)
    # Ville's inequality bounds the whole path, so the evidence of any earlier look may be
    # kept: the running minimum of 1/Lambda and the running intersection of the intervals.
    p_look = np.exp(-np.maximum(log_lr, 0.0))
    p_values = np.minimum.accumulate(p_look, axis=-1)
    ci_low = np.maximum.accumulate(centre - half_width, axis=-1)
    ci_high = np.minimum.accumulate(centre + half_width, axis=-1)
    # The e-value is the current likelihood ratio, not its running maximum; a look without
    # information repeats the last informative look's ratio (1 before the first one).
    informative = np.ones(log_lr.shape, dtype=bool) if valid is None else valid
    look = np.arange(log_lr.shape[-1])
    last = np.maximum.accumulate(np.where(informative, look, -1), axis=-1)
    carried = np.take_along_axis(log_lr, np.maximum(last, 0), axis=-1)
    with np.errstate(over="ignore"):
        e_values = np.where(last >= 0, np.exp(carried), 1.0)
    return SequentialResult(
        method=method,
        alpha=alpha,
        theta0=theta0,
        tuning=float(tuning),
        estimates=est,
        p_values=p_values,
        ci_low=ci_low,
        ci_high=ci_high,
        rejected=p_values <= alpha,
        e_values=e_values,
    )


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value}")
