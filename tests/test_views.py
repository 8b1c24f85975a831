"""Augmented and test-time views in the cache: deterministic, resumable, split by image in CV,
averaged at test time. Random weights and tiny images: CPU, seconds."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import write_synthetic_codes
from pipeline.images import views as V
from pipeline.codes.store import read_codes
from pipeline.heads.cv import cv_folds
from pipeline.heads.views import train_rows
from pipeline.stages.classify import Config as CConfig, classify
from pipeline.images.transforms import Preprocess
from pipeline.stages.features import Config as FConfig, extract

PRE = Preprocess(resize=40, crop=32)


def fcfg(folder, out, **kw) -> FConfig:
    base = dict(data=folder, backbone="resnet18", weights="none", out=str(out), device="cpu", workers=0,
                resize=40, crop=32, interpolation="bilinear", batch_size=8)
    return FConfig(**{**base, **kw})


def test_views_are_deterministic_distinct_and_prefix_stable(folder):
    paths = ["train/ants/img000.jpg", "train/ants/img001.jpg"]
    a = V.ViewImages(folder, paths, PRE, True, "augment", [0, 1, 2], seed=0)
    x, why = a[0]
    assert why == "" and x.shape == (3, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x, a[0][0])  # the same seed: the same views
    assert not torch.equal(x[0], x[1]) and not torch.equal(x[1], x[2])  # views differ from each other
    assert torch.equal(x[1:], V.ViewImages(folder, paths, PRE, True, "augment", [1, 2], seed=0)[0][0])
    assert not torch.equal(x, V.ViewImages(folder, paths, PRE, True, "augment", [0, 1, 2], seed=1)[0][0])
    assert not torch.equal(x, a[1][0])  # another image, other crops
    t, _ = V.ViewImages(folder, paths, PRE, True, "tta", list(range(V.MAX_TTA - 1)), seed=0)[0]
    assert t.shape == (V.MAX_TTA - 1, 3, 32, 32)
    assert torch.equal(t[4], t[4].flip(-1).flip(-1)) and torch.equal(t[4].flip(-1), _centre(folder, paths[0]))
    assert torch.equal(t[0].flip(-1), t[5])  # top-left flipped


def _centre(folder, path):
    from pipeline.images.transforms import eval_transform
    from pipeline.images.decode import load_rgb
    return eval_transform(40, 32)(load_rgb(folder / path, 40))


def test_views_and_tta_round_trip_and_adding_views_computes_only_new_ones(folder, tmp_path, monkeypatch):
    out = tmp_path / "f.h5"
    extract(fcfg(folder, out, views=2, tta=5))
    c = read_codes(out)
    tr, va = c.splits["train"], c.splits["val"]
    assert tr.views.shape == (len(tr.paths), 2, c.header.dim) and va.views.shape == (len(va.paths), 4, c.header.dim)
    assert c.header.views["train"]["n"] == 2 and c.header.views["val"]["n"] == 4
    assert c.header.views["train"]["kind"] == "augment" and c.header.views["val"]["views"][1] == "top-left"
    with h5py.File(out) as f:
        assert f["train/views"].chunks == (1, 2, c.header.dim) and f["train/views"].fletcher32
    plain_fp = c.header.fingerprint
    calls = []
    real = V.ViewImages.__getitem__
    monkeypatch.setattr(V.ViewImages, "__getitem__", lambda self, i: calls.append(tuple(self.views)) or real(self, i))
    extract(fcfg(folder, out, views=4, tta=5))
    assert set(calls) == {(2, 3)} and len(calls) == len(tr.paths)  # only the two new views, val untouched
    d = read_codes(out)
    assert d.header.fingerprint == plain_fp and d.splits["train"].views.shape[1] == 4
    np.testing.assert_array_equal(d.splits["train"].views[:, :2], tr.views)
    np.testing.assert_array_equal(d.splits["val"].views, va.views)
    calls.clear()
    extract(fcfg(folder, out, views=3, tta=2))  # fewer than stored: nothing to compute
    assert calls == [] and read_codes(out).splits["train"].views.shape[1] == 4
    # the TTA view recomputed from scratch equals the stored one: views depend on nothing but seed, path, index
    fresh = tmp_path / "g.h5"
    extract(fcfg(folder, fresh, views=4, tta=1))
    np.testing.assert_allclose(read_codes(fresh).splits["train"].views, d.splits["train"].views, atol=1e-5)
    assert not (tmp_path / "f.h5.views.parts").exists()


def test_folds_keep_an_image_and_its_views_together():
    y = np.repeat([0, 1, 2], 10)
    split = type("S", (), {"codes": np.arange(30 * 2, dtype=np.float32).reshape(30, 2), "labels": y,
                           "views": np.zeros((30, 3, 2), np.float32)})()
    X, yy = train_rows(split, 3)
    assert X.shape == (120, 2) and (yy == np.repeat(y, 4)).all()
    np.testing.assert_array_equal(X[::4], split.codes)  # image-major: code, then its views
    image = np.repeat(np.arange(30), 4)
    for tr, te in cv_folds(yy, 5, 0, per_image=4).split(X, yy):
        assert not set(image[tr]) & set(image[te])
        assert all((image[te] == i).sum() == 4 for i in set(image[te]))
    assert cv_folds(yy, 5, 0, per_image=4).get_n_splits() == 5


def test_heads_train_on_views_and_average_tta(tmp_path):
    f = write_synthetic_codes(tmp_path / "c.h5", n_train=60, n_val=30, dim=8, sep=1.5)
    rng = np.random.default_rng(0)
    with h5py.File(f, "r+") as h:  # views: the code plus noise, stored as `features --views` stores them
        for split, n in (("train", 3), ("val", 4)):
            codes = h[f"{split}/codes"][...]
            h[split].create_dataset("views", data=codes[:, None] + rng.normal(0, 1, (len(codes), n, 8)).astype("f4"))
        h.attrs["views"] = json.dumps({"train": {"kind": "augment", "n": 3, "fingerprint": "a", "seconds": 3.0},
                                       "val": {"kind": "tta", "n": 4, "fingerprint": "b", "seconds": 8.0}})
    [run] = classify(CConfig(features=f, head="softmax", out=tmp_path / "runs", folds=3, label_curve="off"))
    m = json.loads((run / "metrics.json").read_text())
    assert run.name.endswith("softmax-views3-tta5") and (m["views"], m["tta"]) == (3, 5)
    assert m["short"] == "softmax (+3 views, TTA 5)" and m["seconds"]["extract"] == pytest.approx(1.5 + 3 + 8)
    [plain] = classify(CConfig(features=f, head="softmax", out=tmp_path / "runs", folds=3, label_curve="off",
                               views=0, tta=1))
    assert plain.name.endswith("-softmax") and json.loads((plain / "metrics.json").read_text())["views"] == 0
    with pytest.raises(Exception, match="holds 3 augmented views"):
        classify(CConfig(features=f, head="softmax", out=tmp_path / "runs", views=5, label_curve="off"))
    from pipeline.stages import report
    report.run(report.Config(runs=tmp_path / "runs", out=tmp_path / "rep", bench=tmp_path / "none.json"))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## What augmented views buy" in md
    assert "| softmax | 0 | 1 |" in md and "| softmax (+3 views, TTA 5) | 3 | 5 |" in md  # rows named by run


def test_frozen_finetune_from_cached_views_predicts_like_its_record(folder, tmp_path):
    from pipeline.stages.finetune import Config as TConfig, train
    from pipeline.stages.predict import Config as PConfig, predict

    feats = tmp_path / "f.h5"
    extract(fcfg(folder, feats, views=3))
    kw = dict(data=folder, out=tmp_path / "runs", backbone="resnet18", weights="none", mode="frozen", epochs=3,
              batch_size=4, lr=0.01, device="cpu", workers=0, seed=0)
    with pytest.raises(Exception, match="--loop codes goes with"):
        TConfig(**kw, loop="codes")
    run_dir, doc = train(TConfig(**kw, loop="codes", features=str(feats)))
    assert run_dir.name.endswith("finetune-frozen-codes") and doc["short"] == "frozen, BN eval (cached views)"
    assert doc["seconds"]["extract"] > 0 and doc["hyperparameters"]["train_source"].startswith("3 cached augmented")
    assert len(doc["predictions"]) == 8 and len(json.loads((run_dir / "history.json").read_text())) == 3
    again = train(TConfig(**kw, loop="codes", features=str(feats), force=True))[1]
    assert [p["score"] for p in again["predictions"]] == [p["score"] for p in doc["predictions"]]  # seeded
    rows, _, _ = predict(PConfig(model=run_dir, images=(str(folder / "val"),), device="cpu"))
    want = {p["path"]: doc["classes"][p["pred"]] for p in doc["predictions"]}
    assert {str(Path(r[0]).relative_to(folder)): r[1] for r in rows} == want
    with pytest.raises(Exception, match="holds no augmented views"):
        train(TConfig(**kw, loop="codes", features=str(_plain(folder, tmp_path))))


def _plain(folder, tmp_path):
    return extract(fcfg(folder, tmp_path / "plain.h5"))
