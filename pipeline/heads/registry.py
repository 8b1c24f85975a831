"""Classifiers on cached CNN codes: one registry, each head a scikit-learn Pipeline with its
feature scaling inside, so one file saves the whole thing and CV tunes it as one estimator.

Adding a head is one entry in HEADS: a factory, the one hyperparameter CV chooses, and its values
in path order, strongest regularisation first (see `search.path_search`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from ..codes.shards import npz_header
from .knn import CachedKNN
from .linear_svm import LinearSVM
from .search import SearchPath
from .streaming import ALPHAS


@dataclass(frozen=True)
class Head:
    title: str  # how the report names it
    make: Callable[[int], Pipeline]  # seed -> unfitted pipeline
    param: str  # the hyperparameter chosen by CV on train
    values: tuple  # its path: strongest regularisation first
    warm: bool = False  # each fold starts from its solution at the previous value
    patience: int = 2  # stop the path after this many values in a row below the best (0: never)
    # a pick at an edge of `values` extends the path a step past it (x10 on this log-spaced grid)
    # while inside these bounds; None: the grid is the whole range (k-NN scores every k it can)
    bounds: tuple[float, float] | None = None
    fold_major: bool = False  # CV scores every value on one fold before the next (search.fold_major_scores)

    @property
    def grid(self) -> dict:
        return {self.param: list(self.values)}

    def path(self, values) -> SearchPath:
        """The search along `values` (its own values, or as many as the data allows) as this head runs it."""
        return SearchPath(self.param, list(values), self.warm, self.patience, self.fold_major)


def _torch_linear(seed: int):
    from ..heads.torch_linear import TorchLinear  # torch is imported only when this head runs

    return TorchLinear(seed=seed)


HEADS: dict[str, Head] = {
    "softmax": Head("softmax (multinomial logistic regression)", lambda seed: Pipeline([
        ("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=5000, warm_start=True, random_state=seed))]),
        "clf__C", (0.001, 0.01, 0.1, 1.0, 10.0), warm=True, bounds=(1e-5, 1e3)),
    "linsvc": Head("LinearSVC", lambda seed: Pipeline([
        ("scale", StandardScaler()), ("clf", LinearSVM(max_iter=20000, warm_start=True, random_state=seed))]),
        "clf__C", (0.0001, 0.001, 0.01, 0.1, 1.0), warm=True, bounds=(1e-6, 1e2)),
    "linear": Head("torch linear (reference recipe)", lambda seed: Pipeline([
        ("scale", StandardScaler()), ("clf", _torch_linear(seed))]),
        "clf__weight_decay", (1e-1, 1e-2, 1e-3, 0.0), bounds=(0.0, 10.0)),
    # L2-normalised + euclidean ranks as cosine; neighbour lists searched once per fold, reused for every k
    "knn": Head("cosine k-NN", lambda seed: Pipeline([("l2", Normalizer()), ("clf", CachedKNN(max_neighbors=15))]),
                "clf__n_neighbors", (1, 3, 5, 9, 15), warm=True, patience=0,  # not a path: every k is scored
                fold_major=True),  # one fold's training codes in memory at a time
}

# the out-of-core head (streaming.py): not in HEADS, whose heads fit in memory; `classify --head sgd`
SGD_HEAD = Head("SGD (out of core: codes streamed from the file in chunks)", lambda seed: None, "clf__alpha",
                ALPHAS)


# ---------------------------------------------------------------------------------------------
# Safe persistence. A fitted head is saved as arrays and JSON in one .npz, read back with
# allow_pickle=False: loading a run folder cannot run code. Written by hand because pickle-based
# formats (joblib) execute code on load, and skops, which does not, imports every scikit-learn
# module (and torch with them) on import: 3 s of start-up for `classify` and `predict`.

_LINEAR = ["coef_", "intercept_", "classes_"]


def _torch_linear_type():
    from ..heads.torch_linear import TorchLinear  # imports torch: only for a head of this type

    return TorchLinear


# The step types a saved head may hold: type name -> (its class, the fitted attributes it predicts with).
ALLOWED = {
    "StandardScaler": (lambda: StandardScaler, ["mean_", "scale_", "var_", "n_samples_seen_"]),
    "Normalizer": (lambda: Normalizer, []),
    "LogisticRegression": (lambda: LogisticRegression, _LINEAR),
    "LinearSVM": (lambda: LinearSVM, _LINEAR),
    "SGDClassifier": (lambda: SGDClassifier, _LINEAR),
    "TorchLinear": (_torch_linear_type, _LINEAR),
    "CachedKNN": (lambda: CachedKNN, ["_fit_X", "_y", "classes_"]),
}


def _kind(est) -> str:
    """The allowed type an estimator is saved as: its own, or the allowed class it derives from."""
    if type(est).__name__ in ALLOWED:
        return type(est).__name__
    for name, (make, _) in ALLOWED.items():
        if name != "TorchLinear" and isinstance(est, make()):
            return name
    raise TypeError(f"a head step of type {type(est).__name__} cannot be saved safely")


def _scalar(name: str) -> bool:
    """A fitted string attribute (solver_, fit_token_): public, ends in '_', like sklearn's."""
    return name.isidentifier() and name.endswith("_") and not name.startswith("_")


def head_arrays(model: Pipeline) -> dict[str, np.ndarray]:
    """A fitted Pipeline as named arrays: each step's type, parameters and fitted attributes."""
    steps, out = [], {}
    for i, (name, est) in enumerate(model.steps):
        kind = _kind(est)
        steps.append({"name": name, "type": kind, "params": est.get_params(deep=False),
                      "scalars": {k: v for k, v in vars(est).items() if _scalar(k) and isinstance(v, str)}})
        out.update({f"{i}/{a}": np.asarray(getattr(est, a)) for a in ALLOWED[kind][1]})
    out["__steps__"] = np.array(json.dumps(steps))
    return out


_SCALERS = ("StandardScaler", "Normalizer")


def _array(arrays, key: str, kinds: str = "iuf") -> np.ndarray:
    """One saved array: its size read from its header before a byte is allocated (an .npz), numbers
    of the given kinds only, every one finite."""
    if hasattr(arrays, "zip"):
        npz_header(arrays, key)
    a = np.asarray(arrays[key])
    if a.dtype.kind not in kinds or (a.dtype.kind != "U" and not np.isfinite(a).all()):
        raise ValueError(f"{key} holds {a.dtype} values" if a.dtype.kind not in kinds else
                         f"{key} holds values that are not finite numbers")
    return a


def _steps(arrays) -> list[dict]:
    """The steps' record (JSON): a scaler or two, then one classifier, each named once."""
    raw = _array(arrays, "__steps__", "U")
    steps = json.loads(str(raw)) if raw.shape == () else None
    keys = {"name": str, "type": str, "params": dict, "scalars": dict}
    if not (isinstance(steps, list) and steps and all(isinstance(s, dict) and all(
            isinstance(s.get(k), t) for k, t in keys.items()) for s in steps)):
        raise ValueError("__steps__ is not a list of steps (name, type, params, scalars)")
    names = [s["name"] for s in steps]
    kinds = [s["type"] for s in steps]
    if len(set(names)) < len(names) or not all(n and "__" not in n for n in names) or \
            any(k in _SCALERS for k in kinds[-1:]) or not all(k in _SCALERS for k in kinds[:-1]):
        raise ValueError(f"steps {names} of types {kinds} are not scalers then one classifier, each named once")
    return steps


def _check_step(kind: str, est, n_classes: int | None) -> None:
    """The fitted attributes of one step are those of one head: classes 0..K-1 (K >= 2, the recorded
    classes' count when known), weights with a row per class (one for two classes, as sklearn)."""
    def need(ok, what: str):
        if not ok:
            raise ValueError(f"{kind}: {what}")
    if kind == "StandardScaler":
        d = est.mean_.shape
        need(len(d) == 1 and d[0] >= 1 and est.scale_.shape == d and est.var_.shape == d,
             f"mean_ {d}, scale_ {est.scale_.shape} and var_ {est.var_.shape} are not one feature width")
        need((est.scale_ > 0).all() and (est.var_ >= 0).all() and (est.n_samples_seen_ >= 0).all(),
             "scale_ must be positive, var_ and n_samples_seen_ not negative")
        return
    c = est.classes_
    k = len(c) if c.ndim == 1 else 0
    need(k >= 2 and c.dtype.kind in "iu" and np.array_equal(c, np.arange(k)),
         f"classes_ {c.tolist()[:8]} are not the labels 0..K-1 of two or more classes")
    if kind == "CachedKNN":
        X, y = est._fit_X, est._y
        need(X.ndim == 2 and min(X.shape) >= 1 and y.shape == X.shape[:1] and y.dtype.kind in "iu",
             f"_fit_X {X.shape} and _y {y.shape} {y.dtype} are not one label per training code")
        need(((y >= 0) & (y < k)).all(), f"_y holds labels outside 0..{k - 1}")
        need(all(type(v) is int and v >= 1 for v in (est.n_neighbors, est.max_neighbors)),
             "n_neighbors and max_neighbors must be whole numbers of at least 1")
    else:
        w, b = est.coef_, est.intercept_
        rows = k if kind == "TorchLinear" or k > 2 else 1
        need(w.ndim == 2 and w.shape[0] == rows and w.shape[1] >= 1 and b.shape == (rows,),
             f"coef_ {w.shape} and intercept_ {b.shape} do not fit {k} classes (expected {rows} rows)")
    need(n_classes is None or k == n_classes, f"{k} classes, but the run records {n_classes}")


def head_from_arrays(arrays, n_classes: int | None = None) -> Pipeline:
    """The Pipeline back from `head_arrays`; only the allowed types, built from their parameters,
    and checked before anything predicts with it: each array's size read from its header before
    it is loaded, finite numbers, the shapes of one head of `n_classes` classes (when given) on one
    feature width. A ValueError says what is wrong."""
    built, widths = [], set()
    for i, step in enumerate(_steps(arrays)):
        if step["type"] not in ALLOWED:
            raise ValueError(f"step type {step['type']!r} is not allowed")
        make, attrs = ALLOWED[step["type"]]
        est = make()(**step["params"])
        if hasattr(est, "_parameter_constraints"):
            est._validate_params()  # sklearn's own check of each parameter's type and range
        for a in attrs:
            setattr(est, a, _array(arrays, f"{i}/{a}"))
        for k, v in step["scalars"].items():
            if not _scalar(k) or k in attrs:
                raise ValueError(f"attribute {k!r} is not a fitted attribute")
            setattr(est, k, str(v))
        if attrs:
            _check_step(step["type"], est, n_classes)
            est.n_features_in_ = getattr(est, attrs[0]).shape[-1]
            widths.add(est.n_features_in_)
        built.append((step["name"], est))
    if len(widths) > 1:
        raise ValueError(f"the steps expect different feature widths: {sorted(widths)}")
    return Pipeline(built)
