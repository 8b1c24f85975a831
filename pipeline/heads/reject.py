"""Knowing when it doesn't know: a rule that marks an image "unknown" when it is far from every
training image, set on held-out images at a stated rate.

For a head on codes the score is the cosine distance from an image's code to its nearest training
code (L2-normalised codes, chunked matrix products: memory follows the chunk, not the training
set); the threshold is the (1 - rate) quantile of the val images' scores, so about `rate` of
images like the known ones are turned away. A fine-tuned model has no stored codes: its score is
1 - its top softmax probability, thresholded the same way on val. The rule, its rate and the split
it was set on are recorded in the run's model.json.
"""
from __future__ import annotations

import numpy as np

RATE = 0.05  # the share of known images (val) that the rule is set to turn away
CHUNK = 4096


def normalised(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.float32)
    return codes / np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-12)


def nearest_distance(reference: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """1 - cosine similarity of each row of `codes` to its nearest row of `reference` (normalised)."""
    q = normalised(codes)
    ref = np.asarray(reference, dtype=np.float32)
    best = np.full(len(q), -1.0, dtype=np.float32)
    for i in range(0, len(ref), CHUNK):
        best = np.maximum(best, (q @ ref[i:i + CHUNK].T).max(1) if len(q) else best)
    return 1.0 - best


def threshold(scores: np.ndarray, rate: float = RATE) -> float:
    """The score above which an image is "unknown": the (1 - rate) quantile of known images' scores."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - rate))


def codes_rule(train: np.ndarray, val: np.ndarray, rate: float = RATE) -> tuple[np.ndarray, dict]:
    """(the reference codes to store, float16, and the rule's record) for a head on codes."""
    ref = normalised(train)
    t = threshold(nearest_distance(ref, val), rate)
    return ref.astype(np.float16), {"rule": "cosine distance to the nearest training code", "threshold": t,
                                    "rate": rate, "set_on": f"val ({len(val)} images)", "file": "reject.npy"}


def confidence_rule(val_probs: np.ndarray, rate: float = RATE) -> dict:
    """The rule's record for a model with probabilities only (a fine-tuned one)."""
    return {"rule": "1 - the top softmax probability", "threshold": threshold(1.0 - val_probs.max(1), rate),
            "rate": rate, "set_on": f"val ({len(val_probs)} images)"}
