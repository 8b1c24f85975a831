"""The report's table: one row per run (best first, best-epoch rows and the published reference
apart), the CSV, and how each cell is written. Pure functions of the loaded runs.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Callable, NamedTuple

from ..core.files import write_text
from ..runs.read import Run
from ..runs.metrics import wilson
from .on_test import TEST_COLUMNS, short_of_recipe, numbers_on_test

DASH = "—"  # a value that is not known, in every table of the report


class Reference(NamedTuple):
    """A published number shown beside ours, flagged: not our run."""

    name: str
    description: str
    accuracy: float


# The PyTorch transfer-learning tutorial's published numbers on hymenoptera (ResNet18, ImageNet
# weights, 153 val images), both picked as the best epoch on val. They are not our results: they
# are shown, flagged, so our numbers can be read against them, and only for that dataset.
REFERENCE_DATASET = "hymenoptera_data"
REFERENCES = (
    Reference("tutorial: full FT (published)", "the PyTorch tutorial's published number, not our run: ResNet18 with "
              "ImageNet weights, full fine-tuning, best epoch on val", 0.9673),
    Reference("tutorial: frozen (published)", "the PyTorch tutorial's published number, not our run: ResNet18 with "
              "ImageNet weights, frozen trunk (BatchNorm in train mode), best epoch on val", 0.9608),
)
REFERENCE_N_TRAIN, REFERENCE_N_VAL = 244, 153

CSV_COLUMNS = ["kind", "is_reference", "run", "name", "method", "stage", "dataset", "backbone", "weights", "n_train",
               "n_val", "correct", "accuracy", "accuracy_ci95_lo", "accuracy_ci95_hi", "balanced_accuracy",
               "macro_f1", "log_loss", "settings", "cv_accuracy", "extract_s", "fit_s", "train_s", "predict_s",
               "total_s", "device", "selection", "epoch", "seed", "command", "ece", "top5_accuracy", "ms_per_image",
               "views", "tta", "trained_params", "code_dim", "short_of_recipe", *TEST_COLUMNS]
EXTRA = ("ece", "top5_accuracy", "ms_per_image", "ms_measured", "views", "tta", "trained_params", "code_dim",
         "params_note", "score_kind")  # filled in for rows of ours by `_use_and_trust`
# how the table writes a head's chosen hyperparameter
SETTING_NAMES = {"n_neighbors": "k", "weight_decay": "wd"}


# ---------------------------------------------------------------------------------------------
# The rows


def split_seconds(seconds: dict | None, stage: str | None = None) -> dict:
    """extract / fit / train / predict / total seconds; decoding and tuning are part of training's cost.
    A key that was not recorded stays None (not spent), which is different from 0. A fine-tune's
    `train` already holds every epoch's val pass, its `predict` (the last one) included, so the
    total does not count that twice. `repeats` (the method again on re-drawn splits) measures how
    sure its score is; it is no part of making the model, so the total leaves it out."""
    s = {k: float(v) for k, v in (seconds or {}).items() if isinstance(v, (int, float))}
    train = [s[k] for k in ("train", "decode", "tune") if k in s]  # tune: choosing the lr, its trials
    counted = [v for k, v in s.items() if not (stage == "finetune" and k == "predict") and k != "repeats"]
    return {"extract_s": s.get("extract"), "fit_s": s.get("fit"), "train_s": sum(train) if train else None,
            "predict_s": s.get("predict"), "total_s": sum(counted) if counted else None}


def settings_text(m: dict, epoch: int | None = None) -> str:
    """The chosen settings in a few characters: 'C=0.1', 'k=15', '25 epochs, lr 0.001'."""
    hp = m.get("hyperparameters") or {}
    if m.get("stage") == "finetune":
        epochs = hp.get("epochs", m.get("epochs"))
        where = f"epoch {epoch} of {epochs}" if epoch is not None else f"{epochs} epochs" if epochs else ""
        return ", ".join(x for x in (where, f"lr {hp['lr']:g}" if "lr" in hp else "") if x)
    text = ", ".join(f"{SETTING_NAMES.get(k, k)}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                     for k, v in hp.items())
    # a pick still at an edge of its (extended) grid after the search went past it: the best value
    # may lie further out, so the setting is flagged where it is shown
    edge = {"low": "at the grid's strong end", "high": "at the grid's weak end"}.get(m.get("cv_edge"))
    return f"{text} ({edge})" if edge and text else text


def _row(run: Run, scores: dict, kind: str, method: str, selection: str, epoch: int | None = None) -> dict:
    m = run.m
    n, k = scores.get("n", m.get("n_val")), scores.get("correct")
    lo, hi = scores.get("accuracy_ci95") or (wilson(k, n) if k is not None and n else (None, None))
    name = m.get("short") or m["method"]
    return {"kind": kind, "is_reference": False, "run": run.slug, "method": method, "stage": m.get("stage"),
            "name": name if kind == "ours" else f"{name}, best epoch {epoch}",
            "settings": settings_text(m, epoch), "cv_accuracy": m.get("cv_score") if kind == "ours" else None,
            "command": m.get("command"), "per_class": scores.get("per_class"),
            "dataset": m.get("dataset"), "backbone": m.get("backbone"), "weights": m.get("weights"),
            "n_train": m.get("n_train"), "n_val": n, "correct": k, "accuracy": scores.get("accuracy"),
            "accuracy_ci95_lo": lo, "accuracy_ci95_hi": hi, "balanced_accuracy": scores.get("balanced_accuracy"),
            "macro_f1": scores.get("macro_f1"), "log_loss": scores.get("log_loss"),
            **split_seconds(m.get("seconds"), m.get("stage")),
            "device": m.get("device"), "selection": selection, "epoch": epoch, "seed": m.get("seed"),
            **numbers_on_test(m.get("test") if kind == "ours" else None),
            "short_of_recipe": short_of_recipe(m) if kind == "ours" else None,
            "repeats": m.get("repeats") if kind == "ours" else None, **dict.fromkeys(EXTRA)}


def reference_rows(dataset: str | None) -> list[dict]:
    if dataset != REFERENCE_DATASET:
        return []
    rows = []
    for ref in REFERENCES:
        k = round(ref.accuracy * REFERENCE_N_VAL)  # 148/153 = 96.73%, 147/153 = 96.08%
        lo, hi = wilson(k, REFERENCE_N_VAL)
        rows.append({c: None for c in CSV_COLUMNS} | {
            "kind": "reference", "is_reference": True, "run": "", "method": ref.description, "stage": "published",
            "name": ref.name,
            "dataset": REFERENCE_DATASET, "backbone": "resnet18", "weights": "IMAGENET1K_V1",
            "n_train": REFERENCE_N_TRAIN, "n_val": REFERENCE_N_VAL, "correct": k, "accuracy": ref.accuracy,
            "accuracy_ci95_lo": lo, "accuracy_ci95_hi": hi, "selection": "best epoch on val", **dict.fromkeys(EXTRA)})
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
                        r.m["best_val"].get("selection", "best epoch on val (reference protocol)"),
                        r.m["best_val"].get("epoch"))
                   for r in runs if isinstance(r.m.get("best_val"), dict)), key=_rank)
    _use_and_trust(ours, runs)
    _name_backbones(ours + best)
    return ours + best + reference_rows(runs[0].m.get("dataset") if runs else None)


def _name_backbones(rows: list[dict]) -> None:
    """Runs of several backbones in one folder (a sweep): each name says its backbone ('resnet18 +
    softmax'), and its weights too where one backbone came with several, so no two rows read alike."""
    pairs = {(r["backbone"], r["weights"]) for r in rows}
    if len({b for b, _ in pairs}) < 2 and len(pairs) < 2:
        return
    for r in rows:
        several = sum(b == r["backbone"] for b, _ in pairs) > 1
        weights = f" ({_short(r['weights'], 24)})" if several else ""
        r["name"] = f"{r['backbone']}{weights} + {r['name']}"


def _use_and_trust(ours: list[dict], runs: list[Run]) -> None:
    """Add what each method costs to use (usage) and how far its confidence and top-5 go (quality)."""
    from .quality import MANY_CLASSES, ece, top_k_accuracy
    from .usage import usage

    by_slug, use = {r.slug: r for r in runs}, usage(runs)
    for row in ours:
        run = by_slug[row["run"]]
        many = len(run.m.get("classes") or []) > MANY_CLASSES
        row.update({"ece": ece(run), "top5_accuracy": top_k_accuracy(run) if many else None,
                    "score_kind": run.m.get("score_kind"), **use[run.slug]})


def write_csv(rows: list[dict], path: Path) -> Path:
    """The table, machine-readable: raw numbers, empty cells for missing values."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r[c]) for c in CSV_COLUMNS})
    return write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------
# The cells


def fmt_pct(x: float | None, digits: int = 1) -> str:
    return DASH if x is None else f"{100 * x:.{digits}f}%"


def fmt_acc(row: dict) -> str:
    """'95.4% [91.0, 97.8]'; published numbers keep their published two decimals."""
    digits = 2 if row["is_reference"] else 1
    if row["accuracy"] is None:
        return DASH
    lo, hi = row["accuracy_ci95_lo"], row["accuracy_ci95_hi"]
    ci = "" if lo is None else f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return fmt_pct(row["accuracy"], digits) + ci


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return DASH
    return f"{s:.2f}" if s < 10 else f"{s:.1f}" if s < 100 else f"{s:.0f}"


def _short(text, n: int = 40) -> str:
    text = DASH if text in (None, "") else str(text)
    return text if len(text) <= n else text[: n - 1] + "…"  # a weights sha256 would swamp the column


def _device(row: dict) -> str:
    """'cpu (codes: cpu)' is just 'cpu'; a head on GPU-made codes keeps both."""
    d = str(row.get("device") or DASH)
    head, _, codes = d.partition(" (codes: ")
    return head if codes.rstrip(")") == head else d


class Column(NamedTuple):
    header: str
    cell: Callable[[dict], str]  # the cell of one row


# Columns that may hold the same value on every row of ours: then they become a line above the table.
VARYING = (Column("Backbone / weights", lambda r: f"{r['backbone'] or DASH} / {_short(r['weights'])}"),
           Column("Train / val images", lambda r: f"{DASH if r['n_train'] is None else r['n_train']} / "
                                                  f"{DASH if r['n_val'] is None else r['n_val']}"),
           Column("Device", lambda r: _short(_device(r), 28)))


class ResultsTable(NamedTuple):
    """The main table as text. Method names are the short ones; the legend gives their descriptions."""

    headers: list[str]
    align: str  # one letter per column: l(eft) or r(ight)
    cells: list[list[str]]
    shared: str  # the line above the table with what every run shares; empty when nothing is


def fmt_ece(row: dict) -> str:
    if row.get("ece") is not None:
        return f"{row['ece']:.3f}"
    return "none: margins" if row.get("score_kind") == "margin" else DASH


def table(rows: list[dict]) -> ResultsTable:
    """Every quality number of the rows as text; a VARYING column with one value on every run of ours
    moves to `shared`. With more than 5 classes balanced accuracy is named for what it is (mean
    per-class recall) and top-5 accuracy is shown when the runs kept what it needs."""
    ours = [r for r in rows if not r["is_reference"]]
    varying = [c for c in VARYING if len({c.cell(r) for r in ours}) > 1]
    same = [f"{c.header.lower()}: {c.cell(ours[0])}" for c in VARYING if c not in varying] if ours else []
    num = lambda x, f: DASH if x is None else format(x, f)  # noqa: E731
    top5 = any(r.get("top5_accuracy") is not None for r in rows)
    many = top5 or any(len(r.get("per_class") or {}) > 5 for r in rows)
    headers = ["Method", *(c.header for c in varying), "Val accuracy [95% CI]",
               "Mean per-class recall" if many else "Balanced acc.", *(["Top-5 acc."] if top5 else []), "Macro F1",
               "Log-loss", "ECE", "Chosen settings", "CV acc.", "Chosen by"]
    cells = [[r["name"], *(c.cell(r) for c in varying), fmt_acc(r), fmt_pct(r["balanced_accuracy"]),
              *([fmt_pct(r.get("top5_accuracy"))] if top5 else []), num(r["macro_f1"], ".3f"),
              num(r["log_loss"], ".3f"), fmt_ece(r), r.get("settings") or DASH, fmt_pct(r.get("cv_accuracy")),
              (r["selection"] or DASH).replace(" (reference protocol)", "")] for r in rows]
    line = ("Every run: " + "; ".join(same) + ".") if same else ""
    return ResultsTable(headers, "l" + "l" * len(varying) + "rr" + "r" * top5 + "rrrlrl", cells, line)


class LegendEntry(NamedTuple):
    name: str  # the short name the table shows
    description: str


def legend(rows: list[dict]) -> list[LegendEntry]:
    """Each method in the table, in table order, each once."""
    seen, out = set(), []
    for r in rows:
        name = r["name"] if r["kind"] != "best_epoch" else r["name"].rsplit(", best epoch", 1)[0]
        desc = r["method"] if r["kind"] != "best_epoch" else r["method"].split(", best epoch")[0]
        if name not in seen:
            seen.add(name)
            out.append(LegendEntry(name, desc))
    return out
