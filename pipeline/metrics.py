"""Every number we report, computed in one place: accuracy with a Wilson interval, balanced
accuracy, macro F1, per-class precision/recall, confusion, log-loss, the exact McNemar test; and
the `metrics.json` run record that classify, finetune and bench write and report reads.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest
from sklearn import metrics as skm

from .cache import atomic_write

SCHEMA = "cnncodes-metrics/1"


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
    out = {
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
    return out


def predictions(paths: list[str], y_true, y_pred, score) -> list[dict]:
    """Per-image val predictions: what the report's image grid and paired tests need."""
    return [{"path": p, "true": int(t), "pred": int(q), "score": float(s)} for p, t, q, s in zip(paths, y_true, y_pred, score)]


def mcnemar_exact(correct_a, correct_b) -> dict:
    """Exact (binomial) McNemar test of two methods scored on the same images.

    b = images only A gets right, c = only B gets right; p is the two-sided binomial p-value of
    b against Binomial(b + c, 1/2). p = 1 when they never disagree.
    """
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b_.shape:
        raise ValueError("McNemar needs both methods scored on the same images")
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"only_a": b, "only_b": c, "p_value": p}


def cpu_model() -> str:
    """The CPU's marketing name (platform.processor() is often empty or just the architecture)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu,
            "python": platform.python_version(), "torch": torch.__version__}


def record(*, method: str, stage: str, dataset: str, classes: list[str], backbone: str, weights: str,
           n_train: int, n_val: int, val: dict, selection: str, seconds: dict, device: str, seed: int,
           preds: list[dict], **extra) -> dict:
    """A metrics.json document. `seconds` keys: extract, fit, train, predict (absent = not spent)."""
    return {
        "schema": SCHEMA, "method": method, "stage": stage, "dataset": dataset, "classes": classes,
        "backbone": backbone, "weights": weights, "n_train": n_train, "n_val": n_val,
        "val": val, "selection": selection, "seconds": seconds, "device": device, "seed": seed,
        **extra,
        "environment": environment(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "predictions": preds,
    }


def write_json(path: Path | str, doc: dict) -> Path:
    """Write JSON atomically (temp file + rename): a reader never sees half a file."""
    text = json.dumps(doc, indent=1, default=_jsonable)
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def read_json(path: Path | str) -> dict:
    return json.loads(Path(path).read_text())


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
