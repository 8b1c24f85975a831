"""The hand-written heads are scikit-learn estimators: they pass sklearn's estimator checks (input
validation, cloning, fit idempotence, unfitted errors...), so CV, Pipeline and clone treat them
like any other."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from pipeline.heads.knn import CachedKNN
from pipeline.heads.linear_svm import LinearSVM
from pipeline.heads.torch_linear import TorchLinear

# No check is expected to fail. TorchLinear: a learning rate that fits sklearn's small check data in
# a few epochs (the tutorial's 0.001 needs more than the checks' accuracy bar allows), on the CPU.
ESTIMATORS = [LinearSVM(), LinearSVM(solver="liblinear"), CachedKNN(),
              TorchLinear(lr=0.05, epochs=5, device="cpu")]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # liblinear on check data
@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_cached_knn_refit_on_the_same_codes_takes_the_new_labels():
    rng = np.random.default_rng(0)
    X, q = rng.normal(size=(60, 5)).astype(np.float32), rng.normal(size=(20, 5)).astype(np.float32)
    y1, y2 = np.arange(60) % 2, np.where(np.arange(60) % 3 == 0, "a", "b")
    knn = CachedKNN(n_neighbors=3).fit(X, y1)
    knn.predict(q)  # fills the neighbour cache for q
    knn.fit(X, y2)  # same codes, other labels
    ref = KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(X, y2)
    np.testing.assert_array_equal(knn.classes_, ["a", "b"])
    np.testing.assert_array_equal(knn.predict(q), ref.predict(q))
    np.testing.assert_allclose(knn.predict_proba(q), ref.predict_proba(q))
