"""Slice heterogeneity on per-unit data: false discoveries, power, and shrinkage MSE.

Each simulated experiment has ``--units`` units per arm, each with a device (5 values,
shares 40/25/15/12/8 %) and a country (3 values, 50/30/20 %) drawn independently, and a
skewed metric: lognormal(1, 1) times a device scale 1, 1.5, ..., 3 (device baselines
differ, as they do). Treatment adds an effect per device. Per (device, country) cell and
arm the data are reduced to :class:`~xpkit.moments.Moments`; devices and countries are
unions of cells. The candidates are every device, every country and every device x
country cell (5 + 3 + 15 = 23), each tested against its complement
(:func:`~xpkit.stats.heterogeneity.slice_vs_complement`, Welch on both sides), and the 23
p-values go through :func:`~xpkit.stats.heterogeneity.discover` at once.

(a) No heterogeneity: the same additive effect (+0.5) in every device. Every discovery
    is false, so the FDR equals the family-wise rate. Also Cochran's Q per dimension.
(b) Planted heterogeneity: an effect in tablets only (device 4, 12 % of units). Power to
    discover the tablet slice, and false discoveries among the true nulls -- the country
    slices (the tablet share, hence the effect, is the same in every country; every
    other device and cell truly differs from its complement, which holds the tablets).
(c) Random device effects ``theta_k ~ N(0.5, tau^2)``: summed squared error of the
    shrunken device estimates (:func:`~xpkit.stats.heterogeneity.shrink`, REML and DL)
    over that of the raw Welch estimates (and, for contrast, of giving every device the
    fixed-effect mean: full pooling), the coverage of the true effects by the 95 %
    posterior intervals ``estimate -/+ 1.96 sd`` and by the raw Welch intervals, and the
    mean REML tau^2.

    python bench/slice_discovery.py [--sims 2000 --seed 20240601 --units 20000]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from xpkit.moments import Moments
from xpkit.stats.heterogeneity import (
    discover,
    effect_arrays,
    heterogeneity_test,
    shrink,
    slice_vs_complement,
)
from xpkit.stats.means import welch_test

DEVICES = np.array([0.40, 0.25, 0.15, 0.12, 0.08])
COUNTRIES = np.array([0.5, 0.3, 0.2])
TABLET = 3
ARMS = ("control", "treatment")


def experiment(
    rng: np.random.Generator, units: int, device_effects: np.ndarray
) -> list[list[list[Moments]]]:
    """Moments per arm x device x country."""
    cells = np.outer(DEVICES, COUNTRIES).ravel()
    out = []
    for arm in range(len(ARMS)):
        counts = rng.multinomial(units, cells).reshape(DEVICES.size, COUNTRIES.size)
        values = rng.lognormal(1.0, 1.0, size=units)
        rows, start = [], 0
        for d in range(DEVICES.size):
            row = []
            for n in counts[d]:
                x = (1.0 + 0.5 * d) * values[start : start + n] + arm * device_effects[d]
                start += n
                centred = x - x.mean() if n else x
                row.append(
                    Moments(int(n), ("value",), [x.mean() if n else 0.0], [[centred @ centred]])
                )
            rows.append(row)
        out.append(rows)
    return out


def _union(moments: list[Moments]) -> Moments:
    out = moments[0]
    for m in moments[1:]:
        out = out.merge(m)
    return out


def partitions(arms: list[list[list[Moments]]]) -> dict[str, tuple[list[Moments], ...]]:
    """(control slices, treatment slices) by device, by country and by cell."""
    return {
        "device": tuple([_union(row) for row in arm] for arm in arms),
        "country": tuple(
            [_union([row[j] for row in arm]) for j in range(COUNTRIES.size)] for arm in arms
        ),
        "cell": tuple([m for row in arm for m in row] for arm in arms),
    }


def analyse(arms: list[list[list[Moments]]], alpha: float) -> dict[str, np.ndarray]:
    parts = partitions(arms)
    p = np.concatenate([slice_vs_complement(c, t).p_values for c, t in parts.values()])
    q = [
        heterogeneity_test(*effect_arrays([welch_test(a, b) for a, b in zip(c, t, strict=True)]))
        for key, (c, t) in parts.items()
        if key != "cell"
    ]
    return {
        "bh": discover(p, alpha, "bh").discovered,
        "holm": discover(p, alpha, "holm").discovered,
        "unadjusted": p <= alpha,
        "q": np.array([h.p_value <= alpha for h in q]),
    }


def _rate(p: float, n: int) -> str:
    return f"{p:.4f} +/- {math.sqrt(p * (1 - p) / n):.4f}"


def run(
    sims: int, units: int, effects: np.ndarray, alpha: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    runs = [analyse(experiment(rng, units, effects), alpha) for _ in range(sims)]
    return {key: np.array([r[key] for r in runs]) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=2000, help="experiments per scenario")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--units", type=int, default=20000, help="units per arm")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--planted", type=float, default=1.6, help="tablet-only effect in (b)")
    args = parser.parse_args()
    started = time.perf_counter()
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(args.seed).spawn(3)]
    sims, alpha = args.sims, args.alpha
    print(
        f"{sims} experiments per scenario, {args.units} units per arm; 5 devices "
        f"({', '.join(f'{s:.0%}' for s in DEVICES)}) x 3 countries "
        f"({', '.join(f'{s:.0%}' for s in COUNTRIES)}); lognormal(1, 1) metric x device "
        f"scale 1-3; 23 candidates (slices and cells vs complement); alpha = {alpha:g}\n"
    )

    null = run(sims, args.units, np.full(DEVICES.size, 0.5), alpha, rngs[0])
    print("(a) no heterogeneity (+0.5 in every device): any discovery is false")
    print(f"{'rule':<44}{'family-wise = FDR':>22}")
    for key, name in (("bh", "BH (default)"), ("holm", "Holm"), ("unadjusted", "p <= alpha")):
        print(f"{name:<44}{_rate(null[key].any(axis=1).mean(), sims):>22}")
    for j, dim in enumerate(("device", "country")):
        print(f"{'Cochran Q rejects, ' + dim:<44}{_rate(null['q'][:, j].mean(), sims):>22}")

    effects = np.zeros(DEVICES.size)
    effects[TABLET] = args.planted
    baseline = (1.0 + 0.5 * TABLET) * math.exp(1.5)
    alt = run(sims, args.units, effects, alpha, rngs[1])
    countries = slice(DEVICES.size, DEVICES.size + COUNTRIES.size)
    print(
        f"\n(b) effect only in tablets (+{args.planted:g}, {args.planted / baseline:.0%} of "
        "their mean): tablet slice discovered; country slices are the true nulls"
    )
    header = f"{'rule':<14}{'power (tablet)':>22}{'any country found':>22}{'FDR (countries)':>22}"
    print(header)
    for key, name in (("bh", "BH (default)"), ("holm", "Holm"), ("unadjusted", "p <= alpha")):
        found = alt[key]
        false = found[:, countries].sum(axis=1)
        fdp = np.mean(false / np.maximum(found.sum(axis=1), 1))
        power = _rate(found[:, TABLET].mean(), sims)
        country = _rate(found[:, countries].any(axis=1).mean(), sims)
        print(f"{name:<14}{power:>22}{country:>22}{fdp:>22.4f}")
    print(f"Cochran Q rejects, device: {_rate(alt['q'][:, 0].mean(), sims)}")

    print(
        "\n(c) device effects ~ N(0.5, tau^2): squared error of shrunken / raw estimates, "
        "coverage of 95 % posterior intervals"
    )
    header = (
        f"{'tau':>6}{'REML / raw':>12}{'DL / raw':>10}{'FE mean / raw':>15}"
        f"{'cover REML':>12}{'cover raw':>11}{'mean tau2':>11}"
    )
    print(header)
    rng = rngs[2]
    for tau in (0.0, 0.25, 0.5, 1.0, 2.0):
        sse = dict.fromkeys(("raw", "reml", "dl", "pooled"), 0.0)
        cover = dict.fromkeys(("raw", "reml"), 0.0)
        tau2 = 0.0
        for _ in range(sims):
            truth = 0.5 + tau * rng.standard_normal(DEVICES.size)
            control, treatment = partitions(experiment(rng, args.units, truth))["device"]
            b, se = effect_arrays(
                [welch_test(c, t) for c, t in zip(control, treatment, strict=True)]
            )
            reml, dl = shrink(b, se), shrink(b, se, method="dl")
            sse["raw"] += np.sum((b - truth) ** 2)
            sse["reml"] += np.sum((reml.estimates - truth) ** 2)
            sse["dl"] += np.sum((dl.estimates - truth) ** 2)
            sse["pooled"] += np.sum((heterogeneity_test(b, se).pooled - truth) ** 2)
            cover["raw"] += np.mean(np.abs(b - truth) <= 1.96 * se)
            cover["reml"] += np.mean(np.abs(reml.estimates - truth) <= 1.96 * reml.sds)
            tau2 += reml.tau2
        ratio = {key: sse[key] / sse["raw"] for key in ("reml", "dl", "pooled")}
        print(
            f"{tau:>6g}{ratio['reml']:>12.3f}{ratio['dl']:>10.3f}{ratio['pooled']:>15.3f}"
            f"{cover['reml'] / sims:>12.3f}{cover['raw'] / sims:>11.3f}{tau2 / sims:>11.3f}"
        )
    print(f"raw se by device (one experiment): {', '.join(f'{s:.2f}' for s in se)}")
    print(f"\n(+/- is one Monte-Carlo standard error; {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
