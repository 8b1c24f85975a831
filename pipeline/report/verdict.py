"""What the numbers say, in plain words: the paired test between two runs, whether a gap is noise,
which method to use (the verdict), the summary paragraphs, and the notes on the published numbers
and on frozen-trunk runs. Pure functions of the loaded runs and the table rows.
"""
from __future__ import annotations

from typing import NamedTuple

from ..runs.folder import Run
from ..runs.metrics import mcnemar_exact
from .rows import REFERENCE_N_VAL, fmt_pct, fmt_seconds

ALPHA = 0.05  # a difference with p >= ALPHA (or overlapping 95% intervals) is called noise
COST_SLACK = 1.5  # costs within this factor of the cheapest count as equally cheap


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
        out.append(_tied_text(recommend(rows, runs).tied))
    out += protocol_notes(rows, ours, best)
    out.append(frozen_note(runs))
    return [p for p in out if p]


class Recommendation(NamedTuple):
    use: dict  # the row of the method to use
    best: dict  # the row of the best on val
    tied: list[dict]  # the rows within noise of the best


def recommend(rows: list[dict], runs: list[Run]) -> Recommendation:
    """The method to use, the best, and those within noise of the best. Among the best and the methods
    within noise of it, the cheapest ones (within COST_SLACK of the least compute) are kept and the
    most accurate of those is recommended: a method 10× cheaper that val cannot tell apart from the
    best is the practical answer, one that saves a second is not worth its lower score."""
    by_slug = {r.slug: r for r in runs}
    ours = [r for r in rows if r["kind"] == "ours"]
    best = ours[0]
    tied = [o for o in ours[1:] if within_noise(best, o, paired_test(by_slug[best["run"]], by_slug[o["run"]]))]
    costed = [o for o in [best, *tied] if o["total_s"] is not None]
    if not costed:
        return Recommendation(best, best, tied)
    cheapest = min(o["total_s"] for o in costed)
    use = next(o for o in costed if o["total_s"] <= COST_SLACK * cheapest)  # rows are best first
    return Recommendation(use, best, tied)


def verdict(rows: list[dict], runs: list[Run]) -> str:
    """The report's first paragraph: which method to use, its accuracy with its interval, and its
    cost against the best's."""
    rec, best, tied = recommend(rows, runs)  # rec: the method to use
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
        covers = ("contains them" if len(inside) == len(refs) else "contains neither" if not inside
                   else "contains only " + ", ".join(inside))
        out.append("The published tutorial numbers (" + ", ".join(fmt_pct(r["accuracy"], 2) for r in refs)
                   + f" on {REFERENCE_N_VAL} val images) pick the best epoch on val, so compare them with best-epoch "
                   f"rows, not with our primary ones. Our best result's 95% interval {covers}.")
    return out


def _tied_text(tied: list[dict]) -> str:
    """Which methods are within noise of the best (`recommend`'s list; the verdict names the one to use)."""
    if not tied:
        return f"Every other method is clearly behind the best (paired test p < {ALPHA}, intervals apart)."
    return "Within noise of the best: " + ", ".join(f"**{o['name']}**" for o in tied) + "."
