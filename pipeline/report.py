"""Build the report from saved runs: one metrics table, figures and a plain-words summary.

Usage: python -m pipeline report --runs RUNS_DIR --out reports/

Reads every RUNS_DIR/**/metrics.json (and the history.json, features file and val images the runs
point to) and writes report.md, a self-contained report.html, metrics.csv and figures/*.png. It
recomputes no model and never imports torch, so it runs wherever the run folders were copied.

Flow, top to bottom: load_runs -> check_one_dataset -> table_rows -> summary_paragraphs and
make_figures -> build_document -> render_markdown / render_html / write_csv. Everything but
`run` is a pure function of its arguments (figures aside, which write their PNGs).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from . import UserError
from .config import opt
from .files import read_json, write_text
from .render import build_document, render_html, render_markdown
from .runs import Run, check_one_dataset, load_runs
from .summary import fmt_acc, summary_paragraphs, table_rows, write_csv


@dataclass(frozen=True)
class Config:
    runs: Path = opt(Path("reports/runs"), "folder searched recursively for the metrics.json of each run")
    out: Path = opt(Path("reports"), "output folder for report.md, report.html, metrics.csv and figures/")
    bench: Path = opt(
        Path("reports/benchmarks.json"), "benchmark results from bench/run.py, included when the file exists"
    )
    title: str = opt("", "report title; empty means 'cnncodes report: <dataset>'")
    note: str = opt("", "a line under the title, e.g. which weights or command made these runs; empty = none")


def read_bench(path: Path | str | None) -> dict | None:
    """The benchmark results file when it exists (it is optional); UserError when it is broken."""
    if not path or not Path(path).is_file():
        return None
    doc = read_json(path, "benchmarks file")
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise UserError(f"benchmarks file {str(path)!r} has no 'results' list (re-run `make bench` or delete it)")
    return doc


# ---------------------------------------------------------------------------------------------
# Figures


def _existing(path_str, run: Run) -> Path | None:
    """A path recorded in a run, as given (relative to where the stage ran) or relative to the run."""
    if not path_str:
        return None
    p = Path(path_str)
    for c in (p, run.dir / p) if not p.is_absolute() else (p,):
        if c.exists():
            return c
    return None


def make_figures(runs: list[Run], rows: list[dict], figdir: Path) -> list[tuple[str, str]]:
    """Draw every figure the saved runs allow; returns (file name, caption) in report order.
    A figure whose inputs are gone (images moved, cache deleted) is skipped with a printed note."""
    from . import figures as F

    by_slug = {r.slug: r for r in runs}
    ours = [r for r in rows if r["kind"] == "ours"]
    classes = list(runs[0].m.get("classes") or [])
    made: list[tuple[str, str]] = []

    def add(path: Path | None, caption: str):
        if path is not None:
            made.append((path.name, caption))

    points = [{"label": r["method"], "stage": r["stage"], "accuracy": r["accuracy"], "lo": r["accuracy_ci95_lo"],
               "hi": r["accuracy_ci95_hi"], "seconds": r["total_s"]} for r in ours]
    refs = [{"label": r["method"], "accuracy": r["accuracy"]} for r in rows if r["is_reference"]]
    add(F.accuracy_vs_compute(points, refs, figdir / "accuracy-vs-compute.png"),
        "Val accuracy against total compute seconds (log scale), whiskers = 95% Wilson interval. Heads on cached "
        "codes include the extraction they share. Dashed lines: published reference numbers (not our runs).")

    best = by_slug[ours[0]["run"]]
    root = _existing(best.m.get("data_root"), best)
    if root is None or not root.is_dir():
        print(f"  note: the val images of {best.slug} are not at {best.m.get('data_root')!r}; skipping the image grid")
    elif best.m.get("predictions"):
        n_wrong = sum(p["pred"] != p["true"] for p in best.m["predictions"])
        add(
            F.image_grid(
                best.m["predictions"],
                classes,
                root,
                f"{ours[0]['method']}: val images, mistakes first",
                figdir / f"grid-{best.slug}.png",
            ),
            f"Val images as classified by the best method, {ours[0]['method']} "
            f"({n_wrong} mistake{'s' * (n_wrong != 1)} in all): mistakes first, framed in red with predicted and "
            "true label, then a sample of correct ones.",
        )

    for r in ours:
        run = by_slug[r["run"]]
        add(F.confusion_matrix(run.m["val"]["confusion"], classes, f"{r['method']}\nval accuracy {fmt_acc(r)}",
                               figdir / f"confusion-{run.slug}.png"),
            f"Confusion matrix of {r['method']} on val (rows: true class, columns: predicted).")

    for run in runs:
        if run.history:
            bv = run.m.get("best_val") or {}
            add(F.learning_curves(run.history, run.m["method"], figdir / f"curves-{run.slug}.png", bv.get("epoch")),
                f"Learning curves of {run.m['method']}: loss and accuracy per epoch on train and val"
                + (", best val epoch dotted." if bv.get("epoch") is not None else "."))

    src = next((r for r in runs if r.m.get("stage") == "classify" and r.m.get("features_file")), None)
    if src is not None:
        add(*_pca_figure(src, classes, figdir, F))
    return made


def _pca_figure(run: Run, classes: list[str], figdir: Path, F) -> tuple[Path | None, str]:
    from .cache import read_codes

    f = _existing(run.m["features_file"], run)
    if f is None:
        print(f"  note: features file {run.m['features_file']!r} is gone; skipping the PCA figure")
        return None, ""
    try:
        codes = read_codes(f)
    except UserError as e:
        print(f"  note: {e}; skipping the PCA figure")
        return None, ""
    train = codes.splits.get("train") or next(iter(codes.splits.values()))
    val = codes.splits.get("val")
    title = f"PCA of {codes.header.backbone or run.m.get('backbone')} codes ({f.name})"
    path = F.pca_codes(train.codes, train.labels, val.codes if val else None, val.labels if val else None,
                       list(codes.classes) or classes, title, figdir / f"pca-{run.slug}.png")
    return path, (f"The cached codes of {f.name} projected on their first two principal components (fitted on train): "
                  "train as dots, val as outlined triangles, coloured by class. Classes that form separate clusters "
                  "here are easy for a linear head on the frozen codes.")


def run(cfg: Config) -> dict[str, Path]:
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise UserError(f"--out {str(cfg.out)!r} is a file; give a folder for report.md, report.html and figures/")
    runs = load_runs(cfg.runs)
    dataset = check_one_dataset(runs)
    rows = table_rows(runs)
    bench = read_bench(cfg.bench)
    out = Path(cfg.out)
    figdir = out / "figures"
    figures = make_figures(runs, rows, figdir)
    blocks = build_document(rows, summary_paragraphs(rows, runs), figures, bench, dataset=dataset,
                            classes=list(runs[0].m.get("classes") or []), runs_dir=str(cfg.runs), n_runs=len(runs),
                            generated=time.strftime("%Y-%m-%d %H:%M %Z"), title=cfg.title, note=cfg.note)
    written = {"md": write_text(out / "report.md", render_markdown(blocks)),
               "html": write_text(out / "report.html", render_html(blocks, figdir)),
               "csv": write_csv(rows, out / "metrics.csv")}
    best = rows[0]
    print(f"report of {len(runs)} run{'s' * (len(runs) != 1)} on {dataset}: best {best['method']} {fmt_acc(best)}")
    print(f"wrote {written['md']}, {written['html']}, {written['csv']} and {len(figures)} figures in {figdir}")
    return written
