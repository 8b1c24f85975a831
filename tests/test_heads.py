"""Heads that keep pace with the codes: the solver picked by shape and warm starts give the plain
fit's predictions, the path search finds what a full grid finds, and the torch linear head's
written-out gradient is step for step torch.optim.SGD."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from pipeline.heads.linear_svm import LinearSVM
from pipeline.heads.search import SearchPath, path_search, peaked
from pipeline.heads.torch_linear import TorchLinear


def overlapping(n=600, d=40, k=4, seed=0, sep=0.35):
    """Classes that overlap as real codes do (a linear head gets ~70-80%), standardised."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = np.maximum(rng.normal(0, sep, (k, d))[y] + rng.normal(0, 1, (n, d)), 0)
    return ((X - X.mean(0)) / X.std(0)).astype(np.float32), y


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("C", [1e-3, 1e-2, 1e-1])
def test_lbfgs_solver_gives_linearsvc_predictions(k, C):
    X, y = overlapping(k=k)
    ours = LinearSVM(C=C, solver="lbfgs").fit(X[:400], y[:400])
    ref = LinearSVC(C=C, dual=True, tol=1e-6, max_iter=100000).fit(X[:400], y[:400])
    assert ours.coef_.shape == ref.coef_.shape
    assert np.mean(ours.predict(X[400:]) == ref.predict(X[400:])) >= 0.99
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=2e-3)


def test_solver_follows_the_shape():
    X, y = overlapping(n=200, d=40)
    assert LinearSVM().fit(X, y).solver_ == "lbfgs"  # more samples than features: primal, warm-startable
    assert LinearSVM().fit(X[:30], y[:30]).solver_ == "liblinear"  # more features than samples: dual


def test_warm_start_along_the_path_gives_the_plain_fit():
    X, y = overlapping()
    warm = LinearSVM(solver="lbfgs", warm_start=True)
    for C in (1e-4, 1e-3, 1e-2, 1e-1):
        warm.set_params(C=C).fit(X, y)
    plain = LinearSVM(C=1e-1, solver="lbfgs").fit(X, y)
    assert np.mean(warm.predict(X) == plain.predict(X)) >= 0.995
    np.testing.assert_allclose(warm.coef_, plain.coef_, atol=2e-3)


def test_path_search_matches_a_full_grid_search():
    X, y = overlapping(n=500, seed=2)
    Cs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    make = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, warm_start=True))
    grid = GridSearchCV(make, {"logisticregression__C": Cs}, cv=cv).fit(X, y)
    ours = path_search(make, SearchPath("logisticregression__C", Cs, warm=True, patience=2), X, y, cv, jobs=2)
    assert ours.best_params_ == grid.best_params_
    assert ours.best_score_ == pytest.approx(grid.best_score_, abs=0.01)
    # the refit is a plain fit at the chosen C: the same model GridSearchCV refits
    np.testing.assert_allclose(ours.best_estimator_[-1].coef_, grid.best_estimator_[-1].coef_, atol=1e-4)


class Curve:
    """An estimator whose CV score is a known function of its one setting."""

    def __init__(self, c=0.0, curve=None):
        self.c, self.curve = c, curve

    def get_params(self, deep=True):
        return {"c": self.c, "curve": self.curve}

    def set_params(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)
        return self

    def fit(self, X, y):
        return self

    def score(self, X, y):
        return self.curve[self.c]


@pytest.mark.parametrize("scores,best,tried", [
    ([0.5, 0.6, 0.7, 0.65, 0.6, 0.9], 2, 5),  # a later spike past two lower values is not searched (documented)
    ([0.5, 0.6, 0.55, 0.7, 0.6, 0.5], 3, 6),  # one dip, then a better value: patience 2 goes on and finds it
    ([0.7, 0.7, 0.7, 0.7], 0, 4),  # a plateau is not a peak: ties keep the most regularised
    ([0.8, 0.6, 0.5, 0.9], 0, 3),
])
def test_early_stop_waits_for_two_lower_values(scores, best, tried):
    X, y = np.zeros((20, 1)), np.arange(20) % 2
    curve = dict(enumerate(scores))
    r = path_search(Curve(curve=curve), SearchPath("c", list(range(len(scores))), patience=2), X, y, StratifiedKFold(2))
    assert r.best_params_ == {"c": best} and len(r.cv_scores) == tried
    assert r.stopped_early == (tried < len(scores))
    assert not peaked([0.5, 0.6, 0.55], 2) and peaked([0.5, 0.6, 0.55, 0.55], 2) and not peaked([1, 0], 0)
    assert not peaked([0.5, 0.6, 0.59, 0.58], 2, margin=0.015)  # dips within the best's standard error: noise


def test_dips_within_noise_do_not_stop_the_path():
    """hymenoptera-like: CV scores that wobble by one image out of 244 must not end the path."""
    X, y = np.zeros((40, 1)), np.arange(40) % 2
    folds = {0: [0.96, 0.93, 0.99, 0.95], 1: [0.95, 0.92, 0.98, 0.95], 2: [0.96, 0.92, 0.98, 0.94],
             3: [0.98, 0.95, 0.99, 0.96]}  # means 0.958, 0.950, 0.950, 0.970; the best's SE ~0.011

    class Noisy(Curve):
        calls = {}

        def score(self, X, y):
            i = Noisy.calls.setdefault(self.c, 0)
            Noisy.calls[self.c] += 1
            return self.curve[self.c][i]
    r = path_search(Noisy(curve=folds), SearchPath("c", [0, 1, 2, 3], patience=2), X, y, StratifiedKFold(4))
    assert r.best_params_ == {"c": 3} and not r.stopped_early


def reference_torch_linear(X, y, wd, seed=0, epochs=4):
    """The tutorial recipe written with nn.Linear, autograd, torch.optim.SGD and StepLR."""
    classes = np.unique(y)
    t, x = torch.as_tensor(np.searchsorted(classes, y)), torch.from_numpy(X)
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(X.shape[1], len(classes))
    with torch.no_grad():
        bound = 1 / np.sqrt(X.shape[1])
        lin.weight.uniform_(-bound, bound, generator=g)
        lin.bias.uniform_(-bound, bound, generator=g)
    opt = torch.optim.SGD(lin.parameters(), lr=0.05, momentum=0.9, weight_decay=wd)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 16):
            idx = perm[i:i + 16]
            loss = torch.nn.functional.cross_entropy(lin(x[idx]), t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return lin.weight.detach().numpy(), lin.bias.detach().numpy()


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_torch_linear_is_step_for_step_torch_sgd(wd):
    X, y = overlapping(n=200, k=3)
    W, b = reference_torch_linear(X, y, wd)
    ours = TorchLinear(lr=0.05, step_size=2, epochs=4, weight_decay=wd, device="cpu").fit(X, y)
    np.testing.assert_allclose(ours.coef_, W, atol=1e-5)
    np.testing.assert_allclose(ours.intercept_, b, atol=1e-5)


def test_cached_knn_votes_as_kneighbors_classifier_and_searches_once(monkeypatch):
    from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

    from pipeline.heads.knn import CachedKNN
    X, y = overlapping(n=300, k=3, seed=4)
    ours = CachedKNN(max_neighbors=9).fit(X[:200], y[:200])
    searches = []
    real = NearestNeighbors.kneighbors
    monkeypatch.setattr(NearestNeighbors, "kneighbors", lambda self, *a, **k: searches.append(1) or real(self, *a, **k))
    for k in (1, 3, 5, 9):
        ours.set_params(n_neighbors=k).fit(X[:200], y[:200])
        ref = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(X[:200], y[:200])
        np.testing.assert_array_equal(ours.predict(X[200:]), ref.predict(X[200:]))
        np.testing.assert_allclose(ours.predict_proba(X[200:]), ref.predict_proba(X[200:]))
    assert len(searches) == 1  # one search for the query set, reused for every k
    ours.fit(X[:150], y[:150])  # another training set: its own search
    ours.predict(X[200:])
    assert len(searches) == 2


class LogCurve(Curve):
    """Scores by a function of its log10 setting: the CV optimum may lie past the grid."""

    def score(self, X, y):
        return self.curve(self.c)


@pytest.mark.parametrize("peak,grid,bounds,chosen,edge", [
    (2.0, (0.001, 0.01, 0.1, 1.0, 10.0), (1e-5, 1e3), 100.0, None),  # past the high edge, found one step out
    (-4.0, (0.001, 0.01, 0.1, 1.0, 10.0), (1e-5, 1e3), 1e-4, None),  # past the low edge
    (6.0, (0.001, 0.01, 0.1, 1.0, 10.0), (1e-5, 1e3), 1e3, "high"),  # the bound stops it: flagged
    (-1.0, (0.001, 0.01, 0.1, 1.0, 10.0), (1e-5, 1e3), 0.1, None),  # inside: nothing extended
    (3.0, (0.1, 0.01, 0.0), (0.0, 10.0), 10.0, "low"),  # weight decay: strongest first, up to its bound
    (None, (0.1, 0.01, 0.0), (0.0, 10.0), 0.0, None),  # 0 (no regularisation) is a path's natural end
])
def test_a_pick_at_the_edge_of_its_grid_extends_the_path(peak, grid, bounds, chosen, edge):
    from pipeline.heads.cv import past_the_edges
    from pipeline.heads.registry import Head

    def curve(c):
        if peak is None:
            return 1.0 if c == 0 else 0.0
        return -abs(np.log10(c) - peak) if c > 0 else -9.0
    head = Head("t", lambda seed: LogCurve(curve=curve), "c", grid, patience=0, bounds=bounds)
    X, y = np.zeros((20, 1)), np.arange(20) % 2
    cv = StratifiedKFold(2)
    first = path_search(head.make(0), SearchPath("c", list(grid), patience=0), X, y, cv)
    r = past_the_edges(first, head, (X, y, cv), jobs=1, progress=None)
    assert r.best_params_ == {"c": pytest.approx(chosen)} and r.edge == edge
    assert [t["value"] for t in r.cv_scores] == sorted([t["value"] for t in r.cv_scores],
                                                       reverse=grid[0] > grid[-1])  # still in path order


def test_cv_work_stays_in_process_until_a_pool_would_pay_for_its_start(monkeypatch):
    from joblib import delayed

    from pipeline.heads import search

    with search.Workers(2) as w:
        assert w([delayed(pow)(2, k) for k in range(4)], left=3) == [1, 2, 4, 8] and w.pool is None  # quick: here
        monkeypatch.setattr(search, "POOL_START", 0.0)  # any work now pays for a pool...
        assert w([delayed(pow)(2, k) for k in range(3)], left=0) == [1, 2, 4] and w.pool is None  # ...but none is left
        w([delayed(pow)(2, k) for k in range(3)], left=1)
        assert w.pool is not None and w([delayed(pow)(3, k) for k in range(3)]) == [1, 3, 9]  # in the pool, in order
    with search.Workers(1) as one:  # --jobs 1: never a pool
        assert one([delayed(pow)(2, 3)], left=100) == [8] and one.pool is None


def test_knn_cv_one_fold_at_a_time_scores_every_k_as_value_major_order_does():
    from dataclasses import replace

    from pipeline.heads.registry import HEADS

    X, y = overlapping(n=400, d=16, k=3)
    X = np.maximum(X, 0)  # post-ReLU, like codes
    head, cv = HEADS["knn"], StratifiedKFold(5, shuffle=True, random_state=0)
    assert head.fold_major  # the registered k-NN head holds one fold's codes at a time
    one_fold = path_search(head.make(0), head.path(head.values), X, y, cv)
    every_fold = path_search(head.make(0), replace(head, fold_major=False).path(head.values), X, y, cv, jobs=1)
    assert [(t["value"], t["mean"], t["std"]) for t in one_fold.cv_scores] == \
        [(t["value"], t["mean"], t["std"]) for t in every_fold.cv_scores]
    assert one_fold.best_params_ == every_fold.best_params_ and len(one_fold.cv_scores) == len(head.values)
    with pytest.raises(ValueError, match="scored whole"):  # a path that may stop early needs value-major order
        path_search(head.make(0), SearchPath(head.param, list(head.values), True, 2, True), X, y, cv)
