"""Scorecard tables -> text for a terminal.

Order matters: an invalid result's reason comes first and loudly, then the decision, then
the health checks, then the numbers. TOT is always labelled as selected on exposure.
"""

from __future__ import annotations

import math

import pyarrow as pa

from xpkit.config import ALL_SLICES
from xpkit.decide.analysis import POPULATION_NOTES
from xpkit.decide.planning import PowerPlan

_POPULATION_TITLES = {
    "itt": "ITT",
    "tot": "TOT (selection-biased)",
    "cace": "CACE (complier effect)",
}


def _num(x: object, fmt: str = "{:.4g}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return fmt.format(x)


def _pct(x: object) -> str:
    return _num(x, "{:+.2%}")


def _interval(lo: object, hi: object, pct: bool) -> str:
    if lo is None or hi is None:
        return ""
    f = _pct if pct else _num
    return f"[{f(lo)}, {f(hi)}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _is_overall(row: dict) -> bool:
    return row.get("slice_dimension", ALL_SLICES) in (ALL_SLICES, None)


def render_scorecard(scorecard: pa.Table, checks: pa.Table | None = None) -> str:
    everything = scorecard.to_pylist()
    rows = [r for r in everything if _is_overall(r)]
    sliced = [r for r in everything if not _is_overall(r)]
    if not rows:
        return _render_empty(checks)
    first = rows[0]
    out: list[str] = []
    title = f"Experiment {first['experiment_id']}  (data as of {first['as_of']}, run {first['run_date']})"
    out += [title, "=" * len(title)]
    if not first["valid"]:
        out += [
            "",
            "!!! INVALID RESULT — DO NOT USE THESE NUMBERS FOR A DECISION !!!",
            f"!!! {first['invalid_reason']}",
        ]
        if first["abs_effect"] is None:
            out.append("!!! Effects are withheld; rerun with --allow-invalid to inspect them.")
        else:
            out.append("!!! Effects are shown because --allow-invalid was given.")
    out.append("")
    seen = set()
    for r in rows:
        if r["variant"] in seen or r["decision"] is None:
            continue
        seen.add(r["variant"])
        out.append(
            f"Decision for {r['variant']} vs {r['control_variant']}: {r['decision'].upper()}"
        )
        out += [f"  - {reason}" for reason in r["decision_reasons"] or []]
    if checks is not None and checks.num_rows:
        out += ["", "Health checks"]
        per_slice = [c for c in checks.to_pylist() if c["name"].startswith("srm_slice:")]
        for c in checks.to_pylist():
            if c in per_slice and c["passed"]:
                continue
            mark = "PASS" if c["passed"] else ("FAIL" if c["gate"] else "WARN")
            out.append(f"  [{mark}] {c['name']}: {c['detail']}")
        if per_slice:
            passed = sum(c["passed"] for c in per_slice)
            out.append(
                f"  [{'PASS' if passed == len(per_slice) else 'WARN'}] srm per slice: "
                f"{passed} of {len(per_slice)} slice values split as configured (a failed "
                "one invalidates that slice's rows only)"
            )
    for population in ("itt", "tot", "cace"):
        prow = [r for r in rows if r["population"] == population]
        if not prow:
            continue
        out += ["", f"{_POPULATION_TITLES[population]} — {POPULATION_NOTES[population]}"]
        header = [
            "metric",
            "role",
            "variant",
            "n ctl/var",
            "mean ctl",
            "mean var",
            "rel lift [CI]",
            "abs effect [CI]",
            "p",
            "p adj",
            "method",
        ]
        table = []
        for r in prow:
            method = r["method"]
            if r["variance_reduction"] is not None:
                method += f" (var -{r['variance_reduction']:.0%})"
            flag = ""
            if r["guardrail_breached"]:
                flag = "  << guardrail breached"
            table.append(
                [
                    r["metric"],
                    r["role"],
                    r["variant"],
                    f"{r['n_control']}/{r['n_variant']}",
                    _num(r["mean_control"]),
                    _num(r["mean_variant"]),
                    f"{_pct(r['rel_lift'])} {_interval(r['rel_ci_low'], r['rel_ci_high'], True)}".strip(),
                    f"{_num(r['abs_effect'])} {_interval(r['abs_ci_low'], r['abs_ci_high'], False)}".strip(),
                    _num(r["p_value"], "{:.3g}"),
                    _num(r["p_value_adjusted"], "{:.3g}"),
                    method + flag,
                ]
            )
        out += ["  " + line for line in _table(header, table)]
    if sliced:
        out += _render_slices(sliced)
    out += [
        "",
        f"xpkit {first['xpkit_version']}, sql sha256 {str(first['sql_sha256'])[:12]}, "
        f"config sha256 {str(first['config_sha256'])[:12]}, rows read {_rows_read(first['rows_read'])}",
    ]
    return "\n".join(out)


def _render_slices(rows: list[dict]) -> list[str]:
    """ITT by slice: per dimension, the heterogeneity verdict per metric, then each value."""
    rows = [r for r in rows if r["population"] == "itt"]
    out = [
        "",
        "Slices (ITT) — for whom? Exploratory: 'p adj' is BH across a dimension's values, "
        "'vs rest' compares a slice with all other units (BH across every slice); "
        "slices never change the decision.",
    ]
    dimensions = list(dict.fromkeys(r["slice_dimension"] for r in rows))
    for dimension in dimensions:
        mine = [r for r in rows if r["slice_dimension"] == dimension]
        out += ["", f"  by {dimension}"]
        verdicts = {}
        for r in mine:
            key = (r["metric"], r["variant"])
            if key in verdicts:
                continue
            p, i2 = r["heterogeneity_p_value"], r["heterogeneity_i2"]
            if p is None:
                verdicts[key] = "no test (fewer than two slices with an estimate)"
            else:
                differs = p < r["alpha"]
                verdicts[key] = (
                    f"{'EFFECTS DIFFER' if differs else 'no evidence the effect differs'} "
                    f"(Q test p = {p:.3g}, I² {_num(i2, '{:.0%}')})"
                )
        for (metric, variant), verdict in verdicts.items():
            out.append(f"    {metric} — {variant}: {verdict}")
        header = ["metric", dimension, "n ctl/var", "rel lift [CI]", "p adj", "vs rest", "shrunk"]
        table = []
        for r in mine:
            flag = "" if r["valid"] else "  << slice SRM"
            found = r["vs_rest_p_value_adjusted"]
            table.append(
                [
                    r["metric"]
                    if len({x["variant"] for x in mine}) == 1
                    else f"{r['metric']} {r['variant']}",
                    str(r["slice_value"]),
                    f"{r['n_control']}/{r['n_variant']}",
                    f"{_pct(r['rel_lift'])} {_interval(r['rel_ci_low'], r['rel_ci_high'], True)}".strip(),
                    _num(r["p_value_adjusted"], "{:.3g}"),
                    _num(found, "{:.3g}")
                    + (" *" if found is not None and found < r["alpha"] else ""),
                    _num(r["shrunk_abs_effect"]) + flag,
                ]
            )
        out += ["    " + line for line in _table(header, table)]
    return out


def _render_empty(checks: pa.Table | None) -> str:
    """A run with no result rows: say which experiment, loudly, and why (failed checks)."""
    found = checks.to_pylist() if checks is not None else []
    name = found[0]["experiment_id"] if found else "(unknown experiment)"
    title = f"Experiment {name}: NO RESULTS"
    out = [title, "=" * len(title), ""]
    failed = [c for c in found if not c["passed"]]
    if failed:
        out.append("!!! Nothing could be compared; the checks that failed:")
        out += [f"!!! {c['name']}: {c['detail']}" for c in failed]
    else:
        out.append("!!! Nothing could be compared: no metric has a result for any variant.")
    return "\n".join(out)


def render_history(history: pa.Table, population: str = "itt") -> str:
    """The effect over time per metric and variant, with the always-valid interval."""
    rows = [r for r in history.to_pylist() if r["population"] == population]
    out = [
        f"Effect over time ({_POPULATION_TITLES.get(population, population)}): "
        "fixed-horizon CI of each day, and the always-valid (mSPRT) interval that stays "
        "valid however often you look"
    ]
    series: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        series.setdefault((r["metric"], r["variant"]), []).append(r)
    for (metric, variant), looks in series.items():
        verdict = looks[-1].get("trend") or "no trend verdict recorded"
        out += ["", f"  {metric} — {variant} ({verdict})"]
        header = ["as of", "n ctl/var", "abs effect", "CI", "always-valid CI", "always-valid p"]
        table = [
            [
                str(r["analysis_date"]),
                f"{r['n_control']}/{r['n_variant']}",
                _num(r["abs_effect"]),
                _interval(r["abs_ci_low"], r["abs_ci_high"], False),
                _interval(r["always_valid_ci_low"], r["always_valid_ci_high"], False),
                _num(r["always_valid_p_value"], "{:.3g}"),
            ]
            for r in looks
        ]
        out += ["    " + line for line in _table(header, table)]
    return "\n".join(out)


def render_plan(p: PowerPlan) -> str:
    lines = [
        f"Power plan for {p.metric} (alpha {p.alpha:g}, power {p.power:.0%})",
        f"  per-unit variance   {p.variance:.6g} ({p.variance_source})",
        f"  baseline mean       {p.baseline_mean:.6g}",
        f"  CUPED reduction     {p.variance_reduction:.1%} of the variance",
        f"  enrolment           {p.units_per_day:.1f} units per day",
        f"  to detect {p.mde_relative:+.2%}:  {p.units_total} units "
        f"({'/'.join(map(str, p.units_per_arm))} per arm), {p.days} days "
        f"(without CUPED: {p.units_total_without_cuped} units)",
        f"  stopping rule       {p.rule}"
        + (
            f": x{p.inflation:.3f} the fixed-horizon {p.units_total_fixed} units, alpha "
            f"{p.alpha:.3g} per hypothesis"
            if p.inflation != 1.0
            else ""
        ),
    ]
    for d, mde in p.mde_at_days.items():
        lines.append(f"  MDE after {d:>3} days   {mde:.2%}")
    return "\n".join(lines)


def _rows_read(value: dict[str, int] | list[tuple[str, int]] | None) -> str:
    """Rows read per table, from the map column (a list of pairs once read back)."""
    pairs = list(value.items()) if isinstance(value, dict) else (value or [])
    return ", ".join(f"{table} {n:,}" for table, n in pairs)
