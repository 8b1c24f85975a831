"""The project's one neighbour index (codes.index): exact below its size, FAISS IVF above, the same
near-copies found either way, exact similarities of the view, parameters recorded; and its users,
the k-NN head and the --reject rule's references."""
from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from pipeline.codes.index import Index, IndexSpec, View, search
from pipeline.codes.neighbours import top_k, unit_rows, whitening

IVF = IndexSpec(exact_max=0)  # always the approximate index


@pytest.fixture(autouse=True)
def one_thread():
    with threadpool_limits(limits=1):
        yield


def codes_with_copies(n=3000, d=64, copies=40, seed=0):
    """ReLU'd overlapping Gaussian classes (as real codes) and `copies` near-copies of other rows
    appended: (codes, pairs (copy row, original row))."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(0, 0.4, (8, d))[rng.integers(0, 8, n)] + rng.normal(0, 1, (n, d)), 0)
    src = rng.choice(n, copies, replace=False)
    dup = x[src] + rng.normal(0, 0.05, (copies, d))
    return np.concatenate([x, dup]).astype(np.float32), np.stack([n + np.arange(copies), src], 1)


def test_index_finds_every_planted_copy_as_exact_search_does():
    x, pairs = codes_with_copies()
    for spec in (IndexSpec(), IVF):
        sims, idx, params = search([x], None, 5, spec=spec)
        assert params["kind"] == "exact" if spec.exact_max else params["kind"].startswith("faiss IVF")
        assert all(idx[c, 0] == o and idx[o, 0] == c for c, o in pairs), params
        assert (idx != np.arange(len(x))[:, None]).all()  # a row is not its own neighbour
    assert params["lists"] >= 16 and params["probes"] >= 1 and params["base_rows"] == len(x)


def test_index_similarities_are_the_exact_cosines_of_its_view():
    x, _ = codes_with_copies(n=2000, d=32)
    mean, w = whitening(x[:1500], 16)
    for view in (View(), View(mean, w)):
        sims, idx, _ = search([x[:1200], x[1200:]], None, 4, view, IVF)  # two parts read as one
        z = view.rows(x)
        ok = idx >= 0
        assert ok[:, 0].all()
        assert np.allclose(sims[ok], np.einsum("nd,nkd->nk", z, z[np.where(ok, idx, 0)])[ok], atol=1e-5)
        assert (np.diff(sims, axis=1)[np.isfinite(sims[:, 1:])] <= 1e-6).all()  # best first
    assert np.allclose(View().rows(x), unit_rows(x))  # the caller's codes are left alone
    assert not np.allclose(np.linalg.norm(x, axis=1), 1)


def test_exact_index_equals_the_tiled_search_and_serves_other_queries():
    x, _ = codes_with_copies(n=500, d=16)
    index = Index([x])
    s, i = index.search([x[:50]], 3)
    s0, i0 = top_k(unit_rows(x[:50]), unit_rows(x), 3)
    assert index.params == {"kind": "exact", "base_rows": len(x) + 0} and np.allclose(s, s0)
    assert (i[:, 0] == np.arange(50)).all()  # queries that are base rows find themselves first


def test_knn_head_searches_the_index_above_its_size(monkeypatch):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    from pipeline.codes import index as module
    from pipeline.heads.knn import CachedKNN

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 16))
    y = rng.integers(0, 3, 1500)
    x = (centres[y] + rng.normal(0, 1, (1500, 16))).astype(np.float32)
    exact = make_pipeline(Normalizer(), CachedKNN(n_neighbors=5)).fit(x[:1000], y[:1000])
    truth = exact.predict(x[1000:])
    monkeypatch.setattr(module, "EXACT_MAX", 100)
    approx = make_pipeline(Normalizer(), CachedKNN(n_neighbors=5)).fit(x[:1000], y[:1000])
    agree = (approx.predict(x[1000:]) == truth).mean()
    assert agree >= 0.95 and (approx.predict(x[1000:]) == y[1000:]).mean() >= 0.9, agree
    assert approx[-1].index_["kind"].startswith("faiss IVF") and not hasattr(exact[-1], "index_")
    approx[-1].set_params(n_neighbors=3).predict(x[1000:])  # another k: the same index, no rebuild
    import copy
    assert not hasattr(copy.deepcopy(approx[-1]), "_index")  # never copied or pickled


def test_reject_rule_past_its_reference_size_keeps_its_rate_on_val():
    from pipeline.heads.reject import codes_rule, nearest_distance, references

    rng = np.random.default_rng(1)
    train, val = rng.normal(size=(3000, 24)), rng.normal(size=(400, 24))
    assert len(references(train, size=500)) == 500 and len(references(train[:400], size=500)) == 400
    import pipeline.heads.reject as reject

    full_ref, full = codes_rule(train, val)
    small = reject.REFERENCE_MAX
    try:
        reject.REFERENCE_MAX = 500
        ref, rule = codes_rule(train, val)
    finally:
        reject.REFERENCE_MAX = small
    assert ref.shape == (500, 24) and ref.dtype == np.float16 and rule["references"] == 500
    assert "subsample of 500 of the 3,000" in rule["rule"] and full["references"] == 3000
    turned_away = (nearest_distance(ref, val) > rule["threshold"]).mean()
    assert turned_away <= rule["rate"] and turned_away >= rule["rate"] - 0.01  # set on val: its rate holds
    assert rule["threshold"] > full["threshold"]  # fewer references: each image is further from the nearest
