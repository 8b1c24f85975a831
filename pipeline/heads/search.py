"""Choose a head's setting by cross-validation on train: along a regularisation path, folds in
parallel, warm starts, and an early stop once the CV score has clearly peaked.

GridSearchCV fits every (setting, fold) from scratch, one at a time by default, and always runs
the whole grid. Linear heads get expensive as regularisation weakens, and their CV accuracy
usually peaks early, so here the path runs from the most to the least regularised setting, each
fold starting from its solution at the previous setting where the estimator supports warm starts,
and stops when `patience` settings in a row score clearly below the best: by more than the best's
standard error over the folds, so a dip of one image on a small set is noise, not a peak. The chosen setting is refit
from scratch on all of train, so the final model is a plain fit at that setting. Folds are
StratifiedKFold splits of train only: val is never passed here. They run in this process while
that is quick, in processes once the settings left would take long enough (`Workers`).
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone


@dataclass
class PathSearch:
    """What GridSearchCV would report (best_estimator_, best_params_, best_score_, n_splits_),
    plus the CV score of every setting tried, in path order, and whether the path stopped early."""

    best_estimator_: object
    best_params_: dict
    best_score_: float
    n_splits_: int
    cv_scores: list[dict] = field(default_factory=list)  # {"value", "mean", "std", "seconds"}
    stopped_early: bool = False
    untried: list = field(default_factory=list)
    edge: str | None = None  # "low" / "high": the pick sits at that edge of the (extended) grid


POOL_START = 5.0  # seconds a pool of processes must save to be worth starting (2-13 s measured on 2 loaded cores)


class Workers:
    """Runs batches of joblib tasks (`delayed(f)(...)`) in this process, and in a pool of `jobs`
    processes once the batches still to come would save more than POOL_START there: a batch took
    t seconds here and `left` more are expected, so a pool of n saves about t * left * (1 - 1/n).

    Why not always a pool: on small codes every fit takes a fraction of a second, and starting a
    pool costs more than it saves. On a 2-core machine (hymenoptera, 397 codes) the four heads'
    CV took 57-62 s with a pool per head and 31 s in this process (the linear head's workers each
    import torch); work that takes seconds per batch still gets every core."""

    def __init__(self, jobs: int = 1):
        from joblib import effective_n_jobs

        self.n, self.pool, self._stack = effective_n_jobs(jobs), None, ExitStack()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def __call__(self, tasks, left: int = 0) -> list:
        if self.pool is not None:
            return self.pool(tasks)
        from threadpoolctl import threadpool_limits

        t0 = time.perf_counter()
        # one thread, as in one of joblib's workers: small fits lose more to threads spinning (BLAS's,
        # and torch's after features in the same process) than they gain
        with threadpool_limits(limits=1):
            out = [f(*args, **kw) for f, args, kw in tasks]
        if self.n > 1 and (time.perf_counter() - t0) * left * (1 - 1 / self.n) > POOL_START:
            self.pool = self._stack.enter_context(Parallel(n_jobs=self.n))
        return out


def _fit_fold(est, param: str, value, X, y, train, test):
    est.set_params(**{param: value})
    est.fit(X[train], y[train])
    return est, float(est.score(X[test], y[test]))


def peaked(means: list[float], patience: int, margin: float = 0.0) -> bool:
    """True when the last `patience` scores all came after the best so far and are below it by
    more than `margin` (the best's standard error)."""
    if patience < 1 or len(means) <= patience:
        return False
    best = int(np.argmax(means))
    return best < len(means) - patience and all(m < means[best] - margin for m in means[-patience:])


def value_major_scores(estimator, path: SearchPath, X: np.ndarray, y: np.ndarray, folds: list, jobs: int,
                       progress: Callable[[dict], None] | None) -> list[dict]:
    """Each value on every fold (in a pool when worth it), stopping once the path has peaked."""
    param, values, warm, patience, _ = path
    fitted = [clone(estimator) for _ in folds]
    tried: list[dict] = []
    with Workers(jobs) as parallel:
        for i, value in enumerate(values):
            t0 = time.perf_counter()
            out = parallel([delayed(_fit_fold)(est if warm else clone(estimator), param, value, X, y, tr, te)
                            for est, (tr, te) in zip(fitted, folds)], left=len(values) - i - 1)
            fitted = [est for est, _ in out]
            scores = [s for _, s in out]
            tried.append({"value": value, "mean": float(np.mean(scores)), "std": float(np.std(scores)),
                          "seconds": time.perf_counter() - t0})
            if progress is not None:
                progress(tried[-1])
            best = tried[int(np.argmax([t["mean"] for t in tried]))]
            if peaked([t["mean"] for t in tried], patience, best["std"] / np.sqrt(len(folds))):
                break
    return tried


def fold_major_scores(estimator, path: SearchPath, X: np.ndarray, y: np.ndarray, folds: list,
                      progress: Callable[[dict], None] | None) -> list[dict]:
    """Every value on one fold, that fold's estimator then dropped, then the next fold: for a warm
    path scored whole (patience 0) whose values cost little once a fold is fitted (k-NN: the fold's
    neighbour lists serve every k). Value-major order keeps every fold's estimator alive at once,
    and a k-NN estimator holds its fold's training codes: 5 copies of 80% of train (6.5 GB at
    800,000 x 512) and, in a pool, more copies in each worker, which ran a 23 GB machine out of
    memory at a million codes. In this process, whose threads (BLAS, FAISS) the search uses."""
    param, values = path.param, path.values
    if path.patience or not path.warm:
        raise ValueError("fold-major order is for a warm path scored whole (patience 0)")
    scores, seconds = np.zeros((len(values), len(folds))), np.zeros(len(values))
    for j, (tr, te) in enumerate(folds):
        est = clone(estimator)
        for i, value in enumerate(values):
            t0 = time.perf_counter()
            est, scores[i, j] = _fit_fold(est, param, value, X, y, tr, te)
            seconds[i] += time.perf_counter() - t0
        del est
    tried = [{"value": v, "mean": float(scores[i].mean()), "std": float(scores[i].std()), "seconds": float(seconds[i])}
             for i, v in enumerate(values)]
    if progress is not None:
        for t in tried:
            progress(t)
    return tried


class SearchPath(NamedTuple):
    """The one setting a search chooses: its name, its values in path order (strongest
    regularisation first), whether folds warm-start along it, and the early-stop patience."""

    param: str
    values: list
    warm: bool = False
    patience: int = 2
    fold_major: bool = False  # every value of one fold, then the next fold (fold_major_scores)


def path_search(estimator, path: SearchPath, X: np.ndarray, y: np.ndarray, cv, *, jobs: int = 1,
                progress: Callable[[dict], None] | None = None) -> PathSearch:
    """Cross-validate `estimator` at each value of the path (in the order given) and refit the best
    on all of X, y."""
    param, values = path.param, path.values
    folds = list(cv.split(X, y))
    if path.fold_major:
        tried = fold_major_scores(estimator, path, X, y, folds, progress)
    else:
        tried = value_major_scores(estimator, path, X, y, folds, jobs, progress)
    best = tried[int(np.argmax([t["mean"] for t in tried]))]  # ties: the first, i.e. most regularised
    final = clone(estimator).set_params(**{param: best["value"]}).fit(X, y)
    return PathSearch(final, {param: best["value"]}, best["mean"], len(folds), tried,
                      stopped_early=len(tried) < len(values), untried=list(values[len(tried):]))
