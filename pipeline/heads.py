"""Classifiers on cached CNN codes: one registry, each head a scikit-learn Pipeline with its
feature scaling inside, so `joblib.dump` saves the whole thing and CV tunes it as one estimator.

Adding a head is one entry in HEADS: a factory and the hyperparameter grid CV searches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted
from torch import nn


class TorchLinear(ClassifierMixin, BaseEstimator):
    """An nn.Linear trained on codes with the tutorial's recipe (SGD + momentum, StepLR, batches).

    This is the reference's "frozen backbone" scheme without re-running the backbone every epoch:
    the codes are computed once, so 25 epochs cost milliseconds. Written by hand because sklearn
    has no SGD-with-momentum/StepLR softmax; wrapped as an estimator so CV and joblib treat it like
    any other head.
    """

    def __init__(self, lr=0.001, momentum=0.9, step_size=7, gamma=0.1, epochs=25, batch_size=16,
                 weight_decay=0.0, seed=0):
        self.lr, self.momentum, self.step_size, self.gamma = lr, momentum, step_size, gamma
        self.epochs, self.batch_size, self.weight_decay, self.seed = epochs, batch_size, weight_decay, seed

    def fit(self, X, y):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # batches of 16 rows: threads only add sync cost (and stall under load)
        try:
            return self._fit(X, y)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, X, y):
        X = np.asarray(X, dtype=np.float32)
        self.classes_ = unique_labels(y)
        t = torch.as_tensor(np.searchsorted(self.classes_, y))
        x = torch.from_numpy(X)
        g = torch.Generator().manual_seed(self.seed)
        lin = nn.Linear(X.shape[1], len(self.classes_))
        with torch.no_grad():  # seeded init, independent of the global RNG
            bound = 1 / np.sqrt(X.shape[1])
            lin.weight.uniform_(-bound, bound, generator=g)
            lin.bias.uniform_(-bound, bound, generator=g)
        opt = torch.optim.SGD(lin.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=self.step_size, gamma=self.gamma)
        self.loss_curve_ = []
        for _ in range(self.epochs):
            perm, total = torch.randperm(len(x), generator=g), 0.0
            for i in range(0, len(x), self.batch_size):
                idx = perm[i:i + self.batch_size]
                loss = nn.functional.cross_entropy(lin(x[idx]), t[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            sched.step()
            self.loss_curve_.append(total / len(x))
        self.coef_ = lin.weight.detach().numpy().copy()
        self.intercept_ = lin.bias.detach().numpy().copy()
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X):
        check_is_fitted(self, "coef_")
        return np.asarray(X, dtype=np.float32) @ self.coef_.T + self.intercept_

    def predict_proba(self, X):
        z = self.decision_function(X)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, X):
        return self.classes_[self.decision_function(X).argmax(axis=1)]


@dataclass(frozen=True)
class Head:
    title: str  # how the report names it
    make: Callable[[int], Pipeline]  # seed -> unfitted pipeline
    grid: dict  # hyperparameters chosen by CV on train


HEADS: dict[str, Head] = {
    "softmax": Head("softmax (multinomial logistic regression)", lambda seed: Pipeline([
        ("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=5000, random_state=seed))]),
        {"clf__C": [0.001, 0.01, 0.1, 1.0, 10.0]}),
    "linsvc": Head("LinearSVC", lambda seed: Pipeline([
        ("scale", StandardScaler()), ("clf", LinearSVC(max_iter=20000, random_state=seed))]),
        {"clf__C": [0.0001, 0.001, 0.01, 0.1, 1.0]}),
    "linear": Head("torch linear (reference recipe)", lambda seed: Pipeline([
        ("scale", StandardScaler()), ("clf", TorchLinear(seed=seed))]),
        {"clf__weight_decay": [0.0, 1e-3, 1e-2, 1e-1]}),
    "knn": Head("cosine k-NN", lambda seed: Pipeline([
        ("l2", Normalizer()), ("clf", KNeighborsClassifier())]),  # L2-normalised + euclidean ranks as cosine
        {"clf__n_neighbors": [1, 3, 5, 9, 15]}),
}


def scores_of(model: Pipeline, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(predictions, class probabilities or None, a per-image confidence score)."""
    pred = model.predict(X)
    if hasattr(model, "predict_proba"):  # a Pipeline has it only when its last step does
        proba = model.predict_proba(X)
        return pred, proba, proba.max(axis=1)
    d = model.decision_function(X)
    return pred, None, np.abs(d) if d.ndim == 1 else d.max(axis=1)
