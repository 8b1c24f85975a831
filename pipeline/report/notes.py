"""The notes beside the numbers: which frozen-trunk run the tutorial's frozen number compares with, and
what choosing the epoch on val would report (one note for every run that logged it, with the
published numbers). Pure functions of the loaded runs and table rows.
"""
from __future__ import annotations

from ..runs.read import Run
from .rows import REFERENCE_N_VAL, fmt_pct


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


def protocol_note(rows: list[dict]) -> str:
    """One paragraph for the best-epoch and published rows: val chose them, so they are optimistic,
    and whether our best result's interval contains the published numbers."""
    ours = [r for r in rows if r["kind"] == "ours"]
    picked = [r for r in rows if r["kind"] == "best_epoch"]
    out = []
    if picked:
        gains = sorted(100 * (r["accuracy"] - next(o for o in ours if o["run"] == r["run"])["accuracy"])
                       for r in picked)
        span = f"{gains[0]:+.1f}" + (f" to {gains[-1]:+.1f}" if gains[-1] != gains[0] else "")
        who = (f"the {len(picked)} fine-tunes that logged every epoch" if len(picked) > 1
               else f"**{next(o for o in ours if o['run'] == picked[0]['run'])['name']}**")
        out.append(f"Choosing the epoch on val would report {span} points over the last epoch for {who}. Val picked "
                   "those epochs, so those numbers are optimistic: the main table ranks the last epoch.")
    refs = [r for r in rows if r["is_reference"]]
    if refs and ours:
        lo, hi = ours[0]["accuracy_ci95_lo"], ours[0]["accuracy_ci95_hi"]
        inside = [fmt_pct(r["accuracy"], 2) for r in refs if lo <= r["accuracy"] <= hi]
        covers = ("contains them" if len(inside) == len(refs) else "contains neither" if not inside
                  else "contains only " + ", ".join(inside))
        out.append(f"The published numbers (not our runs: ResNet18, the PyTorch tutorial, {REFERENCE_N_VAL} val "
                   "images) also pick the best epoch on val, so compare them with the best-epoch rows. Our best "
                   f"result's 95% interval {covers}.")
    return " ".join(out)
