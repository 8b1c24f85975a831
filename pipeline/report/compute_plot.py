"""The decision figure: val accuracy against the compute each method cost (log x), with its Wilson
whiskers, the Pareto front (no other run is both cheaper and at least as accurate) and the
recommended method starred. Every point is named: labels are placed one by one where they overlap
no other label and no point, with a leader line when moved away from their point; runs at one
spot are spread a little sideways, each with its own label.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .figures import CLASSIFY_COLOR, FINETUNE_COLOR, WIDE, _literal, _plain_log_x, _save, legible

SAME_SPOT = 0.012  # decades of compute and ...
SAME_ACC = 0.002  # ... of accuracy within which two runs would hide each other
# label offsets (points) tried in order: beside the point, then further up and down, then left
OFFSETS = [(8, dy) for dy in (0, 11, -11, 22, -22, 33, -33, 44, -44, 55, -55)] + \
          [(-8, dy) for dy in (0, 11, -11, 22, -22, 33, -33)]


def pareto_front(points: list[dict]) -> list[dict]:
    """The runs that no other run beats on both axes (cheaper and at least as accurate, or as
    cheap and more accurate), cheapest first."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p["seconds"], -p["accuracy"])):
        if p["accuracy"] > best:
            front.append(p)
            best = p["accuracy"]
    return front


def spread(points: list[dict]) -> list[float]:
    """The x each point is drawn at: runs at one spot (same compute and accuracy, to the eye) are
    spread sideways by a few per cent, in table order."""
    xs = [p["seconds"] for p in points]
    groups: list[list[int]] = []
    for i, p in enumerate(points):
        g = next((g for g in groups if abs(np.log10(points[g[0]]["seconds"] / p["seconds"])) < SAME_SPOT
                  and abs(points[g[0]]["accuracy"] - p["accuracy"]) < SAME_ACC), None)
        g.append(i) if g else groups.append([i])
    for g in groups:
        for j, i in enumerate(g):
            xs[i] = points[g[0]]["seconds"] * 10 ** (0.03 * (j - (len(g) - 1) / 2))
    return xs


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(ax, anchors: list[tuple[float, float]], texts: list[str], bold: set[int]) -> list:
    """Annotate each anchor (data coordinates) at the first offset whose label box overlaps no
    placed label, no point and stays in the axes; else where it overlaps least. Returns the boxes."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    dots = [Bbox.from_extents(x - 5, y - 5, x + 5, y + 5) for x, y in ax.transData.transform(anchors)]
    placed: list = []
    for i in sorted(range(len(anchors)), key=lambda i: (i not in bold, i)):
        best = None
        for dx, dy in OFFSETS:
            t = ax.annotate(texts[i], anchors[i], xytext=(dx, dy), textcoords="offset points", fontsize=9,
                            ha="left" if dx > 0 else "right", va="center",
                            fontweight="bold" if i in bold else "normal", zorder=5,
                            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
            box = t.get_window_extent(renderer).expanded(1.0, 1.1)
            cost = sum(_overlap(box, b) for b in placed) + sum(_overlap(box, d) for j, d in enumerate(dots) if j != i)
            cost += 1e6 * (box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1)
            if best is None or cost < best[0]:
                if best:
                    best[1].remove()
                best = (cost, t, box, (dx, dy))
            else:
                t.remove()
            if cost == 0:
                break
        _, t, box, (dx, dy) = best
        if dy:  # moved off its point: a leader line from the point to the label's near edge
            ax.annotate("", anchors[i], xytext=(dx, dy), textcoords="offset points",
                        arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.7, "shrinkA": 0, "shrinkB": 4})
        placed.append(box)
    return placed


def draw(points: list[dict], recommended: str | None, references: list[dict] = ()) -> tuple[Figure, list]:
    """The figure and its label boxes (display pixels). points: {label, stage, accuracy, lo, hi, seconds};
    references: {label, accuracy}, horizontal lines (none in the report: another protocol)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(WIDE, 4.4))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.065, right=0.99, top=0.97, bottom=0.23)
    ax = fig.subplots()
    xs = spread(points)
    seen = set()
    for p, x in zip(points, xs):
        kind = "fine-tuning" if p["stage"] == "finetune" else "cached codes + head"
        colour = FINETUNE_COLOR if p["stage"] == "finetune" else CLASSIFY_COLOR
        y = 100 * p["accuracy"]
        ax.errorbar(x, y, yerr=[[y - 100 * p["lo"]], [100 * p["hi"] - y]], fmt="none", ecolor=colour, alpha=0.35,
                    capsize=2, linewidth=1)
        ax.plot(x, y, "o", color=colour, markersize=6, label=None if kind in seen else kind, zorder=3)
        seen.add(kind)
        if p["label"] == recommended:
            ax.plot(x, y, "*", color="gold", markersize=17, markeredgecolor="black", zorder=4, label="recommended")
    front = pareto_front(points)
    fx, fy = [p["seconds"] for p in front], [100 * p["accuracy"] for p in front]
    ax.step([*fx, max(xs) * 2.5], [*fy, fy[-1]], where="post", color="0.4", linestyle="--", linewidth=1,
            zorder=2, label="Pareto front: nothing both cheaper and more accurate")
    for r, style in zip(references, ("-.", ":", (0, (1, 3)))):
        ax.axhline(100 * r["accuracy"], color="0.6", linestyle=style, linewidth=0.9,
                   label=f"{_literal(r['label'])}: {100 * r['accuracy']:.2f}% (published)")
    _plain_log_x(ax)
    ax.set_xlim(min(xs) / 1.4, max(xs) * 2.5)
    lo = min([100 * p["lo"] for p in points] + [100 * r["accuracy"] for r in references])
    hi = max([100 * p["hi"] for p in points] + [100 * r["accuracy"] for r in references])
    ax.set_ylim(lo - 0.5, hi + 0.5)
    ax.set_xlabel("compute seconds to make the model, log scale (extract + fit, or train)")
    ax.set_ylabel("val accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=4, frameon=False)
    named = [i for i, p in enumerate(points) if str(p["label"]).strip()]
    names = [_literal(points[i]["label"]) + (" (recommended)" if points[i]["label"] == recommended else "")
             for i in named]
    boxes = place_labels(ax, [(xs[i], 100 * points[i]["accuracy"]) for i in named], names,
                         {j for j, i in enumerate(named) if points[i]["label"] == recommended})
    return fig, boxes


@legible
def accuracy_vs_compute(points: list[dict], path: Path, recommended: str | None = None,
                        references: list[dict] = ()) -> Path | None:
    """Draw and save the figure; None (with a note) when no run recorded its compute."""
    points = [p for p in points if p.get("seconds") and p["seconds"] > 0]  # log axis: 0 s cannot be placed
    if not points:
        print("  note: no run recorded compute seconds; skipping the accuracy-vs-compute figure")
        return None
    fig, _ = draw(points, recommended, list(references))
    return _save(fig, path)
