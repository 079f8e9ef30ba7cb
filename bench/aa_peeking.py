"""What daily peeking costs, and what each stopping rule buys back.

Simulates many experiments in which units arrive every day for four weeks and the analyst
looks every day, then prints, for each stopping rule:

* under A/A (no effect): the false-positive rate -- the share of experiments that ever
  declare a difference -- with its Monte-Carlo standard error;
* under a real effect sized for 80 % power at the fixed 28-day horizon: the power and the
  average day the experiment stops (experiments that never reject run to day 28).

Rules: the fixed-horizon t-test read once at day 28 (the reference); the same test read
every day, stopping at the first p < alpha (naive peeking); the mSPRT and the asymptotic
confidence sequence from :mod:`xpkit.stats.sequential`; Lan-DeMets group-sequential tests
from :mod:`xpkit.stats.group_sequential` with O'Brien-Fleming-type and Pocock-type
spending, pre-registered as 28 daily looks or as 4 weekly looks.

Per-unit data are simulated and reduced to per-arm sums and sums of squares per day, as
the SQL layer would, so every look uses the plug-in variance like a real analysis.

    python bench/aa_peeking.py [--sims 2000 --seed 20240601]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from xpkit.stats.group_sequential import inflation_factor, spending_boundaries
from xpkit.stats.power import minimum_detectable_effect, power_at
from xpkit.stats.sequential import confidence_sequence, msprt, tau_from_variance

BASELINE_MEAN = 10.0
UNIT_SD = 4.0


@dataclass(frozen=True)
class Looks:
    """Per-experiment, per-day estimates (shape: sims x days)."""

    estimate: np.ndarray
    se: np.ndarray
    n_total: np.ndarray  # units in both arms by each day (shape: days)

    @property
    def z(self) -> np.ndarray:
        return self.estimate / self.se


def simulate(
    sims: int, days: int, per_arm_per_day: int, effect: float, rng: np.random.Generator
) -> Looks:
    """Daily cumulative difference in means with a Welch standard error."""
    shape = (sims, days)
    sums = {arm: np.zeros(shape) for arm in ("c", "t")}
    squares = {arm: np.zeros(shape) for arm in ("c", "t")}
    for day in range(days):
        for arm, shift in (("c", 0.0), ("t", effect)):
            # Values are drawn as deviations from the baseline mean -- the shift the SQL
            # layer accumulates around -- so the sums of squares keep their precision.
            x = rng.normal(shift, UNIT_SD, (sims, per_arm_per_day))
            sums[arm][:, day] = x.sum(axis=1)
            squares[arm][:, day] = np.einsum("ij,ij->i", x, x)
    n = per_arm_per_day * np.arange(1, days + 1)
    means, variances = {}, {}
    for arm in ("c", "t"):
        s1 = np.cumsum(sums[arm], axis=1)
        s2 = np.cumsum(squares[arm], axis=1)
        means[arm] = s1 / n
        variances[arm] = (s2 - s1 * means[arm]) / (n - 1)
    se = np.sqrt(variances["c"] / n + variances["t"] / n)
    return Looks(estimate=means["t"] - means["c"], se=se, n_total=2 * n)


def first_rejection(rejected: np.ndarray) -> np.ndarray:
    """1-based day of the first rejection, or 0 when an experiment never rejects."""
    hit = rejected.any(axis=1)
    return np.where(hit, rejected.argmax(axis=1) + 1, 0)


def group_sequential(shape: str, look_days: list[int], days: int, alpha: float) -> Callable:
    bounds = spending_boundaries(np.array(look_days) / days, alpha, shape).z
    columns = np.array(look_days) - 1

    def rule(looks: Looks) -> np.ndarray:
        rejected = np.zeros(looks.z.shape, dtype=bool)
        rejected[:, columns] = np.abs(looks.z[:, columns]) >= bounds
        return rejected

    return rule


def xpkit_default(days: int, alpha: float, power: float = 0.8) -> Callable:
    """xpkit's default rule: O'Brien-Fleming spending toward the planned maximum sample
    (the fixed-horizon sample for the MDE x the design's inflation), looked at daily, and
    final on the planned last day (the rest of alpha spent there, as the decision layer
    does when the planned duration is reached)."""
    inflation = inflation_factor(np.arange(1, days + 1) / days, alpha, power, "obrien_fleming")
    fractions = np.arange(1, days + 1) / days / inflation
    bounds = spending_boundaries(fractions, alpha, "obrien_fleming", spend_all_at_last=True).z

    def rule(looks: Looks) -> np.ndarray:
        return np.abs(looks.z) >= bounds

    return rule


def build_rules(days: int, planned_total: int, alpha: float) -> dict[str, Callable]:
    tau = tau_from_variance(UNIT_SD**2, planned_total, alpha=alpha)
    weekly = list(range(7, days + 1, 7))

    def fixed(looks: Looks) -> np.ndarray:
        rejected = np.zeros(looks.z.shape, dtype=bool)
        rejected[:, -1] = 2 * stats.norm.sf(np.abs(looks.z[:, -1])) < alpha
        return rejected

    def naive(looks: Looks) -> np.ndarray:
        return 2 * stats.norm.sf(np.abs(looks.z)) < alpha

    def mixture(looks: Looks) -> np.ndarray:
        return msprt(looks.estimate, looks.se, tau, alpha).rejected

    def cs(t_opt: float) -> Callable:
        def rule(looks: Looks) -> np.ndarray:
            return confidence_sequence(
                looks.estimate, looks.se, looks.n_total, t_opt=t_opt, alpha=alpha
            ).rejected

        return rule

    return {
        "fixed horizon, day 28 only": fixed,
        "xpkit default (OBF to plan)": xpkit_default(days, alpha),
        "naive daily peeking": naive,
        "mSPRT (tau = MDE)": mixture,
        "conf. sequence (t_opt = day 28)": cs(planned_total),
        "conf. sequence (t_opt = day 7)": cs(planned_total / 4),
        "GST O'Brien-Fleming, 28 daily": group_sequential(
            "obrien_fleming", list(range(1, days + 1)), days, alpha
        ),
        "GST Pocock, 28 daily": group_sequential("pocock", list(range(1, days + 1)), days, alpha),
        "GST O'Brien-Fleming, 4 weekly": group_sequential("obrien_fleming", weekly, days, alpha),
        "GST Pocock, 4 weekly": group_sequential("pocock", weekly, days, alpha),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=2000, help="experiments per scenario")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--units-per-day", type=int, default=500, help="new units per arm")
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args()

    started = time.perf_counter()
    planned_total = 2 * args.units_per_day * args.days
    effect = minimum_detectable_effect(planned_total, UNIT_SD**2, alpha=args.alpha, power=0.8)
    rules = build_rules(args.days, planned_total, args.alpha)
    aa_rng, ab_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(args.seed).spawn(2))
    aa = simulate(args.sims, args.days, args.units_per_day, 0.0, aa_rng)
    ab = simulate(args.sims, args.days, args.units_per_day, effect, ab_rng)

    print(
        f"{args.sims} experiments per scenario, {args.days} days, {args.units_per_day} new units"
        f" per arm per day, unit sd {UNIT_SD:g}, daily looks, alpha = {args.alpha:g}"
    )
    print(
        f"effect scenario: +{effect:.4f} ({effect / BASELINE_MEAN:.2%} of a {BASELINE_MEAN:g}"
        f" baseline), planned power at day {args.days}: "
        f"{power_at(effect, planned_total, UNIT_SD**2, alpha=args.alpha):.3f}\n"
    )
    header = (
        f"{'rule':<33}{'A/A false-positive rate':>25}{'power':>18}"
        f"{'mean stop day':>16}{'mean day | rejected':>21}"
    )
    print(header)
    print("-" * len(header))
    powers = {}
    for name, rule in rules.items():
        fp_day = first_rejection(rule(aa))
        fpr = np.mean(fp_day > 0)
        day = first_rejection(rule(ab))
        power = np.mean(day > 0)
        powers[name] = power
        stop = np.where(day > 0, day, args.days)
        rejected_days = day[day > 0]
        print(
            f"{name:<33}{_rate(fpr, args.sims):>25}{_rate(power, args.sims):>18}"
            f"{_mean(stop):>16}{_mean(rejected_days):>21}"
        )
    ratio = powers["xpkit default (OBF to plan)"] / powers["fixed horizon, day 28 only"]
    print(f"\nxpkit default power / fixed-horizon power: {ratio:.3f} (target >= 0.9)")
    print(f"(+/- is one Monte-Carlo standard error; {time.perf_counter() - started:.0f} s)")


def _rate(p: float, n: int) -> str:
    return f"{p:.4f} +/- {math.sqrt(p * (1 - p) / n):.4f}"


def _mean(x: np.ndarray) -> str:
    if x.size < 2:
        return "-"
    return f"{x.mean():5.2f} +/- {x.std(ddof=1) / math.sqrt(x.size):.2f}"


if __name__ == "__main__":
    main()
