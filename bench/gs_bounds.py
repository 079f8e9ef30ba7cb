"""Time Lan-DeMets bounds and the design functions for 5, 28 and 100 equally spaced looks.

    python bench/gs_bounds.py [--repeats 7]

Prints, per number of looks and spending shape, the median wall time of
``spending_boundaries`` and of ``inflation_factor`` (which solves for the drift, so runs
the drift recursion a few dozen times) over ``--repeats`` runs, and the last bound.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from xpkit.stats.group_sequential import inflation_factor, spending_boundaries


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"median of {args.repeats} runs, equally spaced looks, alpha = 0.05 two-sided")
    print(f"{'looks':>5}  {'shape':<15}{'bounds':>10}{'inflation':>12}  last z")
    for looks in (5, 28, 100):
        t = np.arange(1, looks + 1) / looks
        for shape in ("obrien_fleming", "pocock"):
            bounds = median_seconds(
                lambda t=t, shape=shape: spending_boundaries(t, 0.05, shape), args.repeats
            )
            factor = median_seconds(
                lambda t=t, shape=shape: inflation_factor(t, 0.05, 0.9, shape), args.repeats
            )
            last = spending_boundaries(t, 0.05, shape).z[-1]
            print(
                f"{looks:>5}  {shape:<15}{bounds * 1e3:>8.1f}ms{factor * 1e3:>10.1f}ms  {last:.6f}"
            )


if __name__ == "__main__":
    main()
