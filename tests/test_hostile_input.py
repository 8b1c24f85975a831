"""Hostile inputs, part two: damaged or foreign shards left in `<out>.parts/`, crafted model.npz
files, manifests that are not the CSV they claim, and flag values that used to end in tracebacks.
Each is a one-line error (exit 2), a recorded skip, or a correct result; nothing is lost and
nothing is written outside --out."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import cli, make_folder, write_synthetic_codes
from pipeline import UserError


def one_line_error(r, says: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ---------------------------------------------------------------------------------------------
# Shards left by a killed run

def _features(root, out, **kw):
    from pipeline.stages.features import Config, extract
    return extract(Config(data=root, backbone="resnet18", weights="none", workers=0, device="cpu", out=str(out),
                          resize=32, crop=32, batch_size=2, shard_size=2, **kw))


@pytest.fixture
def left_parts(tmp_path, monkeypatch):
    """(data, out, reference codes): a complete run whose shards were kept, as a run killed between
    its last shard and the assembly leaves them, and the file removed."""
    from pipeline.codes import shards
    from pipeline.codes.store import read_codes
    root = make_folder(tmp_path / "data", n_train=5, n_val=2, size=(40, 32))
    out = tmp_path / "f.h5"
    with monkeypatch.context() as m:
        m.setattr(shards.Shards, "remove", lambda self: None)
        _features(root, out)
    ref = read_codes(out)
    out.unlink()
    return root, out, ref


def _same_codes(a, b):
    for name in a.splits:
        np.testing.assert_array_equal(a.splits[name].codes, b.splits[name].codes)
        assert a.splits[name].paths == b.splits[name].paths and a.splits[name].skipped == b.splits[name].skipped


def test_damaged_or_foreign_shards_are_discarded_and_computed_again(left_parts, capsys):
    from pipeline.codes.shards import Shards
    from pipeline.codes.store import read_codes
    root, out, ref = left_parts
    parts = out.parent / f"{out.name}.parts"
    shards = Shards(out, (parts / "fingerprint").read_text())  # this extraction's: checksums it would write
    f = lambda split, i: parts / f"{split}-{i:06d}.npz"  # noqa: E731
    with np.load(f("train", 0)) as z:
        codes, reasons = z["codes"], [str(r) for r in z["reasons"]]
    f("train", 0).write_bytes(f("train", 0).read_bytes()[:100])  # truncated
    np.savez(f("train", 1), codes=codes)  # foreign: other members
    shards.save("train", 2, codes[:1], reasons[:1])  # a row short
    shards.save("train", 3, codes[:, :10], reasons)  # another width
    shards.save("train", 4, np.full_like(codes, np.nan), reasons)  # not finite
    shards.save("val", 0, codes, ["I made this up", ""])  # a reason no decoder gives
    np.savez(f("val", 1), codes=np.zeros_like(codes), reasons=np.array(reasons), seconds=np.float64(0),
             check=np.array("0" * 64))  # zeros some other writer left: not this extraction's checksum
    capsys.readouterr()
    _features(root, out)
    said = capsys.readouterr().out
    for why in ("BadZipFile", "members ['codes']", "expected (2, 512)", "codes (2, 10)", "not finite",
                "'I made this up'", "checksum does not match"):
        assert why in said, said
    assert said.count("discarded the shard") == 7 and "resuming" not in said
    _same_codes(ref, read_codes(out))
    assert not parts.exists()


def test_force_starts_from_an_empty_parts_folder(left_parts, capsys):
    from pipeline.codes.store import read_codes
    root, out, ref = left_parts
    parts = out.parent / f"{out.name}.parts"
    (parts / "stray.txt").write_text("x")
    capsys.readouterr()
    _features(root, out, force=True)
    said = capsys.readouterr().out
    assert "--force: removing the unfinished shards" in said and "resuming" not in said
    _same_codes(ref, read_codes(out))
    assert not parts.exists()


def test_damaged_view_shards_are_computed_again(tmp_path, monkeypatch, capsys):
    from pipeline.codes import shards
    from pipeline.codes.store import read_codes
    root = make_folder(tmp_path / "data", n_train=2, n_val=1, size=(40, 32))
    out = tmp_path / "f.h5"
    _features(root, out)
    plain = tmp_path / "plain.h5"
    shutil.copyfile(out, plain)
    with monkeypatch.context() as m:
        m.setattr(shards.Shards, "remove", lambda self: None)
        _features(root, out, views=2)
    ref = read_codes(out)
    parts = tmp_path / "f.h5.views.parts"
    [first] = sorted(parts.glob("train.v0-2-000000.npz"))
    with np.load(first) as z:
        np.savez(first, **{k: z[k] for k in z.files if k != "codes"}, codes=np.zeros_like(z["codes"]))
    shutil.copyfile(plain, out)  # the file without its views, as a run killed before writing them leaves it
    capsys.readouterr()
    _features(root, out, views=2)
    assert "discarded the shard train.v0-2-000000.npz" in capsys.readouterr().out
    np.testing.assert_array_equal(read_codes(out).splits["train"].views, ref.splits["train"].views)


@pytest.mark.parametrize("kind", ["file", "link"])
def test_parts_that_are_not_a_folder_are_a_one_line_error_and_kept(tmp_path, kind):
    root = make_folder(tmp_path / "data", n_train=2, n_val=1, size=(40, 32))
    out, elsewhere = tmp_path / "f.h5", tmp_path / "elsewhere"
    parts = tmp_path / "f.h5.parts"
    if kind == "file":
        parts.write_text("someone's notes")
    else:
        elsewhere.mkdir()
        parts.symlink_to(elsewhere)
    args = ("features", "--data", root, "--weights", "none", "--out", out, "--device", "cpu", "--workers", "0",
            "--resize", "32", "--crop", "32")
    for extra in ((), ("--force",)):
        one_line_error(cli(*args, *extra), f"is a {kind}, where features keeps its folder of unfinished shards")
    assert not out.exists()
    if kind == "file":
        assert parts.read_text() == "someone's notes"
    else:
        assert parts.is_symlink() and not any(elsewhere.iterdir())


# ---------------------------------------------------------------------------------------------
# Crafted model.npz files

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """{head: run folder} of a softmax and a k-NN head on synthetic codes (3 classes)."""
    from pipeline.stages.classify import Config, classify
    tmp = tmp_path_factory.mktemp("heads")
    codes = write_synthetic_codes(tmp / "c.h5")
    return {name: run for name in ("softmax", "knn")
            for [run] in [classify(Config(features=codes, head=name, out=tmp / "runs", folds=2, label_curve="off"))]}


def _craft(trained, tmp_path, head, edit):
    run = tmp_path / "run"
    shutil.copytree(trained[head], run)
    with np.load(run / "model.npz") as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    np.savez(run / "model.npz", **arrays)
    return run


def _huge_header(run):
    """model.npz whose coef_ header claims 2**40 rows, its data unchanged."""
    import io
    import zipfile
    f = run / "model.npz"
    with zipfile.ZipFile(f) as z:
        members = {n: z.read(n) for n in z.namelist()}
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": (2**40, 64)})
    members["1/coef_.npy"] = head.getvalue() + members["1/coef_.npy"][128:]
    with zipfile.ZipFile(f, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)


@pytest.mark.parametrize("head,edit,says", [
    ("softmax", lambda a: a.update({"1/classes_": np.array([-1, 0])}), "not the labels 0..K-1"),
    ("softmax", lambda a: a.update({"1/classes_": np.array([0, 7])}), "not the labels 0..K-1"),
    ("softmax", lambda a: a.update({"1/classes_": np.arange(4)}), "do not fit 4 classes"),
    ("softmax", lambda a: a["1/coef_"].__setitem__((0, 3), np.nan), "not finite"),
    ("softmax", lambda a: a.update({"0/scale_": a["0/scale_"][:5]}), "not one feature width"),
    ("softmax", lambda a: a.update({"1/coef_": a["1/coef_"][:, :5]}), "different feature widths"),
    ("knn", lambda a: a.update({"1/_y": a["1/_y"] + 5}), "labels outside"),
    ("knn", lambda a: a.update({"__steps__": np.array(json.dumps(json.loads(str(a["__steps__"]))[::-1]))}),
     "not scalers then one classifier"),
])
def test_a_crafted_head_is_refused_before_it_predicts(trained, tmp_path, head, edit, says):
    from pipeline.runs import folder as runs
    run = _craft(trained, tmp_path, head, edit)
    with pytest.raises(UserError, match="not a readable head") as e:
        runs.load_head(run, runs.read_model(run))
    assert says in str(e.value)


def test_a_head_header_claiming_2_to_the_40_rows_allocates_nothing(trained, tmp_path):
    from pipeline.runs import folder as runs
    run = _craft(trained, tmp_path, "softmax", lambda a: None)
    _huge_header(run)
    with pytest.raises(UserError, match="more than the .* bytes stored"):
        runs.load_head(run, runs.read_model(run))
    from PIL import Image
    img = tmp_path / "x.jpg"
    Image.new("RGB", (40, 40)).save(img)
    one_line_error(cli("predict", "--model", run, "--device", "cpu", img), "more than the")


def test_nan_weights_are_an_error_not_a_nan_probability(trained, tmp_path):
    from PIL import Image
    run = _craft(trained, tmp_path, "softmax", lambda a: a["1/coef_"].fill(np.nan))
    Image.new("RGB", (40, 40)).save(tmp_path / "x.png")
    r = cli("predict", "--model", run, "--device", "cpu", tmp_path / "x.png")
    one_line_error(r, "not finite")
    assert "nan" not in r.stdout


def test_a_head_is_checked_against_the_recorded_class_count(trained):
    from pipeline.heads.registry import head_from_arrays
    with np.load(trained["softmax"] / "model.npz", allow_pickle=False) as z:
        assert head_from_arrays(z, 3)[-1].classes_.tolist() == [0, 1, 2]
        with pytest.raises(ValueError, match="3 classes, but the run records 2"):
            head_from_arrays(z, 2)


@pytest.mark.parametrize("case", ["zero bytes", "model.json names fewer classes"])
def test_a_run_folder_whose_files_disagree_is_a_one_line_error(trained, tmp_path, case):
    from pipeline.runs import folder as runs
    run = tmp_path / "run"
    shutil.copytree(trained["softmax"], run)
    if case == "zero bytes":
        (run / "model.npz").write_bytes(b"")
    else:
        spec = json.loads((run / "model.json").read_text())
        (run / "model.json").write_text(json.dumps({**spec, "classes": spec["classes"][:1]}))
    with pytest.raises(UserError, match="not a readable head"):
        runs.load_head(run, runs.read_model(run))


# ---------------------------------------------------------------------------------------------
# Manifests

def _manifest(root, split_of=lambda split: split, extra=()):
    rows = ["path,label,split"] + [f"{p.relative_to(root).as_posix()},{p.parent.name},{split_of(p.parts[-3])}"
                                   for p in sorted(root.rglob("*.jpg"))]
    f = root / "list.csv"
    f.write_text("\n".join(rows + list(extra)) + "\n")
    return f


def test_manifest_splits_match_whatever_their_case_or_usual_alias(tmp_path):
    from pipeline.images.scan import scan
    root = make_folder(tmp_path / "data", n_train=3, n_val=2)
    flip = iter(range(100))
    s = scan(_manifest(root, lambda split: {"train": ("Train", "TRAINING", "train"),
                                            "val": ("validation", "Val", "valid")}[split][next(flip) % 3]))
    assert {k: len(v.items) for k, v in s.splits.items()} == {"train": 6, "val": 4}


def test_manifest_rows_of_an_unknown_split_are_an_error_naming_the_splits(tmp_path, capsys):
    from pipeline.images.scan import scan
    root = make_folder(tmp_path / "data", n_train=3, n_val=2)
    splits = iter(["trian", "trian"] + ["train"] * 4 + ["val"] * 4)
    with pytest.raises(UserError, match=r"2 rows have a split that is none of train, val: 'trian' \(line 2\).*"
                                        r"the splits found are 'train', 'trian', 'val'"):
        scan(_manifest(root, lambda split: next(splits)))
    splits = iter(["test", "test"] + ["train"] * 4 + ["val"] * 2 + ["test"] * 2)
    s = scan(_manifest(root, lambda split: next(splits)))
    assert "4 rows of split 'test' left out (not in --splits train,val)" in capsys.readouterr().out
    assert {k: len(v.items) for k, v in s.splits.items()} == {"train": 4, "val": 2}


@pytest.mark.parametrize("damage,says", [
    (lambda b: b.replace(b"img001", "imgé01".encode("latin-1"), 1), "line 3: not UTF-8 text (byte 0xe9)"),
    (lambda b: b.replace(b"img002.jpg,ants,train", b"img002.jpg,ants", 1), "line 4: 2 fields where the header has 3"),
    (lambda b: b.replace(b"train/ants/img002", b'"train/ants/img002', 1), "line 4: unexpected end of data"),
    (lambda b: b.replace(b"path,label,split", b"path,label,split,path", 1), "line 1: the header names the column "
                                                                            "'path' twice"),
    (lambda b: b.replace(b"img002.jpg", b"img002.jpg\0", 1), "line 4: a NUL byte"),
    (lambda b: b.replace(b"img002", b"a" * 140_000, 1), "line 4: longer than 128 KiB"),
])
def test_a_malformed_manifest_is_a_one_line_error_naming_the_line(tmp_path, damage, says):
    root = make_folder(tmp_path / "data", n_train=3, n_val=2)
    f = _manifest(root)
    f.write_bytes(damage(f.read_bytes()))
    one_line_error(cli("features", "--data", f, "--weights", "none", "--out", tmp_path / "f.h5"), says)
    assert not (tmp_path / "f.h5").exists()


@pytest.mark.parametrize("name", ["...csv", "..csv", "a\\b.csv", "x\nfeatures.csv"])
def test_the_default_cache_path_never_leaves_features(name):
    from pipeline.codes.weights import Weights, features_path
    p = features_path(f"some/where/{name}", "../../up", Weights.parse("none"))
    assert p.parent.parent == type(p)("features") and p.parent.name not in ("", ".", "..")
    assert p.name == ".._.._up-none.h5"


# ---------------------------------------------------------------------------------------------
# Flags

@pytest.mark.parametrize("args,says", [
    (("classify", "--features", "x.h5", "--tta", "-3"), "--tta 0 (all) or more"),
    (("classify", "--features", "x.h5", "--views", "-2"), "--views -1 (all) or more"),
    (("classify", "--features", "x.h5", "--head", "sgd", "--chunk-rows", "0"), "--chunk-rows must be at least 1"),
    (("features", "--data", "d", "--splits", "/abs/ds/train,val", "--weights", "none"), "not a plain folder name"),
    (("features", "--data", "d", "--splits", "train,../val", "--weights", "none"), "not a plain folder name"),
    (("features", "--data", "d", "--views", "1000000000000", "--weights", "none"), "--views must be 0 to 1000"),
])
def test_out_of_range_flags_are_one_line_errors(tmp_path, args, says):
    one_line_error(cli(*args, cwd=tmp_path), says)
    assert not any(tmp_path.iterdir())
