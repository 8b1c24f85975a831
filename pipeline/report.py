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

import base64
import csv
import html
import io
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from . import UserError
from .cache import atomic_write
from .config import opt
from .metrics import SCHEMA, mcnemar_exact, wilson


@dataclass(frozen=True)
class Config:
    runs: Path = opt(Path("reports/runs"), "folder searched recursively for the metrics.json of each run")
    out: Path = opt(Path("reports"), "output folder for report.md, report.html, metrics.csv and figures/")
    bench: Path = opt(Path("reports/benchmarks.json"), "benchmark results from bench/run.py, included when the file exists")
    title: str = opt("", "report title; empty means 'cnncodes report: <dataset>'")
    note: str = opt("", "a line under the title, e.g. which weights or command made these runs; empty = none")


# The PyTorch transfer-learning tutorial's published numbers on hymenoptera (ResNet18, ImageNet
# weights, 153 val images), both picked as the best epoch on val. They are not our results: they
# are shown, flagged, so our numbers can be read against them, and only for that dataset.
REFERENCE_DATASET = "hymenoptera_data"
REFERENCES = (
    ("Reference tutorial (published): fine-tune (full)", 0.9673),
    ("Reference tutorial (published): frozen backbone", 0.9608),
)
REFERENCE_N_TRAIN, REFERENCE_N_VAL = 244, 153
ALPHA = 0.05  # a difference with p >= ALPHA (or overlapping 95% intervals) is called noise


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class Run:
    dir: Path  # the run folder, which holds metrics.json
    slug: str  # unique, filesystem-safe name for this run's figures
    m: dict  # the metrics.json document
    history: list[dict] | None  # per-epoch log of a fine-tuning run


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{what} {str(path)!r} is not readable JSON ({e})") from None


def _history(run_dir: Path, m: dict) -> list[dict] | None:
    h = m.get("history")
    if isinstance(h, list):  # inlined by the writer
        return h or None
    f = run_dir / (h if isinstance(h, str) and h else "history.json")
    if f.is_file():
        doc = _read_json(f, "history file")
        return doc if isinstance(doc, list) and doc else None
    return None


def load_runs(runs_dir: Path | str) -> list[Run]:
    """Every metrics.json under runs_dir (sorted by path), with its history; UserError when none."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"runs folder {str(runs_dir)!r} does not exist (run `make classify` or `make finetune` first)")
    files = sorted(runs_dir.rglob("metrics.json"))
    if not files:
        raise UserError(f"no metrics.json under {str(runs_dir)!r} (run `make classify` or `make finetune` first)")
    runs, used = [], set()
    for f in files:
        m = _read_json(f, "run record")
        if not isinstance(m, dict) or m.get("schema") != SCHEMA:
            found = m.get("schema") if isinstance(m, dict) else type(m).__name__
            raise UserError(f"{str(f)!r} is not a run record of schema {SCHEMA} (found {found!r})")
        rel = f.parent.relative_to(runs_dir).as_posix()
        slug = base = _slug(rel if rel != "." else runs_dir.resolve().name)
        i = 2
        while slug in used:  # two folders that differ only in unsafe characters
            slug, i = f"{base}-{i}", i + 1
        used.add(slug)
        runs.append(Run(f.parent, slug, m, _history(f.parent, m)))
    return runs


def check_one_dataset(runs: list[Run]) -> str:
    """The one dataset all runs share; UserError naming the datasets when they differ, since rows
    scored on different val sets cannot sit in one table."""
    groups: dict[tuple, list[str]] = {}
    for r in runs:
        groups.setdefault((r.m.get("dataset"), tuple(r.m.get("classes") or ())), []).append(r.slug)
    if len(groups) > 1:
        names = {d for d, _ in groups}
        if len(names) > 1:
            desc = "; ".join(f"{d!r} ({len(s)} run{'s' * (len(s) > 1)}: {', '.join(s[:3])}{', ...' * (len(s) > 3)})"
                             for (d, _), s in groups.items())
            raise UserError(f"runs come from different datasets: {desc}; point --runs at one dataset's folder")
        desc = "; ".join(f"{list(c)} in {', '.join(s[:3])}" for (_, c), s in groups.items())
        raise UserError(f"runs of dataset {next(iter(names))!r} have different class lists: {desc}; point --runs at runs of one data version")
    return runs[0].m.get("dataset")


def read_bench(path: Path | str | None) -> dict | None:
    """The benchmark results file when it exists (it is optional); UserError when it is broken."""
    if not path or not Path(path).is_file():
        return None
    doc = _read_json(Path(path), "benchmarks file")
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise UserError(f"benchmarks file {str(path)!r} has no 'results' list (re-run `make bench` or delete it)")
    return doc


# ---------------------------------------------------------------------------------------------
# The table


CSV_COLUMNS = ["kind", "is_reference", "run", "method", "stage", "dataset", "backbone", "weights", "n_train", "n_val",
               "correct", "accuracy", "accuracy_ci95_lo", "accuracy_ci95_hi", "balanced_accuracy", "macro_f1",
               "log_loss", "extract_s", "fit_s", "train_s", "predict_s", "total_s", "device", "selection", "epoch", "seed"]


def split_seconds(seconds: dict | None, stage: str | None = None) -> dict:
    """extract / fit / train / predict / total seconds; decoding is part of training's cost.
    A key that was not recorded stays None (not spent), which is different from 0. A fine-tune's
    `train` already holds every epoch's val pass, its `predict` (the last one) included, so the
    total does not count that twice."""
    s = {k: float(v) for k, v in (seconds or {}).items() if isinstance(v, (int, float))}
    train = [s[k] for k in ("train", "decode") if k in s]
    counted = [v for k, v in s.items() if not (stage == "finetune" and k == "predict")]
    return {"extract_s": s.get("extract"), "fit_s": s.get("fit"), "train_s": sum(train) if train else None,
            "predict_s": s.get("predict"), "total_s": sum(counted) if counted else None}


def _row(run: Run, scores: dict, kind: str, method: str, selection: str, epoch: int | None = None) -> dict:
    m = run.m
    n, k = scores.get("n", m.get("n_val")), scores.get("correct")
    lo, hi = scores.get("accuracy_ci95") or (wilson(k, n) if k is not None and n else (None, None))
    return {"kind": kind, "is_reference": False, "run": run.slug, "method": method, "stage": m.get("stage"),
            "dataset": m.get("dataset"), "backbone": m.get("backbone"), "weights": m.get("weights"),
            "n_train": m.get("n_train"), "n_val": n, "correct": k, "accuracy": scores.get("accuracy"),
            "accuracy_ci95_lo": lo, "accuracy_ci95_hi": hi, "balanced_accuracy": scores.get("balanced_accuracy"),
            "macro_f1": scores.get("macro_f1"), "log_loss": scores.get("log_loss"), **split_seconds(m.get("seconds"), m.get("stage")),
            "device": m.get("device"), "selection": selection, "epoch": epoch, "seed": m.get("seed")}


def reference_rows(dataset: str | None) -> list[dict]:
    if dataset != REFERENCE_DATASET:
        return []
    rows = []
    for method, acc in REFERENCES:
        k = round(acc * REFERENCE_N_VAL)  # 148/153 = 96.73%, 147/153 = 96.08%
        lo, hi = wilson(k, REFERENCE_N_VAL)
        rows.append({c: None for c in CSV_COLUMNS} | {
            "kind": "reference", "is_reference": True, "run": "", "method": method, "stage": "published",
            "dataset": REFERENCE_DATASET, "backbone": "resnet18", "weights": "IMAGENET1K_V1", "n_train": REFERENCE_N_TRAIN,
            "n_val": REFERENCE_N_VAL, "correct": k, "accuracy": acc, "accuracy_ci95_lo": lo, "accuracy_ci95_hi": hi,
            "selection": "best epoch on val"})
    return rows


def _rank(row: dict):
    # best first; among equal accuracy the cheaper run first; NaN (no val images) last
    acc = row["accuracy"]
    acc = -1.0 if acc is None or (isinstance(acc, float) and math.isnan(acc)) else acc
    return (-acc, row["total_s"] if row["total_s"] is not None else math.inf, row["method"])


def table_rows(runs: list[Run]) -> list[dict]:
    """One row per run, best first; then, for fine-tuning runs that logged it, the best-epoch-on-val
    number in its own block (optimistic: val chose the epoch), then the published reference rows.

    The best-epoch rows are kept out of the ranking so the honest last-epoch number stays primary,
    and sit just above the references because both were chosen the same way.
    """
    ours = sorted((_row(r, r.m["val"], "ours", r.m["method"], r.m.get("selection", "")) for r in runs), key=_rank)
    best = sorted((_row(r, r.m["best_val"], "best_epoch",
                        f"{r.m['method']}, best epoch {r.m['best_val'].get('epoch', '?')} on val (reference protocol)",
                        r.m["best_val"].get("selection", "best epoch on val (reference protocol)"), r.m["best_val"].get("epoch"))
                   for r in runs if isinstance(r.m.get("best_val"), dict)), key=_rank)
    return ours + best + reference_rows(runs[0].m.get("dataset") if runs else None)


def write_csv(rows: list[dict], path: Path) -> Path:
    """The table, machine-readable: raw numbers, empty cells for missing values."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r[c]) for c in CSV_COLUMNS})
    return _write_text(path, buf.getvalue())


DASH = "—"
TABLE_HEADERS = ["Method", "Backbone / weights", "Train / val images", "Val accuracy [95% CI]", "Balanced acc.",
                 "Macro F1", "Log-loss", "Extract s", "Fit s", "Train s", "Device", "Chosen by"]
TABLE_ALIGN = "lllrrrrrrrll"


def fmt_pct(x: float | None, digits: int = 1) -> str:
    return DASH if x is None else f"{100 * x:.{digits}f}%"


def fmt_acc(row: dict) -> str:
    """'95.4% [91.0, 97.8]'; published numbers keep their published two decimals."""
    digits = 2 if row["is_reference"] else 1
    if row["accuracy"] is None:
        return DASH
    ci = "" if row["accuracy_ci95_lo"] is None else f" [{100 * row['accuracy_ci95_lo']:.1f}, {100 * row['accuracy_ci95_hi']:.1f}]"
    return fmt_pct(row["accuracy"], digits) + ci


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return DASH
    return f"{s:.2f}" if s < 10 else f"{s:.1f}" if s < 100 else f"{s:.0f}"


def _short(text, n: int = 24) -> str:
    text = DASH if text in (None, "") else str(text)
    return text if len(text) <= n else text[: n - 1] + "…"  # a weights sha256 would swamp the column


def display_row(row: dict) -> list[str]:
    num = lambda x, f: DASH if x is None else format(x, f)  # noqa: E731
    return [row["method"], f"{row['backbone'] or DASH} / {_short(row['weights'])}",
            f"{num(row['n_train'], 'd')} / {num(row['n_val'], 'd')}", fmt_acc(row),
            fmt_pct(row["balanced_accuracy"]), num(row["macro_f1"], ".3f"), num(row["log_loss"], ".3f"),
            fmt_seconds(row["extract_s"]), fmt_seconds(row["fit_s"]), fmt_seconds(row["train_s"]),
            _short(row["device"], 28), row["selection"] or DASH]


# ---------------------------------------------------------------------------------------------
# What the numbers say


def paired_test(a: Run, b: Run) -> dict | None:
    """Exact McNemar between two runs on the val images both scored, matched by image path (their
    prediction lists need not be in the same order). None when they share no image."""
    ca = {p["path"]: p["pred"] == p["true"] for p in a.m.get("predictions") or []}
    cb = {p["path"]: p["pred"] == p["true"] for p in b.m.get("predictions") or []}
    common = sorted(ca.keys() & cb.keys())
    if not common:
        return None
    res = mcnemar_exact([ca[k] for k in common], [cb[k] for k in common])
    return {**res, "n": len(common), "unmatched": len(ca.keys() ^ cb.keys())}


def intervals_overlap(a: dict, b: dict) -> bool:
    return a["accuracy_ci95_lo"] <= b["accuracy_ci95_hi"] and b["accuracy_ci95_lo"] <= a["accuracy_ci95_hi"]


def within_noise(a: dict, b: dict, test: dict | None) -> bool:
    return intervals_overlap(a, b) or test is None or test["p_value"] >= ALPHA


def _acc_words(row: dict) -> str:
    k = f" ({row['correct']} of {row['n_val']})" if row["correct"] is not None else ""
    return f"{fmt_pct(row['accuracy'])}{k}, 95% interval [{100 * row['accuracy_ci95_lo']:.1f}, {100 * row['accuracy_ci95_hi']:.1f}]"


def summary_paragraphs(rows: list[dict], runs: list[Run]) -> list[str]:
    """'What this shows', written from the numbers: the best method, the gap to the runner-up in val
    images, a paired test between the two, and a plain verdict when the gap is noise."""
    by_slug = {r.slug: r for r in runs}
    ours = [r for r in rows if r["kind"] == "ours"]
    best = ours[0]
    out = [f"Best on val: **{best['method']}**, {_acc_words(best)}."]
    if len(ours) == 1:
        out[0] += " Only one method was run, so there is nothing to compare it with."
    else:
        second = ours[1]
        s = f"Runner-up: **{second['method']}**, {_acc_words(second)}. "
        if best["n_val"] == second["n_val"] and best["correct"] is not None and second["correct"] is not None:
            gap = best["correct"] - second["correct"]
            s += (f"The top two are {gap} val image{'s' * (gap != 1)} apart. " if gap
                  else "The top two get the same number of val images right. ")
        else:
            s += f"The top two are {100 * (best['accuracy'] - second['accuracy']):.1f} percentage points apart (scored on different val sets). "
        test = paired_test(by_slug[best["run"]], by_slug[second["run"]])
        overlap = intervals_overlap(best, second)
        if test is None:
            s += "Their predictions share no val image, so no paired test was possible. "
        else:
            s += (f"Exact McNemar test on the {test['n']} val images both scored: the best alone is right on "
                  f"{test['only_a']}, the runner-up alone on {test['only_b']}, p = {test['p_value']:.3g}"
                  + (f" ({test['unmatched']} images scored by only one of them left out). " if test["unmatched"] else ". "))
        if within_noise(best, second, test):
            why = [w for w, hit in ((f"p ≥ {ALPHA}", test is not None and test["p_value"] >= ALPHA),
                                    ("no paired test", test is None), ("the 95% intervals overlap", overlap)) if hit]
            s += (f"The difference is within noise ({' and '.join(why)}): on these {best['n_val']} val images the two "
                  "cannot be told apart, so do not read their order as a real ranking.")
        else:
            s += f"The difference is unlikely to be noise (p < {ALPHA} and the 95% intervals do not overlap)."
        out.append(s)
        out.append(_cheapest_tied(best, ours[1:], by_slug))
    for r in rows:
        if r["kind"] == "best_epoch":
            last = next(o for o in ours if o["run"] == r["run"])
            out.append(f"For **{last['method']}**, choosing the best epoch on val (epoch {r['epoch']}) would report "
                       f"{fmt_pct(r['accuracy'])} instead of the last epoch's {fmt_pct(last['accuracy'])}. Val picked that "
                       "epoch, so that number is optimistic; the table ranks the last epoch.")
    refs = [r for r in rows if r["is_reference"]]
    if refs:
        inside = [fmt_pct(r["accuracy"], 2) for r in refs if best["accuracy_ci95_lo"] <= r["accuracy"] <= best["accuracy_ci95_hi"]]
        verdict = ("contains them" if len(inside) == len(refs) else "contains neither" if not inside
                   else "contains only " + ", ".join(inside))
        out.append("The published tutorial numbers (" + ", ".join(fmt_pct(r["accuracy"], 2) for r in refs)
                   + f" on {REFERENCE_N_VAL} val images) pick the best epoch on val, so compare them with best-epoch rows, "
                   f"not with our primary ones. Our best result's 95% interval {verdict}.")
    return [p for p in out if p]


def _cheapest_tied(best: dict, others: list[dict], by_slug: dict[str, Run]) -> str:
    """Which methods are within noise of the best, and the cheapest of them: the practical answer
    when a cheap head on cached codes ties an expensive fine-tune."""
    tied = [o for o in others if within_noise(best, o, paired_test(by_slug[best["run"]], by_slug[o["run"]]))]
    if not tied:
        return "Every other method is clearly behind the best (paired test p < 0.05, intervals apart)."
    s = "Within noise of the best: " + ", ".join(f"**{o['method']}**" for o in tied) + "."
    costed = [o for o in [best, *tied] if o["total_s"] is not None]
    if costed and best["total_s"] is not None:
        cheap = min(costed, key=lambda o: o["total_s"])
        if cheap is best:
            s += f" None of them is cheaper than the best ({fmt_seconds(best['total_s'])} s in all)."
        else:
            s += (f" The cheapest of these is **{cheap['method']}** at {fmt_seconds(cheap['total_s'])} s in all, "
                  f"against {fmt_seconds(best['total_s'])} s for the best.")
    return s


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
        add(F.image_grid(best.m["predictions"], classes, root, f"{ours[0]['method']}: val images, mistakes first",
                         figdir / f"grid-{best.slug}.png"),
            f"Val images as classified by the best method, {ours[0]['method']} ({n_wrong} mistake{'s' * (n_wrong != 1)} "
            "in all): mistakes first, framed in red with predicted and true label, then a sample of correct ones.")

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
    title = f"PCA of {codes.attrs.get('backbone', run.m.get('backbone'))} codes ({f.name})"
    path = F.pca_codes(train.codes, train.labels, val.codes if val else None, val.labels if val else None,
                       list(codes.classes) or classes, title, figdir / f"pca-{run.slug}.png")
    return path, (f"The cached codes of {f.name} projected on their first two principal components (fitted on train): "
                  "train as dots, val as outlined triangles, coloured by class. Classes that form separate clusters "
                  "here are easy for a linear head on the frozen codes.")


# ---------------------------------------------------------------------------------------------
# The document: one list of blocks, rendered to Markdown and to HTML, so both say the same.
# Blocks: ("h1", text) ("h2", text) ("p", text) ("table", headers, rows, align, row_classes)
#         ("figure", file name under figures/, caption)


def bench_blocks(bench: dict) -> list[tuple]:
    m = bench.get("machine") or {}
    where = ", ".join(f"{k} {v}" for k, v in m.items() if v not in (None, "")) or "not recorded"
    meta = f"Measured on: {where}. Commit {bench.get('commit') or DASH}" + (", quick run" if bench.get("quick") else "") + "."
    versions = bench.get("versions") or {}
    if versions:
        meta += " Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."
    # 4 significant digits, but never scientific notation for the large ones (15,000 images/s)
    num = lambda x: DASH if not isinstance(x, (int, float)) else f"{x:,.0f}" if abs(x) >= 10_000 else f"{x:.4g}"  # noqa: E731
    rows = [[str(r.get("name", "")), num(r.get("ours")), num(r.get("reference")), str(r.get("unit") or ""),
             DASH if r.get("ratio") is None else f"{r['ratio']:.2f}×", num(r.get("target")),
             {True: "yes", False: "no"}.get(r.get("met"), DASH), str(r.get("note") or "")] for r in bench["results"]]
    return [("h2", "Benchmarks"), ("p", meta),
            ("table", ["Benchmark", "Ours", "Reference", "Unit", "Ratio", "Target", "Met", "Note"], rows, "lrrlrrll",
             [""] * len(rows))]


def build_document(rows: list[dict], summary: list[str], figures: list[tuple[str, str]], bench: dict | None, *,
                   dataset: str, classes: list[str], runs_dir: str, n_runs: int, generated: str,
                   title: str = "", note: str = "") -> list[tuple]:
    ours = [r for r in rows if r["kind"] == "ours"]
    head = (f"Dataset **{dataset}** ({len(classes)} classes: {', '.join(classes[:12])}{', ...' if len(classes) > 12 else ''}), "
            f"{n_runs} run{'s' * (n_runs != 1)} from `{runs_dir}`, generated {generated}.")
    legend = ("Accuracy is on the val images with a 95% Wilson interval. *Chosen by* says how the model and its "
              "settings were picked: CV on train or the last epoch never look at val; rows marked *best epoch on val* "
              "did, so they are optimistic and stand apart, next to the published numbers that were chosen the same "
              "way. *Reference tutorial (published)* rows are not our runs. Seconds: extract = computing the CNN codes "
              "(shared by every head on one cache), fit = fitting the head, train = fine-tuning including its per-epoch val pass and image "
              f"decoding; {DASH} = not spent or not known.")
    blocks: list[tuple] = [("h1", title or f"cnncodes report: {dataset}"), ("p", head)]
    if note:
        blocks.append(("p", note))
    blocks += [("h2", "Results on the validation set"),
               ("table", TABLE_HEADERS, [display_row(r) for r in rows], TABLE_ALIGN,
                [r["kind"].replace("_", "-") for r in rows]),
               ("p", legend), ("h2", "What this shows"), *[("p", s) for s in summary]]
    if figures:
        blocks.append(("h2", "Figures"))
        blocks += [("figure", name, caption) for name, caption in figures]
    if bench:
        blocks += bench_blocks(bench)
    assert ours, "table_rows always yields one row per run"
    return blocks


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[tuple]) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind == "h1":
            out.append(f"# {b[1]}")
        elif kind == "h2":
            out.append(f"## {b[1]}")
        elif kind == "p":
            out.append(b[1])
        elif kind == "table":
            _, headers, rows, align, _classes = b
            out.append("\n".join(["| " + " | ".join(map(_md_cell, headers)) + " |",
                                  "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
                                  *("| " + " | ".join(map(_md_cell, r)) + " |" for r in rows)]))
        elif kind == "figure":
            out.append(f"![{Path(b[1]).stem}](figures/{b[1]})\n\n*{b[2]}*")
    return "\n\n".join(out) + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; font-size: 0.88em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.55em; vertical-align: top; }
th { background: #f2f2f2; }
td.r { text-align: right; white-space: nowrap; }
tr.best-epoch td { background: #fff8e1; }
tr.reference td { background: #f4f4f4; color: #555; font-style: italic; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _inline_html(text: str) -> str:
    # the little Markdown the blocks use: **bold**, *italic*, `code`
    s = html.escape(str(text))
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])", r"<em>\1</em>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)


def render_html(blocks: list[tuple], figdir: Path) -> str:
    """Self-contained HTML: figures are embedded as base64 PNG data URIs, so the file travels alone."""
    title = next((b[1] for b in blocks if b[0] == "h1"), "cnncodes report")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(b[1])}</p>")
        elif kind == "table":
            _, headers, rows, align, classes = b
            out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead><tbody>")
            for r, c in zip(rows, classes):
                cells = "".join(f'<td{" class=r" if a == "r" else ""}>{html.escape(str(v))}</td>' for v, a in zip(r, align))
                out.append(f'<tr class="{html.escape(c)}">{cells}</tr>')
            out.append("</tbody></table>")
        elif kind == "figure":
            data = base64.b64encode((figdir / b[1]).read_bytes()).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b[2])}">'
                       f"<figcaption>{_inline_html(b[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))  # never half a report


def run(cfg: Config) -> dict[str, Path]:
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
    written = {"md": _write_text(out / "report.md", render_markdown(blocks)),
               "html": _write_text(out / "report.html", render_html(blocks, figdir)),
               "csv": write_csv(rows, out / "metrics.csv")}
    best = rows[0]
    print(f"report of {len(runs)} run{'s' * (len(runs) != 1)} on {dataset}: best {best['method']} {fmt_acc(best)}")
    print(f"wrote {written['md']}, {written['html']}, {written['csv']} and {len(figures)} figures in {figdir}")
    return written
