"""Knowing when it doesn't know: a rule that marks an image "unknown" when it is far from every
training image, set on held-out images at a stated rate.

For a head on codes the score is the cosine distance from an image's code to its nearest reference
code (codes.index: exact up to its EXACT_MAX references, FAISS IVF above); the threshold is the
(1 - rate) quantile of the val images' scores against the same references, so `rate` of val is
turned away whatever the references are. The references are the training codes, or above
REFERENCE_MAX of them a seeded random subsample of REFERENCE_MAX: the rule then measures distance
to the subsample and its threshold is set on that distance, which keeps its rate on val by
construction and keeps reject.npy and the exported ONNX file small (10,000 x 512 float16: 10 MB,
where a million training codes would be 1 GB); what a subsample changes is which images are turned
away, measured in docs/export.md. A fine-tuned model has no stored codes: its score is
1 - its top softmax probability, thresholded the same way on val. The rule, its rate and the split
it was set on are recorded in the run's model.json.
"""
from __future__ import annotations

import numpy as np

RATE = 0.05  # the share of known images (val) that the rule is set to turn away
REFERENCE_MAX = 10_000  # training codes kept as the rule's references (module docstring)


def normalised(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.float32)
    return codes / np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-12)


def reference_index(reference: np.ndarray):
    """The neighbour index over the reference codes (codes.index), built once for many batches."""
    from ..codes.index import Index, View

    # as stored (float16 unit rows), not normalised again: the exported file multiplies by them as they are
    return Index([np.asarray(reference, dtype=np.float32)], View(unit=False))


def nearest_distance(reference, codes: np.ndarray) -> np.ndarray:
    """1 - cosine similarity of each row of `codes` to its nearest row of `reference` (an array of
    codes, or their `reference_index`)."""
    if not len(codes):
        return np.zeros(0, dtype=np.float32)
    index = reference if hasattr(reference, "search") else reference_index(reference)
    sims, _ = index.search([normalised(codes)], 1)
    return 1.0 - np.where(np.isfinite(sims[:, 0]), sims[:, 0], -1.0).astype(np.float32)


def references(train: np.ndarray, seed: int = 0, size: int = 0) -> np.ndarray:
    """The normalised training codes the rule keeps: all of them, or a seeded subsample of `size`
    (0: REFERENCE_MAX)."""
    size = size or REFERENCE_MAX
    if len(train) > size:
        train = np.asarray(train)[np.sort(np.random.default_rng(seed).choice(len(train), size, replace=False))]
    return normalised(train)


def threshold(scores: np.ndarray, rate: float = RATE) -> float:
    """The score above which an image is "unknown": the (1 - rate) quantile of known images' scores."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - rate))


def codes_rule(train: np.ndarray, val: np.ndarray, rate: float = RATE, seed: int = 0) -> tuple[np.ndarray, dict]:
    """(the reference codes to store, float16, and the rule's record) for a head on codes."""
    ref = references(train, seed).astype(np.float16)
    t = threshold(nearest_distance(ref, val), rate)
    sub = f"a seeded subsample of {len(ref):,} of the {len(train):,} training codes" if len(ref) < len(train) else ""
    return ref, {"rule": f"cosine distance to the nearest {'of ' + sub if sub else 'training code'}", "threshold": t,
                 "rate": rate, "set_on": f"val ({len(val)} images)", "file": "reject.npy", "references": len(ref)}


def confidence_rule(val_probs: np.ndarray, rate: float = RATE) -> dict:
    """The rule's record for a model with probabilities only (a fine-tuned one)."""
    return {"rule": "1 - the top softmax probability", "threshold": threshold(1.0 - val_probs.max(1), rate),
            "rate": rate, "set_on": f"val ({len(val_probs)} images)"}
