"""TorchLinear: an nn.Linear on codes trained with the tutorial's recipe, as an sklearn estimator.

Its own module so that the other heads (and `classify` with them) never import torch.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6
    def validate_data(est, *args, **kw):
        return est._validate_data(*args, **kw)


class TorchLinear(ClassifierMixin, BaseEstimator):
    """An nn.Linear trained on codes with the tutorial's recipe (SGD + momentum, StepLR, batches).

    This is the reference's "frozen backbone" scheme without re-running the backbone every epoch:
    the codes are computed once, so 25 epochs cost milliseconds. Written by hand because sklearn
    has no SGD-with-momentum/StepLR softmax; wrapped as an estimator so CV and joblib treat it like
    any other head.
    """

    def __init__(self, lr=0.001, momentum=0.9, step_size=7, gamma=0.1, epochs=25, batch_size=16,
                 weight_decay=0.0, seed=0, device="auto"):
        self.lr, self.momentum, self.step_size, self.gamma = lr, momentum, step_size, gamma
        self.epochs, self.batch_size, self.weight_decay, self.seed = epochs, batch_size, weight_decay, seed
        self.device = device

    def fit(self, X, y):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # batches of 16 rows: threads only add sync cost; CV runs folds in parallel
        try:
            return self._fit(X, y)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_ = unique_labels(y)
        dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device)
        x = torch.from_numpy(X).to(dev)
        labels = torch.as_tensor(np.searchsorted(self.classes_, y), device=dev)
        onehot = torch.eye(len(self.classes_), device=dev)[labels]
        g = torch.Generator().manual_seed(self.seed)  # init and order: the same on CPU and GPU
        bound = 1 / np.sqrt(X.shape[1])  # nn.Linear's default init, drawn from the seeded generator
        W = torch.empty(len(self.classes_), X.shape[1]).uniform_(-bound, bound, generator=g).to(dev)
        b = torch.empty(len(self.classes_)).uniform_(-bound, bound, generator=g).to(dev)
        state = {"W": W, "b": b, "bufs": None}
        self.loss_curve_ = []
        for epoch in range(self.epochs):
            lr = self.lr * self.gamma ** (epoch // self.step_size)  # StepLR
            total = self._epoch(x, onehot, state, torch.randperm(len(x), generator=g).to(dev), lr)
            self.loss_curve_.append(total.item() / len(x))
        self.coef_, self.intercept_ = state["W"].cpu().numpy(), state["b"].cpu().numpy()
        return self

    @torch.no_grad()
    def _epoch(self, x, onehot, state, perm, lr):
        """One epoch of mini-batch SGD with momentum and weight decay on the mean cross-entropy,
        step for step what torch.optim.SGD does, with the gradient written out (softmax minus
        one-hot) instead of autograd: a batch of 16 rows costs a few small kernels, not a graph."""
        W, b, bufs, m, wd = state["W"], state["b"], state["bufs"], self.momentum, self.weight_decay
        total = torch.zeros((), device=x.device)
        for i in range(0, len(x), self.batch_size):
            idx = perm[i:i + self.batch_size]
            xb, z = x[idx], torch.addmm(b, x[idx], W.t())
            logp = z.log_softmax(1)
            total -= (logp * onehot[idx]).sum()
            gz = (logp.exp() - onehot[idx]) / len(idx)
            grads = (gz.t() @ xb + wd * W, gz.sum(0) + wd * b)
            bufs = [g.clone() for g in grads] if bufs is None else [q.mul_(m).add_(g) for q, g in zip(bufs, grads)]
            W.sub_(lr * bufs[0])
            b.sub_(lr * bufs[1])
        state["bufs"] = bufs
        return total

    def _logits(self, X):
        check_is_fitted(self, "coef_")
        return validate_data(self, X, reset=False, dtype=np.float32) @ self.coef_.T + self.intercept_

    def decision_function(self, X):
        """The logits; for two classes, as sklearn's classifiers, one score: class 1's minus class 0's."""
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X):
        z = self._logits(X)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, X):
        best = self._logits(X).argmax(axis=1)
        return self.classes_[best]
