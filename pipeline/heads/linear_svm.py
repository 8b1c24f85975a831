"""LinearSVM: the problem sklearn's LinearSVC solves, with the solver picked from the data's shape
and warm starts along a regularisation path.

The problem is LinearSVC's default: L2-regularised squared hinge, one-vs-rest (one weight vector
for two classes), the intercept a regularised feature of value 1 as liblinear treats it:
    min_w  1/2 (|w|^2 + b^2) + C sum_i max(0, 1 - t_i (x_i w + b))^2     for each class.
When features outnumber samples, liblinear's dual coordinate descent (sklearn's LinearSVC) is
fast. When samples outnumber features, its cost grows steeply with C (measured on 3,500 x 1280
overlapping codes: 1.7 s at C=1e-4, 22 s at C=1; the primal solver 80 s at C=1), and liblinear
cannot start from a previous solution. There we solve the same smooth problem with scipy's L-BFGS
on all classes at once, starting from the previous C's solution when `warm_start` is set: written
by hand because no library offers a warm-startable squared-hinge solver.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.svm import LinearSVC
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6
    def validate_data(est, *args, **kw):
        return est._validate_data(*args, **kw)


class LinearSVM(ClassifierMixin, BaseEstimator):
    def __init__(self, C=1.0, solver="auto", tol=1e-4, max_iter=20000, warm_start=False, random_state=None):
        self.C, self.solver, self.tol, self.max_iter = C, solver, tol, max_iter
        self.warm_start, self.random_state = warm_start, random_state

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_ = unique_labels(y)
        if len(self.classes_) < 2:
            raise ValueError(f"LinearSVM needs at least 2 classes; the data has 1 class: {self.classes_[0]!r}")
        self.solver_ = self.solver if self.solver != "auto" else "lbfgs" if X.shape[0] > X.shape[1] else "liblinear"
        if self.solver_ == "liblinear":
            svc = LinearSVC(C=self.C, dual=True, tol=self.tol, max_iter=self.max_iter, random_state=self.random_state)
            svc.fit(X, y)
            self.coef_, self.intercept_, self.n_iter_ = svc.coef_, svc.intercept_, int(svc.n_iter_)
            return self
        T = np.where(y[:, None] == self.classes_[None, :], 1.0, -1.0).astype(np.float32)
        if len(self.classes_) == 2:
            T = T[:, 1:]  # one vector, positive = classes_[1], as LinearSVC
        W0 = np.zeros((X.shape[1] + 1, T.shape[1]))
        previous = getattr(self, "coef_", None) if self.warm_start else None
        if previous is not None and previous.shape == (T.shape[1], X.shape[1]):
            W0 = np.vstack([self.coef_.T, self.intercept_[None, :]])
        res = minimize(_objective, W0.ravel(), args=(X, T, float(self.C)), jac=True, method="L-BFGS-B",
                       options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": 1e-12})
        W = res.x.reshape(W0.shape)
        self.coef_, self.intercept_, self.n_iter_ = W[:-1].T.copy(), W[-1].copy(), int(res.nit)
        return self

    def decision_function(self, X):
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        d = X @ self.coef_.T.astype(np.float32) + self.intercept_.astype(np.float32)
        return d.ravel() if d.shape[1] == 1 else d

    def predict(self, X):
        d = self.decision_function(X)
        return self.classes_[(d > 0).astype(int)] if d.ndim == 1 else self.classes_[d.argmax(axis=1)]


def _objective(w: np.ndarray, X: np.ndarray, T: np.ndarray, C: float) -> tuple[float, np.ndarray]:
    """The squared-hinge objective above (divided by C*n, which leaves the minimiser unchanged and
    keeps L-BFGS's tolerances meaningful at any C) and its gradient."""
    n, k = T.shape
    W = w.reshape(X.shape[1] + 1, k)
    Wf = W.astype(np.float32)
    slack = np.maximum(0.0, 1.0 - T * (X @ Wf[:-1] + Wf[-1]))  # n x k, float32 matmul: the costly part
    scale = 1.0 / (C * n)
    f = 0.5 * scale * float((W * W).sum()) + float((slack * slack).sum(dtype=np.float64)) / n
    G = -2.0 / n * (T * slack)
    grad = np.vstack([X.T @ G, G.sum(0, keepdims=True)]).astype(np.float64) + scale * W
    return f, grad.ravel()
