"""The report's figures: which ones the saved runs allow, drawn by `figures`, each with its caption.
A figure whose inputs are gone (images moved, cache deleted) is skipped with a printed note.
"""
from __future__ import annotations

from pathlib import Path

from .. import UserError
from ..runs.folder import Run
from .diagnostics import label_curves, top_losses
from .render import FigureFile, md_text
from .rows import fmt_acc
from .verdict import recommend

# `figures` (matplotlib) and the codes store (h5py) are imported where a figure is drawn.


def existing(path_str, run: Run) -> Path | None:
    """A path recorded in a run, as given (relative to where the stage ran) or relative to the run."""
    if not path_str:
        return None
    p = Path(path_str)
    for c in (p, run.dir / p) if not p.is_absolute() else (p,):
        if c.exists():
            return c
    return None


def _shown(path: Path | None, caption: str) -> FigureFile | None:
    return None if path is None else FigureFile(path.name, caption)


def _class(classes: list[str], i: int) -> str:
    return classes[i] if 0 <= i < len(classes) else str(i)


def loss_caption(p: dict, classes: list[str], kind: str) -> str:
    """'ant_12.jpg / pred bees 0.93 / true ants, loss 2.65': what fastai's plot_top_losses shows."""
    name = Path(p["path"]).name
    name = name if len(name) <= 24 else name[:11] + "…" + name[-12:]
    conf = f"{p['score']:.2f}" + (" margin" if kind == "margin" else "")
    loss = f", loss {p['loss']:.2f}" if "loss" in p else ""
    return f"{name}\npred {_class(classes, p['pred'])} {conf}\ntrue {_class(classes, p['true'])}{loss}"


def top_loss_figures(runs: list[Run], rows: list[dict], figdir: Path) -> list[FigureFile]:
    """Top-loss grids of the recommended method and of the best (one grid when they are the same)."""
    from . import figures

    rec, best, _ = recommend(rows, runs)
    by_slug, classes, made = {r.slug: r for r in runs}, list(runs[0].m.get("classes") or []), []
    for row, role in ((rec, "recommended"), (best, "best on val")):
        run = by_slug[row["run"]]
        if any(run.slug in f.name for f in made):
            continue
        root, top = existing(run.m.get("data_root"), run), top_losses(run)
        if root is None or not root.is_dir() or not top:
            print(f"  note: no val images of {run.slug} at {run.m.get('data_root')!r} or no predictions; "
                  "skipping its top losses")
            continue
        kind = run.m.get("score_kind", "probability" if run.m["stage"] == "finetune" else "score")
        path = figures.image_grid([(p, loss_caption(p, classes, kind)) for p in top], root,
                                  f"{row['name']} ({role}): val images with the highest loss",
                                  figdir / f"losses-{run.slug}.png")
        if path is not None:
            n_wrong = sum(p["pred"] != p["true"] for p in run.m.get("predictions") or [])
            made.append(FigureFile(path.name, f"Top losses of **{md_text(row['name'])}** ({role}; {n_wrong} "
                                   f"mistake{'s' * (n_wrong != 1)} on val in all): the val images it was most wrong "
                                   "about, highest loss first, with the predicted class and its "
                                   f"{kind} (red: wrong, green: right but unsure). "
                                   f"The full list is {md_text(run.dir.name)}/predictions.csv."))
    return made


def make_figures(runs: list[Run], rows: list[dict], figdir: Path) -> dict[str, FigureFile]:
    """The figures the saved runs allow, by role: compute, confusion, labels, pca."""
    classes = list(runs[0].m.get("classes") or [])
    made = {"compute": _compute_figure(rows, figdir), "confusion": _confusion_figure(runs, rows, classes, figdir),
            "labels": _labels_figure(runs, rows, figdir), "pca": _pca_figure(runs, classes, figdir)}
    return {role: f for role, f in made.items() if f is not None}


def _compute_figure(rows: list[dict], figdir: Path) -> FigureFile | None:
    from . import figures

    points = [{"label": r["name"], "stage": r["stage"], "accuracy": r["accuracy"], "lo": r["accuracy_ci95_lo"],
               "hi": r["accuracy_ci95_hi"], "seconds": r["total_s"]} for r in rows if r["kind"] == "ours"]
    refs = [{"label": r["name"], "accuracy": r["accuracy"]} for r in rows if r["is_reference"]]
    return _shown(figures.accuracy_vs_compute(points, refs, figdir / "accuracy-vs-compute.png"),
                  "Val accuracy against total compute seconds (log scale), whiskers = 95% Wilson interval. Heads on "
                  "cached codes include the extraction they share. Dashed lines: published reference numbers (not "
                  "our runs).")


def _confusion_figure(runs: list[Run], rows: list[dict], classes: list[str], figdir: Path) -> FigureFile | None:
    from . import figures

    by_slug = {r.slug: r for r in runs}
    panels = [(f"{r['name']}\n{fmt_acc(r)}", by_slug[r["run"]].m["val"]["confusion"]) for r in rows
              if r["kind"] == "ours" and by_slug[r["run"]].m["val"].get("confusion")]
    if not panels:
        return None
    return _shown(figures.confusion_grid(panels, classes, figdir / "confusion.png"),
                  "Confusion matrices on val, one panel per method in table order, on one colour scale (rows: true "
                  "class, columns: predicted).")


def _labels_figure(runs: list[Run], rows: list[dict], figdir: Path) -> FigureFile | None:
    from . import figures

    curves = label_curves(runs, rows)
    if not curves:
        return None
    return _shown(figures.label_efficiency(curves, figdir / "label-efficiency.png"),
                  "Val accuracy against the number of training images per class, for the heads on cached codes: the "
                  f"line is the mean over {curves[0]['draws']} random draws of that many images per class, the band "
                  "spans the worst to the best draw (dots: each draw), each draw's settings chosen by CV on the drawn "
                  "images only; the last point is the full train set.")


def _pca_figure(runs: list[Run], classes: list[str], figdir: Path) -> FigureFile | None:
    """The cached codes of the first head run, on their first two principal components."""
    from ..codes.store import read_codes
    from . import figures

    run = next((r for r in runs if r.m.get("stage") == "classify" and r.m.get("features_file")), None)
    if run is None:
        return None
    f = existing(run.m["features_file"], run)
    if f is None:
        print(f"  note: features file {run.m['features_file']!r} is gone; skipping the PCA figure")
        return None
    try:
        codes = read_codes(f)
    except UserError as e:
        print(f"  note: {e}; skipping the PCA figure")
        return None
    train = codes.splits.get("train") or next(iter(codes.splits.values()))
    val = codes.splits.get("val")
    title = f"PCA of {codes.header.backbone or run.m.get('backbone')} codes ({f.name})"
    path = figures.pca_codes(train.codes, train.labels, val.codes if val else None, val.labels if val else None,
                             list(codes.classes) or classes, title, figdir / f"pca-{run.slug}.png")
    return _shown(path, f"The cached codes of {f.name} projected on their first two principal components (fitted on "
                        "train): train as dots, val as outlined triangles, coloured by class. Classes that form "
                        "separate clusters here are easy for a linear head on the frozen codes.")


def curve_figures(runs: list[Run], rows: list[dict], figdir: Path) -> list[FigureFile]:
    """The learning curves of every run that logged a history."""
    from . import figures

    names = {r["run"]: r["name"] for r in rows if r["kind"] == "ours"}
    made = []
    for run in (r for r in runs if r.history):
        bv = run.m.get("best_val") or {}
        name = names.get(run.slug, run.m["method"])
        path = figures.learning_curves(run.history, name, figdir / f"curves-{run.slug}.png", bv.get("epoch"))
        made.append(FigureFile(path.name, f"Learning curves of **{md_text(name)}**: loss and accuracy per epoch on "
                                          "train and val" + (", best val epoch dotted." if bv.get("epoch") else ".")))
    return made
