"""Choosing a head's setting by cross-validation on train: the folds (split by image, so an
image's augmented views never sit on both sides), the path search of one head, and the fit a
label curve makes on a drawn subset."""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import PredefinedSplit, StratifiedKFold

from .. import UserError
from . import label_curve
from .registry import HEADS
from .search import PathSearch, SearchPath, path_search


def cv_folds(y: np.ndarray, folds: int, seed: int, per_image: int = 1) -> StratifiedKFold | PredefinedSplit:
    """Stratified folds of the training images. With `per_image` rows per image (its code and its
    augmented views, image-major) the images are split and each image's rows follow it, so no
    image has views on both sides of a fold."""
    images = y[::per_image]
    counts = np.bincount(images)
    smallest = int(counts[counts > 0].min())
    if smallest < 2:
        raise UserError(f"class {int(np.flatnonzero(counts == smallest)[0])} has a single training image: "
                        "cross-validation needs at least 2 per class")
    cv = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    if per_image == 1:
        return cv
    fold_of_image = np.empty(len(images), dtype=int)
    for k, (_, test) in enumerate(cv.split(np.zeros(len(images)), images)):
        fold_of_image[test] = k
    return PredefinedSplit(np.repeat(fold_of_image, per_image))


def fit_head(name: str, X: np.ndarray, y: np.ndarray, folds: int, seed: int, jobs: int = 1,
             progress: bool = False, per_image: int = 1) -> PathSearch:
    """CV on the training codes only, along the head's path; the refit best is `.best_estimator_`."""
    head, cv = HEADS[name], cv_folds(y, folds, seed, per_image)
    fold_size = min(len(tr) for tr, _ in cv.split(X, y))
    # k-NN cannot ask for more neighbours than a CV training fold holds
    values = [v for v in head.values if head.param != "clf__n_neighbors" or v <= fold_size]
    short = head.param.removeprefix("clf__")

    def say(t: dict):
        print(f"  {name} {short}={t['value']:g}: CV {t['mean']:.2%} ± {t['std']:.1%} ({t['seconds']:.1f}s)", flush=True)
    return path_search(head.make(seed), SearchPath(head.param, values, head.warm, head.patience), X, y, cv,
                       jobs=jobs or -1, progress=say if progress else None)


def subset_fit(name: str, folds: int) -> label_curve.Fit:
    """How the label curve fits a head on a drawn subset: CV on the subset when every class has two
    images, else (one image per class) the middle of the head's path, fitted as it is."""
    head = HEADS[name]

    def fit(X: np.ndarray, y: np.ndarray, seed: int):
        if np.bincount(y)[np.unique(y)].min() >= 2:
            s = fit_head(name, X, y, folds, seed, jobs=1)  # tiny fits: worker processes cost more than they save
            return s.best_estimator_, s.best_params_[head.param], f"CV on the drawn subset only ({s.n_splits_}-fold)"
        values = [v for v in head.values if head.param != "clf__n_neighbors" or v <= len(y)]
        value = values[len(values) // 2]
        return (head.make(seed).set_params(**{head.param: value}).fit(X, y), value,
                "middle of the path (one image per class: no CV possible)")
    return fit
