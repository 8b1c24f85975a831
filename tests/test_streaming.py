"""The out-of-core sgd head: codes read from the file in chunks, never whole; as accurate as the
in-memory softmax on separable codes; its held-out rows fixed by the seed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_synthetic_codes
from pipeline.runs import folder as runs
from pipeline.heads import streaming
from pipeline.codes.store import read_codes
from pipeline.heads.cv import fit_head
from pipeline.stages.classify import Config, classify


@pytest.fixture(scope="module")
def many_chunks(tmp_path_factory):
    # 4,000 train rows in chunks of 250: 16 chunks; overlapping classes, so accuracy is not trivially 100%
    return write_synthetic_codes(tmp_path_factory.mktemp("s") / "c.h5", n_train=4000, n_val=600, dim=32,
                                 classes=("a", "b", "c", "d"), sep=0.45)


def test_reads_are_chunk_sized_and_accuracy_matches_the_in_memory_softmax(many_chunks):
    chunks = streaming.Chunks(many_chunks, "train", rows=250)
    model, chosen = streaming.fit_streaming(chunks, np.arange(4), epochs=3, seed=0)
    assert chunks.reads and max(e - s for s, e in chunks.reads) <= 250  # never more than a chunk at a time
    assert sum(e - s for s, e in chunks.reads) > 10 * chunks.n  # many passes, each chunk by chunk
    c = read_codes(many_chunks)
    tr, va = c.splits["train"], c.splits["val"]
    sgd = (model.predict(va.codes) == va.labels).mean()
    softmax = fit_head("softmax", tr.codes, tr.labels, folds=3, seed=0).best_estimator_.score(va.codes, va.labels)
    print(f"val accuracy: sgd {sgd:.4f}, in-memory softmax {softmax:.4f}")
    assert 0.5 < softmax < 1.0 and sgd >= softmax - 0.01
    assert chosen["alpha"] in streaming.ALPHAS and len(chosen["tried"]) == len(streaming.ALPHAS)


def test_held_out_rows_depend_on_seed_and_position_only():
    a = streaming.held_out(500, 1000, 0.1, seed=3)
    assert (a == streaming.held_out(500, 1000, 0.1, seed=3)).all() and 60 < a.sum() < 140
    assert not (a == streaming.held_out(500, 1000, 0.1, seed=4)).all()


def test_classify_sgd_writes_a_run_that_loads_without_pickle(many_chunks, tmp_path):
    [run] = classify(Config(features=many_chunks, head="sgd", out=tmp_path / "runs", chunk_rows=1000,
                            label_curve="off"))
    m = json.loads((run / "metrics.json").read_text())
    assert run.name.endswith("-sgd") and m["head"] == "sgd" and m["selection"].startswith("10% of train held out")
    assert m["val"]["accuracy"] > 0.5 and "alpha" in m["hyperparameters"]
    head = runs.load_head(run, json.loads((run / "model.json").read_text()))
    va = read_codes(many_chunks).splits["val"]
    assert [int(p) for p in head.predict(va.codes)] == [p["pred"] for p in m["predictions"]]
    assert classify(Config(features=many_chunks, head="sgd", out=tmp_path / "runs", chunk_rows=1000,
                           label_curve="off")) == [run]  # up to date: nothing redone
