"""The label-efficiency figure: val accuracy against training images per class, one line per head
with its band of draws (heads/label_curve.py made the numbers). Its own module, as compute_plot
is: figures.py holds the shared drawing helpers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .figures import LINES, MARKERS, WIDE, _grid, _literal, _plain_log_x, _save, _wrap, legible

ONE_PANEL_MOST = 4  # label curves drawn on one panel; more get a panel each (overlapping bands are unreadable)


def _curve_points(c: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images per class, mean, worst draw, best draw) of one head's curve, in %, the full train set
    as its last point."""
    x = np.array([r["per_class"] for r in c["rows"]], dtype=float)
    mean = np.array([r["mean"] for r in c["rows"]]) * 100
    lo = np.array([min(r["accuracy"]) for r in c["rows"]]) * 100
    hi = np.array([max(r["accuracy"]) for r in c["rows"]]) * 100
    full = c["full"]
    if full["per_class"] and full["accuracy"] is not None:
        x, mean = np.append(x, full["per_class"]), np.append(mean, 100 * full["accuracy"])
        lo, hi = np.append(lo, mean[-1]), np.append(hi, mean[-1])
    return x, mean, lo, hi


def _draw_curve(ax, c: dict, i: int, shift: float, z: int) -> None:
    """One head's mean line (the i-th colour, marker and line style), its min-max band and its draws
    as dots."""
    x, mean, lo, hi = _curve_points(c)
    (line,) = ax.plot(x * shift, mean, marker=MARKERS[i % 8], linestyle=LINES[i % 4], markersize=6,
                      label=_literal(c["name"]), zorder=z, color=COLOURS[i % len(COLOURS)])
    ax.fill_between(x * shift, lo, hi, color=line.get_color(), alpha=0.12, linewidth=0)
    for r in c["rows"]:
        ax.scatter([r["per_class"] * shift] * len(r["accuracy"]), np.array(r["accuracy"]) * 100, s=8,
                   color=line.get_color(), alpha=0.5)


COLOURS = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9")  # not C7: grey is the other heads' colour
X_LABEL, Y_LABEL = "training images per class (log scale; last point: all of train)", "val accuracy (%)"


def _chance_and_grid(ax, curves: list[dict]) -> None:
    chance = curves[0].get("chance")
    if chance and chance.get("accuracy") is not None:
        ax.axhline(100 * chance["accuracy"], color="grey", linestyle=(0, (4, 3)), linewidth=1,
                   label=f"chance: {_literal(chance['what'])} ({100 * chance['accuracy']:.1f}%)")
    _plain_log_x(ax)
    ax.grid(alpha=0.3, which="both")


@legible
def label_efficiency(curves: list[dict], path: Path) -> Path | None:
    """Val accuracy against training images per class (log x): each head's mean over the draws
    with a band from the worst to the best draw (min-max, named so in the legend), the draws as
    dots, and the full train set as the last point of each line; a dashed line at chance (a curve's
    `chance`: {accuracy, what}, e.g. the majority class's share of val), when known. Up to
    ONE_PANEL_MOST heads share one panel, drawn a little apart sideways, each with its own marker and
    line style, so equal curves stay visible; more get a panel each on shared axes, the other heads'
    means in light grey behind, so that no two bands overlap."""
    from matplotlib.patches import Patch

    if not curves:
        return None
    draws = curves[0].get("draws")
    band = Patch(color="grey", alpha=0.25, linewidth=0,  # the legend's one entry for every head's band
                 label=f"band: min–max over {f'{draws} ' if draws else ''}draws (dots: each draw)")
    fig = (_one_panel if len(curves) <= ONE_PANEL_MOST else _panels)(curves, band)
    return _save(fig, path)


def _one_panel(curves: list[dict], band) -> Figure:
    fig = Figure(figsize=(WIDE, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, c in enumerate(curves):
        _draw_curve(ax, c, i, 1.04 ** (i - (len(curves) - 1) / 2), 3 + len(curves) - i)  # apart on the log axis
    _chance_and_grid(ax, curves)
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(Y_LABEL)
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=[*handles, band], loc="lower right")
    return fig


def _panels(curves: list[dict], band) -> Figure:
    """A panel per head on shared axes, the other heads' means in light grey behind."""
    from matplotlib.patches import Patch

    rows, cols, _ = _grid(len(curves), 2.6, 4)
    fig = Figure(figsize=(WIDE, rows * 2.5 + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)).ravel()
    for i, ax in enumerate(axes):
        if i >= len(curves):
            ax.axis("off")
            continue
        for j, other in enumerate(curves):  # the others' means, for comparison
            if j != i:
                x, mean, _, _ = _curve_points(other)
                ax.plot(x, mean, color="#c8c8c8", linewidth=1, zorder=1)
        _draw_curve(ax, curves[i], i, 1.0, 3)
        _chance_and_grid(ax, curves)
        ax.set_title(_wrap(curves[i]["name"], 40), fontsize=9.5)
    fig.supxlabel(X_LABEL)
    fig.supylabel(Y_LABEL)
    chance = [h for h in axes[0].get_legend_handles_labels()[0] if h.get_label().startswith("chance")]
    other = Patch(color="#c8c8c8", label="the other heads' means")
    fig.legend(handles=[*chance, band, other], loc="outside upper center", ncols=3)
    return fig
