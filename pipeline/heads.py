"""Classifiers on cached CNN codes: one registry, each head a scikit-learn Pipeline with its
feature scaling inside, so `joblib.dump` saves the whole thing and CV tunes it as one estimator.

Adding a head is one entry in HEADS: a factory, the one hyperparameter CV chooses, and its values
in path order, strongest regularisation first (see `search.path_search`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from .linear_svm import LinearSVM


@dataclass(frozen=True)
class Head:
    title: str  # how the report names it
    make: Callable[[int], Pipeline]  # seed -> unfitted pipeline
    param: str  # the hyperparameter chosen by CV on train
    values: tuple  # its path: strongest regularisation first
    warm: bool = False  # each fold starts from its solution at the previous value
    patience: int = 2  # stop the path after this many values in a row below the best (0: never)

    @property
    def grid(self) -> dict:
        return {self.param: list(self.values)}


def _torch_linear(seed: int):
    from .torch_linear import TorchLinear  # torch is imported only when this head runs

    return TorchLinear(seed=seed)


HEADS: dict[str, Head] = {
    "softmax": Head("softmax (multinomial logistic regression)", lambda seed: Pipeline([
        ("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=5000, warm_start=True, random_state=seed))]),
        "clf__C", (0.001, 0.01, 0.1, 1.0, 10.0), warm=True),
    "linsvc": Head("LinearSVC", lambda seed: Pipeline([
        ("scale", StandardScaler()), ("clf", LinearSVM(max_iter=20000, warm_start=True, random_state=seed))]),
        "clf__C", (0.0001, 0.001, 0.01, 0.1, 1.0), warm=True),
    "linear": Head("torch linear (reference recipe)", lambda seed: Pipeline([
        ("scale", StandardScaler()), ("clf", _torch_linear(seed))]),
        "clf__weight_decay", (1e-1, 1e-2, 1e-3, 0.0)),
    "knn": Head("cosine k-NN", lambda seed: Pipeline([
        ("l2", Normalizer()), ("clf", KNeighborsClassifier())]),  # L2-normalised + euclidean ranks as cosine
        "clf__n_neighbors", (1, 3, 5, 9, 15), patience=0),  # cheap, and not a path: every k is scored
}


def scores_of(model: Pipeline, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(predictions, class probabilities or None, a per-image confidence score)."""
    pred = model.predict(X)
    if hasattr(model, "predict_proba"):  # a Pipeline has it only when its last step does
        proba = model.predict_proba(X)
        return pred, proba, proba.max(axis=1)
    d = model.decision_function(X)
    return pred, None, np.abs(d) if d.ndim == 1 else d.max(axis=1)
