"""Every number we report, computed in one place: accuracy with a Wilson interval, balanced
accuracy, macro F1, per-class precision/recall, confusion, log-loss, the exact McNemar test, and
the per-epoch time rule. Statistics only: the run record that holds them is in `runs`.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for k successes in n trials (sound at 0%, 100% and small n)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def scores(y_true, y_pred, classes: list[str], proba: np.ndarray | None = None) -> dict:
    """The evaluation block of metrics.json for one set of predictions."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(classes)))
    k, n = int((y_true == y_pred).sum()), len(y_true)
    p, r, f, sup = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": k / n if n else float("nan"),
        "accuracy_ci95": list(wilson(k, n)),
        "correct": k,
        "n": n,
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(sup[i])}
                      for i, c in enumerate(classes)},
        "confusion": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),  # rows: true, cols: predicted
        "log_loss": float(skm.log_loss(y_true, proba, labels=labels)) if proba is not None else None,
    }


def per_image(y_true, proba: np.ndarray | None = None, decision: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, str]:
    """(confidence, loss, what the confidence is) of each prediction, for finding what went wrong.

    With class probabilities: the predicted class's probability and the cross-entropy
    -log p(true class), as log_loss averages it. With a decision function only (LinearSVC): the
    margin of the prediction (its score minus the runner-up's; |d| for two classes) and the hinge
    loss of the true class, max(0, 1 - (d_true - max other d)), so images on the wrong side of the
    boundary, or barely on the right one, rank first."""
    y = np.asarray(y_true, dtype=np.int64)
    if proba is not None:
        p = np.asarray(proba, dtype=np.float64)
        loss = -np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1.0))
        return p.max(axis=1), loss, "probability"
    d = np.asarray(decision, dtype=np.float64)
    if d.ndim == 1:  # two classes: the score of class 1 against class 0
        d = np.stack([-d, d], axis=1) / 2
    top2 = np.sort(d, axis=1)[:, -2:]
    others = d.copy()
    others[np.arange(len(y)), y] = -np.inf
    true_margin = d[np.arange(len(y)), y] - others.max(axis=1)
    return top2[:, 1] - top2[:, 0], np.maximum(0.0, 1.0 - true_margin), "margin"


def mcnemar_exact(correct_a, correct_b) -> dict:
    """Exact (binomial) McNemar test of two methods scored on the same images.

    b = images only A gets right, c = only B gets right; p is the two-sided binomial p-value of
    b against Binomial(b + c, 1/2). p = 1 when they never disagree.
    """
    from scipy.stats import binomtest

    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b_.shape:
        raise ValueError("McNemar needs both methods scored on the same images")
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"only_a": b, "only_b": c, "p_value": p}


def mean_epoch_seconds(seconds: list[float]) -> float:
    """Mean epoch time, leaving out the first (warm-up) epoch when more than 2 were run."""
    return float(np.mean(seconds[1:] if len(seconds) > 2 else seconds))
