"""How far each method's confidence can be trusted and where it errs, from its saved val predictions:
the expected calibration error and the reliability curve, top-5 accuracy (when the run kept what it
needs), and the most-confused class pairs. Pure functions of the loaded runs.

ECE follows Guo et al. 2017: 15 equal-width bins of the predicted class's probability, the mean
over bins of |accuracy - mean confidence| weighted by the share of images in the bin. A head that
gives margins, not probabilities (LinearSVC), has none.
"""
from __future__ import annotations

import numpy as np

from ..runs.read import Run

ECE_BINS = 15
TOP_K = 5
MANY_CLASSES = 5  # top-5 accuracy and mean per-class recall are shown above this many classes


def has_probabilities(run: Run) -> bool:
    """The run's saved `score` is the predicted class's probability (not a margin)."""
    kind = run.m.get("score_kind") or ("probability" if run.m.get("stage") == "finetune" else None)
    return kind == "probability" and bool(run.m.get("predictions"))


def reliability(run: Run, bins: int = ECE_BINS) -> dict | None:
    """{ece, n, bins: [{lo, hi, n, confidence, accuracy}]} over the non-empty bins, or None."""
    if not has_probabilities(run):
        return None
    preds = run.m["predictions"]
    conf = np.clip(np.array([p["score"] for p in preds], dtype=float), 0.0, 1.0)
    right = np.array([p["pred"] == p["true"] for p in preds], dtype=float)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            acc, c = float(right[m].mean()), float(conf[m].mean())
            ece += m.mean() * abs(acc - c)
            out.append({"lo": b / bins, "hi": (b + 1) / bins, "n": int(m.sum()), "confidence": c, "accuracy": acc})
    return {"ece": float(ece), "n": len(preds), "bins": out}


def ece(run: Run) -> float | None:
    r = reliability(run)
    return None if r is None else r["ece"]


def top_k_accuracy(run: Run, k: int = TOP_K) -> float | None:
    """Top-k accuracy when the run recorded it, or each prediction's ranked classes or probabilities."""
    val = run.m.get("val") or {}
    for key in (f"top{k}_accuracy", f"top_{k}_accuracy"):
        if isinstance(val.get(key), (int, float)):
            return float(val[key])
    preds = run.m.get("predictions") or []
    if not preds:
        return None
    if all(isinstance(p.get(f"top{k}"), list) for p in preds):
        return float(np.mean([p["true"] in p[f"top{k}"][:k] for p in preds]))
    if all(isinstance(p.get("proba"), list) for p in preds):
        return float(np.mean([p["true"] in np.argsort(p["proba"])[::-1][:k] for p in preds]))
    return None


def most_confused(confusions: list[list[list[int]]], most: int = 10) -> list[tuple[int, int, list[int]]]:
    """(true, predicted, the count in each matrix) of the off-diagonal cells, most errors first over
    the matrices given, then by class order; cells no matrix has an error in are left out."""
    cms = [np.asarray(c, dtype=int) for c in confusions]
    k = cms[0].shape[0]
    cells = [(t, p, [int(c[t, p]) for c in cms]) for t in range(k) for p in range(k) if t != p]
    cells = [c for c in cells if sum(c[2])]
    return sorted(cells, key=lambda c: (-sum(c[2]), c[0], c[1]))[:most]
