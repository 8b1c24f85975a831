"""Report figures: learning curves, confusion matrices, image grids, label efficiency, accuracy vs
compute, PCA.

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

DPI = 110
CLASSIFY_COLOR, FINETUNE_COLOR, MISTAKE_COLOR, CORRECT_COLOR = "#1f77b4", "#ff7f0e", "#d62728", "#2a7d2a"


def _literal(text) -> str:
    r"""A name (class, file, method) as matplotlib text that is never parsed as math: matplotlib reads
    text between two `$` as mathtext (a file `cost_$5_$10.jpg` would fail to draw); an escaped `\$`
    is a plain dollar sign. Every string from the outside world goes through here."""
    return str(text).replace("$", r"\$")


def _save(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    from ..core.files import atomic_write  # a killed report leaves the old PNG or the new one, never 0 bytes

    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight"))


def _plain_log_x(ax) -> None:
    """A log x axis ticked 1, 2, 5, 10, ...: plain numbers read better than 2×10⁰ on a short axis."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _column(history: list[dict], key: str) -> np.ndarray:
    # missing or null entries (e.g. no val pass that epoch) become gaps, not zeros
    return np.array([np.nan if h.get(key) is None else float(h[key]) for h in history], dtype=float)


def learning_curves(history: list[dict], title: str, path: Path, best_epoch: int | None = None) -> Path:
    """Loss and accuracy per epoch, train and val, side by side; the best val epoch dotted."""
    epochs = np.array([h.get("epoch", i + 1) for i, h in enumerate(history)], dtype=float)
    fig = Figure(figsize=(9, 3.4))
    for ax, key, label, scale in zip(fig.subplots(1, 2), ("loss", "acc"), ("loss", "accuracy (%)"), (1, 100)):
        for split, style in (("train", "-"), ("val", "--")):
            ax.plot(epochs, _column(history, f"{split}_{key}") * scale, style, marker=".", label=split)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1, label=f"best val epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_literal(title), fontsize=10)
    return _save(fig, path, dpi=85)  # photos compress poorly in PNG: keep the embedded HTML light


def confusion_grid(panels: list[tuple[str, list[list[int]]]], classes: list[str], path: Path) -> Path:
    """Every method's val confusion matrix (rows: true, columns: predicted) as small multiples on one
    colour scale, so panels compare at a glance; counts written in when there are few classes."""
    cms = [np.asarray(cm, dtype=int) for _, cm in panels]
    k, vmax = len(classes), max(int(cm.max()) for cm in cms) or 1
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    side = max(2.3, 0.32 * k + 1.3)
    fig = Figure(figsize=(cols * side + 0.8, rows * (side + 0.35)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    labels = [_literal(c) for c in classes] if k <= 12 else [""] * k
    for i, ax in enumerate(axes):
        if i >= len(panels):
            ax.axis("off")
            continue
        cm = cms[i]
        im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=vmax)
        if k <= 12:  # beyond that the numbers are unreadable; the colours still show the pattern
            for r in range(k):
                for c in range(k):
                    ax.text(c, r, str(cm[r, c]), ha="center", va="center", fontsize=8,
                            color="white" if cm[r, c] > vmax / 2 else "black")
        ax.set_xticks(range(k), labels if i // cols == rows - 1 or i + cols >= len(panels) else [""] * k,
                      rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center", fontsize=7)
        ax.set_yticks(range(k), labels if i % cols == 0 else [""] * k, fontsize=7)
        ax.set_title(_literal(panels[i][0]), fontsize=8)
    fig.colorbar(im, ax=axes.tolist(), shrink=0.8, label="val images")
    fig.supxlabel("predicted", fontsize=8)
    fig.supylabel("true", fontsize=8)
    return _save(fig, path)


def image_grid(items: list[tuple[dict, str]], data_root: Path, title: str, path: Path, thumb: int = 160,
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
    cols = min(cols, len(shown))
    rows = -(-len(shown) // cols)
    fig = Figure(figsize=(cols * 2.1, rows * 2.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    for ax, (p, caption, img) in zip(axes, shown):
        ax.axis("on")
        ax.imshow(img)
        colour = MISTAKE_COLOR if p["pred"] != p["true"] else CORRECT_COLOR
        ax.set_title(_literal(caption), fontsize=7, color=colour)
        for s in ax.spines.values():
            s.set_edgecolor(colour)
            s.set_linewidth(3 if p["pred"] != p["true"] else 0.8)
    fig.suptitle(_literal(title), fontsize=10)
    return _save(fig, path, dpi=85)  # photos compress poorly in PNG: keep the embedded HTML light


def label_efficiency(curves: list[dict], path: Path) -> Path | None:
    """Val accuracy against training images per class (log x): each head's mean over the draws
    with a band from the worst to the best draw, the draws as dots, and the full train set as the
    last point of each line."""
    if not curves:
        return None
    fig = Figure(figsize=(7.5, 4.4))
    ax = fig.subplots()
    for c in curves:
        x = np.array([r["per_class"] for r in c["rows"]], dtype=float)
        mean = np.array([r["mean"] for r in c["rows"]]) * 100
        lo = np.array([min(r["accuracy"]) for r in c["rows"]]) * 100
        hi = np.array([max(r["accuracy"]) for r in c["rows"]]) * 100
        full = c["full"]
        if full["per_class"] and full["accuracy"] is not None:
            x, mean = np.append(x, full["per_class"]), np.append(mean, 100 * full["accuracy"])
            lo, hi = np.append(lo, mean[-1]), np.append(hi, mean[-1])
        (line,) = ax.plot(x, mean, marker="o", markersize=4, label=_literal(c["name"]))
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
        for r in c["rows"]:
            ax.scatter([r["per_class"]] * len(r["accuracy"]), np.array(r["accuracy"]) * 100, s=6,
                       color=line.get_color(), alpha=0.5)
    _plain_log_x(ax)
    ax.set_xlabel("training images per class (log scale; last point: all of train)")
    ax.set_ylabel("val accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def accuracy_vs_compute(points: list[dict], references: list[dict], path: Path) -> Path | None:
    """Val accuracy against total compute seconds (log x), with 95% Wilson whiskers.

    points: {label, stage, accuracy, lo, hi, seconds}; references: {label, accuracy} drawn as
    dashed lines because they have no compute we measured.
    """
    points = [p for p in points if p.get("seconds") and p["seconds"] > 0]  # log axis: 0 s cannot be placed
    if not points:
        print("  note: no run recorded compute seconds; skipping the accuracy-vs-compute figure")
        return None
    fig = Figure(figsize=(8, 4.8))
    ax = fig.subplots()
    seen, placed = set(), []
    for p in sorted(points, key=lambda p: (p["seconds"], -p["accuracy"])):
        colour = FINETUNE_COLOR if p["stage"] == "finetune" else CLASSIFY_COLOR
        kind = "fine-tuning" if p["stage"] == "finetune" else "cached codes + head"
        y = 100 * p["accuracy"]
        ax.errorbar(p["seconds"], y, yerr=[[y - 100 * p["lo"]], [100 * p["hi"] - y]], fmt="o", color=colour,
                    capsize=3, label=None if kind in seen else kind)
        seen.add(kind)
        # runs with near-equal accuracy and compute would print their labels on top of each
        # other: push each later label one line down per earlier neighbour
        near = sum(1 for s, a in placed if abs(np.log10(p["seconds"] / s)) < 0.8 and abs(a - y) < 0.6)
        placed.append((p["seconds"], y))
        ax.annotate(_literal(p["label"]), (p["seconds"], y), xytext=(6, 4 - 10 * near), textcoords="offset points",
                    fontsize=7)
    # published numbers sit close together, so they are named in the legend, not on the plot
    for r, style in zip(references, ("--", ":", "-.", (0, (1, 3)))):
        ax.axhline(100 * r["accuracy"], color="grey", linestyle=style, linewidth=0.9,
                   label=f"{_literal(r['label'])}: {100 * r['accuracy']:.2f}%")
    _plain_log_x(ax)
    ax.set_xlabel("compute seconds, log scale (extract + fit + train + predict)")
    ax.set_ylabel("val accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(
        fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False
    )  # below: never over a point
    # room on the right for the labels of the slowest runs
    lo, hi = min(p["seconds"] for p in points), max(p["seconds"] for p in points)
    ax.set_xlim(lo / 2, hi * 4)
    return _save(fig, path)


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
    fig = Figure(figsize=(6.4, 5))
    ax = fig.subplots()
    t = project(train)
    v = project(val) if val is not None and len(val) else None
    for i, c in enumerate(classes):
        m = train_labels == i
        ax.scatter(
            t[m, 0], t[m, 1], s=14, alpha=0.45, color=colour(i),
            label=f"{_literal(c)} (train)" if len(classes) <= 12 else None
        )
        if v is not None:
            mv = val_labels == i
            ax.scatter(v[mv, 0], v[mv, 1], s=30, marker="^", color=colour(i), edgecolors="black", linewidths=0.5,
                       label=f"{_literal(c)} (val)" if len(classes) <= 12 else None)
    ax.set_xlabel(f"PC1 ({100 * var[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * var[1]:.0f}% of variance)" if len(var) > 1 else "PC2")
    ax.set_title(_literal(title), fontsize=9)
    ax.grid(alpha=0.3)
    if len(classes) <= 12:
        ax.legend(fontsize=7, markerscale=1.2)
    return _save(fig, path)
