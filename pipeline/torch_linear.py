"""TorchLinear: an nn.Linear on codes trained with the tutorial's recipe, as an sklearn estimator.

Its own module so that the other heads (and `classify` with them) never import torch.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
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
