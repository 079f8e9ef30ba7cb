"""Coverage of 95% intervals for two proportions: absolute difference and relative lift.

    python bench/proportion_coverage.py [--reps 2000 --seed 20240612]

For each true (control rate, relative lift, units per arm) it reports, per method, the
coverage of the interval among the draws where the method reports one, and (for the
relative lift) how often the interval is suppressed. Rare rates (0.1%-0.5%) are computed
EXACTLY by summing binomial probabilities over every (x_c, x_t) pair with non-negligible
mass (>= 1 - 1e-7 of it); ordinary rates (5%-50%) by Monte Carlo with ``--reps`` draws
(Monte-Carlo s.e. ~0.5 points at 95%). At lift 0 it also prints the size (rejection rate
at alpha = 0.05) of each test.

Methods. Difference: ``wald`` (unpooled normal, the z-test's interval), ``score``
(Miettinen–Nurminen, xpkit.stats.proportions), ``newc`` (Newcombe's hybrid Wilson score),
``a-c`` (Agresti–Caffo, +1 success and failure per arm). Relative lift: ``delta``
(xpkit.stats.lift.relative_lift on the Wald variances, suppressed when the control rate
is within z standard errors of 0), ``score`` (MN score interval for the ratio, suppressed
only when x_c = 0), ``katz`` (log risk ratio, needs x_c, x_t > 0), ``logadj`` (log risk
ratio with 0.5 added to every cell). ``used`` is what ``proportion_test`` reports.
Tests: ``wald`` z, ``score`` (pooled, N/(N-1)), ``fisher`` (scipy's exact conditional).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import stats

from xpkit.moments import Moments
from xpkit.stats.lift import relative_lift
from xpkit.stats.means import proportion_test
from xpkit.stats.proportions import score_test

Z = float(stats.norm.isf(0.025))
NAN = float("nan")
Interval = tuple[float, float]


def wilson(x: int, n: int) -> Interval:
    p = x / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return centre - half, centre + half


def diff_methods(xc: int, nc: int, xt: int, nt: int, sc: object) -> dict[str, Interval]:
    pc, pt = xc / nc, xt / nt
    d = pt - pc
    se = math.sqrt(pc * (1 - pc) / nc + pt * (1 - pt) / nt)
    lc, uc = wilson(xc, nc)
    lt, ut = wilson(xt, nt)
    newc = (
        d - math.sqrt((pt - lt) ** 2 + (uc - pc) ** 2),
        d + math.sqrt((ut - pt) ** 2 + (pc - lc) ** 2),
    )
    ac_c, ac_t = (xc + 1) / (nc + 2), (xt + 1) / (nt + 2)
    ac_se = math.sqrt(ac_c * (1 - ac_c) / (nc + 2) + ac_t * (1 - ac_t) / (nt + 2))
    ac_d = ac_t - ac_c
    return {
        "wald": (d - Z * se, d + Z * se) if se > 0 else (NAN, NAN),
        "score": (sc.diff_low, sc.diff_high),  # type: ignore[attr-defined]
        "newc": newc,
        "a-c": (ac_d - Z * ac_se, ac_d + Z * ac_se),
    }


def rel_methods(xc: int, nc: int, xt: int, nt: int, sc: object) -> dict[str, Interval]:
    pc, pt = xc / nc, xt / nt
    out: dict[str, Interval] = {}
    rel = relative_lift(pc, pt, pc * (1 - pc) / nc, pt * (1 - pt) / nt, 0.0, 0.05)
    ok = rel is not None and math.isfinite(rel.ci_low)
    out["delta"] = (rel.ci_low, rel.ci_high) if ok else (NAN, NAN)  # type: ignore[union-attr]
    lo, hi = sc.ratio_low, sc.ratio_high  # type: ignore[attr-defined]
    out["score"] = (lo - 1, hi - 1) if math.isfinite(hi) else (NAN, NAN)
    if xc > 0 and xt > 0:
        s = math.sqrt(1 / xt - 1 / nt + 1 / xc - 1 / nc)
        lr = math.log(pt / pc)
        out["katz"] = (math.exp(lr - Z * s) - 1, math.exp(lr + Z * s) - 1)
    else:
        out["katz"] = (NAN, NAN)
    a, b = xt + 0.5, xc + 0.5
    s = math.sqrt(1 / a - 1 / (nt + 0.5) + 1 / b - 1 / (nc + 0.5))
    lr = math.log((a / (nt + 0.5)) / (b / (nc + 0.5)))
    out["logadj"] = (math.exp(lr - Z * s) - 1, math.exp(lr + Z * s) - 1)
    return out


def used(xc: int, nc: int, xt: int, nt: int) -> tuple[Interval, Interval, float, str]:
    def moments(x: int, n: int) -> Moments:
        p = x / n
        return Moments(n=n, columns=("value",), mean=np.array([p]), comoment=[[n * p * (1 - p)]])

    eff = proportion_test(moments(xc, nc), moments(xt, nt))
    rel = (
        (eff.rel_ci_low, eff.rel_ci_high)
        if eff.rel_ci_low is not None and eff.rel_ci_high is not None
        else (NAN, NAN)
    )
    return (eff.abs_ci_low, eff.abs_ci_high), rel, eff.p_value, eff.method


def cells(pc: float, pt: float, n: int, reps: int, rng: np.random.Generator, exact: bool):
    """(x_c, x_t, weight) triples: exact binomial mass or Monte-Carlo frequencies."""
    if exact:
        xs_c = np.arange(
            int(stats.binom.ppf(2.5e-8, n, pc)), int(stats.binom.isf(2.5e-8, n, pc)) + 1
        )
        xs_t = np.arange(
            int(stats.binom.ppf(2.5e-8, n, pt)), int(stats.binom.isf(2.5e-8, n, pt)) + 1
        )
        wc, wt = stats.binom.pmf(xs_c, n, pc), stats.binom.pmf(xs_t, n, pt)
        for i, xc in enumerate(xs_c):
            for j, xt in enumerate(xs_t):
                yield int(xc), int(xt), float(wc[i] * wt[j])
    else:
        pairs = np.column_stack([rng.binomial(n, pc, reps), rng.binomial(n, pt, reps)])
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
        for (xc, xt), c in zip(uniq.tolist(), counts.tolist(), strict=True):
            yield xc, xt, c / reps


def run(pc: float, lift: float, n: int, reps: int, rng: np.random.Generator) -> dict[str, object]:
    pt = pc * (1 + lift)
    exact = pc < 0.01
    d_true, r_true = pt - pc, lift
    acc: dict[str, list[float]] = {}

    def add(key: str, interval: Interval, truth: float, w: float) -> None:
        slot = acc.setdefault(key, [0.0, 0.0])  # [mass reported, mass covered]
        lo, hi = interval
        if math.isfinite(lo) and math.isfinite(hi):
            slot[0] += w
            slot[1] += w * (lo <= truth <= hi)

    rejections: dict[str, float] = {}
    methods_used: set[str] = set()
    for xc, xt, w in cells(pc, pt, n, reps, rng, exact):
        sc = score_test(xc, n, xt, n)
        for k, iv in diff_methods(xc, n, xt, n, sc).items():
            add("d:" + k, iv, d_true, w)
        for k, iv in rel_methods(xc, n, xt, n, sc).items():
            add("r:" + k, iv, r_true, w)
        d_used, r_used, p_used, method = used(xc, n, xt, n)
        methods_used.add(method)
        add("d:used", d_used, d_true, w)
        add("r:used", r_used, r_true, w)
        if lift == 0.0:
            pcc, ptt = xc / n, xt / n
            se = math.sqrt(pcc * (1 - pcc) / n + ptt * (1 - ptt) / n)
            p_wald = 2 * stats.norm.sf(abs(ptt - pcc) / se) if se > 0 else 1.0
            p_fisher = stats.fisher_exact([[xt, n - xt], [xc, n - xc]]).pvalue
            for k, p in (
                ("wald", p_wald),
                ("score", sc.p_value),
                ("fisher", p_fisher),
                ("used", p_used),
            ):
                rejections[k] = rejections.get(k, 0.0) + w * (p < 0.05)
    return {"acc": acc, "rej": rejections, "used": methods_used, "exact": exact}


DIFF = ["wald", "score", "newc", "a-c", "used"]
REL = ["delta", "score", "katz", "logadj", "used"]


def fmt(v: float) -> str:
    return f"{v:5.3f}" if math.isfinite(v) else "  -  "


def coverage(acc: dict[str, list[float]], key: str) -> float:
    reported, covered = acc[key]
    return covered / reported if reported > 0 else NAN


def suppressed(acc: dict[str, list[float]], key: str) -> float:
    return max(0.0, 1.0 - acc[key][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20240612)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    grid = [
        (pc, lift, n)
        for pc in (0.001, 0.002, 0.005)
        for n in (1000, 5000, 10000, 20000)
        for lift in (0.0, 0.5)
    ] + [(pc, lift, n) for pc in (0.05, 0.2, 0.5) for n in (1000, 20000) for lift in (0.0, 0.1)]
    print("Coverage of the 95% interval where reported (E = exact, M = Monte Carlo);")
    print("rel supp = share of draws with no relative interval; size = P(p < 0.05) at lift 0")
    head = (
        f"{'p_c':>6} {'lift':>5} {'n/arm':>6} {'E[x_c]':>7} | "
        + " ".join(f"{m:>5}" for m in DIFF)
        + " | "
        + " ".join(f"{m:>6}" for m in REL)
        + " | supp: "
        + " ".join(f"{m:>5}" for m in REL)
        + " | size: wald score fisher used | used method"
    )
    print(head)
    print("-" * len(head))
    for pc, lift, n in grid:
        res = run(pc, lift, n, args.reps, rng)
        acc, rej = res["acc"], res["rej"]  # type: ignore[assignment]

        size = (
            " ".join(fmt(rej[k]) for k in ("wald", "score", "fisher", "used"))  # type: ignore[index]
            if lift == 0.0
            else " ".join(["  -  "] * 4)
        )
        print(
            f"{pc:6.3f} {lift:5.2f} {n:6d} {n * pc:7.1f} {'E' if res['exact'] else 'M'}| "
            + " ".join(fmt(coverage(acc, "d:" + m)) for m in DIFF)
            + " | "
            + " ".join(f"{fmt(coverage(acc, 'r:' + m)):>6}" for m in REL)
            + " |       "
            + " ".join(fmt(suppressed(acc, "r:" + m)) for m in REL)
            + " |       "
            + size
            + " | "
            + ",".join(sorted(res["used"]))  # type: ignore[arg-type]
        )
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
