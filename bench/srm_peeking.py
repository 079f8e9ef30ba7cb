"""What checking the SRM gate on every daily run costs, and what the always-valid test buys.

xpkit re-runs the sample-ratio-mismatch check every day. This simulates 28 daily runs of
an experiment's cumulative assignment counts and prints, for each gate:

* under a HEALTHY split (the configured weights are the true ones): the false-alarm rate,
  i.e. the share of experiments flagged on at least one of the 28 days, with its
  Monte-Carlo standard error;
* under a real mismatch (51/49 and 52/48 against a configured 50/50): the share flagged
  by day 28 and the mean first day flagged.

Gates: the chi-square ``srm_test`` read every day at p < 0.001 (xpkit's gate) and at
p < 0.05, and the always-valid ``sequential_srm_test`` (Dirichlet-multinomial mixture,
default prior concentration) read every day at the same thresholds. Daily traffic is
Poisson around the stated mean, split multinomially.

    python bench/srm_peeking.py [--sims 4000 --seed 20240601]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np

from xpkit.stats.srm import sequential_srm_test, srm_test

THRESHOLDS = (0.001, 0.05)


@dataclass(frozen=True)
class Scenario:
    label: str
    weights: dict[str, float]  # configured split
    truth: tuple[float, ...]  # true assignment probabilities, in the order of weights
    units_per_day: int


def simulate(scenario: Scenario, sims: int, days: int, rng: np.random.Generator) -> np.ndarray:
    """Cumulative counts, shape (sims, days, variants)."""
    totals = rng.poisson(scenario.units_per_day, (sims, days))
    daily = rng.multinomial(totals, scenario.truth)
    return np.cumsum(daily, axis=1)


def p_value_paths(scenario: Scenario, cumulative: np.ndarray) -> dict[str, np.ndarray]:
    """Per-experiment, per-day p-values (sims x days) of the daily chi-square and the
    always-valid test, each computed by xpkit's own function on the counts so far."""
    names = list(scenario.weights)
    sims, days, _ = cumulative.shape
    chi2 = np.empty((sims, days))
    seq = np.empty((sims, days))
    for i in range(sims):
        seq[i] = sequential_srm_test(cumulative[i], scenario.weights).p_values
        for d in range(days):
            observed = dict(zip(names, cumulative[i, d].tolist(), strict=True))
            chi2[i, d] = srm_test(observed, scenario.weights).p_value
    return {"chi-square": chi2, "sequential": seq}


def first_flag_day(p: np.ndarray, threshold: float) -> np.ndarray:
    """1-based first day with p < threshold, 0 when never flagged."""
    hit = p < threshold
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=4000, help="experiments per scenario")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--days", type=int, default=28)
    args = parser.parse_args()
    started = time.perf_counter()

    half = {"control": 0.5, "treatment": 0.5}
    three = {"control": 0.34, "treatment_a": 0.33, "treatment_b": 0.33}
    healthy = [
        Scenario("50/50, 300 units/day", half, (0.5, 0.5), 300),
        Scenario("50/50, 3000 units/day", half, (0.5, 0.5), 3000),
        Scenario("34/33/33, 1000 units/day", three, (0.34, 0.33, 0.33), 1000),
    ]
    mismatched = [
        Scenario(f"{p:.0%}/{1 - p:.0%} vs 50/50, {n} units/day", half, (p, 1 - p), n)
        for p in (0.51, 0.52)
        for n in (300, 1000, 3000)
    ]
    rngs = [
        np.random.default_rng(s)
        for s in np.random.SeedSequence(args.seed).spawn(len(healthy) + len(mismatched))
    ]
    gates = [(test, t) for test in ("chi-square", "sequential") for t in THRESHOLDS]

    print(
        f"{args.sims} experiments per scenario, {args.days} daily runs, Poisson daily traffic; "
        f"seed {args.seed}\n"
    )
    print("HEALTHY split -- share of experiments flagged on at least one day")
    header = f"{'scenario':<28}" + "".join(f"{f'{g} p<{t:g}':>24}" for g, t in gates)
    print(header)
    print("-" * len(header))
    for scenario, rng in zip(healthy, rngs, strict=False):
        paths = p_value_paths(scenario, simulate(scenario, args.sims, args.days, rng))
        cells = [_rate(np.mean(first_flag_day(paths[g], t) > 0), args.sims) for g, t in gates]
        print(f"{scenario.label:<28}" + "".join(f"{c:>24}" for c in cells))

    print("\nSRM present -- share flagged by day 28 / mean first day flagged (flagged only)")
    header = f"{'scenario':<34}" + "".join(f"{f'{g} p<{t:g}':>24}" for g, t in gates)
    print(header)
    print("-" * len(header))
    for scenario, rng in zip(mismatched, rngs[len(healthy) :], strict=True):
        paths = p_value_paths(scenario, simulate(scenario, args.sims, args.days, rng))
        cells = []
        for g, t in gates:
            day = first_flag_day(paths[g], t)
            flagged = day[day > 0]
            mean_day = f"{flagged.mean():5.1f}" if flagged.size else "    -"
            cells.append(f"{np.mean(day > 0):.3f} / {mean_day}")
        print(f"{scenario.label:<34}" + "".join(f"{c:>24}" for c in cells))
    print(
        f"\n(+/- is one Monte-Carlo standard error; chi-square false-alarm rates on HEALTHY"
        f" splits are the cost of peeking; {time.perf_counter() - started:.0f} s)"
    )


def _rate(p: float, n: int) -> str:
    return f"{p:.4f} +/- {math.sqrt(p * (1 - p) / n):.4f}"


if __name__ == "__main__":
    main()
