"""Coverage of 95% intervals for the difference of quantiles, from compressed histograms.

    python bench/quantile_coverage.py [--sims 300 --boot-sims 80 --seed 20240901]

Every simulated experiment draws raw per-unit (or per-event) values, bins them exactly as
the SQL would (xpkit.stats.quantile_bins) and runs the estimators of
xpkit.stats.quantiles on the histograms. Coverage is the share of experiments whose
interval holds the true population difference; ``+/-`` is one Monte-Carlo standard error.

Unit level (one value per unit, n units per arm): ``lognormal`` (mu 0, sigma 1),
``pareto`` (x_m 1, alpha 2: infinite variance) and ``t3`` (Student t, 3 df: negative
values, a median near 0). Effect scenarios scale the treatment by 1.03 (lognormal,
pareto) or shift it by +0.1 (t3). Methods: ``woodruff`` (order-statistic interval per
arm) on every experiment, ``boot`` (Poisson bootstrap of the histogram, 1000 replicates)
on the first ``--boot-sims`` experiments.

Event level (latencies, units as clusters): a unit has 1 + Poisson(exp(1.2 + a_u)) events
(mean ~6.5, a long tail of heavy units), its own log-level l_u ~ N(0, 0.6^2), correlated
-0.5 with a_u (heavy units are faster), events exp(l_u + N(0, 0.8^2)) * 100 ms. The
effect scenario makes treatment latencies 3% lower. Methods: ``clustered`` (the rank
interval with the units-as-clusters variance of the empirical CDF) and ``naive`` (the
same rank interval treating events as independent, i.e. woodruff on the event histogram).
The true event-level quantile solves E[N_u F_u(t)] / E[N_u] = q (Gauss-Hermite over l_u).

After the tables: one data set of each flavour analysed by a full-data bootstrap on the
raw rows (units resampled; for events, Poisson weights per unit: the cluster bootstrap),
to compare with the histogram-based intervals; and the effect of the bin width eps.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
from scipy import optimize, stats

from xpkit.stats.effect import Effect
from xpkit.stats.quantile_bins import DEFAULT_EPS, EventHistogram, Histogram
from xpkit.stats.quantiles import quantile_bootstrap, quantile_clustered, quantile_woodruff

LEVELS = (0.5, 0.9, 0.95)
Draw = Callable[[np.random.Generator, int, bool], np.ndarray]

UNIT: dict[str, tuple[Draw, Callable[[float], float], Callable[[float], float]]] = {
    # name: (draw(rng, n, treated), control's true quantile, treatment's true quantile)
    "lognormal": (
        lambda rng, n, t: rng.lognormal(0.0, 1.0, n) * (1.03 if t else 1.0),
        lambda q: math.exp(stats.norm.ppf(q)),
        lambda q: 1.03 * math.exp(stats.norm.ppf(q)),
    ),
    "pareto": (
        lambda rng, n, t: (rng.pareto(2.0, n) + 1.0) * (1.03 if t else 1.0),
        lambda q: (1.0 - q) ** -0.5,
        lambda q: 1.03 * (1.0 - q) ** -0.5,
    ),
    "t3": (
        lambda rng, n, t: rng.standard_t(3, n) + (0.1 if t else 0.0),
        lambda q: float(stats.t.ppf(q, 3)),
        lambda q: float(stats.t.ppf(q, 3)) + 0.1,
    ),
}


def truths(name: str, q: float, effect: bool) -> tuple[float, float | None]:
    """True difference and relative difference (None where the control quantile is 0)."""
    _, control, treatment = UNIT[name]
    c, t = control(q), treatment(q) if effect else control(q)
    return t - c, (t - c) / abs(c) if abs(c) > 1e-9 else None


UNIT_SD, WITHIN_SD, ACTIVITY, CORR = 0.6, 0.8, 1.2, -0.5


def clustered_events(
    rng: np.random.Generator, n_units: int, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    level = rng.normal(0.0, UNIT_SD, n_units)
    activity = CORR * level / UNIT_SD + math.sqrt(1 - CORR**2) * rng.standard_normal(n_units)
    counts = 1 + rng.poisson(np.exp(ACTIVITY + activity))
    units = np.repeat(np.arange(n_units), counts)
    values = scale * 100.0 * np.exp(level[units] + rng.normal(0.0, WITHIN_SD, units.size))
    return units, values


def event_truth(q: float) -> float:
    """The population event-level q-quantile of :func:`clustered_events` (scale 1)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(100)
    weights = weights / weights.sum()
    level = UNIT_SD * nodes
    # E[N_u | l_u] = 1 + E exp(ACTIVITY + activity | l_u).
    mean_events = 1.0 + np.exp(ACTIVITY + CORR * level / UNIT_SD + (1 - CORR**2) / 2)

    def cdf(t: float) -> float:
        inside = stats.norm.cdf((math.log(t / 100.0) - level) / WITHIN_SD)
        return float(np.sum(weights * mean_events * inside) / np.sum(weights * mean_events))

    return float(optimize.brentq(lambda t: cdf(t) - q, 1e-3, 1e7, xtol=1e-12, rtol=1e-14))


class Tally:
    """Coverage, width and relative-interval coverage of one method in one scenario."""

    def __init__(self) -> None:
        self.hits: list[bool] = []
        self.widths: list[float] = []
        self.rel_hits: list[bool] = []

    def add(self, eff: Effect, truth: float, rel_truth: float | None) -> None:
        ok = math.isfinite(eff.abs_ci_low)
        self.hits.append(ok and eff.abs_ci_low <= truth <= eff.abs_ci_high)
        if ok:
            self.widths.append(eff.abs_ci_high - eff.abs_ci_low)
        if rel_truth is not None and eff.rel_ci_low is not None and eff.rel_ci_high is not None:
            self.rel_hits.append(eff.rel_ci_low <= rel_truth <= eff.rel_ci_high)

    def cell(self) -> str:
        if not self.hits:
            return f"{'-':>22}"
        p, n = float(np.mean(self.hits)), len(self.hits)
        return f"{p:6.3f} +/- {math.sqrt(p * (1 - p) / n):5.3f} ({n:4d})"

    def width(self) -> float:
        return float(np.mean(self.widths)) if self.widths else math.nan

    def rel_cell(self) -> str:
        if not self.rel_hits:
            return f"{'-':>6}"
        return f"{float(np.mean(self.rel_hits)):6.3f}"


def unit_level(args: argparse.Namespace, rng: np.random.Generator) -> None:
    print(f"\nUNIT LEVEL: {args.sims} experiments per row ({args.boot_sims} for boot)")
    head = f"{'data':10} {'n/arm':>6} {'effect':>6} {'q':>5} | {'woodruff cover':>22} {'rel':>6}"
    print(f"{head} | {'boot cover':>22} {'rel':>6} | width W/B")
    for name, (draw, _, _) in UNIT.items():
        for n in args.n:
            for effect in (False, True):
                tallies = {(m, q): Tally() for m in ("w", "b") for q in LEVELS}
                for sim in range(args.sims):
                    hc = Histogram.from_values(draw(rng, n, False), args.eps)
                    ht = Histogram.from_values(draw(rng, n, effect), args.eps)
                    for q in LEVELS:
                        truth, rel = truths(name, q, effect)
                        tallies["w", q].add(quantile_woodruff(hc, ht, q), truth, rel)
                        if sim < args.boot_sims:
                            tallies["b", q].add(quantile_bootstrap(hc, ht, q), truth, rel)
                for q in LEVELS:
                    w, b = tallies["w", q], tallies["b", q]
                    ratio = w.width() / b.width()
                    print(
                        f"{name:10} {n:6d} {'+' if effect else 'A/A':>6} {q:5.2f} | "
                        f"{w.cell()} {w.rel_cell()} | {b.cell()} {b.rel_cell()} | {ratio:6.3f}"
                    )


def event_level(args: argparse.Namespace, rng: np.random.Generator) -> None:
    print(f"\nEVENT LEVEL (units as clusters): {args.sims} experiments per row")
    head = f"{'units/arm':>9} {'events/arm':>10} {'effect':>6} {'q':>5} | {'clustered cover':>22}"
    print(f"{head} {'rel':>6} | {'naive iid cover':>22} | deff  | width C/naive")
    truths = {q: event_truth(q) for q in LEVELS}
    for n in args.n:
        for effect in (False, True):
            scale = 0.97 if effect else 1.0
            tallies = {(m, q): Tally() for m in ("c", "i") for q in LEVELS}
            deffs: dict[float, list[float]] = {q: [] for q in LEVELS}
            events = []
            for _ in range(args.sims):
                hc = EventHistogram.from_events(*clustered_events(rng, n), args.eps)
                ht = EventHistogram.from_events(*clustered_events(rng, n, scale), args.eps)
                events.append(hc.events.sum())
                for q in LEVELS:
                    truth, rel = (scale - 1.0) * truths[q], scale - 1.0
                    eff = quantile_clustered(hc, ht, q)
                    tallies["c", q].add(eff, truth, rel)
                    deffs[q].append(eff.extra["design_effect_control"])
                    naive = quantile_woodruff(hc.as_histogram(), ht.as_histogram(), q)
                    tallies["i", q].add(naive, truth, None)
            for q in LEVELS:
                c, i = tallies["c", q], tallies["i", q]
                print(
                    f"{n:9d} {np.mean(events):10.0f} {'-3%' if effect else 'A/A':>6} {q:5.2f} | "
                    f"{c.cell()} {c.rel_cell()} | {i.cell()} | {np.mean(deffs[q]):5.2f} | "
                    f"{c.width() / i.width():6.3f}"
                )


def raw_bootstrap_comparison(args: argparse.Namespace, rng: np.random.Generator) -> None:
    """One data set per flavour: histogram intervals against a bootstrap of the raw rows."""
    replicates = args.raw_replicates
    n = max(args.n)
    print(f"\nFULL-DATA BOOTSTRAP ON RAW ROWS ({replicates} replicates), one data set, n = {n}")
    print(
        f"{'flavour':32} {'q':>5} | {'estimate':>9} {'se hist':>9} {'se raw':>9} {'ratio':>6}"
        f" | {'CI from histograms':>21} | {'raw percentile CI':>21}"
    )
    c, t = rng.lognormal(0.0, 1.0, n), rng.lognormal(0.0, 1.0, n) * 1.03
    hc, ht = Histogram.from_values(c, args.eps), Histogram.from_values(t, args.eps)
    raw = unit_bootstrap(t, replicates, rng) - unit_bootstrap(c, replicates, rng)
    rows = []
    for j, q in enumerate(LEVELS):
        rows.append(("unit lognormal, woodruff", q, quantile_woodruff(hc, ht, q), raw[:, j]))
        rows.append(("unit lognormal, hist bootstrap", q, quantile_bootstrap(hc, ht, q), raw[:, j]))
    arms = [clustered_events(rng, n), clustered_events(rng, n, 0.97)]
    hists = [EventHistogram.from_events(u, v, args.eps) for u, v in arms]
    raw = cluster_bootstrap(*arms[1], replicates, rng) - cluster_bootstrap(
        *arms[0], replicates, rng
    )
    for j, q in enumerate(LEVELS):
        eff = quantile_clustered(hists[0], hists[1], q)
        rows.append(("event clustered vs cluster boot", q, eff, raw[:, j]))
    for label, q, eff, draws in rows:
        se_raw = float(np.std(draws, ddof=1))
        low, high = np.quantile(draws, [0.025, 0.975])
        print(
            f"{label:32} {q:5.2f} | {eff.abs_effect:9.4f} {eff.abs_se:9.4f} {se_raw:9.4f} "
            f"{eff.abs_se / se_raw:6.3f} | {eff.abs_ci_low:9.4f} {eff.abs_ci_high:9.4f}"
            f"   | {low:9.4f} {high:9.4f}"
        )


def unit_bootstrap(values: np.ndarray, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Each level's inverted-CDF quantile of ``replicates`` resamples of the raw values."""
    out = np.empty((replicates, len(LEVELS)))
    for start in range(0, replicates, 250):
        stop = min(start + 250, replicates)
        sample = values[rng.integers(0, values.size, (stop - start, values.size))]
        out[start:stop] = np.quantile(sample, LEVELS, axis=1, method="inverted_cdf").T
    return out


def cluster_bootstrap(
    units: np.ndarray, values: np.ndarray, replicates: int, rng: np.random.Generator
) -> np.ndarray:
    """Each level's event-level quantile under Poisson(1) weights per unit (raw rows)."""
    order = np.argsort(values, kind="stable")
    sorted_values, sorted_units = values[order], units[order]
    out = np.empty((replicates, len(LEVELS)))
    for r in range(replicates):
        weights = rng.poisson(1.0, units.max() + 1).astype(float)[sorted_units]
        cumulative = np.cumsum(weights)
        ranks = np.maximum(np.ceil(np.asarray(LEVELS) * cumulative[-1]), 1.0)
        out[r] = sorted_values[np.searchsorted(cumulative, ranks, side="left")]
    return out


def bin_width(args: argparse.Namespace, rng: np.random.Generator) -> None:
    """Woodruff coverage at the largest n for a coarse and the default bin width."""
    n = max(args.n)
    print(f"\nBIN WIDTH: lognormal, woodruff, n = {n}, effect +3%, {args.sims} experiments")
    print(f"{'eps':>7} {'q':>5} | {'cover':>22} | bin error / se")
    draw = UNIT["lognormal"][0]
    for eps in sorted({0.01, 0.003, DEFAULT_EPS}, reverse=True):
        tallies = {q: Tally() for q in LEVELS}
        ratio: dict[float, list[float]] = {q: [] for q in LEVELS}
        for _ in range(args.sims):
            hc = Histogram.from_values(draw(rng, n, False), eps)
            ht = Histogram.from_values(draw(rng, n, True), eps)
            for q in LEVELS:
                eff = quantile_woodruff(hc, ht, q)
                tallies[q].add(eff, truths("lognormal", q, True)[0], None)
                ratio[q].append(eff.extra["bin_error"] / eff.abs_se)
        for q in LEVELS:
            print(f"{eps:7.3f} {q:5.2f} | {tallies[q].cell()} | {np.mean(ratio[q]):6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sims", type=int, default=300, help="experiments per scenario")
    parser.add_argument("--boot-sims", type=int, default=80, help="of which bootstrapped")
    parser.add_argument("--n", type=int, nargs="+", default=[2000, 10000], help="units per arm")
    parser.add_argument("--eps", type=float, default=DEFAULT_EPS, help="bin relative error")
    parser.add_argument("--raw-replicates", type=int, default=2000, help="raw-row bootstrap")
    parser.add_argument("--seed", type=int, default=20240901)
    parser.add_argument("--only", choices=["unit", "event", "raw", "bins"], nargs="*", default=None)
    args = parser.parse_args()
    args.boot_sims = min(args.boot_sims, args.sims)
    rng = np.random.default_rng(args.seed)
    start = time.process_time()
    parts = {"unit": unit_level, "event": event_level, "raw": raw_bootstrap_comparison}
    parts["bins"] = bin_width
    for name, part in parts.items():
        if args.only is None or name in args.only:
            part(args, rng)
    print(f"\nCPU time {time.process_time() - start:.0f} s")


if __name__ == "__main__":
    main()
