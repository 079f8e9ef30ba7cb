"""Scorecard tables -> text for a terminal of a given width.

Order matters: an invalid result's reason comes first and loudly, then the decision, then
the health checks, then the numbers. TOT is always labelled as selected on exposure.

Every line fits :attr:`Style.width`: a table too wide for it is printed as one block per
row (its first columns as a heading, the rest as ``label value`` pairs), and long texts are
wrapped. Colour is used only when :attr:`Style.color` says so (the command line turns it on
for a terminal, never with ``NO_COLOR`` set). By default the output is short: passing
checks on one line each and the history summarised to its latest day per series;
``full=True`` prints every check's detail and every day.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from xpkit.config import ALL_SLICES
from xpkit.decide.notes import POPULATION_NOTES

if TYPE_CHECKING:
    from xpkit.decide.planning import PowerPlan

_POPULATION_TITLES = {
    "itt": "ITT",
    "tot": "TOT (selection-biased)",
    "cace": "CACE (complier effect)",
}
_COLOURS = {"bad": "31;1", "good": "32;1", "warn": "33", "bold": "1", "dim": "2"}


@dataclass(frozen=True)
class Style:
    """How wide the text may be, whether it may be coloured, and how much to print."""

    width: int = 100
    color: bool = False
    full: bool = False

    def paint(self, text: str, kind: str) -> str:
        if not self.color or kind not in _COLOURS:
            return text
        return f"\x1b[{_COLOURS[kind]}m{text}\x1b[0m"

    def wrap(self, text: str, indent: str = "", hanging: str = "    ") -> list[str]:
        return textwrap.wrap(
            text,
            width=max(self.width, 40),
            initial_indent=indent,
            subsequent_indent=indent + hanging,
            break_on_hyphens=False,
        ) or [indent]


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


def _table(header: list[str], rows: list[list[str]], style: Style, indent: str = "") -> list[str]:
    """Aligned columns when they fit the width; else one block per row."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def line(cells: list[str]) -> str:
        return (indent + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))).rstrip()

    if len(indent) + sum(widths) + 2 * (len(widths) - 1) <= style.width:
        return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    # Too wide: the first two columns head each block, the others follow as pairs.
    out: list[str] = []
    for r in rows:
        out.append(style.paint(indent + "  ".join(c for c in r[:2] if c), "bold"))
        pairs = [f"{h} {c}" for h, c in zip(header[2:], r[2:], strict=True) if c and c != "-"]
        out += _pack(pairs, indent + "  ", style.width)
    return out


def _pack(items: list[str], indent: str, width: int) -> list[str]:
    """Items side by side, three spaces apart, a new line where the next would not fit (an
    item is never broken unless it alone is wider than the line)."""
    lines: list[str] = []
    line = ""
    for item in items:
        candidate = f"{line}   {item}" if line else item
        if line and len(indent) + len(candidate) > width:
            lines.append(indent + line)
            line = item
        else:
            line = candidate
    if line:
        lines.append(indent + line)
    out: list[str] = []
    for text in lines:
        out += textwrap.wrap(text, width=max(width, 40), subsequent_indent=indent + "  ") or [text]
    return out


def _is_overall(row: dict) -> bool:
    return row.get("slice_dimension", ALL_SLICES) in (ALL_SLICES, None)


def _decision_kind(decision: str) -> str:
    return {"ship": "good", "no_ship": "bad", "invalid": "bad"}.get(decision, "warn")


def render_scorecard(
    scorecard: pa.Table, checks: pa.Table | None = None, style: Style | None = None
) -> str:
    style = style or Style()
    everything = scorecard.to_pylist()
    rows = [r for r in everything if _is_overall(r)]
    sliced = [r for r in everything if not _is_overall(r)]
    if not rows:
        return _render_empty(checks, style)
    first = rows[0]
    out: list[str] = []
    title = f"Experiment {first['experiment_id']}  (data as of {first['as_of']}, run {first['run_date']})"
    out += [style.paint(title, "bold"), "=" * min(len(title), style.width)]
    if not first["valid"]:
        banner = ["!!! INVALID RESULT — DO NOT USE THESE NUMBERS FOR A DECISION !!!"]
        banner += style.wrap(f"!!! {first['invalid_reason']}", hanging="    ")
        if first["abs_effect"] is None:
            banner.append("!!! Effects are withheld; rerun with --allow-invalid to inspect them.")
        else:
            banner.append("!!! Effects are shown because --allow-invalid was given.")
        out += [""] + [style.paint(b, "bad") for b in banner]
    out.append("")
    seen = set()
    for r in rows:
        if r["variant"] in seen or r["decision"] is None:
            continue
        seen.add(r["variant"])
        verdict = style.paint(r["decision"].upper(), _decision_kind(r["decision"]))
        out.append(f"Decision for {r['variant']} vs {r['control_variant']}: {verdict}")
        for reason in r["decision_reasons"] or []:
            out += style.wrap(f"- {reason}", "  ", "  ")
    if checks is not None and checks.num_rows:
        out += ["", "Health checks"] + _render_checks(checks.to_pylist(), style)
    for population in ("itt", "tot", "cace"):
        prow = [r for r in rows if r["population"] == population]
        if prow:
            out += _render_population(population, prow, style)
    if sliced:
        out += _render_slices(sliced, style)
    out += [""] + style.wrap(
        f"xpkit {first['xpkit_version']}, sql sha256 {str(first['sql_sha256'])[:12]}, "
        f"config sha256 {str(first['config_sha256'])[:12]}, rows read "
        f"{_rows_read(first['rows_read'])}",
        hanging="  ",
    )
    return "\n".join(out)


def render_checks(checks: pa.Table, style: Style | None = None) -> str:
    """A run's health checks alone, as ``render_scorecard`` lists them."""
    style = style or Style()
    rows = checks.to_pylist()
    title = f"Health checks of {rows[0]['experiment_id']}" if rows else "Health checks"
    return "\n".join([title] + (_render_checks(rows, style) if rows else ["  (none)"]))


def _render_checks(checks: list[dict], style: Style) -> list[str]:
    """Failed checks in full; passing ones on one line (every detail with ``full``); the
    per-slice SRM checks summarised unless one failed."""
    out: list[str] = []
    per_slice = [c for c in checks if c["name"].startswith("srm_slice:")]
    for c in checks:
        if c in per_slice and c["passed"] and not style.full:
            continue
        mark = "PASS" if c["passed"] else ("FAIL" if c["gate"] else "WARN")
        kind = "good" if c["passed"] else ("bad" if c["gate"] else "warn")
        text = f"[{mark}] {c['name']}: {c['detail']}"
        lines = style.wrap(text, "  ", "       ")
        if c["passed"] and not style.full and len(lines) > 1:
            lines = [textwrap.shorten(text, width=max(style.width, 40) - 2, placeholder=" …")]
            lines = ["  " + lines[0]]
        lines[0] = lines[0].replace(f"[{mark}]", style.paint(f"[{mark}]", kind), 1)
        out += lines
    if per_slice:
        passed = sum(c["passed"] for c in per_slice)
        out += style.wrap(
            f"[{'PASS' if passed == len(per_slice) else 'WARN'}] srm per slice: {passed} of "
            f"{len(per_slice)} slice values split as configured (a failed one invalidates "
            "that slice's rows only)",
            "  ",
            "       ",
        )
    return out


def _render_population(population: str, prow: list[dict], style: Style) -> list[str]:
    out = [""] + style.wrap(
        f"{_POPULATION_TITLES[population]} — {POPULATION_NOTES[population]}", hanging="  "
    )
    header = [
        "metric",
        "variant",
        "role",
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
        if r["guardrail_breached"]:
            method += "  << guardrail breached"
        name = r["metric"]
        if r.get("quantile_level") is not None:
            name += f" (p{r['quantile_level'] * 100:g})"
        table.append(
            [
                name,
                r["variant"],
                r["role"],
                f"{r['n_control']}/{r['n_variant']}",
                _num(r["mean_control"]),
                _num(r["mean_variant"]),
                f"{_pct(r['rel_lift'])} {_interval(r['rel_ci_low'], r['rel_ci_high'], True)}".strip(),
                f"{_num(r['abs_effect'])} {_interval(r['abs_ci_low'], r['abs_ci_high'], False)}".strip(),
                _num(r["p_value"], "{:.3g}"),
                _num(r["p_value_adjusted"], "{:.3g}"),
                method,
            ]
        )
    return out + _table(header, table, style, "  ")


def _render_slices(rows: list[dict], style: Style) -> list[str]:
    """ITT by slice: per dimension, the heterogeneity verdict per metric, then each value."""
    rows = [r for r in rows if r["population"] == "itt"]
    out = [""] + style.wrap(
        "Slices (ITT) — for whom? Exploratory: 'p adj' is BH across a dimension's values, "
        "'vs rest' compares a slice with all other units (BH across every slice; * below "
        "alpha); slices never change the decision.",
        hanging="  ",
    )
    for dimension in dict.fromkeys(r["slice_dimension"] for r in rows):
        mine = [r for r in rows if r["slice_dimension"] == dimension]
        out += ["", style.paint(f"  by {dimension}", "bold")]
        series: dict[tuple[str, str], list[dict]] = {}
        for r in mine:
            series.setdefault((r["metric"], r["variant"]), []).append(r)
        several = len({variant for _, variant in series}) > 1
        for (metric, variant), values in series.items():
            p, i2 = values[0]["heterogeneity_p_value"], values[0]["heterogeneity_i2"]
            if p is None:
                verdict = "no test (fewer than two slices with an estimate)"
            elif p < values[0]["alpha"]:
                verdict = style.paint(
                    f"EFFECTS DIFFER (Q test p = {p:.3g}, I² {_num(i2, '{:.0%}')})", "warn"
                )
            else:
                verdict = f"no evidence the effect differs (p = {p:.3g})"
            name = f"{metric} {variant}" if several else metric
            out += style.wrap(f"{name}: {verdict}", "    ", "  ")
            header = [dimension, "n ctl/var", "rel lift [CI]", "p adj", "vs rest", "shrunk"]
            table = []
            for r in values:
                found = r["vs_rest_p_value_adjusted"]
                star = " *" if found is not None and found < r["alpha"] else ""
                table.append(
                    [
                        str(r["slice_value"]),
                        f"{r['n_control']}/{r['n_variant']}",
                        f"{_pct(r['rel_lift'])} "
                        f"{_interval(r['rel_ci_low'], r['rel_ci_high'], True)}".strip(),
                        _num(r["p_value_adjusted"], "{:.3g}"),
                        _num(found, "{:.3g}") + star,
                        _num(r["shrunk_abs_effect"]) + ("" if r["valid"] else "  << slice SRM"),
                    ]
                )
            out += _table(header, table, style, "      ")
    return out


def _render_empty(checks: pa.Table | None, style: Style) -> str:
    """A run with no result rows: say which experiment, loudly, and why (failed checks)."""
    found = checks.to_pylist() if checks is not None else []
    name = found[0]["experiment_id"] if found else "(unknown experiment)"
    title = f"Experiment {name}: NO RESULTS"
    out = [style.paint(title, "bad"), "=" * min(len(title), style.width), ""]
    failed = [c for c in found if not c["passed"]]
    if failed:
        out.append("!!! Nothing could be compared; the checks that failed:")
        for c in failed:
            out += style.wrap(f"!!! {c['name']}: {c['detail']}", hanging="    ")
    else:
        out.append("!!! Nothing could be compared: no metric has a result for any variant.")
    return "\n".join(out)


def render_history(history: pa.Table, population: str = "itt", style: Style | None = None) -> str:
    """The effect over time per metric and variant: by default each series' latest day and
    its verdict; ``style.full`` prints every day."""
    style = style or Style()
    rows = [r for r in history.to_pylist() if r["population"] == population]
    out = style.wrap(
        f"Effect over time ({_POPULATION_TITLES.get(population, population)}): fixed-horizon "
        "CI of each day, and the always-valid (mSPRT) interval that stays valid however often "
        "you look" + ("" if style.full else "; the latest day of each series (--full: every day)"),
        hanging="  ",
    )
    series: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        series.setdefault((r["metric"], r["variant"]), []).append(r)
    if not style.full:
        header = [
            "metric",
            "variant",
            "days",
            "as of",
            "abs effect [CI]",
            "always-valid CI",
            "p av",
        ]
        table = [
            [
                metric,
                variant,
                str(len(looks)),
                str(looks[-1]["analysis_date"]),
                f"{_num(looks[-1]['abs_effect'])} "
                f"{_interval(looks[-1]['abs_ci_low'], looks[-1]['abs_ci_high'], False)}".strip(),
                _interval(
                    looks[-1]["always_valid_ci_low"], looks[-1]["always_valid_ci_high"], False
                ),
                _num(looks[-1]["always_valid_p_value"], "{:.3g}"),
            ]
            for (metric, variant), looks in series.items()
        ]
        out += [""] + _table(header, table, style, "  ")
        trends = [
            f"{metric} {variant}: {looks[-1]['trend']}"
            for (metric, variant), looks in series.items()
            if looks[-1].get("trend")
        ]
        if trends:
            out += ["", "  Trend (novelty/primacy):"]
            for t in trends:
                out += style.wrap(t, "    ", "  ")
        return "\n".join(out)
    for (metric, variant), looks in series.items():
        verdict = looks[-1].get("trend") or "no trend verdict recorded"
        out += [""] + style.wrap(f"{metric} — {variant} ({verdict})", "  ", "  ")
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
        out += _table(header, table, style, "    ")
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
