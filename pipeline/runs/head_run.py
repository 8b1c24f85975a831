"""A head's run, before it is written: the head chosen and refit (Fitted), its one pass over a
split (Scored), what predict needs to reload it (head_spec) and what it costs to use (head_cost).
Used by classify.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..codes.store import Codes
from ..core.timing import measure, plan
from ..heads.scores import scores_of
from ..heads.search import PathSearch
from ..heads.views import PLAIN, Views, val_views
from . import folder as runs
from .metrics import per_image, scores


@dataclass(frozen=True)
class Fitted:
    """A head chosen and refit on train: its name, the search that chose it, what it trained on."""

    name: str
    search: PathSearch
    fit_s: float
    views: Views = PLAIN
    curve: dict | None = None  # the label curve, when it ran
    repeats: dict | None = None  # scores on re-drawn splits (heads.repeats), when asked for
    inputs: dict | None = None  # what determined the run (its up-to-date check), recorded with it


class Scored(NamedTuple):
    """A head's one pass over val: the scores, one row per image, and what it cost."""

    val: dict
    preds: list[dict]
    kind: str  # probability or margin
    predict_s: float


def score_split(codes: Codes, split: str, f: Fitted) -> Scored:
    """A split scored once (averaged over T test-time views where the split holds them)."""
    va = codes.splits[split]
    t0 = time.perf_counter()
    t = f.views.t if va.views is not None else 1
    pred, proba, decision = scores_of(f.search.best_estimator_, val_views(va, t))
    predict_s = time.perf_counter() - t0
    confidence, loss, kind = per_image(va.labels, proba, decision)
    return Scored(scores(va.labels, pred, codes.classes, proba),
                  runs.predictions(va.paths, va.labels, pred, confidence, loss), kind, predict_s)


def head_cost(model, X: np.ndarray) -> dict | None:
    """What the head costs per image on a new image's code, with core.timing's harness: its
    predict_proba (decision_function without probabilities), as predict calls it, on a batch of
    val codes (repeated to fill it). None without val codes."""
    if not len(X):
        return None
    batch, warmup, repeats = plan()
    xb = np.resize(np.asarray(X, dtype=np.float32), (batch, X.shape[-1]))
    fn = model.predict_proba if hasattr(model, "predict_proba") else model.decision_function
    return measure(lambda: fn(xb), batch, repeats, warmup, part="head", device="cpu")


def head_spec(codes: Codes, name: str) -> dict:
    """model.json of a head: what predict needs to turn an image into its code and a label."""
    h = codes.header
    return {"kind": "head", "head": name, "backbone": h.backbone, "weights": h.weights, "weights_arg": h.weights_arg,
            "weights_sha256": h.weights_sha256, "seed": h.seed, "classes": codes.classes,
            **{k: h.transform[k] for k in ("resize", "crop", "interpolation", "mean", "std") if k in h.transform},
            "fast_decode": h.transform["decode"] != "PIL full", "file": "model.npz",
            "features_fingerprint": h.fingerprint}
