"""Evaluation results for people: a terminal table naming each computation, and an SVG
plot of per-label scores.

The JSON written by ``radreport eval --out`` is the result dict itself; these functions only render it.
"""

from __future__ import annotations

from html import escape
from typing import Any


def _number(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"


def format_table(result: dict[str, Any]) -> str:
    """Every block's scores, intervals, comparisons and not-computed metrics, with how each was computed."""
    lines = []
    level = result.get("bootstrap", {}).get("level", 0.95)
    for block in result["blocks"]:
        skipped = ", ".join(f"{n} {why}" for why, n in block["skipped"].items())
        lines.append(f"== {block['title']}: {block['n']} {block.get('unit', 'studies')}"
                     + (f" ({skipped}, left out)" if skipped else ""))
        for row in block["scores"]:
            if ":" in row["name"]:
                continue  # per-label rows: in the JSON and the plot
            interval = f"  [{_number(row['low'])}, {_number(row['high'])}]" if "low" in row else ""
            spec = row["spec"]
            lines.append(f"  {row['name']:<24} {_number(row['value'])}{interval}")
            lines.append(f"      {spec['implementation']}; tokens: {spec['tokenisation']}; {spec['casing']}; "
                         f"{spec['averaging']}")
        for row in block["comparison"]:
            d = row["difference"]
            lines.append(f"  {row['name']:<24} A {_number(row['a'])} - B {_number(row['b'])} "
                         f"= {d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}], "
                         f"p = {row['p_value']:.4f} (paired bootstrap)")
        for row in block["not_computed"]:
            lines.append(f"  {row['metric']:<24} not computed: {row['reason']}")
    if any("low" in row for block in result["blocks"] for row in block["scores"]):
        settings = result["bootstrap"]
        lines.append(f"[low, high]: {100 * level:g} % percentile interval over {settings['resamples']} "
                     f"bootstrap resamples (seed {settings['seed']}), corpus-level scores recomputed on each")
    return "\n".join(lines)


def per_label_rows(result: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(block title, label, value) for each per-label score worth plotting (F1 of each
    diagnosis label, ...)."""
    rows = []
    for block in result["blocks"]:
        for label, scores in (block.get("per_label") or {}).items():
            for name in ("F1", "balanced accuracy", "AUROC"):
                if name in scores and scores[name] == scores[name]:
                    rows.append((block["title"], f"{label} ({name})", float(scores[name])))
    return rows


def plot_svg(result: dict[str, Any], title: str) -> str:
    """A horizontal bar chart (0 to 1) of the per-label scores as standalone SVG; no
    plotting library needed."""
    rows = per_label_rows(result)
    if not rows:
        raise ValueError("nothing to plot: this preset has no per-label scores (use the diagnosis preset)")
    bar, gap, label_width, plot_width = 16, 6, 300, 420
    height = 40 + len(rows) * (bar + gap) + 30
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_width + plot_width + 80}" '
              f'height="{height}" font-family="sans-serif" font-size="12">'),
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>']
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        x = label_width + tick * plot_width
        parts.append(f'<line x1="{x}" y1="30" x2="{x}" y2="{height - 25}" stroke="#ddd"/>')
        parts.append(f'<text x="{x}" y="{height - 10}" text-anchor="middle">{tick:g}</text>')
    palette = {"F1": "#3b6ea5", "balanced accuracy": "#6aa84f", "AUROC": "#c27c0e"}
    for i, (_, label, value) in enumerate(rows):
        y = 35 + i * (bar + gap)
        kind = label[label.rindex("(") + 1 : -1]
        parts.append(
            f'<text x="{label_width - 6}" y="{y + bar - 4}" text-anchor="end">{escape(label)}</text>')
        parts.append(f'<rect x="{label_width}" y="{y}" width="{value * plot_width:.1f}" height="{bar}" '
                     f'fill="{palette.get(kind, "#888")}"/>')
        parts.append(
            f'<text x="{label_width + value * plot_width + 4:.1f}" y="{y + bar - 4}">{value:.3f}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
