"""Likely label errors by confident learning (Northcutt, Jiang and Chuang, "Confident Learning:
Estimating Uncertainty in Dataset Labels", JAIR 2021) on probabilities no model saw the label of:

- train: out-of-fold probabilities of the softmax head (heads/registry.py: StandardScaler +
  multinomial logistic regression), stratified K-fold on train. Its C is the one classify's CV
  would choose (the softmax path, `heads.cv.fit_head`) unless --c fixes it; the folds of the OOF
  fits are the search's own, so C is chosen on the same images (a slight optimism on one number,
  no label leaks into its own probability).
- other splits (val, test): the same head refit on all of train, so held-out probabilities.

At scale (more than FIT_MAX = 20,000 train images) every fit sees a seeded, stratified subsample
of FIT_MAX rows: C is chosen by CV on one, each OOF fold's model is fitted on one drawn from the
other folds and scores every row of its own fold, and the model for the other splits on one drawn
from all of train. A linear head on 512-d codes learns little past 20,000 rows, while CV
of the softmax path on 800,000 would cost hours here; every row still gets a probability from a
model that never saw its label. The subsample is stated in audit.json (`C_how`).

Per-class thresholds t_j = the mean probability of class j over the train images labelled j
(the classifier's average self-confidence in that class). Every image is *ranked* by the
normalised margin on probabilities with the thresholds subtracted (cleanlab's `adjust_pred_probs`,
then its "normalized_margin"): score = (1 - margin) / 2 in [0, 1], higher = more suspect. An image
is *listed* when either
- some class reaches its threshold and the confident guess (the arg max among such classes; the
  plain arg max when several reach theirs) differs from its label: the off-diagonal of the
  confident joint (cleanlab's filter_by="confident_learning"), or
- its label loses to another class once the thresholds are subtracted (score > 0.5).
The second rule is there because the first alone depends on how confident the head is: on
hymenoptera/MobileNetV2 with the CV-chosen C=0.01 (soft probabilities, thresholds 0.89 and 0.91)
the confident joint has no off-diagonal entry, at C=1 it has 5, while score > 0.5 lists 15 and
16 images, the same top 10 in both.

Why by hand, not cleanlab's find_label_issues: cleanlab 2 brings pandas and termcolor into a
project that uses neither, for what is the forty lines below; the formulas follow its code.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import clone

from ..heads.cv import cv_folds, fit_head
from ..heads.registry import HEADS

HEAD = "softmax"
FIT_MAX = 20_000  # rows per fit of the label model (module docstring)
BLOCK = 65_536  # rows scored at a time


@dataclass
class LabelModel:
    model: object  # the head fitted on all of train
    oof: np.ndarray  # train N x K: out-of-fold probabilities
    c: float  # the C used
    how: str  # how C was chosen, in words
    thresholds: np.ndarray  # K per-class thresholds (from oof)


def probabilities(model, X: np.ndarray, n_classes: int) -> np.ndarray:
    """N x K probabilities, columns in class order even when the model saw fewer classes; scored
    BLOCK rows at a time (the head's scaler copies what it scores)."""
    out = np.zeros((len(X), n_classes))
    for i in range(0, len(X), BLOCK):
        out[i:i + BLOCK][:, np.asarray(model.classes_, dtype=int)] = model.predict_proba(X[i:i + BLOCK])
    return out


def subsample(y: np.ndarray, rows: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`rows` itself when it holds at most `size`, else a stratified seeded subsample of `size` of
    them (sorted)."""
    if len(rows) <= size:
        return rows
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(rows, train_size=size, stratify=y[rows], random_state=seed)
    return np.sort(keep)


def fit_label_model(X: np.ndarray, y: np.ndarray, n_classes: int, folds: int = 5, seed: int = 0, c: float = 0.0,
                    jobs: int = 1, groups: np.ndarray | None = None) -> LabelModel:
    """The softmax head on train: C by CV (c=0) or fixed, out-of-fold probabilities, thresholds.
    With `groups` (images.groups: crops or copies of one photo) the folds keep each group on one
    side, so no image's probability comes from a model that saw its twin's label. Above FIT_MAX
    rows every fit sees a subsample of FIT_MAX (module docstring)."""
    every = np.arange(len(y))
    part = subsample(y, every, FIT_MAX, seed)
    sub = "" if len(part) == len(y) else f" of a stratified subsample of {len(part):,} of {len(y):,} train rows"
    cv = cv_folds(y, folds, seed, 1, groups)
    if c > 0:
        model = HEADS[HEAD].make(seed).set_params(clf__C=c).fit(X[part], y[part])
        how = f"fixed (--c {c:g})" + (f"; each fit on a stratified subsample of {len(part):,} rows" if sub else "")
    else:
        part_cv = cv_folds(y[part], folds, seed, 1, None if groups is None else groups[part]) if sub else cv
        search = fit_head(HEAD, X[part], y[part], part_cv, seed, jobs=jobs)
        c, model = float(search.best_params_["clf__C"]), search.best_estimator_
        how = f"chosen by {search.n_splits_}-fold CV on train{sub} (CV accuracy {search.best_score_:.1%})"
    oof = np.zeros((len(y), n_classes))
    for tr, te in cv.split(X, y, groups):
        tr = subsample(y, tr, FIT_MAX, seed)
        fold = clone(HEADS[HEAD].make(seed)).set_params(clf__C=c).fit(X[tr], y[tr])
        oof[te] = probabilities(fold, X[te], n_classes)
    return LabelModel(model, oof, c, how, confident_thresholds(oof, y, n_classes))


def confident_thresholds(proba: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """t_j: the mean probability of class j over the images labelled j (1.0 for a class with none)."""
    t = np.ones(n_classes)
    for j in range(n_classes):
        if (y == j).any():
            t[j] = proba[y == j, j].mean()
    return t


@dataclass
class LabelIssues:
    score: np.ndarray  # N in [0, 1]: (1 - normalised margin) / 2, higher = more suspect
    flagged: np.ndarray  # N bool: off the confident joint's diagonal, or score > 0.5 (module docstring)
    suggested: np.ndarray  # N int: the confident guess, else the class the label loses to, else the arg max


def label_issues(proba: np.ndarray, y: np.ndarray, thresholds: np.ndarray) -> LabelIssues:
    """Confident learning's flags and ranking of labels `y` given probabilities (see the docstring)."""
    n = len(y)
    confident = proba >= thresholds - 1e-6
    many = confident.sum(1) > 1
    guess = np.where(many, proba.argmax(1), confident.argmax(1))
    off_diagonal = confident.any(1) & (guess != y)
    adj = proba - thresholds + thresholds.max()  # cleanlab's _subtract_confident_thresholds
    adj = adj / adj.sum(1, keepdims=True)
    own = adj[np.arange(n), y]
    others = adj.copy()
    others[np.arange(n), y] = -np.inf
    margin = own - others.max(1)
    score = (1 - margin) / 2
    suggested = np.where(off_diagonal, guess, np.where(score > 0.5, others.argmax(1), proba.argmax(1)))
    return LabelIssues(score, off_diagonal | (score > 0.5), suggested)
