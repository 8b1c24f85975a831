"""Build the report from saved runs: one metrics table, figures and a plain-words summary.

Usage: python -m pipeline report --runs RUNS_DIR --out reports/

Reads every RUNS_DIR/**/metrics.json (and the history.json, features file and val images the runs
point to) and writes report.md, a self-contained report.html, metrics.csv, per_class.csv and
figures/*.png, and removes the PNGs in figures/ it no longer shows. It recomputes no model and never
imports torch, so it runs wherever the run folders were copied.

Flow, top to bottom: load_runs -> check_one_dataset -> document (table_rows, verdict, summary,
diagnostics, figures) -> build_document -> render_markdown / render_html / the CSVs. Everything
but `run` is a pure function of its arguments (figures aside, which write their PNGs).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .. import UserError
from ..core.cli import Settings, opt
from ..report.diagnostics import write_per_class_csv
from ..core.files import read_json, write_text
from ..report.render import Document, build_document, render_html, render_markdown
from ..runs.folder import Run, check_one_dataset, load_runs
from ..report.summary import fmt_acc, legend, summary_paragraphs, table, table_rows, verdict, write_csv


@dataclass(frozen=True)
class Config(Settings):
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


def _class(classes: list[str], i: int) -> str:
    return classes[i] if 0 <= i < len(classes) else str(i)


def loss_caption(p: dict, classes: list[str], kind: str) -> str:
    """'ant_12.jpg / pred bees 0.93 / true ants, loss 2.65': what fastai's plot_top_losses shows."""
    name = Path(p["path"]).name
    name = name if len(name) <= 24 else name[:11] + "…" + name[-12:]
    conf = f"{p['score']:.2f}" + (" margin" if kind == "margin" else "")
    loss = f", loss {p['loss']:.2f}" if "loss" in p else ""
    return f"{name}\npred {_class(classes, p['pred'])} {conf}\ntrue {_class(classes, p['true'])}{loss}"


def top_loss_figures(runs: list[Run], rows: list[dict], figdir: Path, F) -> list[tuple[str, str]]:
    """Top-loss grids of the recommended method and of the best (one grid when they are the same)."""
    from ..report.diagnostics import top_losses
    from ..report.summary import recommend

    rec, best, _ = recommend(rows, runs)
    by_slug, classes, made = {r.slug: r for r in runs}, list(runs[0].m.get("classes") or []), []
    for row, role in ((rec, "recommended"), (best, "best on val")):
        run = by_slug[row["run"]]
        if any(run.slug in name for name, _ in made):
            continue
        root, top = _existing(run.m.get("data_root"), run), top_losses(run)
        if root is None or not root.is_dir() or not top:
            print(f"  note: no val images of {run.slug} at {run.m.get('data_root')!r} or no predictions; "
                  "skipping its top losses")
            continue
        kind = run.m.get("score_kind", "probability" if run.m["stage"] == "finetune" else "score")
        path = F.image_grid([(p, loss_caption(p, classes, kind)) for p in top], root,
                            f"{row['name']} ({role}): val images with the highest loss",
                            figdir / f"losses-{run.slug}.png")
        if path is not None:
            n_wrong = sum(p["pred"] != p["true"] for p in run.m.get("predictions") or [])
            made.append((path.name, f"Top losses of **{row['name']}** ({role}; {n_wrong} mistake{'s' * (n_wrong != 1)} "
                                    f"on val in all): the val images it was most wrong about, highest loss first, with "
                                    f"the predicted class and its {kind} (red: wrong, green: right but unsure). "
                                    f"The full list is {run.dir.name}/predictions.csv."))
    return made


def make_figures(runs: list[Run], rows: list[dict], figdir: Path) -> dict[str, tuple[str, str]]:
    """The figures the saved runs allow, by role: compute, confusion, labels, pca. A figure whose
    inputs are gone (images moved, cache deleted) is skipped with a printed note."""
    from ..report import figures as F
    from ..report.diagnostics import label_curves

    ours = [r for r in rows if r["kind"] == "ours"]
    classes = list(runs[0].m.get("classes") or [])
    made: dict[str, tuple[str, str]] = {}

    def add(role: str, path: Path | None, caption: str):
        if path is not None:
            made[role] = (path.name, caption)

    points = [{"label": r["name"], "stage": r["stage"], "accuracy": r["accuracy"], "lo": r["accuracy_ci95_lo"],
               "hi": r["accuracy_ci95_hi"], "seconds": r["total_s"]} for r in ours]
    refs = [{"label": r["name"], "accuracy": r["accuracy"]} for r in rows if r["is_reference"]]
    add("compute", F.accuracy_vs_compute(points, refs, figdir / "accuracy-vs-compute.png"),
        "Val accuracy against total compute seconds (log scale), whiskers = 95% Wilson interval. Heads on cached "
        "codes include the extraction they share. Dashed lines: published reference numbers (not our runs).")
    by_slug = {r.slug: r for r in runs}
    panels = [(f"{r['name']}\n{fmt_acc(r)}", by_slug[r["run"]].m["val"]["confusion"]) for r in ours
              if by_slug[r["run"]].m["val"].get("confusion")]
    if panels:
        add("confusion", F.confusion_grid(panels, classes, figdir / "confusion.png"),
            "Confusion matrices on val, one panel per method in table order, on one colour scale (rows: true class, "
            "columns: predicted).")
    curves = label_curves(runs, rows)
    if curves:
        draws = curves[0]["draws"]
        add("labels", F.label_efficiency(curves, figdir / "label-efficiency.png"),
            f"Val accuracy against the number of training images per class, for the heads on cached codes: the line "
            f"is the mean over {draws} random draws of that many images per class, the band spans the worst to the "
            "best draw (dots: each draw), each draw's settings chosen by CV on the drawn images only; the last point "
            "is the full train set.")
    src = next((r for r in runs if r.m.get("stage") == "classify" and r.m.get("features_file")), None)
    if src is not None:
        path, caption = _pca_figure(src, classes, figdir, F)
        add("pca", path, caption)
    return made


def curve_figures(runs: list[Run], rows: list[dict], figdir: Path) -> list[tuple[str, str]]:
    from ..report import figures as F

    names = {r["run"]: r["name"] for r in rows if r["kind"] == "ours"}
    made = []
    for run in (r for r in runs if r.history):
        bv = run.m.get("best_val") or {}
        path = F.learning_curves(run.history, names.get(run.slug, run.m["method"]),
                                 figdir / f"curves-{run.slug}.png", bv.get("epoch"))
        name = names.get(run.slug, run.m["method"])
        made.append((path.name, f"Learning curves of **{name}**: loss and accuracy per epoch on train and val"
                                + (", best val epoch dotted." if bv.get("epoch") else ".")))
    return made


def _pca_figure(run: Run, classes: list[str], figdir: Path, F) -> tuple[Path | None, str]:
    from ..codes.store import read_codes

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


def commands(runs: list[Run], ours: list[dict]) -> list[tuple[str, str]]:
    """(the methods a command made, the command) in table order, each command once; a head's
    run also names the `features` command that made its codes."""
    by_slug, made = {r.slug: r for r in runs}, {}
    for row in ours:
        m = by_slug[row["run"]].m
        if m.get("features_command"):
            made.setdefault(m["features_command"], ["codes for"]).append(row["name"])
        made.setdefault(m.get("command") or "", []).append(row["name"])
    return [(" ".join(names[:1]) + " " + ", ".join(names[1:]) if names[0] == "codes for" else ", ".join(names), c)
            for c, names in made.items()]


def remove_stale(figdir: Path, keep: set[str]) -> list[str]:
    """Delete the PNGs in figures/ that this report no longer shows (left by an earlier report)."""
    stale = sorted(p.name for p in figdir.glob("*.png") if p.name not in keep) if figdir.is_dir() else []
    for name in stale:
        (figdir / name).unlink(missing_ok=True)
    return stale


def document(cfg: Config, runs: list[Run], dataset: str, figdir: Path) -> tuple[Document, list[dict]]:
    """(everything the report says, the table rows), from the run folders; draws the figures."""
    from ..report import diagnostics as D
    from ..report import figures as F

    rows = table_rows(runs)
    classes = list(runs[0].m.get("classes") or [])
    head = (f"Dataset **{dataset}** ({len(classes)} classes: {', '.join(classes[:12])}"
            f"{', ...' if len(classes) > 12 else ''}), {len(runs)} run{'s' * (len(runs) != 1)} from `{cfg.runs}`, "
            f"generated {time.strftime('%Y-%m-%d %H:%M %Z')}.")
    ours = [r for r in rows if r["kind"] == "ours"]
    return Document(
        title=cfg.title or f"cnncodes report: {dataset}", verdict=verdict(rows, runs), head=head, note=cfg.note,
        table=table(rows), row_kinds=[r["kind"] for r in rows], legend=legend(rows),
        summary=summary_paragraphs(rows, runs), figures=make_figures(runs, rows, figdir),
        per_class=D.per_class_table(rows, classes), top_losses=top_loss_figures(runs, rows, figdir, F),
        always_wrong=D.always_wrong(runs, rows), classes=classes, labels=D.label_table(D.label_curves(runs, rows)),
        commands=commands(runs, ours), curves=curve_figures(runs, rows, figdir), views=D.views_table(runs, rows),
        bench=read_bench(cfg.bench)), rows


def run(cfg: Config) -> dict[str, Path]:
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise UserError(f"--out {str(cfg.out)!r} is a file; give a folder for report.md, report.html and figures/")
    runs = load_runs(cfg.runs)
    dataset = check_one_dataset(runs)
    out = Path(cfg.out)
    figdir = out / "figures"
    doc, rows = document(cfg, runs, dataset, figdir)
    blocks = build_document(doc)
    shown = {b[1] for b in blocks if b[0] == "figure"}
    written = {"md": write_text(out / "report.md", render_markdown(blocks)),
               "html": write_text(out / "report.html", render_html(blocks, figdir)),
               "csv": write_csv(rows, out / "metrics.csv"),
               "per_class": write_per_class_csv(rows, out / "per_class.csv")}
    stale = remove_stale(figdir, shown)
    rec = doc.verdict.split("**")[1] if "**" in doc.verdict else ""
    print(f"report of {len(runs)} run{'s' * (len(runs) != 1)} on {dataset}: best {rows[0]['name']} {fmt_acc(rows[0])}"
          + (f"; {rec.lower()}" if rec else ""))
    print(f"wrote {written['md']}, {written['html']}, {written['csv']} and {len(shown)} figures in {figdir}"
          + (f" (removed {len(stale)} stale)" if stale else ""))
    return written
