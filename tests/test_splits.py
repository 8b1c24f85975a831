"""Splits a verdict can trust: a test split beside train and val is used, and a plain folder of
class folders is split once, stratified and the same for every stage."""
from __future__ import annotations

import json

import pytest

from conftest import cli, make_image
from pipeline import UserError
from pipeline.images.scan import scan
from pipeline.images.splits import assign, parse_fractions


def plain_folder(root, n=20, classes=("ants", "bees")):
    colors = [(200, 40, 40), (40, 40, 200)]
    for ci, c in enumerate(classes):
        for i in range(n):
            make_image(root / c / f"img{i:03d}.jpg", colors[ci], seed=ci * 1000 + i)
    return root


def test_assignment_is_stratified_stable_and_leaves_old_images_in_place():
    paths = [f"ants/{i}.jpg" for i in range(40)]
    a = assign(paths)
    assert (a.count("train"), a.count("val"), a.count("test")) == (28, 6, 6)
    assert assign(paths) == a  # the same every run
    more = assign(paths + [f"ants/new{i}.jpg" for i in range(4)])
    assert sum(x != y for x, y in zip(a, more)) <= 2  # adding images moves (almost) nothing
    assert set(assign(paths[:3])) == {"train", "val", "test"}
    assert parse_fractions("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.5,0.5", "0.7,0.2,0.2", "a,b,c", "1,0,0"):
        with pytest.raises(UserError, match="--split"):
            parse_fractions(bad)


def test_a_plain_folder_is_split_into_train_val_and_test(tmp_path):
    s = scan(plain_folder(tmp_path / "photos"), ("auto",))
    assert list(s.splits) == ["train", "val", "test"] and s.classes == ["ants", "bees"] and s.rule
    names = {n: {r.path for r in sp.items} for n, sp in s.splits.items()}
    assert not (names["train"] & names["val"] or names["train"] & names["test"] or names["val"] & names["test"])
    assert sum(map(len, names.values())) == 40
    for sp in s.splits.values():  # stratified: both classes in every split
        assert {r.label for r in sp.items} == {0, 1}
    assert scan(tmp_path / "photos", ("auto",)).digest() == s.digest()
    assert scan(tmp_path / "photos", ("auto",), (0.5, 0.25, 0.25)).digest() != s.digest()


def test_test_folder_beside_train_and_val_is_used(tmp_path):
    for split in ("train", "val", "test"):
        plain_folder(tmp_path / "d" / split, n=4)
    assert list(scan(tmp_path / "d", ("auto",)).splits) == ["train", "val", "test"]
    assert list(scan(tmp_path / "d", ("train", "val")).splits) == ["train", "val"]


def test_every_stage_uses_the_same_automatic_split_and_test_is_scored_once(tmp_path):
    data = plain_folder(tmp_path / "photos", n=16)
    feats, runs = tmp_path / "f.h5", tmp_path / "runs"
    r = cli("features", "--data", data, "--weights", "none", "--out", feats, "--device", "cpu", "--workers", "0")
    assert r.returncode == 0 and "split automatically" in r.stdout, r.stderr
    r = cli("classify", "--features", feats, "--data", data, "--head", "softmax", "--out", runs, "--label-curve",
            "off", "--folds", "3")
    assert r.returncode == 0 and "scored once" in r.stdout, r.stderr
    [run] = [p for p in runs.iterdir() if p.is_dir()]
    m = json.loads((run / "metrics.json").read_text())
    assert m["test"]["n"] == len(m["test_predictions"]) == 4 and m["val"]["n"] == 4 and m["n_train"] == 24
    r = cli("finetune", "--data", data, "--weights", "none", "--epochs", "1", "--out", runs, "--device", "cpu",
            "--workers", "0", "--batch-size", "8", "--resize", "40", "--crop", "32")
    assert r.returncode == 0, r.stderr
    ft = json.loads(next(runs.glob("*finetune*/metrics.json")).read_text())
    assert {p["path"] for p in ft["test_predictions"]} == {p["path"] for p in m["test_predictions"]}
    assert {p["path"] for p in ft["predictions"]} == {p["path"] for p in m["predictions"]}


def test_the_verdict_cites_test_accuracy_when_there_is_a_test_split(tmp_path):
    data = plain_folder(tmp_path / "photos", n=16)
    feats, runs, out = tmp_path / "f.h5", tmp_path / "runs", tmp_path / "report"
    assert cli("features", "--data", data, "--weights", "none", "--out", feats, "--device", "cpu",
               "--workers", "0").returncode == 0
    r = cli("classify", "--features", feats, "--head", "all", "--out", runs, "--label-curve", "off", "--folds", "3")
    assert r.returncode == 0, r.stderr
    r = cli("report", "--runs", runs, "--out", out)
    assert r.returncode == 0, r.stderr
    v = json.loads((out / "verdict.json").read_text())
    assert v["split"] == "test" and v["compared_on"] == "val" and v["test"]["n"] == 4
    md = (out / "report.md").read_text()
    assert "test images, which no choice has seen" in md and "Test accuracy [95% CI]" in md
    assert "optimistic: expect" not in md


def _listing(root, split=None):
    """A manifest in `root` of its class folders' images: path,label (and a split column of `split`)."""
    rows = [f"{p.relative_to(root).as_posix()},{p.parent.name}" + ("" if split is None else f",{split(p)}")
            for p in sorted(root.rglob("*.jpg"))]
    f = root / "list.csv"
    f.write_text("\n".join(["path,label" + ("" if split is None else ",split"), *rows]) + "\n")
    return f


def test_a_manifest_without_splits_is_split_as_its_folder_is(tmp_path):
    root = plain_folder(tmp_path / "photos", n=20)
    folder = scan(root, ("auto",))
    s = scan(_listing(root), ("auto",))
    assert s.manifest == "list.csv" and s.rule == folder.rule and s.classes == folder.classes
    assert {n: [r.path for r in sp.items] for n, sp in s.splits.items()} == \
        {n: [r.path for r in sp.items] for n, sp in folder.splits.items()}  # the same images in each split
    for sp in s.splits.values():  # stratified: each class cut 14 / 3 / 3
        assert sorted(sum(r.label == c for r in sp.items) for c in (0, 1)) == [len(sp.items) // 2] * 2
    assert [len(sp.items) for sp in s.splits.values()] == [28, 6, 6]
    assert scan(root / "list.csv", ("auto",)).digest() == s.digest()  # stable across runs
    assert scan(root / "list.csv", ("auto",), (0.5, 0.25, 0.25)).digest() != s.digest()  # the rule is fingerprinted
    assert scan(_listing(root, split=lambda p: ""), ("auto",)).digest() == s.digest()  # an empty column: the same


def test_a_manifest_with_splits_on_some_rows_only_is_a_one_line_error(tmp_path):
    root = plain_folder(tmp_path / "photos", n=4)
    f = _listing(root, split=lambda p: "train" if p.name < "img002" else "")
    with pytest.raises(UserError, match=r"4 rows have no split \(line 4\) while 4 have one"):
        scan(f, ("auto",))
    with pytest.raises(UserError, match="no split column: it is split automatically with --splits auto"):
        scan(_listing(root), ("train", "val"))
    one = _listing(root)
    one.write_text(one.read_text() + "ants/img000.jpg,cats\n")
    with pytest.raises(UserError, match="class 'cats' has fewer than 3 usable images: a manifest split"):
        scan(one, ("auto",))


def test_features_and_finetune_see_the_same_split_of_a_manifest_without_splits(tmp_path):
    from pipeline.codes.store import read_codes
    from pipeline.stages import features, finetune

    root = plain_folder(tmp_path / "photos", n=10)
    m = _listing(root)
    h5 = features.extract(features.Config(data=m, out=str(tmp_path / "f.h5"), weights="none", resize=40, crop=32,
                                          workers=0, device="cpu"))
    codes = read_codes(h5)
    assert codes.header.inputs["split_rule"] == scan(m, ("auto",)).rule
    assert set(codes.splits) == {"train", "val", "test"}
    _, doc = finetune.train(finetune.Config(data=m, out=tmp_path / "runs", weights="none", epochs=1, batch_size=8,
                                            resize=40, crop=32, workers=0, device="cpu"))
    assert [p["path"] for p in doc["predictions"]] and \
        {p["path"] for p in doc["predictions"]} == set(codes.splits["val"].paths)
    assert {p["path"] for p in doc["test_predictions"]} == set(codes.splits["test"].paths)
    assert doc["n_train"] == len(codes.splits["train"].paths) == 12  # 6 + 2 + 2 of each class
