"""The report's Plotly figures, built from published scorecard and history rows.

Each chart is a :class:`Chart`: a figure (serialised to JSON for the page's script) and,
when the chart has a toggle, its groups (ITT/TOT/CACE for a forest, one group per metric
for the effect over time). A trace belongs to one group through ``meta.group`` (``"*"``:
every group); the page shows the traces of the selected group only. Non-finite numbers
become JSON ``null``: Plotly leaves a gap there.

Rows are the dicts of ``pyarrow.Table.to_pylist()``; nothing here reads a file.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

Row = Mapping[str, Any]

PALETTE = ("#2563eb", "#9333ea", "#0d9488", "#ea580c", "#4b5563", "#db2777", "#65a30d")
BREACHED = "#dc2626"
POPULATION_LABELS = {
    "itt": "ITT",
    "tot": "TOT (selection-biased)",
    "cace": "CACE (complier effect)",
}
FONT = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif"


@dataclass(frozen=True)
class Group:
    """One choice of a chart's toggle: its key (``meta.group``), label and caption."""

    key: str
    label: str
    note: str = ""
    axis_title: str = ""


@dataclass(frozen=True)
class Chart:
    """A figure with its page id, and the groups its toggle chooses between (maybe none)."""

    id: str
    figure: go.Figure
    groups: tuple[Group, ...] = ()
    caption: str = ""
    fit_ticks: bool = False  # the page sets the x axis' number of ticks to its width

    def to_json(self) -> str:
        return str(self.figure.to_json(engine="json", validate=False))


def finite(x: object) -> float | None:
    """``x`` as a float, or None when missing or not finite."""
    if x is None or isinstance(x, bool):
        return None
    try:
        value = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def pct(x: object, digits: int = 2) -> str:
    value = finite(x)
    return "–" if value is None else f"{value:+.{digits}%}"


def num(x: object, fmt: str = "{:.4g}") -> str:
    value = finite(x)
    return "–" if value is None else fmt.format(value)


def wrap_name(name: str, width: int = 16) -> str:
    """An escaped metric name for a tick label, broken after an underscore near its middle
    when longer than ``width`` (a narrow screen keeps room for the plot)."""
    escaped = html.escape(name)
    if len(name) <= width or "_" not in name:
        return escaped
    cuts = [i for i, ch in enumerate(name) if ch == "_"]
    cut = min(cuts, key=lambda i: abs(i - len(name) / 2)) + 1
    return f"{html.escape(name[:cut])}<br>{html.escape(name[cut:])}"


def sublabel(text: str) -> str:
    """A tick label's second, smaller line."""
    return f"<br><span style='font-size:10px;color:#6b7280'>{html.escape(text)}</span>"


def variant_colors(variants: Sequence[str]) -> dict[str, str]:
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(variants)}


def significant(row: Row) -> bool:
    """Significant by the family-adjusted p-value (metrics outside the family never are)."""
    p, alpha = finite(row.get("p_value_adjusted")), finite(row.get("alpha"))
    return p is not None and alpha is not None and p < alpha


def margin_lift(row: Row) -> float | None:
    """A guardrail's non-inferiority margin on the relative-lift axis (None if it has none).

    The harmful direction is down for a metric where higher is better, up otherwise. An
    absolute margin is put on the axis relative to the control mean.
    """
    margin = finite(row.get("guardrail_margin"))
    if margin is None:
        return None
    if row.get("guardrail_relative") is False:
        control = finite(row.get("mean_control"))
        if not control:
            return None
        margin = margin / abs(control)
    return -margin if row.get("higher_is_better", True) else margin


def _layout(height: int, **extra: Any) -> dict[str, Any]:
    return {
        "template": "plotly_white",
        "height": height,
        "autosize": True,
        "margin": {"l": 8, "r": 16, "t": 36, "b": 48},
        "font": {"family": FONT, "size": 12},
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom"},
        "hovermode": "closest",
        "hoverlabel": {"align": "left"},
        **extra,
    }


def forest(
    chart_id: str,
    rows: Sequence[Row],
    *,
    key: Callable[[Row], Hashable],
    label: Callable[[Row], str],
    colors: Mapping[str, str],
    populations: Sequence[str] = ("itt", "tot", "cace"),
    notes: Mapping[str, str] | None = None,
) -> Chart:
    """Relative lifts with their intervals: one row per ``key`` (top to bottom in the rows'
    order), one trace per population x variant (the ITT ones visible), plus one trace of
    guardrail margins. Filled marker: adjusted p below alpha; ``x``: guardrail breached.
    """
    keys: list[Hashable] = []
    labels: dict[Hashable, str] = {}
    for r in rows:
        k = key(r)
        if k not in labels:
            keys.append(k)
            labels[k] = label(r)
    position = {k: -i for i, k in enumerate(keys)}
    variants = [v for v in colors if any(r["variant"] == v for r in rows)]
    step = 0.5 / max(len(variants), 1)
    offset = {v: (len(variants) - 1) / 2 * step - i * step for i, v in enumerate(variants)}
    present = [p for p in populations if any(r["population"] == p for r in rows)]
    default = "itt" if "itt" in present else (present[0] if present else "itt")
    alpha = next((finite(r.get("alpha")) for r in rows if finite(r.get("alpha"))), 0.05) or 0.05
    fig = go.Figure()
    for population in present:
        for variant in variants:
            points = [
                r
                for r in rows
                if r["population"] == population
                and r["variant"] == variant
                and finite(r.get("rel_lift")) is not None
            ]
            x = [finite(r["rel_lift"]) or 0.0 for r in points]
            high = [finite(r.get("rel_ci_high")) for r in points]
            low = [finite(r.get("rel_ci_low")) for r in points]
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[position[key(r)] + offset[variant] for r in points],
                    mode="markers",
                    name=variant,
                    legendgroup=variant,
                    visible=population == default,
                    meta={"group": population},
                    error_x={
                        "type": "data",
                        "symmetric": False,
                        "array": [
                            None if h is None else h - v for h, v in zip(high, x, strict=True)
                        ],
                        "arrayminus": [
                            None if lo is None else v - lo for lo, v in zip(low, x, strict=True)
                        ],
                        "thickness": 2,
                        "width": 4,
                        "color": colors[variant],
                    },
                    marker={
                        "size": 10,
                        "color": [
                            BREACHED if r.get("guardrail_breached") else colors[variant]
                            for r in points
                        ],
                        "symbol": [
                            "x"
                            if r.get("guardrail_breached")
                            else ("circle" if significant(r) else "circle-open")
                            for r in points
                        ],
                        "line": {"width": 2},
                    },
                    text=[_forest_hover(r) for r in points],
                    hovertemplate="%{text}<extra></extra>",
                )
            )
    margins = []
    for k in keys:
        found = next((m for r in rows if key(r) == k and (m := margin_lift(r)) is not None), None)
        if found is not None:
            margins.append((found, position[k]))
    if margins:
        xs: list[float | None] = []
        ys: list[float | None] = []
        for m, y in margins:
            xs += [m, m, None]
            ys += [y - 0.42, y + 0.42, None]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                name="non-inferiority margin",
                meta={"group": "*"},
                line={"color": BREACHED, "dash": "dash", "width": 2},
                hoverinfo="skip",
            )
        )
    level = f"{1 - alpha:.0%}"
    guarded = any(r.get("guardrail_margin") is not None for r in rows)
    fig.update_layout(
        _layout(
            max(200, 90 + 48 * len(keys) + 10 * len(keys) * max(len(variants) - 1, 0)),
            xaxis={
                "title": {"text": f"lift vs control ({level} CI)"},
                "tickformat": "+.1%",
                "hoverformat": "+.2%",
                "zeroline": True,
                "zerolinecolor": "#111827",
                "zerolinewidth": 1.5,
                "automargin": True,
            },
            yaxis={
                "tickmode": "array",
                "tickvals": [position[k] for k in keys],
                "ticktext": [labels[k] for k in keys],
                "range": [-len(keys) + 0.45, 0.55],
                "showgrid": False,
                "zeroline": False,
                "fixedrange": True,
                "automargin": True,
            },
            showlegend=True,
        )
    )
    notes = notes or {}
    groups = tuple(Group(p, POPULATION_LABELS.get(p, p.upper()), notes.get(p, "")) for p in present)
    return Chart(
        chart_id,
        fig,
        groups,
        fit_ticks=True,
        caption=(
            f"Relative lift with its {level} confidence interval. Filled marker: significant "
            f"at adjusted p < {alpha:g}; open: not significant"
            + (
                " (guardrails are judged against their margin, not by p); red ✕: guardrail "
                "breached; red dashed line: the guardrail's non-inferiority margin."
                if guarded
                else "."
            )
        ),
    )


def _forest_hover(r: Row) -> str:
    e = lambda key: html.escape(str(r.get(key) or ""))  # noqa: E731
    lines = [
        f"<b>{e('metric')}</b> — {e('variant')} vs {e('control_variant') or 'control'}",
        html.escape(POPULATION_LABELS.get(r["population"], str(r["population"]))),
        f"lift {pct(r.get('rel_lift'))} [{pct(r.get('rel_ci_low'))}, {pct(r.get('rel_ci_high'))}]",
        f"p {num(r.get('p_value'), '{:.3g}')}, adjusted p {num(r.get('p_value_adjusted'), '{:.3g}')}"
        + (f" ({e('correction')})" if r.get("correction") else ""),
    ]
    if r.get("slice_dimension") not in (None, "(all)"):
        lines.insert(1, f"{e('slice_dimension')} = {e('slice_value')}")
    if r.get("metric_kind") == "quantile":
        lines.append("quantile metric")
    if r.get("guardrail_reason"):
        lines.append(e("guardrail_reason"))
    return "<br>".join(lines)


def history(
    chart_id: str,
    rows: Sequence[Row],
    *,
    colors: Mapping[str, str],
    metrics: Sequence[str],
    decision_day: str | None,
    decision_text: str,
    look_bounds: Mapping[tuple[str, str], tuple[float, float]] | None = None,
) -> Chart:
    """The daily estimate per metric (one toggle group each) and variant, with its
    fixed-horizon interval and, when the history holds it, its always-valid band; when it
    does not, the group-sequential bound of the run's look (``look_bounds``: the effect
    bounds at the decision day per metric and variant). The decision day is a dashed line.
    """
    fig = go.Figure()
    order = [m for m in metrics if any(r["metric"] == m for r in rows)]
    order += sorted({r["metric"] for r in rows} - set(order))
    groups = []
    any_band = any_bound = False
    for i, metric in enumerate(order):
        shown = i == 0
        for variant, color in colors.items():
            looks = sorted(
                (r for r in rows if r["metric"] == metric and r["variant"] == variant),
                key=lambda r: r["analysis_date"],
            )
            if not looks:
                continue
            days = [str(r["analysis_date"]) for r in looks]
            meta = {"group": metric}
            banded = [
                r
                for r in looks
                if finite(r.get("always_valid_ci_low")) is not None
                and finite(r.get("always_valid_ci_high")) is not None
            ]
            if banded:
                fig.add_trace(
                    _band(
                        banded,
                        "always_valid_ci",
                        f"{variant}: always-valid interval",
                        variant,
                        color,
                        0.12,
                        shown,
                        meta,
                    )
                )
                any_band = True
            fig.add_trace(
                _band(
                    [
                        r
                        for r in looks
                        if finite(r.get("abs_ci_low")) is not None
                        and finite(r.get("abs_ci_high")) is not None
                    ],
                    "abs_ci",
                    f"{variant}: fixed-horizon CI",
                    variant,
                    color,
                    0.28,
                    shown,
                    meta,
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=days,
                    y=[finite(r.get("abs_effect")) for r in looks],
                    mode="lines+markers",
                    name=variant,
                    legendgroup=variant,
                    visible=shown,
                    meta=meta,
                    line={"color": color, "width": 2},
                    marker={"size": 5, "color": color},
                    text=[_history_hover(r) for r in looks],
                    hovertemplate="%{text}<extra></extra>",
                )
            )
            bound = (look_bounds or {}).get((metric, variant))
            if bound is not None and not banded and decision_day is not None:
                any_bound = True
                fig.add_trace(
                    go.Scatter(
                        x=[decision_day, decision_day],
                        y=list(bound),
                        mode="markers",
                        name=f"{variant}: group-sequential bound at this look",
                        legendgroup=variant,
                        showlegend=False,
                        visible=shown,
                        meta=meta,
                        marker={"symbol": "line-ew-open", "size": 18, "color": color},
                        hovertemplate="bound %{y:.4g}<extra></extra>",
                    )
                )
        groups.append(
            Group(
                metric,
                metric,
                axis_title=f"{metric}: treatment − control",
            )
        )
    shapes, annotations = [], []
    if decision_day is not None:
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": decision_day,
                "x1": decision_day,
                "y0": 0,
                "y1": 1,
                "line": {"color": "#111827", "dash": "dot", "width": 1.5},
            }
        )
        annotations.append(
            {
                "x": decision_day,
                "xref": "x",
                "y": 1,
                "yref": "paper",
                "yanchor": "top",
                "xanchor": "right",
                "xshift": -2,
                "text": "decision day",
                "hovertext": decision_text,
                "showarrow": False,
                "bgcolor": "rgba(255,255,255,0.8)",
                "font": {"size": 11},
            }
        )
    fig.update_layout(
        _layout(
            360,
            xaxis={"type": "date", "automargin": True, "tickformat": "%b %d"},
            yaxis={
                "title": {"text": groups[0].axis_title if groups else ""},
                "zeroline": True,
                "zerolinecolor": "#111827",
                "zerolinewidth": 1.5,
                "automargin": True,
            },
            shapes=shapes,
            annotations=annotations,
            margin={"l": 8, "r": 16, "t": 30, "b": 40},
        )
    )
    parts = [
        "ITT, as of each analysis day: the estimate (treatment − control, in the metric's "
        "units) with its fixed-horizon confidence interval (the darker band)"
    ]
    if any_band:
        parts.append(
            "and the always-valid interval (the lighter band), which stays valid however "
            "often the history is looked at"
        )
    if any_bound:
        parts.append(
            "and, at the decision day, the group-sequential rule's bound on the effect at "
            "this look (± the z bound times the standard error)"
        )
    parts.append("The dotted line is the decision day (the run's data as of date).")
    caption = " ".join(parts[:-1]) + ". " + parts[-1]
    return Chart(chart_id, fig, tuple(groups), caption=caption)


def _band(
    rows: Sequence[Row],
    column: str,
    name: str,
    variant: str,
    color: str,
    opacity: float,
    visible: bool,
    meta: Mapping[str, str],
) -> go.Scatter:
    """An interval over the days as one filled polygon (upper bounds, then lower reversed)."""
    days = [str(r["analysis_date"]) for r in rows]
    high = [finite(r[f"{column}_high"]) for r in rows]
    low = [finite(r[f"{column}_low"]) for r in rows]
    return go.Scatter(
        x=days + days[::-1],
        y=high + low[::-1],
        fill="toself",
        mode="lines",
        line={"width": 0, "color": color},
        fillcolor=_rgba(color, opacity),
        name=name,
        legendgroup=variant,
        showlegend=False,
        visible=visible,
        meta=dict(meta),
        hoverinfo="skip",
    )


def _history_hover(r: Row) -> str:
    return "<br>".join(
        [
            f"<b>{html.escape(r['metric'])}</b> — {html.escape(r['variant'])}, "
            f"as of {r['analysis_date']}",
            f"n {r.get('n_control')}/{r.get('n_variant')}",
            f"effect {num(r.get('abs_effect'))} [{num(r.get('abs_ci_low'))}, "
            f"{num(r.get('abs_ci_high'))}]",
            f"always-valid [{num(r.get('always_valid_ci_low'))}, "
            f"{num(r.get('always_valid_ci_high'))}], p {num(r.get('always_valid_p_value'), '{:.3g}')}",
        ]
    )


def _rgba(color: str, opacity: float) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{opacity})"


def distribution(
    chart_id: str,
    metric: str,
    q: float,
    by_variant: Mapping[str, Mapping[str, Sequence[float]]],
    colors: Mapping[str, str],
) -> Chart:
    """A quantile metric's distribution per variant (ITT): the cumulative share of units
    (or events) up to each bin's value, with the metric's level q marked."""
    fig = go.Figure()
    positive = True
    for variant, hist in by_variant.items():
        values = list(hist["values"])
        counts = list(hist["counts"])
        total = sum(counts) or 1.0
        running, shares = 0.0, []
        for c in counts:
            running += c
            shares.append(running / total)
        positive = positive and all(v > 0 for v in values)
        fig.add_trace(
            go.Scatter(
                x=values,
                y=shares,
                mode="lines",
                # The control (not among the treatments' colours) in grey.
                line={"shape": "hv", "color": colors.get(variant, "#6b7280"), "width": 2},
                name=variant,
                hovertemplate=f"{html.escape(variant)}: %{{y:.1%}} at or below %{{x:.4g}}<extra></extra>",
            )
        )
    fig.add_hline(y=q, line={"dash": "dot", "color": "#888"}, annotation_text=f"q = {q:g}")
    fig.update_layout(
        **_layout(320),
        xaxis={"title": f"{metric} (bin values)", "type": "log" if positive else "linear"},
        yaxis={"title": "cumulative share", "tickformat": ".0%", "range": [0, 1.02]},
    )
    return Chart(
        id=chart_id,
        figure=fig,
        caption=f"The distribution of {metric} per variant (ITT), from the run's histograms: "
        f"where each curve crosses the dotted line is that variant's quantile.",
    )
