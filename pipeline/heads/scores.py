"""A fitted head's scores on codes: predictions with its probabilities or its decision values, over
one view of each image or the mean over several (heads in memory and the out-of-core one alike)."""
from __future__ import annotations

import numpy as np
from sklearn.pipeline import Pipeline


def scores_of(model: Pipeline, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(predictions, class probabilities or None, decision values or None: one of the two is set).
    X is N x D, or N x T x D: then each image's probabilities (or margins) are the mean over its
    T views, and the prediction is their arg max."""
    if X.ndim == 2:
        pred = model.predict(X)
        if hasattr(model, "predict_proba"):  # a Pipeline has it only when its last step does
            return pred, model.predict_proba(X), None
        return pred, None, model.decision_function(X)
    classes = model.classes_
    if hasattr(model, "predict_proba"):
        proba = np.mean([model.predict_proba(X[:, t]) for t in range(X.shape[1])], axis=0)
        return classes[proba.argmax(axis=1)], proba, None
    d = np.mean([model.decision_function(X[:, t]) for t in range(X.shape[1])], axis=0)
    return classes[(d > 0).astype(int) if d.ndim == 1 else d.argmax(axis=1)], None, d
