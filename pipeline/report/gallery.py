"""The report's figures: which ones the saved runs allow, drawn by `figures`, each with its caption.
A figure whose inputs are gone (images moved, cache deleted) is skipped with a printed note.
"""
from __future__ import annotations

from pathlib import Path

from .. import UserError
from ..runs.read import Run, existing
from .blocks import FigureFile, md_text
from .choice import Judged, judge
from .diagnostics import label_curves, top_losses
from .quality import has_probabilities, reliability
from .rows import fmt_acc

# `figures` (matplotlib) and the codes store (h5py) are imported where a figure is drawn.


def _shown(path: Path | None, caption: str) -> FigureFile | None:
    return None if path is None else FigureFile(path.name, caption)


def _class(classes: list[str], i: int) -> str:
    return classes[i] if 0 <= i < len(classes) else str(i)


def score_kind(run: Run) -> str:
    """What a run's saved scores are: its record says; older fine-tunes saved probabilities, heads scores."""
    return run.m.get("score_kind", "probability" if run.m.get("stage") == "finetune" else "score")


def loss_caption(p: dict, classes: list[str], kind: str) -> str:
    """'ant_12.jpg / pred bees 0.93 / true ants, loss 2.65': what fastai's plot_top_losses shows."""
    name = Path(p["path"]).name
    name = name if len(name) <= 24 else name[:11] + "…" + name[-12:]
    conf = f"{p['score']:.2f}" + (" margin" if kind == "margin" else "")
    loss = f", loss {p['loss']:.2f}" if "loss" in p else ""
    return f"{name}\npred {_class(classes, p['pred'])} {conf}\ntrue {_class(classes, p['true'])}{loss}"


def top_loss_figures(runs: list[Run], rows: list[dict], figdir: Path, judged: Judged | None = None) -> list[FigureFile]:
    """Top-loss grids of the recommended method and of the best (one grid when they are the same)."""
    from . import figures

    rec, best, *_ = (judged or judge(rows, runs)).choice
    by_slug, classes, made = {r.slug: r for r in runs}, list(runs[0].m.get("classes") or []), []
    for row, role in ((rec, "recommended"), (best, "best on val")):
        run = by_slug[row["run"]]
        if role != "recommended" and rec is best:
            continue
        root, top = existing(run.m.get("data_root"), run), top_losses(run)
        if root is None or not root.is_dir() or not top:
            print(f"  note: no val images of {run.slug} at {run.m.get('data_root')!r} or no predictions; "
                  "skipping its top losses")
            continue
        kind = score_kind(run)
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


def make_figures(runs: list[Run], rows: list[dict], figdir: Path, judged: Judged | None = None
                 ) -> dict[str, FigureFile]:
    """The figures the saved runs allow, by role: compute, confusion, calibration, labels, pca."""
    classes = list(runs[0].m.get("classes") or [])
    rec, best, *_ = (judged or judge(rows, runs)).choice
    made = {"compute": _compute_figure(rows, rec, figdir),
            "confusion": _confusion_figure(runs, rows, (rec, best), classes, figdir),
            "calibration": calibration_figure(runs, (rec, best), figdir),
            "labels": _labels_figure(runs, rows, figdir), "pca": _pca_figure(runs, classes, figdir)}
    return {role: f for role, f in made.items() if f is not None}


def _compute_figure(rows: list[dict], rec: dict, figdir: Path) -> FigureFile | None:
    from . import compute_plot

    points = [{"label": r["name"], "stage": r["stage"], "accuracy": r["accuracy"], "lo": r["accuracy_ci95_lo"],
               "hi": r["accuracy_ci95_hi"], "seconds": r["total_s"]} for r in rows if r["kind"] == "ours"]
    path = compute_plot.accuracy_vs_compute(points, figdir / "accuracy-vs-compute.png", rec["name"])
    return _shown(path, f"Val accuracy against what making each model cost (compute seconds, log scale), whiskers = "
                        f"95% Wilson interval; ★ **{md_text(rec['name'])}** is the recommended method. The dashed "
                        "step is the Pareto front: no run off it is both cheaper and more accurate than one on it. "
                        "Heads on cached codes include the extraction they share; runs at one spot are drawn a little "
                        "apart sideways. The published numbers (another backbone and protocol) are in the table "
                        "above, not here.")


def _confusion_figure(runs: list[Run], rows: list[dict], pair: tuple[dict, dict], classes: list[str],
                      figdir: Path) -> FigureFile | None:
    """Every method's confusion matrix with up to 6 classes (12 panels at most); with more, the
    recommended and the best only."""
    from . import figures

    by_slug = {r.slug: r for r in runs}
    ours = [r for r in rows if r["kind"] == "ours"] if len(classes) <= 6 else list({r["run"]: r for r in pair}.values())
    panels = [(f"{r['name']}\n{fmt_acc(r)}", by_slug[r["run"]].m["val"]["confusion"]) for r in ours[:12]
              if by_slug[r["run"]].m["val"].get("confusion")]
    if not panels:
        return None
    which = "one panel per method in table order" if len(panels) == len(ours) else \
        f"the first {len(panels)} methods in table order" if len(classes) <= 6 else "the recommended and the best"
    return _shown(figures.confusion_grid(panels, classes, figdir / "confusion.png"),
                  f"Confusion matrices on val, {which}: each row is a true class and shows where its images went, as "
                  "a share of that class (the colour, each panel on the same 0-1 scale) and as a count (the "
                  "number).")


def _probabilistic(runs: list[Run], pair: tuple[dict, dict]) -> tuple[list[dict], list[dict]]:
    """The recommended and the best (once when the same): those with probabilities, those with margins."""
    by_slug = {r.slug: r for r in runs}
    chosen = list({r["run"]: r for r in pair}.values())
    return ([r for r in chosen if has_probabilities(by_slug[r["run"]])],
            [r for r in chosen if not has_probabilities(by_slug[r["run"]])])


def calibration_words(runs: list[Run], rows: list[dict], judged: Judged | None = None) -> str:
    """What the reliability diagram leaves out: a method without probabilities."""
    rec, best, *_ = (judged or judge(rows, runs)).choice
    margins = _probabilistic(runs, (rec, best))[1]
    return " ".join(f"**{md_text(r['name'])}** gives margins, not probabilities, so it has no calibration to show "
                    "(a probabilistic head, e.g. softmax, does where a confidence is needed)." for r in margins)


def calibration_figure(runs: list[Run], pair: tuple[dict, dict], figdir: Path) -> FigureFile | None:
    """The reliability diagram of the recommended and the best method."""
    from . import figures

    by_slug = {r.slug: r for r in runs}
    curves = [{"name": r["name"], **reliability(by_slug[r["run"]])} for r in _probabilistic(runs, pair)[0]]
    if not curves:
        return None
    path = figures.reliability_diagram(curves, figdir / "calibration.png")
    names = " and ".join(f"**{md_text(c['name'])}**" for c in curves)
    return _shown(path, f"Reliability of {names}: val images binned by the predicted class's probability (15 "
                        "equal-width bins), each bin's accuracy against its mean confidence; on the dotted diagonal a "
                        "confidence of 0.9 is right 9 times in 10. ECE (in the legend) is the bin-weighted mean gap. "
                        "Right: how many val images fall in each bin.")


def _labels_figure(runs: list[Run], rows: list[dict], figdir: Path) -> FigureFile | None:
    from .label_plot import ONE_PANEL_MOST, label_efficiency

    curves = label_curves(runs, rows)
    if not curves:
        return None
    return _shown(label_efficiency(curves, figdir / "label-efficiency.png"),
                  "Val accuracy against the number of training images per class, for the heads on cached codes: the "
                  f"line is the mean over {curves[0]['draws']} random draws of that many images per class, the band "
                  "spans the worst to the best draw (min–max, not ± sd; dots: each draw), each draw's settings chosen "
                  "by CV on the drawn images only; the last point is the full train set"
                  + (f"; past {ONE_PANEL_MOST} heads, a panel each, the other heads' means in grey behind"
                     if len(curves) > ONE_PANEL_MOST else "")
                  + (f"; dashed: chance, {chance['what']} ({100 * chance['accuracy']:.1f}%)."
                     if (chance := curves[0].get("chance")) else "."))


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
