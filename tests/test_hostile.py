"""Hostile inputs: run folders that try to run code or reach outside themselves, and files that
are not what they claim. Each case is a one-line error (exit 2) and nothing runs or is written."""
from __future__ import annotations

import json
import pickle

import pytest

from conftest import cli
from pipeline import UserError
from pipeline.runs import folder as runs


class Boom:
    """A pickle that, when loaded, creates a file: what a malicious model.joblib would do."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_loading_a_run_folder_with_a_malicious_pickle_executes_nothing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    witness = tmp_path / "pwned"
    (run / "model.joblib").write_bytes(pickle.dumps(Boom(witness)))
    (run / "model.json").write_text(json.dumps({"kind": "head", "file": "model.joblib", "classes": ["a", "b"],
                                                "backbone": "resnet18", "weights": "none(seed=0)",
                                                "weights_arg": "none", "resize": 8, "crop": 8}))
    with pytest.raises(UserError, match="pickle"):
        runs.load_head(run, runs.read_model(run))
    img = tmp_path / "x.jpg"
    img.write_bytes(b"")
    r = cli("predict", "--model", run, "--device", "cpu", img)
    assert r.returncode == 2 and "can run any code" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not witness.exists()


def test_a_head_file_with_foreign_types_or_pickled_arrays_is_refused(tmp_path):
    import numpy as np

    steps = [{"name": "clf", "type": "os.system", "params": {}, "scalars": {}}]
    np.savez(tmp_path / "foreign.npz", __steps__=np.array(json.dumps(steps)))
    with pytest.raises(UserError, match="not allowed"):
        runs.load_head(tmp_path, {"file": "foreign.npz"})
    witness = tmp_path / "pwned"
    np.savez(tmp_path / "pickled.npz", __steps__=np.array([Boom(witness)], dtype=object))
    with pytest.raises(UserError, match="not a readable head"):
        runs.load_head(tmp_path, {"file": "pickled.npz"})
    assert not witness.exists()
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="not a readable head"):
        runs.load_head(tmp_path, {"file": "bad.npz"})


def test_a_model_file_outside_the_run_folder_is_refused(tmp_path):
    (tmp_path / "elsewhere.npz").write_bytes(b"")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("../elsewhere.npz", str(tmp_path / "elsewhere.npz")):
        with pytest.raises(UserError, match="outside its run folder"):
            runs.model_file(run, {"file": name})


def test_names_that_become_paths_are_sanitised():
    assert runs.run_name("../../x", "resnet18", "none", "softmax") == "x-resnet18-none-softmax"
    assert "/" not in runs.run_name("a/b", "..", "c d", "e")


# ---------------------------------------------------------------------------------------------
# Folders as people leave them

def test_symlink_cycles_and_duplicates_add_nothing(tmp_path):
    import os

    from conftest import make_folder
    from pipeline.images.scan import scan
    root = make_folder(tmp_path / "data", n_train=3, n_val=2)
    os.symlink("..", root / "train" / "ants" / "up")  # a cycle, and a way into the bees' folder
    os.symlink(root / "train" / "ants" / "img000.jpg", root / "train" / "ants" / "zz-again.jpg")
    os.symlink(root / "train" / "bees" / "img000.jpg", root / "train" / "ants" / "a-bee.jpg")  # a wrong label
    s = scan(root)
    assert [r.path for r in s.splits["train"].items] == [f"train/{c}/img{i:03d}.jpg" for c in ("ants", "bees")
                                                         for i in range(3)]
    reasons = dict(s.splits["train"].skipped)
    assert reasons["train/ants/up"].startswith("folder link back into the data tree")
    assert reasons["train/ants/zz-again.jpg"] == "duplicate: the same file as train/ants/img000.jpg"
    assert reasons["train/ants/a-bee.jpg"].startswith("link to a file in another folder")


def test_16_bit_png_keeps_its_brightness(tmp_path):
    import numpy as np
    from PIL import Image

    from pipeline.images.decode import load_rgb
    a = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    rgb = np.asarray(load_rgb(tmp_path / "g16.png"))
    assert rgb.dtype == np.uint8 and abs(rgb[..., 0].mean() - (a / 257).mean()) < 0.6  # not saturated near 255


@pytest.mark.parametrize("case", ["one class", "a class with no usable images"])
def test_a_head_never_trains_on_a_subset_of_the_classes(tmp_path, case):
    from conftest import make_folder
    from pipeline.stages.classify import Config as C, classify
    from pipeline.stages.features import Config as F, extract
    classes = ("ants",) if case == "one class" else ("ants", "bees")
    root = make_folder(tmp_path / "data", n_train=3, n_val=2, classes=classes)
    if case != "one class":
        for p in (root / "train" / "bees").iterdir():
            p.write_bytes(b"\xff\xd8 broken")
    codes = extract(F(data=root, backbone="resnet18", weights="none", workers=0, device="cpu",
                      out=str(tmp_path / "f.h5")))
    with pytest.raises(UserError, match="only one class" if case == "one class" else "'bees' has no usable"):
        classify(C(features=codes, head="linsvc", out=tmp_path / "runs", folds=2))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("model.json"))


# ---------------------------------------------------------------------------------------------
# Files that are not what they claim

def test_damaged_features_files_are_one_line_errors(tmp_path):
    import h5py
    import numpy as np

    from conftest import write_synthetic_codes
    from pipeline.codes.store import read_codes
    f = write_synthetic_codes(tmp_path / "a.h5")
    with h5py.File(f, "a") as h:
        del h["val"]["labels"]
    with pytest.raises(UserError, match="damaged"):
        read_codes(f)
    f = write_synthetic_codes(tmp_path / "b.h5")
    with h5py.File(f, "a") as h:
        del h["train"]["labels"]
        h["train"].create_dataset("labels", data=np.zeros(3, dtype=np.int64))
    with pytest.raises(UserError, match="3 labels"):
        read_codes(f)
    r = cli("classify", "--features", f, "--out", tmp_path / "runs")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_a_flipped_byte_in_the_codes_fails_the_checksum(tmp_path):
    import h5py

    from conftest import write_synthetic_codes
    from pipeline.codes.store import read_codes
    f = write_synthetic_codes(tmp_path / "c.h5")
    with h5py.File(f, "r") as h:
        offset = h["train"]["codes"].id.get_chunk_info(0).byte_offset
    with open(f, "r+b") as fh:
        fh.seek(offset + 5)  # a mantissa byte: the value stays a finite float
        b = fh.read(1)
        fh.seek(offset + 5)
        fh.write(bytes([b[0] ^ 0x01]))
    with pytest.raises(UserError, match="damaged"):
        read_codes(f)


def _run_records(tmp_path):
    from conftest import write_synthetic_codes
    from pipeline.stages.classify import Config as C, classify
    [run] = classify(C(features=write_synthetic_codes(tmp_path / "c.h5"), head="softmax", out=tmp_path / "runs",
                       folds=3))
    return run


@pytest.mark.parametrize("edit,says", [
    (lambda m: m["val"].update(accuracy=0.5), "is not correct/n"),
    (lambda m: m["val"].update(accuracy_ci95=[0.9, 1.0]), "Wilson"),
    (lambda m: m.pop("method"), "'method' is missing"),
    (lambda m: m["val"].update(n="20"), "must be numbers"),
    (lambda m: m["predictions"].pop(), "saved predictions"),
])
def test_report_refuses_a_record_that_does_not_add_up(tmp_path, edit, says):
    run = _run_records(tmp_path)
    m = json.loads((run / "metrics.json").read_text())
    edit(m)
    (run / "metrics.json").write_text(json.dumps(m))
    r = cli("report", "--runs", tmp_path / "runs", "--out", tmp_path / "report")
    assert r.returncode == 2 and says in r.stderr and run.name in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "report").exists()


def test_outputs_that_would_clobber_something_are_refused_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = cli("report", "--runs", tmp_path, "--out", tmp_path / "afile")
    assert r.returncode == 2 and "is a file" in r.stderr
    (tmp_path / "adir").mkdir()
    r = cli("features", "--data", tmp_path / "nodata", "--out", tmp_path / "adir", "--force", "--weights", "none")
    assert r.returncode == 2 and "is a folder" in r.stderr


def test_a_truncated_checkpoint_is_a_one_line_error(tmp_path):
    run = tmp_path / "ft"
    run.mkdir()
    (run / "final.pt").write_bytes(b"PK\x03\x04 truncated")
    (run / "model.json").write_text(json.dumps({"kind": "finetune", "file": "final.pt", "classes": ["a", "b"],
                                                "backbone": "resnet18", "resize": 40, "crop": 32}))
    from PIL import Image
    Image.new("RGB", (40, 40)).save(tmp_path / "x.png")
    r = cli("predict", "--model", run, "--device", "cpu", tmp_path / "x.png")
    assert r.returncode == 2 and "not a readable checkpoint" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_second_writer_on_one_cache_is_refused(tmp_path, folder):
    from filelock import FileLock

    from pipeline.stages.features import Config as F, extract
    out = tmp_path / "f.h5"
    with FileLock(f"{out}.lock"):  # what a running `features` holds
        with pytest.raises(UserError, match="another features run is writing"):
            extract(F(data=folder, backbone="resnet18", weights="none", workers=0, device="cpu", out=str(out)))
    assert not out.exists()


def test_an_interrupted_rerun_keeps_the_previous_complete_run(tmp_path, monkeypatch):
    from pipeline.stages import classify as C
    run = _run_records(tmp_path)
    before = (run / "metrics.json").read_bytes()

    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(C.runs, "save_head", killed)
    with pytest.raises(KeyboardInterrupt):
        C.classify(C.Config(features=tmp_path / "c.h5", head="softmax", out=tmp_path / "runs", folds=4, force=True))
    assert (run / "metrics.json").read_bytes() == before and (run / "model.npz").is_file()
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name]  # no partial folder left behind


@pytest.mark.parametrize("name", [".", "..", "/abs/dir", "a/b", "..\\up", ".hidden", " "])
def test_a_run_name_is_one_plain_folder_name(tmp_path, name):
    from conftest import make_folder
    data = make_folder(tmp_path / "data", n_train=2, n_val=2)
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "other-run.txt").write_text("kept")
    r = cli("finetune", "--data", data, "--weights", "none", "--epochs", "1", "--out", tmp_path / "ft", "--name", name)
    assert r.returncode == 2 and "--name must be a plain folder name" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "ft").iterdir()) == ["other-run.txt"]


def test_finetune_never_replaces_a_folder_that_is_not_a_run(tmp_path):
    from conftest import make_folder
    data = make_folder(tmp_path / "data", n_train=2, n_val=2)
    victim = tmp_path / "ft" / "victim"
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("mine")
    for force in ([], ["--force"]):
        r = cli("finetune", "--data", data, "--weights", "none", "--epochs", "1", "--out", tmp_path / "ft",
                "--name", "victim", *force)
        assert r.returncode == 2 and "is not a run folder" in r.stderr, r.stderr
    assert (victim / "precious.txt").read_text() == "mine" and len(list(victim.iterdir())) == 1
