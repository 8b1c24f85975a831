"""The report's numbers in rows and words: one table row per run (best first, best-epoch rows and
the published reference apart), the CSV, cell formatting, and the plain-words summary with its
paired tests. Pure functions of the loaded runs; `report` draws and writes.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..core.files import write_text
from ..runs.metrics import mcnemar_exact, wilson
from ..runs.folder import Run

# The PyTorch transfer-learning tutorial's published numbers on hymenoptera (ResNet18, ImageNet
# weights, 153 val images), both picked as the best epoch on val. They are not our results: they
# are shown, flagged, so our numbers can be read against them, and only for that dataset.
REFERENCE_DATASET = "hymenoptera_data"
REFERENCES = (  # (short name, description, accuracy)
    ("tutorial: full FT (published)", "the PyTorch tutorial's published number, not our run: ResNet18 with "
     "ImageNet weights, full fine-tuning, best epoch on val", 0.9673),
    ("tutorial: frozen (published)", "the PyTorch tutorial's published number, not our run: ResNet18 with "
     "ImageNet weights, frozen trunk (BatchNorm in train mode), best epoch on val", 0.9608),
)
REFERENCE_N_TRAIN, REFERENCE_N_VAL = 244, 153
ALPHA = 0.05  # a difference with p >= ALPHA (or overlapping 95% intervals) is called noise


# ---------------------------------------------------------------------------------------------
# The table


CSV_COLUMNS = ["kind", "is_reference", "run", "name", "method", "stage", "dataset", "backbone", "weights", "n_train",
               "n_val", "correct", "accuracy", "accuracy_ci95_lo", "accuracy_ci95_hi", "balanced_accuracy",
               "macro_f1", "log_loss", "settings", "cv_accuracy", "extract_s", "fit_s", "train_s", "predict_s",
               "total_s", "device", "selection", "epoch", "seed", "command"]
# how the table writes a head's chosen hyperparameter
SETTING_NAMES = {"n_neighbors": "k", "weight_decay": "wd"}


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


def settings_text(m: dict, epoch: int | None = None) -> str:
    """The chosen settings in a few characters: 'C=0.1', 'k=15', '25 epochs, lr 0.001'."""
    hp = m.get("hyperparameters") or {}
    if m.get("stage") == "finetune":
        epochs = hp.get("epochs", m.get("epochs"))
        where = f"epoch {epoch} of {epochs}" if epoch is not None else f"{epochs} epochs" if epochs else ""
        return ", ".join(x for x in (where, f"lr {hp['lr']:g}" if "lr" in hp else "") if x)
    return ", ".join(f"{SETTING_NAMES.get(k, k)}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                     for k, v in hp.items())


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
            "device": m.get("device"), "selection": selection, "epoch": epoch, "seed": m.get("seed")}


def reference_rows(dataset: str | None) -> list[dict]:
    if dataset != REFERENCE_DATASET:
        return []
    rows = []
    for name, method, acc in REFERENCES:
        k = round(acc * REFERENCE_N_VAL)  # 148/153 = 96.73%, 147/153 = 96.08%
        lo, hi = wilson(k, REFERENCE_N_VAL)
        rows.append({c: None for c in CSV_COLUMNS} | {
            "kind": "reference", "is_reference": True, "run": "", "method": method, "stage": "published",
            "name": name,
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


# Columns that may hold the same value on every row of ours: then they become a line above the table.
VARYING = (("Backbone / weights", lambda r: f"{r['backbone'] or DASH} / {_short(r['weights'])}"),
           ("Train / val images", lambda r: f"{DASH if r['n_train'] is None else r['n_train']} / "
                                            f"{DASH if r['n_val'] is None else r['n_val']}"),
           ("Device", lambda r: _short(_device(r), 28)))


def table(rows: list[dict]) -> tuple[list[str], str, list[list[str]], str]:
    """(headers, alignment, cells, the line above the table with what every run shares). Method
    names are the short ones; the legend gives their descriptions."""
    ours = [r for r in rows if not r["is_reference"]]
    varying = [(h, f) for h, f in VARYING if len({f(r) for r in ours}) > 1]
    same = [f"{h.lower()}: {f(ours[0])}" for h, f in VARYING if (h, f) not in varying] if ours else []
    num = lambda x, f: DASH if x is None else format(x, f)  # noqa: E731
    headers = ["Method", *(h for h, _ in varying), "Val accuracy [95% CI]", "Balanced acc.", "Macro F1", "Log-loss",
               "Chosen settings", "CV acc.", "Compute s", "Chosen by"]
    cells = [[r["name"], *(f(r) for _, f in varying), fmt_acc(r), fmt_pct(r["balanced_accuracy"]),
              num(r["macro_f1"], ".3f"), num(r["log_loss"], ".3f"), r.get("settings") or DASH,
              fmt_pct(r.get("cv_accuracy")), fmt_seconds(r["total_s"]),
              (r["selection"] or DASH).replace(" (reference protocol)", "")] for r in rows]
    line = ("Every run: " + "; ".join(same) + ".") if same else ""
    return headers, "l" + "l" * len(varying) + "rrrrlrrl", cells, line


def legend(rows: list[dict]) -> list[tuple[str, str]]:
    """(short name, description) of each method in the table, in table order, each once."""
    seen, out = set(), []
    for r in rows:
        name = r["name"] if r["kind"] != "best_epoch" else r["name"].rsplit(", best epoch", 1)[0]
        desc = r["method"] if r["kind"] != "best_epoch" else r["method"].split(", best epoch")[0]
        if name not in seen:
            seen.add(name)
            out.append((name, desc))
    return out


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
    out = [f"Best on val: **{best['name']}**, {_acc_words(best)}."]
    if len(ours) == 1:
        out[0] += " Only one method was run, so there is nothing to compare it with."
    else:
        out.append(_runner_up(best, ours[1], by_slug))
        out.append(_tied_text(recommend(rows, runs)[2]))
    out += protocol_notes(rows, ours, best)
    out.append(frozen_note(runs))
    return [p for p in out if p]


COST_SLACK = 1.5  # costs within this factor of the cheapest count as equally cheap


def recommend(rows: list[dict], runs: list[Run]) -> tuple[dict, dict, list[dict]]:
    """(recommended row, best row, rows within noise of the best). Among the best and the methods
    within noise of it, the cheapest ones (within COST_SLACK of the least compute) are kept and the
    most accurate of those is recommended: a method 10× cheaper that val cannot tell apart from the
    best is the practical answer, one that saves a second is not worth its lower score."""
    by_slug = {r.slug: r for r in runs}
    ours = [r for r in rows if r["kind"] == "ours"]
    best = ours[0]
    tied = [o for o in ours[1:] if within_noise(best, o, paired_test(by_slug[best["run"]], by_slug[o["run"]]))]
    costed = [o for o in [best, *tied] if o["total_s"] is not None]
    if not costed:
        return best, best, tied
    cheapest = min(o["total_s"] for o in costed)
    return next(o for o in costed if o["total_s"] <= COST_SLACK * cheapest), best, tied  # rows are best first


def verdict(rows: list[dict], runs: list[Run]) -> str:
    """The report's first paragraph: which method to use, its accuracy with its interval, and its
    cost against the best's."""
    rec, best, tied = recommend(rows, runs)
    ours = [r for r in rows if r["kind"] == "ours"]
    what = f"**Use {rec['name']}** ({rec['method']}): {_acc_words(rec)}"
    if len(ours) == 1:
        return what + ". It is the only method run, so there is nothing to compare it with."
    if rec is best:
        if not tied:
            return (what + f", the best on val and clearly ahead of the other {len(ours) - 1} methods (exact McNemar "
                    f"p < {ALPHA} and 95% intervals apart), at {fmt_seconds(best['total_s'])} s of compute.")
        return (what + f". It is the best on val, and none of the {len(tied)} methods within noise of it costs "
                f"much less ({fmt_seconds(best['total_s'])} s of compute).")
    test = paired_test(*(next(r for r in runs if r.slug == x["run"]) for x in (best, rec)))
    p = f"exact McNemar p = {test['p_value']:.2g}" if test else "no paired test possible"
    ratio = best["total_s"] / rec["total_s"] if best["total_s"] and rec["total_s"] else None
    cost = (f"at {fmt_seconds(rec['total_s'])} s of compute against {fmt_seconds(best['total_s'])} s"
            + (f" ({ratio:.0f}× less)" if ratio and ratio >= 2 else ""))
    return (what + f". On these {best['n_val']} val images it cannot be told apart from the best, **{best['name']}** "
            f"({fmt_pct(best['accuracy'])}; {p}), and of the {len(tied) + 1} methods within noise of the best it is "
            f"the most accurate of the cheapest, {cost}.")


def frozen_note(runs: list[Run]) -> str:
    """Which frozen-trunk run the tutorial's frozen number is comparable to: BatchNorm in train
    mode (the tutorial) and in eval mode are different methods, with different results."""
    frozen: dict[str, str] = {}
    for r in runs:
        if r.m.get("mode") == "frozen":
            mode, name = (r.m.get("hyperparameters") or {}).get("trunk_mode"), r.m.get("short") or r.m["method"]
            frozen[mode] = f"{frozen[mode]}** and **{name}" if mode in frozen else name
    if not frozen:
        return ""
    s = ("The frozen-trunk runs differ in one thing that matters: "
         if len(frozen) > 1 else "About the frozen-trunk run: ")
    parts = []
    if "eval" in frozen:
        keep = "keep" if "** and **" in frozen["eval"] else "keeps"
        parts.append(f"**{frozen['eval']}** {keep} the trunk's BatchNorm in eval mode (fixed ImageNet statistics: "
                     "a linear head trained on augmented codes)")
    if "train" in frozen:
        parts.append(f"**{frozen['train']}** leaves it in train mode, as the tutorial does, so its running "
                     "statistics drift towards this dataset with every batch")
    s += "; ".join(parts) + ". "
    if "train" in frozen:
        return s + f"The tutorial's published frozen number is comparable to **{frozen['train']}**."
    return s + "The tutorial's published frozen number comes from BatchNorm in train mode, a different method."


def _runner_up(best: dict, second: dict, by_slug: dict[str, Run]) -> str:
    """The runner-up, its gap to the best in val images, the paired test, and whether it is noise."""
    s = f"Runner-up: **{second['name']}**, {_acc_words(second)}. "
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
            out.append(f"For **{last['name']}**, choosing the best epoch on val (epoch {r['epoch']}) would report "
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


def _tied_text(tied: list[dict]) -> str:
    """Which methods are within noise of the best (`recommend`'s list; the verdict names the one to use)."""
    if not tied:
        return f"Every other method is clearly behind the best (paired test p < {ALPHA}, intervals apart)."
    return "Within noise of the best: " + ", ".join(f"**{o['name']}**" for o in tied) + "."
