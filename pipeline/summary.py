"""The report's numbers in rows and words: one table row per run (best first, best-epoch rows and
the published reference apart), the CSV, cell formatting, and the plain-words summary with its
paired tests. Pure functions of the loaded runs; `report` draws and writes.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from .files import write_text
from .metrics import mcnemar_exact, wilson
from .runs import Run

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
# The table


CSV_COLUMNS = ["kind", "is_reference", "run", "method", "stage", "dataset", "backbone", "weights", "n_train",
               "n_val", "correct", "accuracy", "accuracy_ci95_lo", "accuracy_ci95_hi", "balanced_accuracy",
               "macro_f1", "log_loss", "extract_s", "fit_s", "train_s", "predict_s", "total_s", "device",
               "selection", "epoch", "seed"]


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
            "macro_f1": scores.get("macro_f1"), "log_loss": scores.get("log_loss"),
            **split_seconds(m.get("seconds"), m.get("stage")),
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
            "dataset": REFERENCE_DATASET, "backbone": "resnet18", "weights": "IMAGENET1K_V1",
            "n_train": REFERENCE_N_TRAIN, "n_val": REFERENCE_N_VAL, "correct": k, "accuracy": acc,
            "accuracy_ci95_lo": lo, "accuracy_ci95_hi": hi, "selection": "best epoch on val"})
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
    return ours + best + reference_rows(runs[0].m.get("dataset") if runs else None)


def write_csv(rows: list[dict], path: Path) -> Path:
    """The table, machine-readable: raw numbers, empty cells for missing values."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r[c]) for c in CSV_COLUMNS})
    return write_text(path, buf.getvalue())


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
    lo, hi = row["accuracy_ci95_lo"], row["accuracy_ci95_hi"]
    ci = "" if lo is None else f" [{100 * lo:.1f}, {100 * hi:.1f}]"
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
    lo, hi = 100 * row["accuracy_ci95_lo"], 100 * row["accuracy_ci95_hi"]
    return f"{fmt_pct(row['accuracy'])}{k}, 95% interval [{lo:.1f}, {hi:.1f}]"


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
        out.append(_runner_up(best, ours[1], by_slug))
        out.append(_cheapest_tied(best, ours[1:], by_slug))
    out += protocol_notes(rows, ours, best)
    return [p for p in out if p]


def _runner_up(best: dict, second: dict, by_slug: dict[str, Run]) -> str:
    """The runner-up, its gap to the best in val images, the paired test, and whether it is noise."""
    s = f"Runner-up: **{second['method']}**, {_acc_words(second)}. "
    if best["n_val"] == second["n_val"] and best["correct"] is not None and second["correct"] is not None:
        gap = best["correct"] - second["correct"]
        s += (f"The top two are {gap} val image{'s' * (gap != 1)} apart. " if gap
              else "The top two get the same number of val images right. ")
    else:
        gap = 100 * (best["accuracy"] - second["accuracy"])
        s += f"The top two are {gap:.1f} percentage points apart (scored on different val sets). "
    test = paired_test(by_slug[best["run"]], by_slug[second["run"]])
    overlap = intervals_overlap(best, second)
    if test is None:
        s += "Their predictions share no val image, so no paired test was possible. "
    else:
        left_out = f" ({test['unmatched']} images scored by only one of them left out)" if test["unmatched"] else ""
        s += (f"Exact McNemar test on the {test['n']} val images both scored: the best alone is right on "
              f"{test['only_a']}, the runner-up alone on {test['only_b']}, p = {test['p_value']:.3g}{left_out}. ")
    if within_noise(best, second, test):
        why = [w for w, hit in ((f"p ≥ {ALPHA}", test is not None and test["p_value"] >= ALPHA),
                                ("no paired test", test is None), ("the 95% intervals overlap", overlap)) if hit]
        s += (f"The difference is within noise ({' and '.join(why)}): on these {best['n_val']} val images the two "
              "cannot be told apart, so do not read their order as a real ranking.")
    else:
        s += f"The difference is unlikely to be noise (p < {ALPHA} and the 95% intervals do not overlap)."
    return s


def protocol_notes(rows: list[dict], ours: list[dict], best: dict) -> list[str]:
    """What choosing the epoch on val would report, and how the published numbers compare."""
    out = []
    for r in rows:
        if r["kind"] == "best_epoch":
            last = next(o for o in ours if o["run"] == r["run"])
            out.append(f"For **{last['method']}**, choosing the best epoch on val (epoch {r['epoch']}) would report "
                       f"{fmt_pct(r['accuracy'])} instead of the last epoch's {fmt_pct(last['accuracy'])}. Val picked "
                       "that epoch, so that number is optimistic; the table ranks the last epoch.")
    refs = [r for r in rows if r["is_reference"]]
    if refs:
        lo, hi = best["accuracy_ci95_lo"], best["accuracy_ci95_hi"]
        inside = [fmt_pct(r["accuracy"], 2) for r in refs if lo <= r["accuracy"] <= hi]
        verdict = ("contains them" if len(inside) == len(refs) else "contains neither" if not inside
                   else "contains only " + ", ".join(inside))
        out.append("The published tutorial numbers (" + ", ".join(fmt_pct(r["accuracy"], 2) for r in refs)
                   + f" on {REFERENCE_N_VAL} val images) pick the best epoch on val, so compare them with best-epoch "
                   f"rows, not with our primary ones. Our best result's 95% interval {verdict}.")
    return out


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
