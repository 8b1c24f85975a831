"""Report figures: learning curves, confusion matrices, image grids, label efficiency, reliability,
PCA (accuracy vs compute: compute_plot.py). Every figure is drawn about as wide as the page shows it,
with no text under MIN_TEXT_PX at that size.

Each function draws one PNG from numbers that were already saved and returns the path it wrote,
or None (after printing why) when its inputs are gone. Figures use matplotlib's object API
(`Figure` saved through the Agg canvas), not pyplot: no global state, no display needed, and
nothing changes for other code in the same process.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from .blocks import PAGE_PX

DPI = 120  # every figure is about 11 in wide: 1320 px, shown at the page's width (PAGE_PX)
WIDE = PAGE_PX / 100  # inches: a figure this wide is shown at about 0.83 of its pixels
MIN_TEXT_PX = 10  # no text smaller than this at the size the page shows it (tests check SHOWN_TEXT_PX)
CLASSIFY_COLOR, FINETUNE_COLOR, MISTAKE_COLOR, CORRECT_COLOR = "#1f77b4", "#ff7f0e", "#d62728", "#2a7d2a"
RC = {"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
      "legend.fontsize": 9, "figure.titlesize": 11}
SHOWN_TEXT_PX: dict[str, float] = {}  # figure file name -> its smallest text, in px as the page shows it
# figure file name -> where its panels and legends landed (display px): what the layout tests check
LAYOUT: dict[str, dict] = {}


def legible(draw):
    """Draw with the report's font sizes (matplotlib reads them as each artist is made)."""
    import functools

    import matplotlib

    @functools.wraps(draw)
    def wrapped(*args, **kwargs):
        with matplotlib.rc_context(RC):
            return draw(*args, **kwargs)
    return wrapped


def _literal(text) -> str:
    r"""A name (class, file, method) as matplotlib text that is never parsed as math: matplotlib reads
    text between two `$` as mathtext (a file `cost_$5_$10.jpg` would fail to draw); an escaped `\$`
    is a plain dollar sign. Every string from the outside world goes through here."""
    return str(text).replace("$", r"\$")


def _save(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    """Write the PNG (atomically: a killed report leaves the old PNG or the new one, never 0 bytes)
    and note its smallest text at the size the page shows it: the PNG is scaled to PAGE_PX wide."""
    from matplotlib.text import Text
    from PIL import Image

    from ..core.files import atomic_write

    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight"))
    LAYOUT[path.name] = _layout(fig)
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    with Image.open(path) as im:
        width = im.width
    if sizes:
        SHOWN_TEXT_PX[path.name] = min(sizes) * dpi / 72 * PAGE_PX / width
    return path


def _layout(fig: Figure) -> dict:
    """Each drawn panel (its box, whether it shows data, its filled bands) and each legend's box, in
    display pixels, as last drawn."""
    from matplotlib.collections import PolyCollection

    box = lambda a: tuple(a.get_window_extent().extents)  # noqa: E731  (as savefig laid it out)
    legends = [lg for lg in [*fig.legends, *(a.get_legend() for a in fig.axes)] if lg is not None]
    return {"axes": [{"box": box(a), "data": a.has_data(), "on": a.axison, "colorbar": hasattr(a, "_colorbar"),
                      "bands": sum(isinstance(c, PolyCollection) for c in a.collections)} for a in fig.axes],
            "legends": [box(lg) for lg in legends]}


def _plain_log_x(ax) -> None:
    """A log x axis ticked 1, 2, 5, 10, ...: plain numbers read better than 2×10⁰ on a short axis."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _column(history: list[dict], key: str) -> np.ndarray:
    # missing or null entries (e.g. no val pass that epoch) become gaps, not zeros
    return np.array([np.nan if h.get(key) is None else float(h[key]) for h in history], dtype=float)


@legible
def learning_curves(history: list[dict], title: str, path: Path, best_epoch: int | None = None) -> Path:
    """Loss and accuracy per epoch, train and val, side by side; the best val epoch dotted."""
    epochs = np.array([h.get("epoch", i + 1) for i, h in enumerate(history)], dtype=float)
    fig = Figure(figsize=(WIDE, 3.3), layout="constrained")
    for ax, key, label, scale in zip(fig.subplots(1, 2), ("loss", "acc"), ("loss", "accuracy (%)"), (1, 100)):
        for split, style in (("train", "-"), ("val", "--")):
            ax.plot(epochs, _column(history, f"{split}_{key}") * scale, style, marker=".", label=split)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1, label=f"best val epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(_literal(title))
    return _save(fig, path, dpi=100)


def _grid(n: int, side_in: float, cols_most: int) -> tuple[int, int, float]:
    """(rows, cols, panel side in inches) for n square panels across the page's width: the most
    columns that fit and leave the last row at least half full (7 panels: 4 + 3, not 6 + 1)."""
    most = max(1, min(n, cols_most, int(WIDE // side_in)))
    cols = next(c for c in range(most, 0, -1) if 2 * (n - (-(-n // c) - 1) * c) >= c)
    return -(-n // cols), cols, WIDE / cols


@legible
def confusion_grid(panels: list[tuple[str, list[list[int]]]], classes: list[str], path: Path) -> Path:
    """Every method's val confusion matrix as row-normalised rates (each row: the share of that true
    class predicted as each class), small multiples on the same 0-1 scale, counts written in when
    there are few classes. The colour scale is a square-root-like power, so a 5% error shows."""
    from matplotlib.colors import PowerNorm

    cms = [np.asarray(cm, dtype=float) for _, cm in panels]
    k = len(classes)
    rows, cols, side = _grid(len(panels), max(1.8, 0.34 * k + 1.0), 6)
    side = min(side, (WIDE - 1.1) / cols)  # the colour bar takes about an inch: rows no taller than their panels
    fig = Figure(figsize=(WIDE, rows * (side + 0.5) + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    labels = [_literal(c)[:12] for c in classes] if k <= 12 else [""] * k
    norm = PowerNorm(0.45, vmin=0, vmax=1)
    for i, ax in enumerate(axes):
        if i >= len(panels):
            ax.axis("off")
            continue
        cm = cms[i]
        rate = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        im = ax.imshow(rate, cmap="Blues", norm=norm)
        if k <= 8:  # beyond that the numbers are unreadable; the colours still show the pattern
            for r in range(k):
                for c in range(k):
                    ax.text(c, r, f"{cm[r, c]:.0f}", ha="center", va="center", fontsize=9.5 if k <= 4 else 8.5,
                            color="white" if rate[r, c] > 0.6 else "black")
        ax.set_xticks(range(k), labels if i // cols == rows - 1 or i + cols >= len(panels) else [""] * k,
                      rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
        ax.set_yticks(range(k), labels if i % cols == 0 else [""] * k)
        ax.set_title(_wrap(panels[i][0], int(side * 11)), fontsize=9)
    fig.colorbar(im, ax=axes.tolist(), shrink=0.8, label="share of the true class (row)")
    fig.supxlabel("predicted")
    fig.supylabel("true")
    return _save(fig, path)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.fill(line, max(width, 12)) for line in _literal(text).split("\n"))


@legible
def image_grid(items: list[tuple[dict, str]], data_root: Path, title: str, path: Path, thumb: int = 200,
               cols: int = 5) -> Path | None:
    """Val images with a caption each (`items`: (prediction, caption)); mistakes get a red frame and
    a red caption, right answers green."""
    from PIL import Image

    shown = []
    for p, caption in items:
        try:
            with Image.open(Path(data_root) / p["path"]) as im:
                im = im.convert("RGB")
                im.thumbnail((thumb, thumb))
                shown.append((p, caption, np.asarray(im)))
        except (OSError, ValueError):
            continue  # a moved or unreadable image leaves a gap, not a failed report
    if not shown:
        print(f"  note: no val images found under {str(data_root)!r}; skipping an image grid")
        return None
    rows = -(-len(shown) // cols)
    fig = Figure(figsize=(WIDE, rows * (WIDE / cols + 0.55) + 0.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    for ax, (p, caption, img) in zip(axes, shown):
        ax.axis("on")
        ax.imshow(img)
        colour = MISTAKE_COLOR if p["pred"] != p["true"] else CORRECT_COLOR
        ax.set_title(_literal(caption), fontsize=9, color=colour)
        for s in ax.spines.values():
            s.set_edgecolor(colour)
            s.set_linewidth(3 if p["pred"] != p["true"] else 0.8)
    fig.suptitle(_literal(title))
    return _save(fig, path, dpi=90)  # photos compress poorly in PNG: keep the embedded HTML light


MARKERS, LINES = "osD^vP*X", ("-", "--", "-.", ":")


@legible
def reliability_diagram(curves: list[dict], path: Path) -> Path | None:
    """Calibration of one or two methods: accuracy against mean confidence per confidence bin (a
    calibrated model sits on the diagonal), and how many val images fall in each bin."""
    curves = [c for c in curves if c.get("bins")]
    if not curves:
        return None
    fig = Figure(figsize=(WIDE, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(1.3, 1))
    lo = min(b["lo"] for c in curves for b in c["bins"])
    lo = np.floor(lo * 10) / 10
    left.plot([lo, 1], [lo, 1], color="grey", linestyle=":", linewidth=1, label="calibrated")
    width = (curves[0]["bins"][0]["hi"] - curves[0]["bins"][0]["lo"]) / (len(curves) + 0.5)
    for i, c in enumerate(curves):
        conf = [b["confidence"] for b in c["bins"]]
        left.plot(conf, [b["accuracy"] for b in c["bins"]], marker=MARKERS[i], linestyle=LINES[i],
                  label=f"{_literal(c['name'])} (ECE {c['ece']:.3f})")
        right.bar([b["lo"] + (i + 0.75) * width for b in c["bins"]], [b["n"] for b in c["bins"]], width=width,
                  label=_literal(c["name"]), alpha=0.8)
    left.set_xlim(lo, 1.01)
    left.set_ylim(min(lo, min(b["accuracy"] for c in curves for b in c["bins"])) - 0.02, 1.02)
    left.set_xlabel("confidence: the predicted class's probability (bin mean)")
    left.set_ylabel("accuracy in the bin")
    # below the panels, never over a point (a calibrated model's points run along the upper left)
    fig.legend(handles=left.get_legend_handles_labels()[0], loc="outside lower center", ncols=len(curves) + 1)
    right.set_yscale("log")
    right.set_xlim(lo, 1.01)
    right.set_xlabel("confidence (bin)")
    right.set_ylabel("val images (log scale)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return _save(fig, path)


@legible
def pca_codes(train: np.ndarray, train_labels: np.ndarray, val: np.ndarray | None, val_labels: np.ndarray | None,
              classes: list[str], title: str, path: Path) -> Path:
    """2-D PCA of cached codes coloured by class: fitted on train, val projected into the same axes
    (what a head trained on train would see), train as faint dots and val as outlined triangles."""
    from sklearn.decomposition import PCA

    import matplotlib

    pca = PCA(n_components=min(2, *train.shape), random_state=0).fit(train)
    var = pca.explained_variance_ratio_
    # a cache with a single code dimension (or one image) still gets a plot, on the line y = 0
    project = lambda x: np.pad(pca.transform(x), ((0, 0), (0, 2 - pca.n_components_)))  # noqa: E731
    palette = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "viridis"]
    colour = lambda i: palette(i % 20) if len(classes) <= 20 else palette(i / max(len(classes) - 1, 1))  # noqa: E731
    fig = Figure(figsize=(WIDE, 4.6), layout="constrained")
    ax = fig.subplots()
    t = project(train)
    v = project(val) if val is not None and len(val) else None
    for i, c in enumerate(classes):
        m = train_labels == i
        ax.scatter(t[m, 0], t[m, 1], s=16, alpha=0.45, color=colour(i),
                   label=f"{_literal(c)} (train)" if len(classes) <= 12 else None)
        if v is not None:
            mv = val_labels == i
            ax.scatter(v[mv, 0], v[mv, 1], s=34, marker="^", color=colour(i), edgecolors="black", linewidths=0.5,
                       label=f"{_literal(c)} (val)" if len(classes) <= 12 else None)
    ax.set_xlabel(f"PC1 ({100 * var[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * var[1]:.0f}% of variance)" if len(var) > 1 else "PC2")
    ax.set_title(_literal(title))
    ax.grid(alpha=0.3)
    if len(classes) <= 12:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)
