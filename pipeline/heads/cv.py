"""Choosing a head's setting by cross-validation on train: the folds (split by image, so an
image's augmented views never sit on both sides; by group when groups of images are known, so
near-copies of one photo never do either), the path search of one head, and the fit a label curve
makes on a drawn subset."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import PredefinedSplit, StratifiedGroupKFold, StratifiedKFold

from .. import UserError
from . import label_curve
from .registry import HEADS
from .search import PathSearch, SearchPath, path_search


def cv_folds(y: np.ndarray, folds: int, seed: int, per_image: int = 1,
             groups: np.ndarray | None = None, classes: list[str] | None = None) -> StratifiedKFold | PredefinedSplit:
    """Stratified folds of the training images. With `per_image` rows per image (its code and its
    augmented views, image-major) the images are split and each image's rows follow it, so no
    image has views on both sides of a fold. With `groups` (one id per image, images.groups) whole
    groups are split (scikit-learn's StratifiedGroupKFold: stratified as far as the groups allow).
    `classes`: the name of each label, for the errors."""
    images = y[::per_image]
    counts = np.bincount(images)
    smallest = int(counts[counts > 0].min())
    if smallest < 2:
        raise UserError(f"class {_name(int(np.flatnonzero(counts == smallest)[0]), classes)} has a single training "
                        "image: cross-validation needs at least 2 per class")
    if groups is not None:
        smallest = check_groups(images, groups, classes)
        cv = StratifiedGroupKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    else:
        cv = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    if per_image == 1 and groups is None:
        return cv
    fold_of_image = np.empty(len(images), dtype=int)
    for k, (_, test) in enumerate(cv.split(np.zeros(len(images)), images, groups)):
        fold_of_image[test] = k
    return PredefinedSplit(np.repeat(fold_of_image, per_image))


def _name(label: int, classes: list[str] | None) -> str:
    return repr(classes[label]) if classes is not None and 0 <= label < len(classes) else str(label)


def check_groups(images: np.ndarray, groups: np.ndarray, classes: list[str] | None) -> int:
    """The fewest groups any class's training images fall in; UserError naming every class whose
    images all sit in one group (no fold could hold that class out)."""
    per_class = {int(c): len(np.unique(groups[images == c])) for c in np.unique(images)}
    one = [c for c, n in per_class.items() if n < 2]
    if one:
        names = ", ".join(f"{_name(c, classes)} ({int((images == c).sum())} images, 1 group)" for c in one)
        raise UserError(f"grouped cross-validation needs at least 2 groups per class, and {len(one)} class"
                        f"{'es have all their' if len(one) > 1 else ' has all its'} training images in one group: "
                        f"{names}; give those images more than one group in the --groups file, or leave --groups out")
    return min(per_class.values())


def fit_head(name: str, X: np.ndarray, y: np.ndarray, folds, seed: int, jobs: int = 1,
             progress: bool = False, per_image: int = 1) -> PathSearch:
    """CV on the training codes only, along the head's path; the refit best is `.best_estimator_`.
    `folds`: a number of stratified folds (cv_folds), or folds already made (grouped ones)."""
    head = HEADS[name]
    cv = cv_folds(y, folds, seed, per_image) if isinstance(folds, int) else folds
    values = _values(head, X, y, cv)  # k-NN cannot ask for more neighbours than a CV training fold holds
    short = head.param.removeprefix("clf__")

    def say(t: dict):
        print(f"  {name} {short}={t['value']:g}: CV {t['mean']:.2%} ± {t['std']:.1%} ({t['seconds']:.1f}s)", flush=True)
    search = path_search(head.make(seed), head.path(values), X, y, cv, jobs=jobs or -1,
                         progress=say if progress else None)
    return past_the_edges(search, head, (X, y, cv), jobs or -1, say if progress else None)


def past_edge(values: list, best, bounds: tuple[float, float] | None) -> tuple[float, str] | None:
    """(the next value past the edge of the log-spaced path where `best` sits, which edge: "low" is
    the strongly regularised start of the path, "high" its end), or None when `best` is inside,
    the path has no bounds, or the next value would leave them. A value of 0 (no regularisation)
    is the natural end of a path: nothing lies past it."""
    if bounds is None or len(values) < 2 or best not in (values[0], values[-1]):
        return None
    side, near = ("low", values[1]) if best == values[0] else ("high", values[-2])
    if best == 0 or near == 0:
        return None
    value = best * (best / near)
    return (value, side) if bounds[0] <= value <= bounds[1] else None


def past_the_edges(search: PathSearch, head, data: tuple, jobs: int, progress, steps: int = 3) -> PathSearch:
    """A pick at an edge of its grid may be no optimum at all: try the next value past that edge (up
    to `steps` times, within the head's bounds) and keep it when CV scores it higher. A pick still
    at an extendable edge afterwards is recorded (`edge`) for the report to flag."""
    X, y, cv = data
    values = [t["value"] for t in search.cv_scores] + list(search.untried)
    for _ in range(steps):
        nxt = past_edge(values, search.best_params_[head.param], head.bounds)
        if nxt is None:
            break
        value, side = nxt
        extra = path_search(clone(search.best_estimator_), SearchPath(head.param, [value]), X, y, cv, jobs=jobs,
                            progress=progress)
        values = [value] + values if side == "low" else values + [value]
        tried = extra.cv_scores + search.cv_scores if side == "low" else search.cv_scores + extra.cv_scores
        won = extra.best_score_ > search.best_score_  # a tie keeps the pick already made
        search = replace(extra if won else search, n_splits_=search.n_splits_, cv_scores=tried,
                         stopped_early=search.stopped_early, untried=search.untried)
        if not won:
            break
    best = search.best_params_[head.param]
    at = "low" if best == values[0] else "high" if best == values[-1] else None
    extendable = head.bounds is not None and best != 0 and len(values) > 1
    return replace(search, edge=at if extendable else None)


def subset_fit(name: str, folds: int, unlabelled: np.ndarray | None = None) -> label_curve.Fit:
    """How the label curve fits a head on a drawn subset: CV on the subset when every class has two
    images, else (one image per class) the middle of the head's path, fitted as it is.

    A head that standardises its features learns the scale from `unlabelled` (all the train codes,
    without their labels, which a user always has) and keeps it frozen: fitted on two images, the
    scaler alone would leave the head near chance, an artefact of the scaler, not of the labels."""
    head = HEADS[name]
    make = _frozen_scale(head, unlabelled)

    def fit(X: np.ndarray, y: np.ndarray, seed: int):
        if np.bincount(y)[np.unique(y)].min() >= 2:
            cv = cv_folds(y, folds, seed)
            s = path_search(make(seed), head.path(_values(head, X, y, cv)), X, y, cv,
                            jobs=1)  # tiny fits: worker processes cost more than they save
            return s.best_estimator_, s.best_params_[head.param], f"CV on the drawn subset only ({s.n_splits_}-fold)"
        values = [v for v in head.values if head.param != "clf__n_neighbors" or v <= len(y)]
        value = values[len(values) // 2]
        return (make(seed).set_params(**{head.param: value}).fit(X, y), value,
                "middle of the path (one image per class: no CV possible)")
    return fit


def _values(head, X: np.ndarray, y: np.ndarray, cv) -> list:
    """The head's path, less the k-NN sizes larger than a CV training fold."""
    fold_size = min(len(tr) for tr, _ in cv.split(X, y))
    return [v for v in head.values if head.param != "clf__n_neighbors" or v <= fold_size]


def _frozen_scale(head, unlabelled: np.ndarray | None):
    """seed -> the head's pipeline, its "scale" step (if any) fitted once on `unlabelled` and frozen."""
    if unlabelled is None:
        return head.make
    from sklearn.frozen import FrozenEstimator

    scale = dict(head.make(0).steps).get("scale")
    if scale is None:
        return head.make
    frozen = FrozenEstimator(clone(scale).fit(unlabelled))
    return lambda seed: head.make(seed).set_params(scale=frozen)


