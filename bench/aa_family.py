"""Multiplicity across arms x metrics when every (arm, metric) runs its own always-valid test.

An A/A/A/A experiment: a control and three treatment arms with no effect, three metrics per
unit with correlation ``rho`` (normal outcomes), 100-1000 new units per arm per day for 28
days, and a look every day. Each of the 9 (arm vs control, metric) hypotheses gets an mSPRT
(:func:`xpkit.stats.sequential.msprt`) with its mixture tuned to the planned MDE of that
metric (:func:`~xpkit.stats.sequential.tau_from_variance` at the expected 28-day sample).
The three arms share the control, so their estimates are correlated too.

Printed, for each rule, the family-wise false-ship rate -- the share of experiments in
which any (arm, metric) is declared significant at any look:

(i)   each hypothesis on its own: always-valid p <= alpha;
(ii)  e-BH (:func:`xpkit.stats.multiple.e_bh`) at alpha across the 9 hypotheses at each
      look, on the current likelihood ratios ``SequentialResult.e_values``;
(iii) Bonferroni: always-valid p <= alpha / 9;
(iv)  for contrast, e-BH fed the running maximum ``1 / p`` -- not e-values, no guarantee.

Under the global null any rejection is a false discovery, so the family-wise rate of (ii)
is its FDR at the first look at which it fires -- a stopping time -- and Wang & Ramdas'
theorem bounds it by alpha. Then the same experiment with one real effect (one arm, one
metric, at that metric's MDE), and with three (one arm, every metric at its MDE): power
and mean first day for the true hypotheses, and the rate of false ships among the others.

Per-unit data are reduced to per-arm daily sums and within-day sums of squared
deviations, drawn from their exact distributions (the daily sum of ``n`` correlated
normals is normal with covariance ``n Sigma``; each metric's within-day sum of squares is
``sigma^2 chi2_{n-1}``, independent of the sum), and every look uses the plug-in Welch
standard error, as a real analysis would.

    python bench/aa_family.py [--sims 4000 --seed 20240601]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from xpkit.stats.group_sequential import spending_boundaries
from xpkit.stats.multiple import e_bh
from xpkit.stats.power import minimum_detectable_effect
from xpkit.stats.sequential import msprt, tau_from_variance

ARMS = 4  # control + 3 treatments
SDS = np.array([1.0, 4.0, 25.0])  # per-unit sd of each metric
MIN_UNITS, MAX_UNITS = 100, 1000  # new units per arm per day


def simulate(
    sims: int,
    days: int,
    rho: float,
    effects: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-look estimates and Welch ses, shape (sims, arms - 1, metrics, days).

    ``effects`` has shape (arms, metrics): the true mean shift of each arm (row 0 is control).
    """
    metrics = SDS.size
    corr = np.full((metrics, metrics), rho) + (1 - rho) * np.eye(metrics)
    chol = np.linalg.cholesky(corr * np.outer(SDS, SDS))
    n = rng.integers(MIN_UNITS, MAX_UNITS + 1, (sims, ARMS, days)).astype(float)
    # Daily sums: n * effect + sqrt(n) * N(0, Sigma).
    z = rng.standard_normal((sims, ARMS, days, metrics)) @ chol.T
    sums = n[..., None] * effects[None, :, None, :] + np.sqrt(n)[..., None] * z
    within = SDS**2 * rng.chisquare(n[..., None] - 1, (sims, ARMS, days, metrics))
    squares = within + sums**2 / n[..., None]  # sum of x^2 within the day
    big_n = np.cumsum(n, axis=2)[..., None]
    s1 = np.cumsum(sums, axis=2)
    s2 = np.cumsum(squares, axis=2)
    mean = s1 / big_n
    var = (s2 - s1 * mean) / (big_n - 1)
    se2 = var / big_n
    est = mean[:, 1:] - mean[:, :1]
    se = np.sqrt(se2[:, 1:] + se2[:, :1])
    # -> (sims, arm, metric, day)
    return np.moveaxis(est, 3, 2), np.moveaxis(se, 3, 2)


def rules(est: np.ndarray, se: np.ndarray, taus: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
    """Rejections per rule, shape (sims, hypotheses, days), each one monotone in time."""
    sims, arms, metrics, days = est.shape
    p = np.empty(est.shape)
    e = np.empty(est.shape)
    for j, tau in enumerate(taus):
        result = msprt(est[:, :, j, :], se[:, :, j, :], float(tau), alpha)
        p[:, :, j, :] = result.p_values
        e[:, :, j, :] = result.e_values
    m = arms * metrics
    p = p.reshape(sims, m, days)
    e = e.reshape(sims, m, days)
    ebh = np.empty(p.shape, dtype=bool)
    ebh_max = np.empty(p.shape, dtype=bool)
    for i in range(sims):
        for d in range(days):
            ebh[i, :, d] = e_bh(e[i, :, d], alpha)
            ebh_max[i, :, d] = e_bh(1 / p[i, :, d], alpha)
    # xpkit's default rule: O'Brien-Fleming spending at alpha / m per hypothesis over the
    # daily looks (information fraction = day / days; the last day is the final look).
    bounds = spending_boundaries(np.arange(1, days + 1) / days, alpha / m, "obrien_fleming").z
    crossed = np.abs(est / se).reshape(sims, m, days) >= bounds
    gst = np.logical_or.accumulate(crossed, axis=2)
    return {
        "(i) always-valid p <= alpha, each": p <= alpha,
        "(v) group-sequential OBF, alpha/9": gst,
        "(ii) e-BH on current LR, each look": ebh,
        "(iii) Bonferroni p <= alpha/9": p <= alpha / m,
        "(iv) e-BH on running max (invalid)": ebh_max,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=4000, help="experiments per scenario")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--rho", type=float, default=0.5, help="correlation between metrics")
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args()
    started = time.perf_counter()

    # Planned two-arm sample (arm + control) at the expected daily traffic over the horizon.
    planned_total = 2 * args.days * (MIN_UNITS + MAX_UNITS) / 2
    taus = np.array([tau_from_variance(s**2, planned_total, alpha=args.alpha) for s in SDS])
    mdes = np.array(
        [minimum_detectable_effect(planned_total, s**2, alpha=args.alpha, power=0.8) for s in SDS]
    )
    null_rng, alt_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(args.seed).spawn(2)
    )
    metrics = SDS.size
    m = (ARMS - 1) * metrics

    print(
        f"{args.sims} experiments per scenario; control + {ARMS - 1} arms, {metrics} metrics "
        f"(sd {', '.join(f'{s:g}' for s in SDS)}; correlation {args.rho:g}); "
        f"{MIN_UNITS}-{MAX_UNITS} new units per arm per day, {args.days} daily looks; "
        f"alpha = {args.alpha:g}; {m} hypotheses"
    )
    print(
        f"mSPRT tau = planned MDE per metric ({planned_total:,.0f} units per comparison, "
        f"80 % power): {', '.join(f'{t:.4f}' for t in taus)}\n"
    )

    est, se = simulate(args.sims, args.days, args.rho, np.zeros((ARMS, metrics)), null_rng)
    null = rules(est, se, taus, args.alpha)
    print("A/A/A/A -- family-wise false-ship rate (any arm x metric, any look)")
    header = f"{'rule':<38}{'false-ship rate':>20}"
    print(header)
    print("-" * len(header))
    for name, rejected in null.items():
        rate = np.mean(rejected.any(axis=(1, 2)))
        print(f"{name:<38}{_rate(rate, args.sims):>20}")

    scenarios = {
        f"One real effect (arm 1, metric 1, +{mdes[0]:.4f} = its MDE)": [(1, 0)],
        "Three real effects (arm 1, every metric at its MDE)": [(1, 0), (1, 1), (1, 2)],
    }
    for title, true_effects in scenarios.items():
        effects = np.zeros((ARMS, metrics))
        for arm, metric in true_effects:
            effects[arm, metric] = mdes[metric]
        true = np.array([(arm - 1) * metrics + metric for arm, metric in true_effects])
        others = np.setdiff1d(np.arange(m), true)
        est, se = simulate(args.sims, args.days, args.rho, effects, alt_rng)
        print(
            f"\n{title}: power by day {args.days} (share of true effects detected), mean "
            f"first day | detected, false ships among the other {others.size}"
        )
        header = f"{'rule':<38}{'power':>20}{'mean day':>10}{'false-ship rate':>20}"
        print(header)
        print("-" * len(header))
        for name, rejected in rules(est, se, taus, args.alpha).items():
            hit = rejected[:, true, :]
            detected = hit.any(axis=2)
            first = hit.argmax(axis=2)[detected] + 1
            false = np.mean(rejected[:, others, :].any(axis=(1, 2)))
            mean_day = f"{first.mean():.1f}" if first.size else "-"
            power = _rate(detected.mean(), args.sims)  # conservative: hits correlate
            print(f"{name:<38}{power:>20}{mean_day:>10}{_rate(false, args.sims):>20}")
    print(f"\n(+/- is one Monte-Carlo standard error; {time.perf_counter() - started:.0f} s)")


def _rate(p: float, n: int) -> str:
    return f"{p:.4f} +/- {math.sqrt(p * (1 - p) / n):.4f}"


if __name__ == "__main__":
    main()
